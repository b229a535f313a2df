"""The RL loop on the toy task of rl_helpers (expected reward exact): GRPO (with a KL
term), PPO (critic) and PRIME must raise it; plus the rollout layout, step ends and config
errors."""

import dataclasses

import jax
import numpy as np
import pytest

from reasonjax.config import ConfigError
from reasonjax.rl.algorithms import ALGORITHMS, GRPO, PRIME
from reasonjax.rl.config import RLConfig
from reasonjax.rl.loop import rl_train
from reasonjax.rl.shaping import step_end_mask
from reasonjax.rl.update import make_learner
from reasonjax.train.state import OptimConfig
from rl_helpers import CFG, ENV, GOOD, PROBLEMS, TASK, TOK, expected_reward, rollouts


@pytest.mark.parametrize("algorithm,kl", [("grpo", 0.05), ("ppo", 0.05), ("prime", 0.0)])
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


def test_resumed_rl_run_equals_an_uninterrupted_one(init_params, tmp_path):
    """PRIME checkpoints the policy AND its implicit PRM; 1 iteration, stop, resume to 2
    must give the params of 2 straight iterations exactly."""
    cfg = RLConfig(algorithm=PRIME(kl_coef=0.05), iterations=2, prompts_per_iteration=2,
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
