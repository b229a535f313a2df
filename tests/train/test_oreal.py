"""OREAL's pieces against hand-computed numbers: pass rates and reshaped negative
rewards, the token RM's cumulative probabilities and token weights (threshold, top-k),
its outcome cross-entropy, and the policy loss that clones positive-advantage tokens."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reasonjax.train import oreal, rl
from reasonjax.train.logprobs import token_logprobs


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


def test_pass_rates_and_reshaped_rewards():
    correct = jnp.array([1, 0, 0, 0, 1, 1, 1, 1, 0, 1, 1, 0.0])
    np.testing.assert_allclose(oreal.pass_rates(correct, 4), [.25] * 4 + [1] * 4 + [.5] * 4)
    got = oreal.reshaped_rewards(correct, 4, negative_coef=0.5)
    # Group 0, p = 1/4: negatives -0.5 x (1/4) / (3/4) = -1/6; their mass 3 x 1/6 = 0.5 =
    # eta x the positives' mass 1. Group 1 (all correct) carries nothing. Group 2, p = 1/2:
    # negatives -0.5 x 1 = -0.5, mass 1 = eta x 2.
    want = [1, -1 / 6, -1 / 6, -1 / 6, 0, 0, 0, 0, -.5, 1, 1, -.5]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    np.testing.assert_array_equal(oreal.reshaped_rewards(jnp.zeros(4), 2), 0)
    with pytest.raises(ValueError, match="groups of 5"):
        oreal.pass_rates(correct, 5)


def test_cumulative_probs_average_the_completion_scores_so_far():
    scores = jnp.array([[5.0, 0.0, 2.0, 4.0]])
    mask = jnp.array([[0, 1, 1, 1.0]])
    # The prompt's 5 is ignored; running means 0, (0 + 2) / 2 = 1, (0 + 2 + 4) / 3 = 2.
    np.testing.assert_allclose(oreal.cumulative_probs(scores, mask),
                               [[0, 0.5, sigmoid(1), sigmoid(2)]], rtol=1e-6)


def test_threshold_weights():
    x = jnp.array([[0.5, 0.75, 1.0, 0.2, 0.9]])
    mask = jnp.array([[1, 1, 1, 1, 0.0]])
    # (x - 0.5) / 0.5 clipped to [0, 1]: 0, 0.5, 1, 0 (below), masked 0.
    np.testing.assert_allclose(oreal.threshold_weights(x, mask, 0.5), [[0, .5, 1, 0, 0]])
    # tau = 0.6: (0.75 - 0.6) / 0.4 = 0.375, (0.9 - 0.6) / 0.4 = 0.75 where unmasked.
    np.testing.assert_allclose(oreal.threshold_weights(x, jnp.ones((1, 5)), 0.6),
                               [[0, .375, 1, 0, .75]], rtol=1e-6)


def test_topk_weights_keep_and_minmax_scale_the_largest():
    x = jnp.array([[0.9, 0.2, 0.5, 0.7], [0.3, 0.3, 0.3, 0.8]])
    mask = jnp.array([[1, 1, 1, 1], [1, 1, 1, 0.0]])
    got = oreal.topk_weights(x, mask, ratio=0.75)
    # Row 0: k = 3 of 4 -> 0.9, 0.7, 0.5 kept, (x - 0.5) / 0.4 -> 1, 0.5, 0; 0.2 dropped.
    # Row 1: 3 tokens -> k = 2, two of the tied 0.3s (the first ones), weight 1 as they
    # tie; the masked 0.8 never counts.
    np.testing.assert_allclose(got, [[1, 0, 0, .5], [1, 1, 0, 0]], rtol=1e-6)
    # k = floor(0.25 x 3) = 0 keeps nothing.
    np.testing.assert_array_equal(oreal.topk_weights(x[1:], mask[1:], 0.25), 0)


def test_token_weights_score_positives_by_q_and_negatives_by_one_minus_q():
    scores = jnp.array([[0, 2.0, 0.0], [0, -2.0, -2.0]])
    mask = jnp.array([[0, 1, 1.0]] * 2)
    correct = jnp.array([1.0, 0.0])
    got = oreal.token_weights(scores, mask, correct, "threshold", 0.5)
    # 2 sigma(c) - 1 = tanh(c / 2). Row 0 (correct): running means 2, 1 -> tanh(1),
    # tanh(0.5). Row 1 (incorrect): means -2, -2 -> 1 - q = sigma(2) -> tanh(1) twice.
    np.testing.assert_allclose(got, [[0, math.tanh(1), math.tanh(.5)],
                                     [0, math.tanh(1), math.tanh(1)]], rtol=1e-5)
    np.testing.assert_array_equal(oreal.token_weights(scores, mask, correct, "none"), mask)
    # top-k with ratio 0.5 keeps one token per row (weight 1): the first, largest q.
    np.testing.assert_allclose(oreal.token_weights(scores, mask, correct, "topk", ratio=.5),
                               [[0, 1, 0], [0, 1, 0]])
    with pytest.raises(ValueError, match="token_weights"):
        oreal.token_weights(scores, mask, correct, "softmax")


def test_token_rm_loss_is_cross_entropy_on_the_mean_token_score(tiny_config, tiny_params,
                                                                 rows):
    batch = rows([[1, 2], [3, 4]], [[5, 6, 7], [8]], T=6)
    batch["desirable"] = np.array([1.0, 0.0], np.float32)
    params = dict(tiny_params)
    head = params["value_head"]
    # A constant head: w_t = 1 on every token, so each row's mean score is 1.
    params["value_head"] = {"kernel": jnp.zeros_like(head["kernel"]),
                            "bias": jnp.ones_like(head["bias"])}
    loss, metrics = jax.jit(oreal.token_rm_loss(tiny_config).fn)(
        params, batch, jax.random.key(0), None)
    # -log sigma(1) for the correct row, -log sigma(-1) for the incorrect one; the logit
    # 1 > 0 calls both correct: accuracy 1/2.
    want = (-math.log(sigmoid(1)) - math.log(sigmoid(-1))) / 2
    np.testing.assert_allclose(loss, want, rtol=1e-5)
    assert float(metrics["rm_accuracy"]) == 0.5


def test_clone_positive_clones_positive_tokens_and_keeps_the_objective_for_the_rest(
        tiny_config, tiny_params, rows, apply_fn):
    batch = rows([[1, 2, 3], [4, 5]], [[6, 7], [8, 9, 10, 11]], T=8)
    out = apply_fn(tiny_config, tiny_params, batch["tokens"], batch["positions"],
                   batch["segment_ids"])
    logps = np.asarray(token_logprobs(out.logits, jnp.asarray(batch["tokens"])))
    mask = batch["loss_mask"]
    batch.update(old_logps=logps, advantages=np.array([[1.5], [-0.5]], np.float32) * mask)
    cfg = rl.PolicyLossConfig(aggregation="token-mean", clone_positive=True)
    fn = jax.jit(rl.policy_gradient_loss(tiny_config, cfg).fn)
    loss, metrics = fn(tiny_params, batch, jax.random.key(0), None)
    # Row 0's 2 tokens: -1.5 log pi; row 1's 4 tokens at ratio 1: -A = 0.5; token mean /6.
    clone = float(np.sum(-1.5 * logps[0] * mask[0]))
    np.testing.assert_allclose(loss, (clone + 4 * 0.5) / 6, rtol=1e-5)
    np.testing.assert_allclose(metrics["clone_loss"], clone / 6, rtol=1e-5)
    # Cloned tokens read no ratio: moving their old log-probs changes nothing.
    moved = dict(batch, old_logps=logps - 3.0 * np.array([[1.0], [0.0]], np.float32))
    np.testing.assert_allclose(fn(tiny_params, moved, jax.random.key(0), None)[0], loss,
                               rtol=1e-6)
    # Without the flag the same batch is the plain PPO objective: (-1.5 x 2 + 0.5 x 4) / 6.
    plain = rl.PolicyLossConfig(aggregation="token-mean")
    np.testing.assert_allclose(jax.jit(rl.policy_gradient_loss(tiny_config, plain).fn)(
        tiny_params, batch, jax.random.key(0), None)[0], -1 / 6, rtol=1e-5)
