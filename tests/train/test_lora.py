"""LoRA: the merge against hand-computed kernels and against x W + s (x A) B, training that
moves only the adapters (optimizer state of their size), the frozen base as the DPO
reference, resume == uninterrupted, a bf16 base, the merged export's logits in
transformers, and the config paths."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from reasonjax.config import ConfigError, override
from reasonjax.models import Transformer, save_pretrained
from reasonjax.train import lora
from reasonjax.train.fit import FitConfig, fit, optimizer_state_bytes, setup
from reasonjax.train.preference import PreferenceConfig, preference_loss
from reasonjax.train.sft import SFTConfig, sft_loss
from reasonjax.train.state import OptimConfig

OPTIM = OptimConfig(lr=1e-2, schedule="constant", clip_norm=None)


def _random_adapters(base, cfg, seed=3):
    """init() with B drawn at random too, so the update is not zero."""
    trained = lora.init(base, cfg)
    rng = np.random.default_rng(seed)
    for ab in trained["lora"].values():
        ab["b"] = jnp.asarray(0.1 * rng.standard_normal(ab["b"].shape), jnp.float32)
    return trained


def _rows(n=16, T=12, seed=0):
    """n rows of a random 3-token prompt and 5-token completion, padded to T."""
    rng = np.random.default_rng(seed)
    tokens = np.zeros((n, T), np.int32)
    tokens[:, :8] = rng.integers(1, 32, (n, 8))
    positions = np.tile(np.arange(T, dtype=np.int32), (n, 1)) * (tokens > 0)
    loss_mask = np.zeros((n, T), np.float32)
    loss_mask[:, 3:8] = 1
    return {"tokens": tokens, "positions": positions,
            "segment_ids": (tokens > 0).astype(np.int32), "loss_mask": loss_mask}


def test_merge_adds_scaled_products_to_the_targets_only(tiny_params):
    cfg = lora.LoRAConfig(rank=2, alpha=4.0, targets=("q", "o"))
    fresh = lora.init(tiny_params, cfg)
    # B = 0 at init: the merged model is the base.
    same = lora.merge(tiny_params, fresh, cfg)
    for a, b in zip(jax.tree.leaves(same), jax.tree.leaves(tiny_params)):
        np.testing.assert_array_equal(a, b)
    trained = _random_adapters(tiny_params, cfg)
    merged = lora.merge(tiny_params, trained, cfg)
    for name in ("q", "o"):
        w = np.asarray(tiny_params["layers"]["attn"][name]["kernel"])
        a, b = (np.asarray(trained["lora"][name][k]) for k in "ab")
        for layer in range(w.shape[0]):  # scale alpha / rank = 2
            want = w[layer] + 2.0 * (a[layer] @ b[layer]).reshape(w.shape[1:])
            np.testing.assert_allclose(merged["layers"]["attn"][name]["kernel"][layer], want,
                                       rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(merged["layers"]["attn"]["k"]["kernel"],
                                  tiny_params["layers"]["attn"]["k"]["kernel"])
    # An unstacked kernel (the LM head, [D, V]) is one "layer".
    head = lora.LoRAConfig(rank=2, alpha=2.0, targets=("lm_head",))
    trained_head = _random_adapters(tiny_params, head)
    a, b = (np.asarray(trained_head["lora"]["lm_head"][k][0]) for k in "ab")
    np.testing.assert_allclose(lora.merge(tiny_params, trained_head, head)["lm_head"]["kernel"],
                               np.asarray(tiny_params["lm_head"]["kernel"]) + a @ b,
                               rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(merged["layers"]["mlp"]["up"]["kernel"],
                                  tiny_params["layers"]["mlp"]["up"]["kernel"])
    assert merged["value_head"] is trained["full"]["value_head"]
    # The base tree is not modified.
    assert tiny_params["layers"]["attn"]["q"]["kernel"] is not merged["layers"]["attn"]["q"][
        "kernel"]


def test_merged_kernel_equals_the_side_path(tiny_params):
    """x . merged W == x . W + s (x A) B, for a projection with one input axis (q) and one
    with two (o: heads x head_dim in)."""
    cfg = lora.LoRAConfig(rank=3, alpha=6.0, targets=("q", "o"))
    trained = _random_adapters(tiny_params, cfg)
    merged = lora.merge(tiny_params, trained, cfg)
    rng = np.random.default_rng(0)
    for name in ("q", "o"):
        w = np.asarray(tiny_params["layers"]["attn"][name]["kernel"][1])
        n_in = lora.TARGETS[name][1]
        x = rng.standard_normal((5,) + w.shape[:n_in]).astype(np.float32)
        x2 = x.reshape(5, -1)
        a, b = (np.asarray(trained["lora"][name][k][1]) for k in "ab")
        side = x2 @ w.reshape(x2.shape[1], -1) + 2.0 * (x2 @ a) @ b
        got = x2 @ np.asarray(merged["layers"]["attn"][name]["kernel"][1]).reshape(
            x2.shape[1], -1)
        np.testing.assert_allclose(got, side, rtol=1e-5, atol=1e-6)


def test_lora_sft_trains_only_the_adapters(tiny_config, tiny_params):
    cfg = lora.LoRAConfig(rank=2)
    s = setup(tiny_config, tiny_params, OPTIM, lora=cfg)
    full = setup(tiny_config, tiny_params, OPTIM)
    lora_bytes = sum(x.nbytes for x in jax.tree.leaves(s.state.opt_state))
    full_bytes = sum(x.nbytes for x in jax.tree.leaves(full.state.opt_state))
    # Adam's two moments of the adapters and the value head only.
    assert lora_bytes == 2 * 4 * lora.count(s.state.params) + 8  # + two step counters
    assert lora_bytes < 0.5 * full_bytes
    # The shapes-only count is what the states hold.
    assert optimizer_state_bytes(tiny_config, OPTIM, cfg) == lora_bytes
    assert optimizer_state_bytes(tiny_config, OPTIM) == full_bytes
    rows = _rows()
    loss = sft_loss(tiny_config, SFTConfig())
    before = float(jax.jit(loss.fn)(tiny_params, rows, jax.random.key(0), None)[0])
    params, metrics = fit(loss, tiny_config, tiny_params, rows,
                          FitConfig(steps=15, batch_size=16, optim=OPTIM, lora=cfg,
                                    progress=False))
    assert metrics["loss"] < before - 0.05, (before, metrics)
    changed = jax.tree.map(lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))),
                           params, tiny_params)
    flat = {"/".join(str(k.key) for k in path): v
            for path, v in jax.tree_util.tree_flatten_with_path(changed)[0]}
    assert {k for k, v in flat.items() if v} == {
        f"layers/{m}/{t}/kernel" for m, ts in (("attn", "qkvo"), ("mlp", ("gate", "up",
                                                                         "down")))
        for t in ts}


def test_lora_plus_scales_b_updates_only():
    """LoRA+ (b_lr_ratio): B's updates are that multiple of plain LoRA's; A's and the
    whole-trained modules' are unchanged (by hand, with SGD at lr 0.1 and unit grads)."""
    tree = {"lora": {"q": {"a": jnp.ones((2, 3)), "b": jnp.ones((3, 2))}},
            "full": {"value_head": {"kernel": jnp.ones((4,))}}}
    grads = jax.tree.map(jnp.ones_like, tree)
    tx = lora.optimizer(optax.sgd(0.1), lora.LoRAConfig(b_lr_ratio=4.0))
    updates, _ = tx.update(grads, tx.init(tree), tree)
    np.testing.assert_allclose(updates["lora"]["q"]["a"], -0.1)
    np.testing.assert_allclose(updates["lora"]["q"]["b"], -0.4)
    np.testing.assert_allclose(updates["full"]["value_head"]["kernel"], -0.1)
    plain = optax.sgd(0.1)
    assert lora.optimizer(plain, lora.LoRAConfig()) is plain  # ratio 1: plain LoRA
    with pytest.raises(ConfigError, match="b_lr_ratio"):
        lora.LoRAConfig(b_lr_ratio=0.0)


def test_lora_plus_first_adam_step_moves_b_ratio_times_as_far(tiny_config, tiny_params):
    """Through fit's setup and train step: after one Adam step from B = 0 (where A's
    gradient is 0), B under b_lr_ratio=4 is 4x B under plain LoRA, so each merged kernel
    moves 4x as far; the optimizer state is the same size."""
    rows = _rows()
    loss = sft_loss(tiny_config, SFTConfig())
    moved, sizes = {}, {}
    for ratio in (1.0, 4.0):
        cfg = lora.LoRAConfig(rank=2, b_lr_ratio=ratio)
        sizes[ratio] = optimizer_state_bytes(tiny_config, OPTIM, cfg)
        params, _ = fit(loss, tiny_config, tiny_params, rows,
                        FitConfig(steps=1, batch_size=16, optim=OPTIM, lora=cfg,
                                  progress=False))
        moved[ratio] = jax.tree.map(lambda a, b: np.asarray(a) - np.asarray(b), params,
                                    tiny_params)
    assert sizes[1.0] == sizes[4.0]
    q = moved[1.0]["layers"]["attn"]["q"]["kernel"]
    assert np.abs(q).max() > 1e-4
    jax.tree.map(lambda plus, plain: np.testing.assert_allclose(plus, 4.0 * plain,
                                                                atol=2e-6),
                 moved[4.0], moved[1.0])


def test_lora_dpo_uses_the_frozen_base_as_its_reference(tiny_config, tiny_params, ref_params,
                                                       rows):
    sequence_rows = rows
    chosen = sequence_rows([[1, 2, 3], [4, 5, 6]] * 4, [[7, 8], [9, 10, 11]] * 4, T=10)
    rejected = sequence_rows([[1, 2, 3], [4, 5, 6]] * 4, [[12, 13, 14], [15]] * 4, T=10)
    rows = {**{f"chosen_{k}": v for k, v in chosen.items()},
            **{f"rejected_{k}": v for k, v in rejected.items()}}
    loss = preference_loss(tiny_config, PreferenceConfig(beta=0.1))
    cfg = FitConfig(steps=1, batch_size=8, optim=OptimConfig(lr=0.0, schedule="constant"),
                    lora=lora.LoRAConfig(rank=2), progress=False)
    _, metrics = fit(loss, tiny_config, tiny_params, rows, cfg, ref_params=tiny_params)
    # The first step sees policy == reference: the DPO loss is exactly log 2.
    np.testing.assert_allclose(metrics["loss"], math.log(2), rtol=1e-6)
    with pytest.raises(ConfigError, match="reference of a LoRA run is its frozen base"):
        fit(loss, tiny_config, tiny_params, rows, cfg, ref_params=ref_params)


def test_lora_resume_equals_an_uninterrupted_run(tiny_config, tiny_params, tmp_path):
    rows = _rows(seed=1)
    loss = sft_loss(tiny_config, SFTConfig())

    def run(steps, run_dir):
        return fit(loss, tiny_config, tiny_params, rows,
                   FitConfig(steps=steps, batch_size=8, optim=OPTIM, checkpoint_every=2,
                             lora=lora.LoRAConfig(rank=2), progress=False),
                   run_dir=str(run_dir))[0]

    whole = run(4, tmp_path / "whole")
    run(2, tmp_path / "split")
    resumed = run(4, tmp_path / "split")
    for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(resumed)):
        np.testing.assert_array_equal(a, b)
    # The run dir's adapters are the adapters alone, and they rebuild the model.
    trained, cfg = lora.load_adapters(tmp_path / "split" / lora.ADAPTERS_DIR)
    assert set(trained) == {"lora", "full"} and cfg.rank == 2
    assert lora.count(trained) < 0.5 * lora.count(tiny_params)
    rebuilt = lora.merge(tiny_params, trained, cfg)
    for a, b in zip(jax.tree.leaves(rebuilt), jax.tree.leaves(whole)):
        np.testing.assert_array_equal(a, b)


def test_bfloat16_base(tiny_config, tiny_params):
    cfg = lora.LoRAConfig(rank=2, base_dtype="bfloat16")
    s = setup(tiny_config, tiny_params, OPTIM, lora=cfg)
    assert {x.dtype for x in jax.tree.leaves(s.frozen)} == {jnp.dtype(jnp.bfloat16)}
    merged = s.model_params(s.state.params)
    assert merged["layers"]["attn"]["q"]["kernel"].dtype == jnp.float32
    # The bf16 base differs from the fp32 one by rounding only.
    np.testing.assert_allclose(merged["layers"]["attn"]["q"]["kernel"],
                               tiny_params["layers"]["attn"]["q"]["kernel"], rtol=1e-2,
                               atol=1e-3)
    _, metrics = fit(sft_loss(tiny_config, SFTConfig()), tiny_config, tiny_params, _rows(),
                     FitConfig(steps=2, batch_size=8, optim=OPTIM, lora=cfg, progress=False))
    assert np.isfinite(metrics["loss"])


def test_merged_export_loads_in_transformers_with_our_logits(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from reasonjax.models import ModelConfig
    from reasonjax import parallel

    config = ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
                         d_ff=48, max_seq_len=32)
    base = parallel.init_params(config, jax.random.key(0))
    cfg = lora.LoRAConfig(rank=4)
    merged = lora.merge(base, _random_adapters(base, cfg), cfg)
    save_pretrained(config, merged, tmp_path / "hf")
    model = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "hf").eval()
    tokens = np.random.default_rng(0).integers(0, 64, (2, 10))
    with torch.no_grad():
        ref = model(input_ids=torch.tensor(tokens)).logits.numpy()
    ours = Transformer(config).apply({"params": merged}, jnp.asarray(tokens)).logits
    base_logits = Transformer(config).apply({"params": base}, jnp.asarray(tokens)).logits
    assert np.abs(np.asarray(ours) - np.asarray(base_logits)).max() > 1e-2  # adapted
    assert np.abs(np.asarray(ours) - ref).max() < 1e-4


def test_lora_config_paths():
    got = override(FitConfig(), ["lora.rank=4", "lora.targets=[q, v]"])
    assert got.lora == lora.LoRAConfig(rank=4, targets=("q", "v"))
    assert override(got, ["lora.alpha=8"]).lora.alpha == 8.0
    with pytest.raises(ConfigError, match="lora.targets"):
        lora.LoRAConfig(targets=("q_proj",))
    with pytest.raises(ConfigError, match="rank"):
        override(FitConfig(), ["lora.rank=0"])
