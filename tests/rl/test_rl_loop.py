"""The RL loop on the toy task of rl_helpers (expected reward exact): every algorithm must
raise it (GRPO and PPO with a KL term, PPO with its critic, PRIME with its PRM, OREAL with
its token-level RM, DAPO with dynamic sampling); DAPO's group refill on scripted draws;
plus the rollout layout, step ends and config errors."""

import dataclasses

import jax
import numpy as np
import pytest

from reasonjax.config import ConfigError
from reasonjax.rl.algorithms import ALGORITHMS, GRPO, OREAL, PRIME
from reasonjax.rl.config import RLConfig
from reasonjax.driver.rollouts import Rollouts
from reasonjax.rl.loop import dynamic_sample, rl_train
from reasonjax.rl.shaping import step_end_mask
from reasonjax.rl.update import make_learner
from reasonjax.train.lora import LoRAConfig
from reasonjax.train.state import OptimConfig
from rl_helpers import CFG, ENV, GOOD, PROBLEMS, TASK, TOK, expected_reward, rollouts


@pytest.mark.parametrize("algorithm,kl", [
    ("grpo", 0.05), ("ppo", 0.05), ("prime", 0.0), ("dr_grpo", 0.0), ("rloo", 0.0),
    ("dapo", 0.0), ("gspo", 0.0), ("cispo", 0.0), ("reinforce_pp", 0.01),
    ("reinforce_pp_baseline", 0.0), ("oreal", 0.01)])
def test_rl_raises_the_exact_expected_reward(init_params, algorithm, kl):
    cfg = RLConfig(algorithm=ALGORITHMS[algorithm](kl_coef=kl), iterations=4,
                   prompts_per_iteration=4, samples_per_prompt=8, max_new_tokens=3, epochs=2,
                   minibatch_size=16, optim=OptimConfig(lr=3e-2, schedule="constant"), seed=1)
    before = expected_reward(init_params)
    params, history = rl_train(make_learner(CFG, init_params, cfg), ENV, PROBLEMS,
                               progress=False)
    after = expected_reward(params)
    assert [h["iteration"] for h in history] == [1, 2, 3, 4]
    assert after > before + 0.1, (before, after, history)
    assert all(np.isfinite(h["loss"]) for h in history)
    if kl:
        key = "kl_ref" if algorithm == "grpo" else None
        assert key is None or history[-1][key] > 0
    if algorithm == "ppo":
        assert "value_loss" in history[-1]
    if algorithm == "prime":
        assert "prm/prm_accuracy" in history[-1]
    if algorithm == "dapo":
        assert all(1 <= h["dynamic/draws"] <= 4 for h in history)
    if algorithm == "oreal":  # the token RM trains next to the policy; positives are cloned
        assert "rm/rm_accuracy" in history[-1] and history[-1]["clone_loss"] > 0


@pytest.mark.parametrize("algorithm", ["grpo", "ppo"])
def test_lora_rl_raises_the_expected_reward_with_the_base_as_reference(init_params, algorithm):
    cfg = RLConfig(algorithm=ALGORITHMS[algorithm](kl_coef=0.05), iterations=4,
                   prompts_per_iteration=4, samples_per_prompt=8, max_new_tokens=3, epochs=2,
                   minibatch_size=16, optim=OptimConfig(lr=3e-2, schedule="constant"), seed=1,
                   # The toy reward is the LM head's mass on 26 letters: adapt the head too.
                   lora=LoRAConfig(rank=4, targets=("q", "k", "v", "o", "gate", "up",
                                                    "down", "lm_head")))
    learner = make_learner(CFG, init_params, cfg)
    assert set(learner.state.policy.params) == {"lora", "full"}
    before = expected_reward(init_params)
    params, history = rl_train(learner, ENV, PROBLEMS, progress=False)
    assert expected_reward(params) > before + 0.1, history
    if algorithm == "grpo":  # the KL to the frozen base grows from 0
        assert history[-1]["kl_ref"] > 0
    # Only the adapted kernels (and the value head) moved; the embedding did not.
    np.testing.assert_array_equal(params["embed"]["embedding"],
                                  init_params["embed"]["embedding"])
    with pytest.raises(ConfigError, match="PRIME's implicit PRM"):
        make_learner(CFG, init_params, dataclasses.replace(cfg, algorithm=PRIME()))
    with pytest.raises(ConfigError, match="token_weights=none"):
        make_learner(CFG, init_params, dataclasses.replace(cfg, algorithm=OREAL()))


def _scripted(rewards_per_draw, n):
    """draw(k) -> Rollouts whose rows are numbered k * 100 + row, with the given rewards."""
    def draw(k):
        r = np.asarray(rewards_per_draw[k], np.float32)
        ids = np.arange(len(r))[:, None] + 100 * k
        return Rollouts(batch={"tokens": ids}, completions=[str(i) for i in ids[:, 0]],
                        rewards=r, correct=r >= 1, lengths=np.ones(len(r), np.int32))
    return draw


def test_dynamic_sampling_keeps_informative_groups_and_refills():
    draws = [[1, 1, 0, 1], [0, 0, 1, 0], [1, 0, 0, 1]]
    ro, m = dynamic_sample(_scripted(draws, 2), n=2, groups=2, max_resamples=3)
    # Draw 0: group 0 tied, group 1 kept; draw 1: group 0 tied, group 1 kept -> done.
    assert ro.batch["tokens"][:, 0].tolist() == [2, 3, 102, 103]
    assert ro.rewards.tolist() == [0, 1, 1, 0]
    assert m == {"dynamic/informative_fraction": 1.0, "dynamic/draws": 2.0}
    # No extra draws allowed: the batch is topped up with the tied group, same shape.
    ro, m = dynamic_sample(_scripted(draws, 2), n=2, groups=2, max_resamples=0)
    assert ro.batch["tokens"][:, 0].tolist() == [2, 3, 0, 1]
    assert m == {"dynamic/informative_fraction": 0.5, "dynamic/draws": 1.0}


def test_rollout_rows_hold_prompt_then_completion(init_params):
    ro = rollouts(init_params, PROBLEMS[:2], jax.random.key(0), n=3, max_new_tokens=3)
    for r in range(6):
        prompt = [TOK.bos_id] + TOK.encode(TASK.prompt(PROBLEMS[r // 3]))
        m, c = len(prompt), int(ro.lengths[r])
        row = ro.batch["tokens"][r]
        assert row[:m].tolist() == prompt
        assert np.all(ro.batch["loss_mask"][r, m:m + c] == 1)
        assert ro.batch["loss_mask"][r].sum() == c
        assert ro.batch["positions"][r, :m + c].tolist() == list(range(m + c))
        assert ro.rewards[r] == float(ro.completions[r][:1] in GOOD and
                                      len(ro.completions[r]) > 0)


def test_step_end_mask_marks_delimiters_and_the_last_token():
    text = "ab\ncd\ne"
    ids = np.asarray([[TOK.bos_id] + TOK.encode("q\n" + text) + [0, 0]])
    mask = np.zeros(ids.shape, np.float32)
    mask[0, 3:3 + len(text)] = 1
    ends = step_end_mask(TOK, "\n", ids, mask)
    want = np.zeros(ids.shape, np.float32)
    want[0, [3 + 2, 3 + 5, 3 + 6]] = 1  # the two newlines and the final 'e'
    np.testing.assert_array_equal(ends, want)


def test_bad_rl_configs_name_the_field(init_params):
    with pytest.raises(ConfigError, match="rl.algorithm"):
        RLConfig(algorithm="a2c")
    with pytest.raises(ConfigError, match="minibatch_size"):
        RLConfig(prompts_per_iteration=4, samples_per_prompt=8, minibatch_size=5)
    with pytest.raises(ConfigError, match="samples_per_prompt"):
        RLConfig(algorithm=GRPO(), samples_per_prompt=1)
    with pytest.raises(ConfigError, match="prm_shaping"):
        rl_train(make_learner(CFG, init_params, RLConfig(prm_shaping="clip")), ENV,
                 PROBLEMS)


@pytest.mark.parametrize("algorithm", [PRIME(kl_coef=0.05), OREAL()], ids=["prime", "oreal"])
def test_resumed_rl_run_equals_an_uninterrupted_one(init_params, tmp_path, algorithm):
    """PRIME and OREAL checkpoint the policy AND their second model (the implicit PRM, the
    token-level RM); 1 iteration, stop, resume to 2 must give the params of 2 straight
    iterations exactly."""
    cfg = RLConfig(algorithm=algorithm, iterations=2, prompts_per_iteration=2,
                   samples_per_prompt=2, max_new_tokens=2,
                   optim=OptimConfig(lr=3e-2, schedule="constant"), seed=2)

    def run(cfg, **kwargs):
        return rl_train(make_learner(CFG, init_params, cfg), ENV, PROBLEMS,
                        progress=False, **kwargs)

    straight, _ = run(cfg)
    run(dataclasses.replace(cfg, iterations=1), run_dir=str(tmp_path))
    resumed, history = run(cfg, run_dir=str(tmp_path))
    assert [h["iteration"] for h in history] == [2]
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(straight),
                 jax.device_get(resumed))
    assert not all(np.array_equal(a, b) for a, b in zip(
        jax.tree.leaves(jax.device_get(init_params)), jax.tree.leaves(jax.device_get(resumed))))
