"""RL pieces against hand-computed values: advantages (GRPO, Dr. GRPO, RLOO, every
baseline x scale, GAE, PRIME), DAPO's overlong penalty and group filter, KL estimators,
PRM shaping, the four aggregations, the PPO (clip-higher), GSPO and CISPO objectives and
their gradients, and the policy-gradient loss on the model."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reasonjax.train import rl
from reasonjax.train.logprobs import sequence_logprobs, shift_values, token_logprobs

R = jnp.array([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0])


def test_group_advantages_grpo_and_dr_grpo():
    s = math.sqrt(0.1875)
    np.testing.assert_allclose(rl.group_advantages(R, 4),
                               [1, -1, -1, 1, .25 / s, .25 / s, .25 / s, -.75 / s], rtol=1e-5)
    np.testing.assert_allclose(rl.group_advantages(R, 4, scale_by_std=False),
                               [.5, -.5, -.5, .5, .25, .25, .25, -.75], rtol=1e-6)


def test_a_group_of_equal_rewards_gets_exactly_zero_advantage():
    """float32 rewards of 0.1 (ReFT's partial reward) x 16: the group mean is one rounding
    step off, which scaling by a tiny std turned into -7.4e-3 for every member."""
    for value, n in ((0.1, 16), (0.7, 16), (0.3, 3)):
        rewards = jnp.concatenate([jnp.full(n, value, jnp.float32),
                                   jnp.arange(n, dtype=jnp.float32)])
        for scale in (True, False):
            adv = np.asarray(rl.group_advantages(rewards, n, scale_by_std=scale))
            assert (adv[:n] == 0.0).all(), (value, n, scale, adv[:n])
            assert (adv[n:] != 0.0).any()


def test_tied_groups_get_exactly_zero_under_every_baseline_and_scale():
    for value in (0.1, 0.7):
        rewards = jnp.full(16, value, jnp.float32)
        for baseline in ("mean", "leave_one_out"):
            for scale in ("group", "batch", "none"):
                adv = np.asarray(rl.outcome_advantages(rewards, 16, baseline, scale))
                assert (adv == 0.0).all(), (value, baseline, scale, adv)


def test_outcome_advantages_every_baseline_and_scale():
    r = jnp.array([1.0, 0, 0, 0, 1, 1, 0, 1])
    s = math.sqrt(0.1875)  # the population std of both groups
    mean = [.75, -.25, -.25, -.25, .25, .25, -.75, .25]
    loo = [1, -1 / 3, -1 / 3, -1 / 3, 1 / 3, 1 / 3, -1, 1 / 3]
    for baseline, centred in (("mean", mean), ("leave_one_out", loo)):
        for scale, div in (("none", 1.0), ("batch", 1.0), ("group", s)):
            np.testing.assert_allclose(rl.outcome_advantages(r, 4, baseline, scale),
                                       np.asarray(centred) / div, rtol=1e-5)
    np.testing.assert_allclose(rl.outcome_advantages(r, 4, "none", "group"), r / s,
                               rtol=1e-5)
    np.testing.assert_array_equal(rl.outcome_advantages(r, 4, "none", "none"), r)
    with pytest.raises(ValueError, match="baseline must be"):
        rl.outcome_advantages(r, 4, "median")


def test_dapo_overlong_penalty_and_informative_groups():
    lengths = jnp.array([3, 6, 7, 9, 10])
    # Budget 10, buffer 4: free up to 6 tokens, then -1/4 per token down to -1 at 10.
    np.testing.assert_allclose(rl.overlong_penalty(lengths, 10, 4),
                               [0, 0, -.25, -.75, -1.0], atol=1e-7)
    np.testing.assert_allclose(rl.overlong_penalty(lengths, 10, 4, penalty=0.5),
                               [0, 0, -.125, -.375, -.5], atol=1e-7)
    np.testing.assert_array_equal(rl.overlong_penalty(lengths, 10, 0), np.zeros(5))
    rewards = jnp.array([1, 1, 0, 1, 0, 0, .1, .1], jnp.float32)
    np.testing.assert_array_equal(rl.informative_groups(rewards, 2),
                                  [False, True, False, False])


def test_leave_one_out_advantages():
    np.testing.assert_allclose(rl.leave_one_out_advantages(R, 4),
                               [2 / 3, -2 / 3, -2 / 3, 2 / 3, 1 / 3, 1 / 3, 1 / 3, -1],
                               rtol=1e-6)


def test_gae_by_hand_with_prompt_and_padding():
    rewards = jnp.array([[0, 0, 0, 1.0], [0, 2.0, 0, 0]])
    values = jnp.array([[0, .5, .6, .8], [.1, .3, 9, 9]])
    mask = jnp.array([[0, 1, 1, 1.0], [1, 1, 0, 0]])
    adv, ret = rl.gae(rewards, values, mask, gamma=0.9, lam=0.8)
    a1 = 0.04 + 0.72 * 0.264
    np.testing.assert_allclose(adv, [[0, a1, .264, .2], [.17 + .72 * 1.7, 1.7, 0, 0]],
                               rtol=1e-5)
    np.testing.assert_allclose(ret, [[0, a1 + .5, .864, 1.0], [1.494, 2.0, 0, 0]], rtol=1e-5)
    # lam = 1, gamma = 1: advantages are returns-to-go minus values.
    adv1, _ = rl.gae(rewards, values, mask, 1.0, 1.0)
    np.testing.assert_allclose(adv1, rl.discounted_returns(rewards, mask) - values * mask,
                               rtol=1e-6)


def test_discounted_returns_and_rewards_at_end():
    np.testing.assert_allclose(
        rl.discounted_returns(jnp.array([[1.0, 2, 3, 7]]), jnp.array([[1.0, 1, 1, 0]]), 0.5),
        [[2.75, 3.5, 3.0, 0.0]])
    np.testing.assert_array_equal(
        rl.rewards_at_end(jnp.array([2.0, 3.0]), jnp.array([[0, 1, 1, 0], [0, 0, 0, 0.0]])),
        [[0, 0, 2, 0], [0, 0, 0, 0]])


def test_kl_estimators():
    logp, ref = jnp.array([-1.0]), jnp.array([-1.5])
    np.testing.assert_allclose(rl.kl_penalty(logp, ref, "k1"), [0.5])
    np.testing.assert_allclose(rl.kl_penalty(logp, ref, "k2"), [0.125])
    np.testing.assert_allclose(rl.kl_penalty(logp, ref, "k3"), [math.exp(-0.5) - 0.5],
                               rtol=1e-6)


def test_prime_process_rewards_and_advantages():
    phi = jnp.array([[0, -1.0, -2.0]])
    ref = jnp.array([[0, -1.4, -2.8]])
    np.testing.assert_allclose(
        rl.prime_process_rewards(phi, ref, jnp.array([[0, 1.0, 1]]), 0.5), [[0, .2, .4]],
        rtol=1e-6)
    proc = jnp.array([[0, .2, .4], [0, -.2, 0]])
    mask = jnp.array([[0, 1, 1.0], [0, 1, 1]])
    adv = rl.prime_advantages(proc, jnp.array([1.0, 0.0]), mask, group_size=2)
    # process: row means .3 / -.1, leave-one-out baselines -.1 / .3 -> [.3, .5], [-.5, -.3];
    # outcome: [1, 0] -> leave-one-out [1, -1] on the last token; returns-to-go.
    np.testing.assert_allclose(adv, [[0, 1.8, 1.5], [0, -1.8, -1.3]], rtol=1e-5)
    # gamma < 1 discounts the process term only; the outcome advantage reaches every
    # token whole (PRIME eq. 5): row 0 process returns .3 + .9 * .5 = .75 and .5.
    adv = rl.prime_advantages(proc, jnp.array([1.0, 0.0]), mask, group_size=2, gamma=0.9)
    np.testing.assert_allclose(adv, [[0, .75 + 1, .5 + 1], [0, -.77 - 1, -.3 - 1]],
                               rtol=1e-5)


def test_prm_shaping_clip_and_delta():
    scores = jnp.array([[0, .9, 0, .4, 0, .7]])
    ends = jnp.array([[0, 1, 0, 1, 0, 1.0]])
    np.testing.assert_allclose(rl.shape_prm_rewards(scores, ends, "clip", eta=0.5),
                               [[0, 0, 0, -.1, 0, 0]], atol=1e-6)
    delta = rl.shape_prm_rewards(scores, ends, "delta")
    np.testing.assert_allclose(delta, [[0, .5, 0, -.3, 0, .7]], atol=1e-6)
    # The return from each step telescopes to that step's own score.
    np.testing.assert_allclose(rl.discounted_returns(delta, jnp.ones_like(delta)) * ends,
                               scores * ends, atol=1e-6)
    np.testing.assert_allclose(rl.shape_prm_rewards(scores, ends, "clip_delta", eta=0.5),
                               [[0, .1, 0, -.1, 0, 0]], atol=1e-6)


def test_aggregations():
    x = jnp.array([[1.0, 2, 3, 0], [4, 0, 0, 0]])
    m = jnp.array([[1.0, 1, 1, 0], [1, 0, 0, 0]])
    np.testing.assert_allclose(rl.aggregate(x, m, "token-mean"), 2.5)       # 10 / 4
    np.testing.assert_allclose(rl.aggregate(x, m, "seq-mean-token-mean"), 3.0)  # (2 + 4) / 2
    np.testing.assert_allclose(rl.aggregate(x, m, "seq-mean-token-sum"), 5.0)   # (6 + 4) / 2
    np.testing.assert_allclose(rl.aggregate(x, m, "seq-mean-token-sum-norm"), 1.25)
    np.testing.assert_allclose(rl.aggregate(x, m, "seq-mean-token-sum-norm", max_tokens=10),
                               0.5)
    # An empty row counts in none of the sequence means.
    x3, m3 = jnp.concatenate([x, x[:1]]), jnp.concatenate([m, jnp.zeros((1, 4))])
    np.testing.assert_allclose(rl.aggregate(x3, m3, "seq-mean-token-sum"), 5.0)
    with pytest.raises(ValueError, match="aggregation must be one of"):
        rl.aggregate(x, m, "sequence")


def test_clipped_objective_values_and_gradients():
    old = jnp.zeros(3)
    logp = jnp.log(jnp.array([1.5, 1.5, 0.5]))
    adv = jnp.array([1.0, -1.0, 1.0])
    loss, clipped = rl.clipped_policy_loss(logp, old, adv, 0.2)
    np.testing.assert_allclose(loss, [-1.2, 1.5, -0.5], rtol=1e-6)
    np.testing.assert_array_equal(clipped, [1, 0, 0])
    g = jax.grad(lambda lp: rl.clipped_policy_loss(lp, old, adv, 0.2)[0].sum())(logp)
    # d/dlogp (-A rho) = -A rho where unclipped; 0 where the clip is active.
    np.testing.assert_allclose(g, [0.0, 1.5, -0.5], rtol=1e-6)
    # Critic: the larger of the unclipped and clipped squared errors.
    v = rl.clipped_value_loss(jnp.array([[1.0, 0.0]]), jnp.array([[0.0, 0.0]]),
                              jnp.array([[0.5, 1.0]]), jnp.array([[1.0, 1.0]]), 0.2)
    np.testing.assert_allclose(v, 0.5 * (max(0.25, 0.09) + max(1.0, 1.0)) / 2, rtol=1e-6)


def test_clip_higher_raises_only_the_upper_bound():
    old = jnp.zeros(3)
    logp = jnp.log(jnp.array([1.5, 0.5, 1.25]))
    adv = jnp.array([1.0, -1.0, 1.0])
    loss, clipped = rl.clipped_policy_loss(logp, old, adv, 0.2, 0.28)
    # 1.5 > 1.28: -1.28 (clipped); 0.5 < 0.8 with A < 0: 0.8 (clipped); 1.25 inside.
    np.testing.assert_allclose(loss, [-1.28, 0.8, -1.25], rtol=1e-6)
    np.testing.assert_array_equal(clipped, [1, 1, 0])
    g = jax.grad(lambda lp: rl.clipped_policy_loss(lp, old, adv, 0.2, 0.28)[0].sum())(logp)
    np.testing.assert_allclose(g, [0, 0, -1.25], rtol=1e-6)
    # Symmetric 0.2 clips the third token too.
    np.testing.assert_allclose(rl.clipped_policy_loss(logp, old, adv, 0.2)[0][2], -1.2,
                               rtol=1e-6)


def test_gspo_clips_whole_sequences_and_has_the_sequence_gradient():
    old = jnp.zeros((3, 3))
    log_ratio = jnp.array([[0.2, 0.0, 0], [0.5, 0.3, 0.1], [-0.5, 0, 0]])
    mask = jnp.array([[1.0, 1, 0], [1, 1, 1], [1, 0, 0]])
    adv = jnp.array([1.0, 1.0, -1.0])[:, None] * mask
    loss, clipped = rl.gspo_policy_loss(log_ratio, old, adv, mask, 0.2, 0.2)
    # Row 0: s = exp(0.1) inside [0.8, 1.2]; row 1: s = exp(0.3) = 1.35 -> 1.2 with A > 0;
    # row 2: s = exp(-0.5) = 0.61 -> 0.8 with A < 0. Every token carries its row's value.
    want = np.array([-math.exp(0.1), -1.2, 0.8])[:, None] * np.ones(3)
    np.testing.assert_allclose(loss * mask, want * mask, rtol=1e-6)
    np.testing.assert_array_equal(clipped * mask, [[0, 0, 0], [1, 1, 1], [1, 0, 0]])

    def token_form(lp):
        return rl.aggregate(rl.gspo_policy_loss(lp, old, adv, mask, 0.2, 0.2)[0], mask,
                            "seq-mean-token-mean")

    def sequence_form(lp):  # GSPO's objective written on whole sequences (rows 0 only:
        s0 = jnp.exp(jnp.sum(lp[0] * mask[0]) / 2)  # rows 1-2 are clipped: no gradient)
        return -s0 / 3

    np.testing.assert_allclose(jax.grad(token_form)(log_ratio),
                               jax.grad(sequence_form)(log_ratio) * mask, rtol=1e-6)
    # d/dlogp_t of -s0 / 3 on row 0's two tokens: -exp(0.1) / 2 / 3.
    np.testing.assert_allclose(jax.grad(token_form)(log_ratio)[0, :2],
                               [-math.exp(0.1) / 6] * 2, rtol=1e-6)


def test_cispo_keeps_a_gradient_on_clipped_tokens():
    old = jnp.zeros(3)
    logp = jnp.log(jnp.array([1.5, 0.5, 3.0]))
    adv = jnp.array([1.0, -1.0, 1.0])
    loss, clipped = rl.cispo_policy_loss(logp, old, adv, 1.0, 0.28)
    # Weights clip(rho, 0, 1.28) = [1.28, 0.5, 1.28]; loss -w A log pi.
    np.testing.assert_allclose(loss, [-1.28 * math.log(1.5), 0.5 * math.log(0.5),
                                      -1.28 * math.log(3.0)], rtol=1e-6)
    np.testing.assert_array_equal(clipped, [1, 0, 1])
    g = jax.grad(lambda lp: rl.cispo_policy_loss(lp, old, adv, 1.0, 0.28)[0].sum())(logp)
    np.testing.assert_allclose(g, [-1.28, 0.5, -1.28], rtol=1e-6)
    # A lower bound of 0.2 lifts the second weight to 0.8.
    g2 = jax.grad(lambda lp: rl.cispo_policy_loss(lp, old, adv, 0.2, 0.28)[0].sum())(logp)
    np.testing.assert_allclose(g2, [-1.28, 0.8, -1.28], rtol=1e-6)


def test_policy_gradient_loss_on_model(tiny_config, tiny_params, ref_params, rows, apply_fn):
    batch = rows([[1, 2, 3], [4, 5]], [[6, 7], [8, 9, 10, 11]], T=8)
    out = apply_fn(tiny_config, tiny_params, batch["tokens"], batch["positions"],
                   batch["segment_ids"])
    logps = token_logprobs(out.logits, jnp.asarray(batch["tokens"]))
    mask = batch["loss_mask"]
    adv = np.array([[1.5], [-0.5]], np.float32) * mask
    values = shift_values(out.values)
    batch.update(old_logps=np.asarray(logps), advantages=adv,
                 ref_logps=np.asarray(logps) - 0.5, old_values=np.asarray(values),
                 returns=np.asarray(values) + 1.0)
    cfg = rl.PolicyLossConfig(kl_coef=0.1, kl_estimator="k3", value_coef=0.3)
    loss, metrics = jax.jit(rl.policy_gradient_loss(tiny_config, cfg).fn)(
        tiny_params, batch, jax.random.key(0), None)
    # ratio 1: per-token -A; sequence mean over rows (-1.5, 0.5) -> -0.5; k3 KL of a 0.5
    # log-ratio on every token; critic 0.5 * 1^2.
    k3 = math.exp(-0.5) - 0.5
    np.testing.assert_allclose(metrics["policy_loss"], -0.5, rtol=1e-5)
    np.testing.assert_allclose(metrics["kl_ref"], k3, rtol=1e-5)
    np.testing.assert_allclose(metrics["value_loss"], 0.5, rtol=1e-5)
    np.testing.assert_allclose(loss, -0.5 + 0.1 * k3 + 0.3 * 0.5, rtol=1e-5)
    # The reference may come as params instead of ref_logps: KL(pi || ref) from a forward.
    no_ref = {k: v for k, v in batch.items() if k != "ref_logps"}
    _, m2 = jax.jit(rl.policy_gradient_loss(tiny_config, cfg).fn)(
        tiny_params, no_ref, jax.random.key(0), ref_params)
    ref_out = apply_fn(tiny_config, ref_params, batch["tokens"], batch["positions"],
                       batch["segment_ids"])
    ref_lp = token_logprobs(ref_out.logits, jnp.asarray(batch["tokens"]))
    expected = (jnp.sum(rl.kl_penalty(logps, ref_lp, "k3") * mask) / mask.sum())
    np.testing.assert_allclose(m2["kl_ref"], expected, rtol=1e-5)


@pytest.mark.parametrize("objective", ["ppo", "gspo", "cispo"])
def test_on_policy_loss_without_old_logps_is_the_loss_with_them(tiny_config, tiny_params,
                                                                  rows, apply_fn, objective):
    """A rollout batch without old log-probs (an on-policy update, RLConfig.rollout_forward
    False) gives the loss, metrics and gradient of the batch holding the policy's own."""
    batch = rows([[1, 2, 3], [4, 5]], [[6, 7], [8, 9, 10, 11]], T=8)
    out = apply_fn(tiny_config, tiny_params, batch["tokens"], batch["positions"],
                   batch["segment_ids"])
    logps = np.asarray(token_logprobs(out.logits, jnp.asarray(batch["tokens"])))
    batch["advantages"] = np.array([[1.5], [-0.5]], np.float32) * batch["loss_mask"]
    fn = rl.policy_gradient_loss(tiny_config, rl.PolicyLossConfig(objective=objective)).fn
    grad = jax.jit(jax.grad(lambda p, b: fn(p, b, jax.random.key(0), None)[0]))
    loss = jax.jit(lambda p, b: fn(p, b, jax.random.key(0), None))
    (with_old, m_old), (without, m_new) = (loss(tiny_params, {**batch, "old_logps": logps}),
                                           loss(tiny_params, batch))
    np.testing.assert_allclose(without, with_old, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(m_new["policy_loss"], m_old["policy_loss"], rtol=1e-5)
    assert float(m_new["approx_kl_old"]) == 0.0 and float(m_new["clip_fraction"]) == 0.0
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7),
                 grad(tiny_params, batch), grad(tiny_params, {**batch, "old_logps": logps}))


def test_prime_prm_loss_is_outcome_cross_entropy(tiny_config, tiny_params, ref_params, rows):
    batch = rows([[1, 2], [3, 4]], [[5, 6, 7], [8]], T=6)
    batch["desirable"] = np.array([1.0, 0.0], np.float32)
    quad = {k: v for k, v in batch.items() if k != "desirable"}
    phi = jax.jit(sequence_logprobs, static_argnums=0)(tiny_config, tiny_params, quad)
    ref = jax.jit(sequence_logprobs, static_argnums=0)(tiny_config, ref_params, quad)
    batch["ref_logps"] = np.asarray(ref)
    loss, _ = jax.jit(rl.prime_prm_loss(tiny_config, beta=0.5).fn)(
        tiny_params, batch, jax.random.key(0), None)
    z = 0.5 * (np.asarray(phi) - np.asarray(ref))
    expected = np.mean([math.log1p(math.exp(-z[0])), math.log1p(math.exp(z[1]))])
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
