"""An RL phase of a recipe: :func:`reasonjax.rl.loop.rl_train` of the recipe's policy on its
problems, then greedy correctness on its eval problems, as one resumable phase.

The RL loop checkpoints under ``<run-dir>/rl/<phase>`` every ``checkpoint_every``
iterations, so a run killed inside the phase resumes from its last RL checkpoint (and
exactly as an uninterrupted one, see :mod:`reasonjax.rl.loop`); the phase's result holds
the final params, the per-iteration history read back from that directory's
``metrics.jsonl`` (complete even across resumes) and the eval correctness.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Sequence

import numpy as np

from reasonjax.data.task import Problem
from reasonjax.driver.records import greedy_correct
from reasonjax.fileio import read_jsonl
from reasonjax.recipes.common import RecipeEnv
from reasonjax.recipes.rundir import Run, run_phase
from reasonjax.rl.config import RLConfig
from reasonjax.rl.loop import rl_train
from reasonjax.rl.update import make_learner

# metrics.jsonl keys kept per iteration in the phase result (the rest stays in the file).
HISTORY_KEYS = ("iteration", "reward", "accuracy", "length", "kl_ref", "clip_fraction",
                "dynamic/informative_fraction", "dynamic/draws", "seconds")


@dataclasses.dataclass(frozen=True)
class RLTrained:
    """An RL phase's result: the trained params and their model config, each eval
    problem's greedy correctness, the per-iteration history (:data:`HISTORY_KEYS`), and the
    phase's wall seconds (of the call that finished it)."""

    params: Any
    model_config: Any
    correct: list
    history: list
    seconds: float


def rl_phase(run: Run, env: RecipeEnv, params, problems: Sequence[Problem], cfg: RLConfig,
             name: str, batch_size: int = 64, step_rewards=None) -> RLTrained:
    """Phase ``name``: RL of ``params`` on ``problems`` under ``cfg`` (module docstring),
    then greedy correctness of the result on ``env.eval`` (``batch_size`` problems per
    driver call). step_rewards: PRM step rewards for ``cfg.prm_shaping``
    (:func:`reasonjax.rl.shaping.make_step_rewards`)."""
    def compute() -> RLTrained:
        start = time.time()
        checkpoints = run.path / "rl" / name
        learner = make_learner(env.model_config, params, cfg, mesh=env.mesh,
                               step_rewards=step_rewards)
        new, _ = rl_train(learner, env, problems, run_dir=str(checkpoints), progress=False)
        history = [{k: r[k] for k in HISTORY_KEYS if k in r}
                   for r in read_jsonl(checkpoints / "metrics.jsonl")]
        correct = greedy_correct(env, new, env.eval, cfg.max_new_tokens,
                                 min(batch_size, len(env.eval)))
        return RLTrained(new, env.model_config, correct, history, time.time() - start)

    return run_phase(run, name, compute, RLTrained, mesh=env.mesh)


def reward_rise(history: list, key: str = "reward", frac: float = 0.2) -> np.ndarray:
    """Per-iteration differences of ``key`` between the last and the first ``frac`` of the
    iterations (iteration k of the last window minus iteration k of the first): their mean
    is the difference of the two windows' means, and they are the items an effect's
    interval resamples."""
    values = np.asarray([h[key] for h in history], float)
    k = max(1, int(round(len(values) * frac)))
    return values[-k:] - values[:k]
