"""Countdown RL ("Cognitive Behaviors that Enable Self-Improving Reasoners", Gandhi et al.,
2025; the TinyZero-style setting public reproductions use): RL with verifier rewards on
Countdown from a small SFT model, and the RL algorithms compared at equal rollouts.

Pipeline as implemented (each stage a resumable phase):

1. ``warmup``: SFT on the first ``warmup_problems`` training problems' reference solutions.
2. ``eval-sft``: greedy accuracy of the SFT model on the eval problems.
3. per arm (``arms``: names of :data:`reasonjax.rl.algorithms.ALGORITHMS`, ``+lora`` for
   the same algorithm training LoRA adapters, ``lora``): RL from the SFT model on the
   other training problems with the shared ``rl`` settings (iterations, prompts, samples,
   sampling, learning rate) and the algorithm's own defaults, then greedy accuracy on the
   eval problems (:mod:`.rl_phase`).

The reward is the task's verifier: 1 when the final expression uses every number once
and reaches the target, else 0 (``rl.partial_reward`` for a readable wrong answer).
Departures from the paper: it starts from Qwen-2.5-3B / Llama-3.2-3B base models with a
format reward and studies which cognitive behaviours (verification, backtracking) the
start shows; the tiny preset starts from a ~0.1M-parameter model SFT'd on the task's
solver traces, so the claim checked is the RL part: reward and accuracy rise.
Every arm samples ``rl.iterations x rl.rows`` rollouts, except that DAPO's dynamic
sampling draws more to replace tied groups (the table counts what each arm drew).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from reasonjax.config import ConfigError
from reasonjax.eval import stats
from reasonjax.eval.plots import line_plot
from reasonjax.eval.report import markdown_table, write_report
from reasonjax.recipes import common
from reasonjax.recipes.rl_phase import reward_rise, rl_phase
from reasonjax.recipes.rundir import Result, log_metrics, open_run, write_outcomes
from reasonjax.rl.algorithms import ALGORITHMS, PRIME
from reasonjax.rl.config import RLConfig
from reasonjax.train.lora import LoRAConfig

LORA_SUFFIX = "+lora"


@dataclasses.dataclass(frozen=True)
class Config(common.RecipeConfig):
    """``rl``: the settings every arm shares (its ``algorithm`` is replaced by each arm's).
    ``arms``: the algorithms compared, the first being the main one; ``name+lora`` trains
    LoRA adapters (``lora``) at ``lora_lr`` (None: ``rl.optim.lr``) instead of the whole
    model. ``algorithm_overrides``: per-arm ``key=value`` settings of its algorithm."""

    rl: RLConfig = RLConfig()
    arms: tuple[str, ...] = ("grpo", "dr_grpo", "dapo", "gspo", "rloo", "reinforce_pp")
    algorithm_overrides: dict = dataclasses.field(default_factory=dict)
    lora: LoRAConfig = LoRAConfig()
    lora_lr: Optional[float] = None

    def __post_init__(self):
        super().__post_init__()
        if not self.arms:
            raise ConfigError("arms: name at least one algorithm")
        for arm in self.arms:
            name = arm.removesuffix(LORA_SUFFIX)
            if name not in ALGORITHMS or ALGORITHMS[name] is PRIME:
                raise ConfigError(f"arms: {arm!r} is not an algorithm; choose from "
                                  f"{', '.join(a for a in ALGORITHMS if a != 'prime')} "
                                  f"(optionally with {LORA_SUFFIX})")
        if len(set(self.arms)) != len(self.arms):
            raise ConfigError(f"arms: {list(self.arms)} names an arm twice")
        unknown = sorted(set(self.algorithm_overrides) - set(self.arms))
        if unknown:
            raise ConfigError(f"algorithm_overrides: {unknown} are not arms {list(self.arms)}")


def losses(cfg: Config) -> dict:
    """{FitSpec path: loss factory} of the run's fit phases besides the warm-up: none."""
    return {}


def rl_runs(cfg: Config) -> list:
    """[(config path, RLConfig)] of the arms (what :mod:`.plan` compiles)."""
    return [("rl", arm_config(cfg, arm)) for arm in cfg.arms]


CLAIM = ("RL with verifier rewards on Countdown raises reward and accuracy over training "
         "(Qwen-2.5-3B far exceeds Llama-3.2-3B under identical RL)")


def arm_config(cfg: Config, arm: str) -> RLConfig:
    """The RL settings of ``arm``: the shared ``rl`` with the arm's algorithm (its
    defaults, then ``algorithm_overrides[arm]``), LoRA for ``+lora`` arms, the run's seed."""
    from reasonjax.config import override

    name = arm.removesuffix(LORA_SUFFIX)
    rl = dataclasses.replace(cfg.rl, algorithm=ALGORITHMS[name](), seed=cfg.seed)
    items = [f"algorithm.{k}={v}" for k, v in cfg.algorithm_overrides.get(arm, {}).items()]
    rl = override(rl, items) if items else rl
    if arm.endswith(LORA_SUFFIX):
        optim = rl.optim if cfg.lora_lr is None else dataclasses.replace(rl.optim,
                                                                         lr=cfg.lora_lr)
        rl = dataclasses.replace(rl, lora=cfg.lora, optim=optim)
    return rl


def run(cfg: Config, run_dir) -> Result:
    run = open_run(run_dir, cfg, total_phases=2 + len(cfg.arms))
    env, sft, own = common.warm_start(run, cfg)
    start = common.eval_phase(run, env, sft, "eval-sft", cfg.rl.max_new_tokens,
                              cfg.batch_size)
    arms = {}
    for arm in cfg.arms:
        done = rl_phase(run, env, sft, own, arm_config(cfg, arm), f"rl-{arm}",
                        cfg.batch_size)
        log_metrics(run, {"phase": f"rl-{arm}", "accuracy": float(np.mean(done.correct)),
                          "seconds": done.seconds})
        arms[arm] = {"correct": done.correct, "history": done.history,
                     "seconds": done.seconds}
    outcomes = {"sft": start, "arms": arms}
    write_outcomes(Path(run_dir), outcomes)
    return report(run_dir, cfg, [outcomes])


def _correct(outcomes, arm) -> list[np.ndarray]:
    return [np.asarray(o["arms"][arm]["correct"], float) for o in outcomes]


def effects(outcomes: Sequence[dict], cfg: Config) -> list[stats.Effect]:
    """For the main arm and DAPO (when run): greedy accuracy above the SFT model (paired on
    the eval problems); for the main arm: the sampled reward rises (last fifth of the
    iterations vs the first fifth)."""
    sft = [np.asarray(o["sft"], float) for o in outcomes]
    main = cfg.arms[0]
    found = [stats.paired_effect(f"{main} raises greedy accuracy over the SFT model",
                                 _correct(outcomes, main), sft,
                                 detail=f"paired on the eval problems: {main} minus SFT")]
    found.append(stats.effect(
        f"{main}'s sampled reward rises over training",
        [reward_rise(o["arms"][main]["history"]) for o in outcomes],
        detail="reward of the last fifth of the iterations minus the first fifth (per "
               "iteration, paired in order)"))
    if "dapo" in cfg.arms and main != "dapo":
        found.append(stats.paired_effect("dapo raises greedy accuracy over the SFT model",
                                         _correct(outcomes, "dapo"), sft,
                                         detail="paired on the eval problems"))
    return found


def _drawn(arm_outcome: dict, rows: int) -> float:
    """Rollouts an arm sampled: rows per draw x draws per iteration, summed."""
    return float(sum(rows * h.get("dynamic/draws", 1.0) for h in arm_outcome["history"]))


def report(run_dir, cfg: Config, outcomes: Sequence[dict]) -> Result:
    """report.md (the arms' comparison table, effect checks) and the reward curves."""
    run_dir = Path(run_dir)
    sft = stats.mean_interval([np.asarray(o["sft"], float) for o in outcomes])
    main = cfg.arms[0]
    rows = [{"arm": "SFT warm-up", "greedy accuracy": sft.estimate,
             "95% interval": f"[{sft.low:.3f}, {sft.high:.3f}]", f"vs {main}": "",
             "final sampled reward": "", "rollouts drawn": 0, "minutes": ""}]
    for arm in cfg.arms:
        acc = stats.mean_interval(_correct(outcomes, arm))
        vs = ("" if arm == main else
              str(stats.paired_difference(_correct(outcomes, arm), _correct(outcomes, main))))
        hist = [o["arms"][arm]["history"] for o in outcomes]
        k = max(1, len(hist[0]) // 5)
        rows.append({"arm": arm, "greedy accuracy": acc.estimate,
                     "95% interval": f"[{acc.low:.3f}, {acc.high:.3f}]", f"vs {main}": vs,
                     "final sampled reward": float(np.mean([h["reward"] for hs in hist
                                                            for h in hs[-k:]])),
                     "rollouts drawn": int(round(np.mean([_drawn(o["arms"][arm], cfg.rl.rows)
                                                          for o in outcomes]))),
                     "minutes": float(np.mean([o["arms"][arm]["seconds"]
                                               for o in outcomes])) / 60})
    found = effects(outcomes, cfg)
    series = {}
    for arm in cfg.arms:
        n = min(len(o["arms"][arm]["history"]) for o in outcomes)
        series[arm] = (list(range(1, n + 1)), [float(np.mean(
            [o["arms"][arm]["history"][i]["reward"] for o in outcomes])) for i in range(n)])
    line_plot(run_dir / "reward_vs_iteration.png", series, xlabel="RL iteration",
              ylabel="mean sampled reward (over seeds)", title="Countdown RL: reward",
              ylim=(0, 1))
    P = len(outcomes[0]["sft"])
    title = common.title("Countdown RL", cfg)
    path = write_report(run_dir / "report.md", title, [
        ("Results", markdown_table(rows) + f"\n\n{P} eval problems x {len(outcomes)} "
         f"seed(s); every arm: {cfg.rl.iterations} iterations x {cfg.rl.rows} rollouts "
         f"from the same SFT model (DAPO draws more to refill tied groups). `vs {main}`: "
         "paired difference on the eval problems with its 95% interval; final sampled "
         "reward: the last fifth of the iterations; intervals: bootstrap over seeds and "
         "problems."),
        ("Effect checks", markdown_table([e.row() for e in found])),
        ("Plots", "![reward vs iteration](reward_vs_iteration.png)")])
    best = max(rows[1:], key=lambda r: r["greedy accuracy"])
    headline = (f"greedy {sft.estimate:.3f} (SFT) -> {rows[1]['greedy accuracy']:.3f} "
                f"({main}), difference {found[0].value}; best arm {best['arm']} "
                f"{best['greedy accuracy']:.3f}; {P} problems")
    return Result(rows=rows, effects=found, report=path, headline=headline)
