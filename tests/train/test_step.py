"""The sharded train step: sharded == one device (loss, gradients, updated params) on
three meshes, frozen subtrees, mixed precision, and clear errors before compiling."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reasonjax import parallel
from reasonjax.config import ConfigError
from reasonjax.data.formats import BatchError
from reasonjax.train import preference, state as st
from reasonjax.train.loss import ReferenceError
from reasonjax.train.sft import sft_loss
from reasonjax.train.step import make_eval_step, make_train_step, tokens_in

B1 = 0.9
# No clipping and a constant lr: Adam's first moment after one step is (1 - b1) * grad,
# so the state exposes the exact gradient next to the updated params.
OPTIM = st.OptimConfig(lr=1e-3, b1=B1, clip_norm=None, schedule="constant", weight_decay=0.1)


_SETUPS = {}


def _setup(config, params, shape, loss, key=None):
    """(mesh, param shardings, fresh state, step) for ``shape``; the step (not donating,
    so one state can feed several calls) is built once per key and reused across tests."""
    n = int(np.prod(shape))
    mesh = parallel.make_mesh(parallel.MeshConfig(*shape), devices=jax.devices()[:n])
    ps = parallel.param_shardings(config, mesh)
    placed = jax.device_put(params, ps)
    tx = st.make_optimizer(OPTIM, placed)
    state = st.create_train_state(placed, tx, seed=0, mesh=mesh, param_shardings=ps)
    key = (key or loss.name, shape)
    if key not in _SETUPS:
        _SETUPS[key] = make_train_step(loss, tx, mesh, st.state_shardings(tx, placed, ps, mesh),
                                       lr_schedule=st.make_schedule(OPTIM), donate=False)
    return mesh, ps, state, _SETUPS[key]


def _grads(state):
    return jax.tree.map(lambda m: np.asarray(m) / (1 - B1), state.opt_state[0].mu)


def _assert_trees_close(a, b, atol, what):
    for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(a)[0], jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol, rtol=0,
                                   err_msg=f"{what} {jax.tree_util.keystr(path)}")


@pytest.fixture(scope="module")
def sft_batch(random_batch):
    return random_batch(np.random.default_rng(0), 8, 16)


@pytest.fixture(scope="module")
def single_sft(tiny_config, tiny_params, sft_batch):
    _, _, state, step = _setup(tiny_config, tiny_params, (1, 1, 1), sft_loss(tiny_config))
    new_state, metrics = step(state, sft_batch)
    return new_state, metrics


@pytest.mark.parametrize("shape", [(8, 1, 1), (2, 2, 2), (1, 2, 4)])
def test_sharded_sft_step_equals_one_device(shape, tiny_config, tiny_params, sft_batch,
                                            single_sft):
    mesh, ps, state, step = _setup(tiny_config, tiny_params, shape, sft_loss(tiny_config))
    new_state, metrics = step(state, sft_batch)
    ref_state, ref_metrics = single_sft
    np.testing.assert_allclose(metrics["loss"], ref_metrics["loss"], atol=1e-5)
    np.testing.assert_allclose(metrics["grad_norm"], ref_metrics["grad_norm"], atol=1e-5)
    _assert_trees_close(_grads(new_state), _grads(ref_state), 1e-5, "grad")
    _assert_trees_close(new_state.params, ref_state.params, 1e-5, "param")
    # The state stays on its shardings: params split as the rules say.
    q = new_state.params["layers"]["attn"]["q"]["kernel"]
    assert q.sharding.is_equivalent_to(ps["layers"]["attn"]["q"]["kernel"], q.ndim)
    assert int(new_state.step) == 1


def _pref_batch(random_batch):
    rng = np.random.default_rng(1)
    chosen, rejected = random_batch(rng, 8, 12), random_batch(rng, 8, 10)
    return {**{f"chosen_{k}": v for k, v in chosen.items()},
            **{f"rejected_{k}": v for k, v in rejected.items()}}


def test_sharded_dpo_step_with_reference_params_equals_one_device(
        tiny_config, tiny_params, ref_params, random_batch):
    batch = _pref_batch(random_batch)
    loss = preference.preference_loss(tiny_config, preference.PreferenceConfig(beta=0.5))
    results = []
    for shape in [(1, 1, 1), (2, 2, 2)]:
        mesh, ps, state, step = _setup(tiny_config, tiny_params, shape, loss)
        results.append(step(state, batch, jax.device_put(ref_params, ps)))
    (s1, m1), (s8, m8) = results
    np.testing.assert_allclose(m8["loss"], m1["loss"], atol=1e-5)
    np.testing.assert_allclose(m8["reward_margin"], m1["reward_margin"], atol=1e-5)
    _assert_trees_close(_grads(s8), _grads(s1), 1e-5, "grad")
    _assert_trees_close(s8.params, s1.params, 1e-5, "param")


def test_bf16_compute_keeps_fp32_master_params(tiny_config, tiny_params, sft_batch, single_sft):
    cfg = tiny_config.replace(dtype="bfloat16")
    _, _, state, step = _setup(cfg, tiny_params, (2, 2, 2), sft_loss(cfg), key="sft-bf16")
    new_state, metrics = step(state, sft_batch)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(new_state.params))
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(new_state.opt_state[0].mu))
    np.testing.assert_allclose(metrics["loss"], single_sft[1]["loss"], rtol=2e-2)


def test_bad_batches_and_missing_reference_fail_before_compiling(
        tiny_config, tiny_params, sft_batch, random_batch):
    mesh, ps, state, step = _setup(tiny_config, tiny_params, (8, 1, 1), sft_loss(tiny_config))
    with pytest.raises(BatchError, match=r"missing key\(s\) \['loss_mask'\]"):
        step(state, {k: v for k, v in sft_batch.items() if k != "loss_mask"})
    with pytest.raises(BatchError, match="unexpected key"):
        step(state, {**sft_batch, "labels": sft_batch["tokens"]})
    with pytest.raises(BatchError, match="positions has shape"):
        step(state, {**sft_batch, "positions": sft_batch["positions"][:, :5]})
    with pytest.raises(ConfigError, match="not divisible by the data axes"):
        step(state, {k: v[:6] for k, v in sft_batch.items()})
    dpo = preference.preference_loss(tiny_config)
    tx = st.make_optimizer(OPTIM)
    dpo_step = make_train_step(dpo, tx, mesh, st.state_shardings(tx, state.params, ps, mesh))
    with pytest.raises(ReferenceError, match="needs a reference model"):
        dpo_step(state, _pref_batch(random_batch))
    # Nothing above consumed the state: it still trains.
    new_state, _ = step(state, sft_batch)
    assert int(new_state.step) == 1


def test_eval_step_matches_the_train_step_loss(tiny_config, tiny_params, sft_batch,
                                               single_sft):
    mesh = parallel.make_mesh(parallel.MeshConfig(2, 2, 2))
    ps = parallel.param_shardings(tiny_config, mesh)
    metrics = make_eval_step(sft_loss(tiny_config), mesh, ps)(
        jax.device_put(tiny_params, ps), sft_batch)
    np.testing.assert_allclose(metrics["loss"], single_sft[1]["loss"], atol=1e-5)
    assert tokens_in(sft_batch) == int((sft_batch["segment_ids"] > 0).sum())


def test_batches_are_checked_once_per_signature(tiny_config, tiny_params, sft_batch,
                                                monkeypatch):
    """Keys, shapes and dtypes decide validation and shardings: a second batch of the same
    signature is only placed; a failing batch is checked (and fails) every time."""
    from reasonjax.train import step as step_module

    checked = []
    real = step_module.check_step_inputs
    monkeypatch.setattr(step_module, "check_step_inputs",
                        lambda *a: (checked.append(a[1]), real(*a))[1])
    mesh, ps, state, _ = _setup(tiny_config, tiny_params, (8, 1, 1), sft_loss(tiny_config))
    tx = st.make_optimizer(OPTIM)
    step = make_train_step(sft_loss(tiny_config), tx, mesh,
                           st.state_shardings(tx, state.params, ps, mesh), donate=False)
    _, first = step(state, sft_batch)
    _, again = step(state, {k: v.copy() for k, v in sft_batch.items()})
    assert len(checked) == 1
    np.testing.assert_array_equal(first["loss"], again["loss"])
    short = {k: v for k, v in sft_batch.items() if k != "loss_mask"}
    for _ in range(2):
        with pytest.raises(BatchError, match="missing key"):
            step(state, short)
    assert len(checked) == 3
