"""Optimizer from config: schedules, weight-decay mask, clipping, frozen subtrees and
gradient accumulation."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reasonjax.config import ConfigError
from reasonjax.train.state import (OptimConfig, create_train_state, learning_rate,
                                   make_optimizer, make_schedule, trainable_mask)


def test_warmup_cosine_and_linear_schedules_by_hand():
    cos = make_schedule(OptimConfig(lr=1.0, warmup_steps=4, decay_steps=12, min_lr_ratio=0.1))
    lin = make_schedule(OptimConfig(lr=1.0, warmup_steps=4, decay_steps=12, min_lr_ratio=0.1,
                                    schedule="linear"))
    expected_cos = {0: 0.25, 3: 1.0, 4: 1.0, 6: 0.1 + 0.45 * (1 + math.cos(math.pi / 4)),
                    8: 0.55, 12: 0.1, 30: 0.1}
    for u, lr in expected_cos.items():
        np.testing.assert_allclose(cos(u), lr, rtol=1e-6, err_msg=f"cosine at {u}")
    for u, lr in {0: 0.25, 6: 0.775, 12: 0.1}.items():
        np.testing.assert_allclose(lin(u), lr, rtol=1e-6, err_msg=f"linear at {u}")
    const = make_schedule(OptimConfig(lr=2.0, schedule="constant"))
    np.testing.assert_allclose(const(100), 2.0)
    # With accumulation the schedule counts optimizer updates, not micro-batches.
    cfg = OptimConfig(lr=1.0, warmup_steps=4, decay_steps=12, accum_steps=2)
    np.testing.assert_allclose(learning_rate(cfg, 7), cos(3), rtol=1e-6)


PARAMS = {"layer": {"kernel": jnp.ones((2, 2)), "scale": jnp.ones((2,))},
          "value_head": {"kernel": jnp.ones((2, 1)), "bias": jnp.ones((1,))}}


def test_weight_decay_skips_norms_and_biases():
    tx = make_optimizer(OptimConfig(lr=0.1, decay_steps=1000, weight_decay=0.5, clip_norm=None,
                                    schedule="constant"))
    zeros = jax.tree.map(jnp.zeros_like, PARAMS)
    updates, _ = tx.update(zeros, tx.init(PARAMS), PARAMS)
    np.testing.assert_allclose(updates["layer"]["kernel"], -0.05)
    np.testing.assert_allclose(updates["value_head"]["kernel"], -0.05)
    np.testing.assert_allclose(updates["layer"]["scale"], 0.0)
    np.testing.assert_allclose(updates["value_head"]["bias"], 0.0)


def test_global_norm_clipping_feeds_clipped_gradients_to_adam():
    tx = make_optimizer(OptimConfig(decay_steps=1000, clip_norm=1.0, b1=0.9))
    grads = jax.tree.map(lambda p: 3.0 * jnp.ones_like(p), PARAMS)   # 9 entries: norm 9
    _, state = tx.update(grads, tx.init(PARAMS), PARAMS)
    mu = state[1][0].mu
    np.testing.assert_allclose(mu["layer"]["kernel"], 0.1 * 3.0 / 9.0,
                               rtol=1e-5)


def test_trainable_masks_and_frozen_params_get_no_update():
    assert trainable_mask(PARAMS, "value_head") == {
        "layer": {"kernel": False, "scale": False},
        "value_head": {"kernel": True, "bias": True}}
    assert trainable_mask(PARAMS, "all_but_value_head")["value_head"]["bias"] is False
    assert trainable_mask(PARAMS, "layer/k")["layer"] == {"kernel": True, "scale": False}
    with pytest.raises(ConfigError, match="matches no parameter"):
        trainable_mask(PARAMS, "nothing_here")
    tx = make_optimizer(OptimConfig(lr=0.1, decay_steps=1000, trainable="value_head"), PARAMS)
    grads = jax.tree.map(jnp.ones_like, PARAMS)
    updates, _ = tx.update(grads, tx.init(PARAMS), PARAMS)
    np.testing.assert_array_equal(updates["layer"]["kernel"], 0.0)
    assert float(jnp.abs(updates["value_head"]["kernel"]).min()) > 0
    with pytest.raises(ValueError, match="pass params"):
        make_optimizer(OptimConfig(decay_steps=1000, trainable="value_head"))


def test_accumulation_of_two_micro_batches_equals_one_big_batch():
    def loss(p, x):
        return jnp.mean((x @ p["w"]) ** 2)

    params = {"w": jnp.array([[1.0], [-2.0]])}
    x1, x2 = jnp.array([[1.0, 2.0], [0.5, 0.0]]), jnp.array([[3.0, 1.0], [-1.0, 1.0]])
    cfg = OptimConfig(lr=0.1, clip_norm=None, schedule="constant")
    big = make_optimizer(cfg)
    u, _ = big.update(jax.grad(loss)(params, jnp.concatenate([x1, x2])), big.init(params),
                      params)
    expected = params["w"] + u["w"]
    acc = make_optimizer(OptimConfig(lr=0.1, clip_norm=None, schedule="constant",
                                     accum_steps=2))
    state, p = acc.init(params), params
    for x in (x1, x2):
        u, state = acc.update(jax.grad(loss)(p, x), state, p)
        p = jax.tree.map(lambda a, b: a + b, p, u)
        if x is x1:
            np.testing.assert_array_equal(p["w"], params["w"])  # nothing applied yet
    np.testing.assert_allclose(p["w"], expected, rtol=1e-6)


def test_train_state_starts_at_step_zero_with_checkpointable_rng():
    tx = make_optimizer(OptimConfig(decay_steps=1000))
    state = create_train_state(PARAMS, tx, seed=3)
    assert int(state.step) == 0
    assert state.rng.dtype == jnp.uint32 and state.rng.shape == (2,)


def test_bad_optim_config_names_the_field():
    with pytest.raises(ConfigError, match="accum_steps"):
        OptimConfig(accum_steps=0)
    with pytest.raises(ConfigError, match="min_lr_ratio"):
        OptimConfig(min_lr_ratio=2.0)


def test_unset_decay_steps_span_the_run_and_are_never_guessed():
    cfg = OptimConfig(lr=1.0, warmup_steps=2, min_lr_ratio=0.0, accum_steps=2)
    assert cfg.for_steps(40).decay_steps == 20  # optimizer updates, after accumulation
    assert OptimConfig(decay_steps=7).for_steps(40).decay_steps == 7
    # The resolved cosine reaches min_lr_ratio exactly at the run's last update.
    assert float(make_schedule(cfg.for_steps(40))(20)) == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ConfigError, match="optim.decay_steps is unset for a cosine"):
        make_schedule(cfg)
    assert float(make_schedule(OptimConfig(lr=2.0, schedule="constant"))(5)) == 2.0
