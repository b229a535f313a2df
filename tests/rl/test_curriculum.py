"""Self-evolving curriculum: the bandit's pieces against hand-computed numbers, and in the
RL loop on the toy task (a category that can never be solved gets no learning gain;
resumed == uninterrupted with the bandit's values restored)."""

import dataclasses

import jax
import numpy as np
import pytest

from reasonjax.config import ConfigError
from reasonjax.data.task import Problem
from reasonjax.driver import Env
from reasonjax.rl import curriculum
from reasonjax.rl.algorithms import DAPO, GRPO
from reasonjax.rl.config import RLConfig
from reasonjax.rl.curriculum import CurriculumConfig
from reasonjax.rl.loop import rl_train
from reasonjax.rl.update import make_learner
from reasonjax.train.state import OptimConfig
from rl_helpers import CFG, TOK, FirstLetter


def test_probabilities_update_and_rewards_by_hand():
    np.testing.assert_allclose(curriculum.probabilities(np.array([0.0, np.log(3.0)]), 1.0),
                               [0.25, 0.75])
    np.testing.assert_allclose(curriculum.probabilities(np.array([0.0, np.log(3.0)]), 0.5),
                               [0.1, 0.9])
    reward, drawn = curriculum.rewards(np.array([0.2, 0.6, 1.0]), np.array([0, 0, 2]), 3)
    np.testing.assert_allclose(reward, [0.4, 0.0, 1.0])
    np.testing.assert_array_equal(drawn, [True, False, True])
    q = curriculum.update(np.array([1.0, 0.5, 0.0]), reward, drawn, lr=0.25)
    np.testing.assert_allclose(q, [0.25 * 0.4 + 0.75, 0.5, 0.25])


def test_group_abs_advantages_by_hand():
    # group 1: rewards 1, 0 -> mean 0.5, std 0.5: GRPO advantages +-0.5 / (0.5 + 1e-6);
    # group 2: tied -> exactly 0; without scale the group's |r - mean| is 0.5.
    r = np.array([1.0, 0.0, 1.0, 1.0], np.float32)
    np.testing.assert_allclose(curriculum.group_abs_advantages(r, 2, "mean", "group"),
                               [0.5 / 0.500001, 0.0], rtol=1e-6)
    np.testing.assert_allclose(curriculum.group_abs_advantages(r, 2, "mean", "none"),
                               [0.5, 0.0])
    np.testing.assert_allclose(curriculum.group_abs_advantages(r, 2, "mean", "batch"),
                               [0.5, 0.0])


def _problem(question, level):
    return Problem(task="curriculum_toy", question=question, steps=(), answer="",
                   meta={"knobs": {"level": level}, "index": len(question)})


def test_categories_and_draws():
    problems = [_problem("ab", 1), _problem("cd", 2), _problem("ef", 1)]
    cat, labels = curriculum.categories(problems, "knobs")
    np.testing.assert_array_equal(cat, [0, 1, 0])
    assert labels == ['{"level": 1}', '{"level": 2}']
    cat2, _ = curriculum.categories(problems, "knobs.level")
    np.testing.assert_array_equal(cat2, cat)
    with pytest.raises(ConfigError, match="problem 0 has no meta field 'level'"):
        curriculum.categories(problems, "level")
    # Q far apart: every draw comes from category 1; equal Q: both appear; reproducible.
    only = curriculum.draw(cat, np.array([0.0, 50.0]), 1.0, 64, seed=0, iteration=3)
    assert set(only) == {1}
    both = curriculum.draw(cat, np.zeros(2), 1.0, 64, seed=0, iteration=3)
    assert set(both) == {0, 1, 2}
    assert both == curriculum.draw(cat, np.zeros(2), 1.0, 64, seed=0, iteration=3)
    assert both != curriculum.draw(cat, np.zeros(2), 1.0, 64, seed=0, iteration=4)


def test_bad_curriculum_configs_name_the_field():
    with pytest.raises(ConfigError, match="temperature"):
        CurriculumConfig(temperature=0.0)
    with pytest.raises(ConfigError, match="lr"):
        CurriculumConfig(lr=1.5)
    with pytest.raises(ConfigError, match="dynamic_sampling"):
        RLConfig(algorithm=DAPO(), curriculum=CurriculumConfig())


@dataclasses.dataclass(frozen=True)
class HalfImpossible(FirstLetter):
    """The toy task, except that level-2 problems are never solved."""

    name = "curriculum_toy"

    def answer_correct(self, problem, answer):
        return problem.meta["knobs"]["level"] == 1 and super().answer_correct(problem, answer)


PROBLEMS = [_problem(q, level) for q, level in (("ab", 1), ("7+1", 1), ("xyz", 2), ("Q", 2))]
ENV = Env(HalfImpossible(), TOK, CFG)


def _run(init_params, cfg, **kwargs):
    return rl_train(make_learner(CFG, init_params, cfg), ENV, PROBLEMS, progress=False,
                    **kwargs)


def test_curriculum_learns_where_the_advantage_is(init_params):
    cfg = RLConfig(algorithm=GRPO(), iterations=3, prompts_per_iteration=4,
                   samples_per_prompt=8, max_new_tokens=2,
                   optim=OptimConfig(lr=1e-2, schedule="constant"), seed=1,
                   curriculum=CurriculumConfig(lr=0.5))
    _, history = _run(init_params, cfg)
    last = history[-1]
    assert last["curriculum/q1"] == 0.0  # never solved: every group tied, |A| = 0
    assert last["curriculum/q0"] > 0.0
    assert last["curriculum/p0"] > 0.5
    # q follows TD(0) from the rewards the loop saw: q0 only ever rises from 0 here
    q0 = [h["curriculum/q0"] for h in history]
    assert all(0 < a for a in q0)


def test_resumed_curriculum_run_equals_an_uninterrupted_one(init_params, tmp_path):
    cfg = RLConfig(algorithm=GRPO(), iterations=3, prompts_per_iteration=2,
                   samples_per_prompt=4, max_new_tokens=2,
                   optim=OptimConfig(lr=3e-2, schedule="constant"), seed=2,
                   checkpoint_every=1, curriculum=CurriculumConfig(lr=0.7))
    straight, straight_history = _run(init_params, cfg)
    _run(init_params, dataclasses.replace(cfg, iterations=2), run_dir=str(tmp_path))
    resumed, history = _run(init_params, cfg, run_dir=str(tmp_path))
    assert [h["iteration"] for h in history] == [3]
    assert history[0]["curriculum/q0"] == straight_history[-1]["curriculum/q0"]
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(straight),
                 jax.device_get(resumed))
