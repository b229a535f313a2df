"""Value / PRM losses (hard BCE, soft BCE, MSE, OVM targets, AlphaMath joint) against
hand values and numpy on the model's heads."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reasonjax.train import value as V
from reasonjax.train.logprobs import masked_mean, token_logprobs


def test_bce_and_mse_match_hand_values_and_skip_unmasked_positions():
    head = jnp.array([[0.0, 2.0, -1.0, 5.0]])
    targets = jnp.array([[1.0, 1.0, 0.25, 0.0]])
    mask = jnp.array([[0.0, 1.0, 1.0, 0.0]])   # position 0 and 3 carry no target
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    bce = [-math.log(sig(2.0)), -(0.25 * math.log(sig(-1.0)) + 0.75 * math.log(1 - sig(-1.0)))]
    np.testing.assert_allclose(V.value_bce(head, targets, mask), np.mean(bce), rtol=1e-6)
    mse = ((math.tanh(2.0) - 1.0) ** 2 + (math.tanh(-1.0) - 0.25) ** 2) / 2
    np.testing.assert_allclose(V.value_mse(jnp.tanh(head), targets, mask), mse, rtol=1e-6)
    # d BCE / d logit = sigmoid(logit) - target (per position, / number of targets)
    g = jax.grad(lambda h: V.value_bce(h, targets, mask))(head)
    np.testing.assert_allclose(g, [[0.0, (sig(2.0) - 1) / 2, (sig(-1.0) - 0.25) / 2, 0.0]],
                               rtol=1e-5)


def test_ovm_targets_label_every_solution_prefix_with_the_outcome():
    loss_mask = jnp.array([[0, 0, 1, 1, 0], [0, 1, 1, 1, 1]], jnp.float32)
    mask, targets = V.ovm_targets(loss_mask, jnp.array([1.0, 0.0]))
    np.testing.assert_array_equal(mask, loss_mask)
    np.testing.assert_array_equal(targets, [[0, 0, 1, 1, 0], [0, 0, 0, 0, 0]])


def _value_batch(rows):
    batch = rows([[1, 2, 3], [4, 5]], [[6, 7, 8], [9, 10, 11, 12]], T=8)
    value_mask = np.zeros((2, 8), np.float32)
    value_mask[0, [3, 5]] = 1          # two step ends in row 0
    value_mask[1, [4, 5]] = 1
    batch["value_mask"] = value_mask
    batch["value_targets"] = np.array([[0, 0, 0, 0.6, 0, 1.0, 0, 0],
                                       [0, 0, 0, 0, -0.5, 0.2, 0, 0]], np.float32)
    return batch


def test_value_and_joint_losses_on_model(tiny_config, tiny_params, rows, apply_fn):
    batch = _value_batch(rows)
    out = apply_fn(tiny_config, tiny_params, batch["tokens"], batch["positions"],
                   batch["segment_ids"])
    values = np.asarray(out.values)
    m, y = batch["value_mask"], batch["value_targets"]
    mse_tanh = np.sum((np.tanh(values) - y) ** 2 * m) / m.sum()
    loss, metrics = jax.jit(V.value_loss(tiny_config, V.ValueConfig("mse", "tanh")).fn)(
        tiny_params, batch, jax.random.key(0), None)
    np.testing.assert_allclose(loss, mse_tanh, rtol=1e-5)
    assert float(metrics["value_targets"]) == 4
    # AlphaMath: SFT on the loss-masked tokens + beta * MSE(tanh(v), Q), one set of params.
    joint_fn = V.joint_loss(tiny_config, V.JointConfig(value_coef=0.5)).fn
    (joint, jm), g = jax.jit(jax.value_and_grad(
        lambda p: joint_fn(p, batch, None, None), has_aux=True))(tiny_params)
    sft = -masked_mean(token_logprobs(out.logits, jnp.asarray(batch["tokens"])),
                       jnp.asarray(batch["loss_mask"]))
    np.testing.assert_allclose(joint, sft + 0.5 * mse_tanh, rtol=1e-5)
    np.testing.assert_allclose(jm["value_loss"], mse_tanh, rtol=1e-5)
    # Gradients of the joint loss reach both heads.
    assert float(jnp.abs(g["value_head"]["kernel"]).sum()) > 0
    assert float(jnp.abs(g["lm_head"]["kernel"]).sum()) > 0


def test_bce_requires_the_sigmoid_transform(tiny_config):
    with pytest.raises(ValueError, match="transform"):
        V.value_loss(tiny_config, V.ValueConfig("bce", "tanh"))
