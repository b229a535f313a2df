"""ReFT (Luong et al., 2024, "ReFT: Reasoning with Reinforced Fine-Tuning"): SFT warm-up,
then PPO from the SFT model on sampled chains of thought.

Pipeline as implemented (each stage a resumable phase):

1. ``warmup``: SFT on the first ``warmup_problems`` training problems' reference solutions
   (or a checkpoint).
2. ``eval-sft``: greedy accuracy of the SFT model on the eval problems.
3. ``ppo``: PPO (:class:`reasonjax.rl.algorithms.PPO`) on the other training problems:
   reward 1 for a correct final answer, ``rl.partial_reward`` (the paper's 0.1) for an
   extractable wrong one, 0 otherwise; the k1 KL to the SFT reference subtracted from the
   token rewards; GAE with the value head on the policy's own backbone as the critic;
   then greedy accuracy on the eval problems (:mod:`.rl_phase`).

Departures from the paper: the paper warms up for a few epochs on the same problems ReFT
then samples; the tiny preset keeps them apart (a tiny model memorises its warm-up
problems, :func:`reasonjax.recipes.common.split_train`). The paper compares with SFT run
for as many epochs as ReFT's warm-up plus RL; here the baseline is the warm-up model
itself (the paper's claim is the gain of ReFT's RL stage over its SFT start).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import numpy as np

from reasonjax.config import ConfigError
from reasonjax.eval import stats
from reasonjax.eval.plots import line_plot
from reasonjax.eval.report import markdown_table, write_report
from reasonjax.recipes import common
from reasonjax.recipes.rl_phase import reward_rise, rl_phase
from reasonjax.recipes.rundir import Result, log_metrics, open_run, write_outcomes
from reasonjax.rl.algorithms import PPO
from reasonjax.rl.config import RLConfig


@dataclasses.dataclass(frozen=True)
class Config(common.RecipeConfig):
    """``rl``: the PPO stage (its ``algorithm`` is ReFT's PPO with the value head as critic,
    ``partial_reward`` 0.1, ``max_new_tokens`` also the eval length)."""

    rl: RLConfig = RLConfig(algorithm=PPO(kl_coef=0.01), partial_reward=0.1)

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.rl.algorithm, PPO):
            raise ConfigError(f"rl.algorithm: ReFT is PPO with a critic; got "
                              f"{self.rl.algorithm.name} (countdown_rl compares the others)")


def losses(cfg: Config) -> dict:
    """{FitSpec path: loss factory} of the run's fit phases besides the warm-up: none."""
    return {}


def rl_runs(cfg: Config) -> list:
    """[(config path, RLConfig)] of the run's RL phases (what :mod:`.plan` compiles)."""
    return [("rl", cfg.rl)]


CLAIM = ("ReFT's PPO stage (partial reward 0.1, KL to the SFT model, value head on the "
         "policy) raises greedy accuracy over its SFT start (CodeLLAMA-7B GSM8K N-CoT: "
         "63.7 -> 75.3)")


def run(cfg: Config, run_dir) -> Result:
    run = open_run(run_dir, cfg, total_phases=3)
    env, sft, own = common.warm_start(run, cfg)
    start = common.eval_phase(run, env, sft, "eval-sft", cfg.rl.max_new_tokens,
                              cfg.batch_size)
    rl = dataclasses.replace(cfg.rl, seed=cfg.seed)
    done = rl_phase(run, env, sft, own, rl, "ppo", cfg.batch_size)
    log_metrics(run, {"phase": "ppo", "accuracy": float(np.mean(done.correct)),
                      "seconds": done.seconds})
    outcomes = {"correct": {"sft": start, "reft": done.correct},
                "history": done.history}
    write_outcomes(Path(run_dir), outcomes)
    return report(run_dir, cfg, [outcomes])


def effects(outcomes: Sequence[dict]) -> list[stats.Effect]:
    """ReFT vs its SFT start on the same eval problems (paired), and the sampled reward of
    the last fifth of the iterations vs the first fifth."""
    found = [stats.paired_effect(
        "ReFT raises greedy accuracy over the SFT model",
        [np.asarray(o["correct"]["reft"], float) for o in outcomes],
        [np.asarray(o["correct"]["sft"], float) for o in outcomes],
        detail="paired on the eval problems: ReFT minus SFT")]
    found.append(stats.effect(
        "the sampled reward rises during PPO", [reward_rise(o["history"]) for o in outcomes],
        detail="reward of the last fifth of the iterations minus the first fifth (per "
               "iteration, paired in order)"))
    return found


def report(run_dir, cfg: Config, outcomes: Sequence[dict]) -> Result:
    """report.md and the reward curve from one outcome dict per seed."""
    run_dir = Path(run_dir)
    acc = {k: stats.mean_interval([np.asarray(o["correct"][k], float) for o in outcomes])
           for k in ("sft", "reft")}
    rows = [{"model": label, "greedy accuracy": acc[k].estimate,
             "95% interval": f"[{acc[k].low:.3f}, {acc[k].high:.3f}]"}
            for k, label in (("sft", "SFT warm-up"), ("reft", "ReFT (PPO)"))]
    found = effects(outcomes)
    n_iter = min(len(o["history"]) for o in outcomes)
    xs = list(range(1, n_iter + 1))
    curves = {key: [float(np.mean([o["history"][i].get(key, np.nan) for o in outcomes]))
                    for i in range(n_iter)] for key in ("reward", "accuracy")}
    line_plot(run_dir / "reward_vs_iteration.png",
              {"sampled reward": (xs, curves["reward"]),
               "sampled accuracy": (xs, curves["accuracy"])},
              xlabel="PPO iteration", ylabel="mean over the iteration's samples",
              title="ReFT: PPO from the SFT model", ylim=(0, 1))
    P = len(outcomes[0]["correct"]["sft"])
    rollouts = cfg.rl.rows * n_iter
    title = common.title("ReFT", cfg)
    path = write_report(run_dir / "report.md", title, [
        ("Results", markdown_table(rows) + f"\n\n{P} eval problems x {len(outcomes)} "
         f"seed(s); PPO: {n_iter} iterations x {cfg.rl.rows} rollouts ({rollouts} a seed); "
         "intervals: bootstrap over seeds and problems."),
        ("Effect checks", markdown_table([e.row() for e in found])),
        ("Plots", "![reward vs iteration](reward_vs_iteration.png)")])
    headline = (f"greedy {acc['sft'].estimate:.3f} (SFT) -> {acc['reft'].estimate:.3f} "
                f"(ReFT), difference {found[0].value}; {P} problems")
    return Result(rows=rows, effects=found, report=path, headline=headline)
