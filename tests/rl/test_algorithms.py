"""Per-algorithm configs: the batch keys and loss config each one picks (against
hand-computed advantages), and RLConfig through YAML-style dicts and key=value overrides
(the algorithm's class survives, errors name the field)."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from reasonjax.config import ConfigError, from_dict, override, to_dict
from reasonjax.rl.algorithms import (ALGORITHMS, CISPO, DAPO, GSPO, OREAL, PPO, PRIME, RLOO,
                                     DrGRPO, GRPO, ReinforcePP, ReinforcePPBaseline,
                                     RolloutStats)
from reasonjax.rl.config import RLConfig

# Two groups of two rollouts, two completion tokens each (after a one-token prompt).
REWARDS = jnp.array([1.0, 0.0, 1.0, 1.0])
MASK = jnp.array([[0, 1, 1.0]] * 4)
LOGPS = jnp.array([[0, -1.0, -1.0]] * 4)
REF = jnp.array([[0, -1.5, -1.0]] * 4)
VALUES = jnp.zeros((4, 3))


def _stats(**kw):
    return RolloutStats(REWARDS, MASK, LOGPS, VALUES, ref_logps_RL=REF, **kw)


@pytest.mark.parametrize("algorithm,per_row", [
    (GRPO(), [1, -1, 0, 0]),            # (r - mean) / (std + eps); equal rewards give 0
    (DrGRPO(), [.5, -.5, 0, 0]),        # r - mean
    (RLOO(), [1, -1, 0, 0]),            # r - the other sample's reward
])
def test_group_baselines_broadcast_their_advantages_to_the_completion(algorithm, per_row):
    out = algorithm.loss_inputs(_stats(), group_size=2, gamma=1.0)
    assert sorted(out) == ["advantages"]  # kl_coef = 0: no reference in the batch
    np.testing.assert_allclose(out["advantages"], np.asarray(per_row)[:, None] * MASK,
                               atol=1e-5)
    with_kl = type(algorithm)(kl_coef=0.1)
    assert with_kl.needs_reference and not algorithm.needs_reference
    np.testing.assert_array_equal(with_kl.loss_inputs(_stats(), 2, 1.0)["ref_logps"], REF)


def test_loss_configs_follow_the_papers():
    grpo = GRPO(kl_coef=0.1).loss_config(8)
    assert (grpo.objective, grpo.aggregation, grpo.kl_estimator, grpo.kl_coef) == (
        "ppo", "seq-mean-token-mean", "k3", 0.1)
    dr = DrGRPO().loss_config(8)
    assert (dr.aggregation, dr.max_tokens) == ("seq-mean-token-sum-norm", 8)
    ppo = PPO(value_coef=0.3, kl_coef=0.1).loss_config(8)
    assert (ppo.aggregation, ppo.kl_coef, ppo.value_coef) == ("token-mean", 0.0, 0.3)
    assert PPO(kl_coef=0.1, kl_in="loss").loss_config(8).kl_coef == 0.1
    assert PRIME().needs_reference and PRIME().loss_config(8).kl_coef == 0.0
    dapo = DAPO().loss_config(8)
    assert (dapo.clip_low, dapo.clip_high, dapo.aggregation, dapo.kl_coef) == (
        0.2, 0.28, "token-mean", 0.0)
    assert DAPO().dynamic_sampling and DAPO().overlong_buffer == 0.2
    gspo = GSPO().loss_config(8)
    assert (gspo.objective, gspo.clip_low, gspo.clip_high) == ("gspo", 3e-4, 4e-4)
    cispo = CISPO().loss_config(8)
    assert (cispo.objective, cispo.clip_low, cispo.aggregation) == ("cispo", 1.0,
                                                                     "token-mean")
    # REINFORCE++ keeps its KL in the reward: none in the loss, but a reference is needed.
    rpp = ReinforcePP()
    assert rpp.needs_reference and rpp.loss_config(8).kl_coef == 0.0
    assert not ReinforcePPBaseline().needs_reference


def test_ppo_puts_k1_and_step_rewards_into_the_token_rewards_before_gae():
    step = jnp.array([[0, 0.5, 0]] * 4)
    out = PPO(kl_coef=0.2, lam=1.0, whiten=False).loss_inputs(
        _stats(step_rewards_RL=step), group_size=2, gamma=1.0)
    assert sorted(out) == ["advantages", "old_values", "returns"]
    # k1 = log pi - log pi_ref = 0.5 on the first completion token, 0 on the second.
    # Token rewards [0, -0.1 + 0.5, r]; with V = 0, lam = gamma = 1: returns-to-go.
    r = np.asarray(REWARDS)
    np.testing.assert_allclose(out["advantages"],
                               np.stack([np.zeros(4), 0.4 + r, r], 1), atol=1e-6)
    np.testing.assert_allclose(out["returns"], out["advantages"], atol=1e-6)


def test_step_rewards_add_their_return_to_go_to_group_advantages():
    step = jnp.array([[0, 0.5, 0.25]] * 4)
    out = RLOO().loss_inputs(_stats(step_rewards_RL=step), group_size=2, gamma=0.5)
    want = np.asarray([1, -1, 0, 0])[:, None] * MASK + np.array([0, 0.5 + 0.125, 0.25])
    np.testing.assert_allclose(out["advantages"], want, atol=1e-6)


def test_prime_uses_the_process_rewards_and_leave_one_out_outcomes():
    process = jnp.array([[0, 0.2, 0.0], [0, 0.0, 0.0], [0, 0.1, 0.1], [0, 0.1, 0.1]])
    out = PRIME(process_coef=1.0).loss_inputs(_stats(process_RL=process), 2, 1.0)
    # Row 0: per-row mean process 0.1, the other row's 0 -> process [0.2, 0] - 0 = [0.2, 0];
    # outcome 1 - 0 = 1 at the last token; returns-to-go [1.2, 1].
    np.testing.assert_allclose(out["advantages"][0], [0, 1.2, 1.0], atol=1e-6)
    np.testing.assert_allclose(out["advantages"][2], [0, 0.0, 0.0], atol=1e-6)


def test_oreal_clones_positives_and_reshapes_negatives_by_the_pass_rate():
    correct = REWARDS  # [1, 0 | 1, 1]: group 0 has p = 1/2, group 1 is all correct
    flat = OREAL(token_weights="none", kl_coef=0.0).loss_inputs(_stats(correct_R=correct),
                                                                2, 1.0)
    assert sorted(flat) == ["advantages"]
    # Row 0 cloned with weight 1; row 1: -eta x p / (1 - p) = -0.5; group 1 carries none.
    np.testing.assert_allclose(flat["advantages"],
                               np.asarray([1, -.5, 0, 0])[:, None] * MASK, atol=1e-6)
    # With the token RM's scores: row 0 running means 2, 1 -> 2 sigma - 1 = tanh(1),
    # tanh(0.5); row 1 means -2, -2 -> 1 - sigma(-2) rescaled: tanh(1) on both tokens.
    scores = jnp.array([[0, 2.0, 0.0], [0, -2.0, -2.0], [0, 1.0, 1.0], [0, 1.0, 1.0]])
    out = OREAL().loss_inputs(_stats(correct_R=correct, process_RL=scores), 2, 1.0)
    t1, th = math.tanh(1), math.tanh(.5)
    np.testing.assert_allclose(out["advantages"], [[0, t1, th], [0, -.5 * t1, -.5 * t1],
                                                   [0, 0, 0], [0, 0, 0]], rtol=1e-5)
    np.testing.assert_array_equal(out["ref_logps"], REF)  # the default k3 KL, 0.01
    cfg = OREAL().loss_config(8)
    assert (cfg.clone_positive, cfg.kl_coef, cfg.kl_estimator, cfg.aggregation) == (
        True, 0.01, "k3", "token-mean")
    assert OREAL().reward_model and not OREAL(token_weights="none").reward_model
    assert not GRPO().loss_config(8).clone_positive and not GRPO().reward_model


def test_reinforce_pp_whitens_outcome_and_kl_returns_over_the_batch():
    out = ReinforcePP(kl_coef=0.01).loss_inputs(_stats(), group_size=2, gamma=1.0)
    assert sorted(out) == ["advantages"]  # the KL is in the reward, not the loss
    # k1 = log pi - log pi_ref = 0.5 on the first completion token: reward -0.005 there.
    # Token returns before whitening: [r - 0.005, r] per row, r = 1, 0, 1, 1.
    raw = np.array([[.995, 1], [-.005, 0], [.995, 1], [.995, 1]])
    want = (raw - raw.mean()) / raw.std()
    np.testing.assert_allclose(out["advantages"][:, 1:], want, rtol=1e-4)
    np.testing.assert_array_equal(out["advantages"][:, 0], 0)


def test_reinforce_pp_baseline_centres_by_group_then_whitens():
    out = ReinforcePPBaseline().loss_inputs(_stats(), group_size=2, gamma=1.0)
    # Group means 0.5 and 1: [.5, -.5, 0, 0] on both tokens; the batch mean is 0 and the
    # std over the 8 tokens sqrt(4 x 0.25 / 8).
    want = np.array([.5, -.5, 0, 0]) / math.sqrt(0.125)
    np.testing.assert_allclose(out["advantages"][:, 1:], np.stack([want, want], 1),
                               rtol=1e-4)


def test_kl_in_the_reward_or_in_the_loss():
    in_reward = GRPO(kl_coef=0.2, kl_in="reward", kl_estimator="k1").loss_inputs(
        _stats(), 2, 1.0)
    assert sorted(in_reward) == ["advantages"]
    # GRPO advantages [1, -1, 0, 0] plus the return-to-go of -0.2 x 0.5 on token 1.
    want = np.asarray([1, -1, 0, 0])[:, None] * MASK + np.array([0, -0.1, 0])
    np.testing.assert_allclose(in_reward["advantages"], want, atol=1e-5)  # std + 1e-6
    in_loss = PPO(kl_coef=0.2, kl_in="loss", whiten=False).loss_inputs(_stats(), 2, 1.0)
    np.testing.assert_array_equal(in_loss["ref_logps"], REF)


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_overrides_keep_the_algorithm_and_reach_its_knobs(name):
    cfg = RLConfig(algorithm=ALGORITHMS[name]())
    got = override(cfg, ["algorithm.kl_coef=0.04", "sampling.temperature=0.7",
                         "optim.lr=3e-6"])
    assert type(got.algorithm) is ALGORITHMS[name] and got.algorithm.name == name
    assert got.algorithm.kl_coef == 0.04 and got.sampling.temperature == 0.7
    assert got.optim.lr == 3e-6
    assert from_dict(RLConfig, to_dict(got)) == got


def test_yaml_dicts_pick_the_algorithm_by_name_and_errors_name_the_field():
    cfg = from_dict(RLConfig, {"algorithm": {"name": "ppo", "lam": 0.9}, "iterations": 3})
    assert cfg.algorithm == PPO(lam=0.9) and cfg.iterations == 3
    assert from_dict(RLConfig, {}).algorithm == GRPO()
    with pytest.raises(ConfigError, match="rl.algorithm.kl_coef must be >= 0"):
        override(RLConfig(algorithm=DrGRPO()), ["algorithm.kl_coef=-1"])
    with pytest.raises(ConfigError, match="rl.algorithm.lam"):
        RLConfig(algorithm=PPO(lam=1.5))
    with pytest.raises(ConfigError, match="unknown key 'algorithm.value_coef'"):
        override(RLConfig(algorithm=GRPO()), ["algorithm.value_coef=1"])
    with pytest.raises(ConfigError, match="rl.algorithm.clip_low must lie in"):
        override(RLConfig(algorithm=DAPO()), ["algorithm.clip_low=1.5"])
    with pytest.raises(ConfigError, match="overlong_buffer"):
        RLConfig(algorithm=DAPO(overlong_buffer=0.01), max_new_tokens=8)
    with pytest.raises(ConfigError, match="dynamic_sampling"):
        RLConfig(algorithm=PPO(dynamic_sampling=True), samples_per_prompt=1)
    got = override(RLConfig(algorithm=GRPO()), ["algorithm.aggregation=token-mean",
                                                 "algorithm.clip_high=0.28"])
    assert (got.algorithm.aggregation, got.algorithm.clip_high) == ("token-mean", 0.28)
    with pytest.raises(ConfigError, match="aggregation"):
        override(RLConfig(algorithm=GRPO()), ["algorithm.aggregation=sequence"])
    assert from_dict(RLConfig, {"algorithm": {"name": "oreal", "token_weights": "topk"}}
                     ).algorithm == OREAL(token_weights="topk")
    with pytest.raises(ConfigError, match="rl.algorithm.negative_coef must be >= 0"):
        RLConfig(algorithm=OREAL(negative_coef=-1))
    with pytest.raises(ConfigError, match="rl.algorithm.weight_threshold"):
        override(RLConfig(algorithm=OREAL()), ["algorithm.weight_threshold=1"])
    with pytest.raises(ConfigError, match="rl.algorithm.topk_ratio"):
        RLConfig(algorithm=OREAL(topk_ratio=0))
    with pytest.raises(ConfigError, match="token_weights"):
        override(RLConfig(algorithm=OREAL()), ["algorithm.token_weights=softmax"])
    assert RLConfig(algorithm=PPO(), samples_per_prompt=1).samples_per_prompt == 1
