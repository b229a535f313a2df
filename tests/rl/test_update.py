"""The per-iteration update is a pure function: the same (state, rollouts, key) give the
same new state and metrics, and one iteration of the loop is exactly one update."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reasonjax.rl.algorithms import GRPO, OREAL, PPO, PRIME, ReinforcePP
from reasonjax.rl.config import RLConfig
from reasonjax.rl.loop import iteration_rollouts, rl_train, run_env
from reasonjax.rl.update import make_learner
from reasonjax.train.state import OptimConfig
from rl_helpers import CFG, ENV, PROBLEMS


def _assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(a), jax.device_get(b))


@pytest.mark.parametrize("algorithm", [PPO(kl_coef=0.05), PRIME(kl_coef=0.05), OREAL()],
                         ids=["ppo", "prime", "oreal"])
def test_update_is_pure_and_one_loop_iteration_is_one_update(init_params, algorithm):
    cfg = RLConfig(algorithm=algorithm, iterations=1, prompts_per_iteration=2,
                   samples_per_prompt=4, max_new_tokens=3, epochs=2, minibatch_size=4,
                   optim=OptimConfig(lr=3e-2, schedule="constant"), seed=5)
    learner = make_learner(CFG, init_params, cfg)
    ro, key, _ = iteration_rollouts(learner, run_env(learner, ENV, PROBLEMS),
                                    learner.state.policy.params, PROBLEMS, 0)

    def fresh():  # the update donates the state it is given
        return jax.tree.map(jnp.copy, learner.state)

    first, first_metrics = learner.update(fresh(), ro, key)
    second, second_metrics = learner.update(fresh(), ro, key)
    _assert_trees_equal(first, second)
    assert first_metrics == second_metrics
    assert int(first.policy.step) == 2 * 2  # 2 epochs x 8 rollouts / 4 per minibatch
    assert (first.prm is None) == (not algorithm.reward_model)
    changed = jax.tree.map(lambda a, b: not np.array_equal(a, b),
                           jax.device_get(first.policy.params),
                           jax.device_get(learner.state.policy.params))
    assert any(jax.tree.leaves(changed))

    params, history = rl_train(make_learner(CFG, init_params, cfg), ENV, PROBLEMS,
                               progress=False)
    _assert_trees_equal(params, first.policy.params)
    assert {k: history[0][k] for k in first_metrics} == first_metrics


def test_rollout_forward_only_where_an_update_reads_it():
    one_step = dict(prompts_per_iteration=2, samples_per_prompt=4, max_new_tokens=3)
    assert not RLConfig(algorithm=GRPO(), **one_step).rollout_forward
    assert not RLConfig(algorithm=GRPO(kl_coef=0.1), **one_step).rollout_forward  # in loss
    assert RLConfig(algorithm=GRPO(kl_coef=0.1, kl_in="reward"), **one_step).rollout_forward
    assert RLConfig(algorithm=ReinforcePP(), **one_step).rollout_forward  # KL in the reward
    assert RLConfig(algorithm=PPO(), **one_step).rollout_forward  # the critic's values
    assert RLConfig(algorithm=GRPO(), epochs=2, **one_step).rollout_forward
    assert RLConfig(algorithm=GRPO(), minibatch_size=4, **one_step).rollout_forward


def test_on_policy_update_skips_the_rollout_forward_and_matches_the_update_with_it(
        init_params, monkeypatch):
    """GRPO with one step over every row: no forward over the rollouts before the step,
    and the same new params as the update that runs it (up to float rounding)."""
    import reasonjax.rl.update as update_mod

    calls = []
    counted = update_mod.make_stats_fn

    def counting(model_config):
        stats = counted(model_config)
        return lambda *a: calls.append(1) or stats(*a)

    monkeypatch.setattr(update_mod, "make_stats_fn", counting)
    cfg = RLConfig(algorithm=GRPO(), iterations=1, prompts_per_iteration=2,
                   samples_per_prompt=4, max_new_tokens=3,
                   optim=OptimConfig(lr=3e-2, schedule="constant"), seed=5)
    learner = make_learner(CFG, init_params, cfg)
    ro, key, _ = iteration_rollouts(learner, run_env(learner, ENV, PROBLEMS),
                                    learner.state.policy.params, PROBLEMS, 0)
    skipped, m_skip = learner.update(jax.tree.map(jnp.copy, learner.state), ro, key)
    assert not cfg.rollout_forward and calls == []
    monkeypatch.setattr(RLConfig, "rollout_forward", property(lambda self: True))
    forward = make_learner(CFG, init_params, cfg)
    ran, m_ran = forward.update(jax.tree.map(jnp.copy, forward.state), ro, key)
    assert len(calls) == 1
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                 jax.device_get(skipped.policy.params), jax.device_get(ran.policy.params))
    np.testing.assert_allclose(m_skip["loss"], m_ran["loss"], rtol=1e-4, atol=1e-6)
