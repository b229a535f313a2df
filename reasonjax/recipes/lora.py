"""LoRA (Hu et al., 2021, "LoRA: Low-Rank Adaptation of Large Language Models") against full
fine-tuning, for SFT and for GRPO: the same accuracy from a fraction of the trainable
parameters and of the optimizer state.

Pipeline as implemented (each stage a resumable phase):

1. ``warmup``: SFT on ``task``'s first ``warmup_problems`` training problems: the base
   (or ``model.checkpoint``), then ``eval-base`` on the problems it is adapted to.
2. ``sft-full`` / ``sft-lora``: SFT on the ``adapt`` task's training problems (None: the
   rest of ``task``'s) for ``sft.steps`` steps on the same batches, the whole model
   (``sft.optim``) or LoRA adapters (``lora``, at ``sft_lora_lr``); greedy accuracy on
   its eval problems after each.
3. ``grpo-full`` / ``grpo-lora``: GRPO (``rl``) from the full-SFT model, the whole model or
   LoRA adapters (at ``rl_lora_lr``), the frozen start being the LoRA run's reference;
   greedy accuracy after each (:mod:`.rl_phase`).

The claim is non-inferiority: LoRA's accuracy minus full fine-tuning's, paired on the eval
problems, has a 95% interval above -``margin``. The report also gives each run's trainable
parameters and optimizer-state bytes (:func:`reasonjax.train.fit.optimizer_state_bytes`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from reasonjax.config import check_fields
from reasonjax.driver.records import greedy_correct
from reasonjax.eval import stats
from reasonjax.eval.report import markdown_table, write_report
from reasonjax.recipes import common
from reasonjax.recipes.common import Trained
from reasonjax.recipes.rl_phase import rl_phase
from reasonjax.recipes.rundir import Result, log_metrics, open_run, run_phase, write_outcomes
from reasonjax.rl.algorithms import GRPO
from reasonjax.rl.config import RLConfig
from reasonjax.train.fit import optimizer_state_bytes, param_shapes
from reasonjax.train.lora import LoRAConfig, count, init_shapes
from reasonjax.train.sft import sft_loss


@dataclasses.dataclass(frozen=True)
class Config(common.RecipeConfig):
    """``adapt``: the problems SFT and GRPO adapt the base to (train and eval; None: the
    rest of ``task``'s training problems and its eval problems). ``sft``: the adaptation
    SFT (full fine-tuning's optimizer; LoRA's lr is ``sft_lora_lr``). ``rl``: the GRPO
    stage (LoRA's lr ``rl_lora_lr``, its LoRA+ ratio ``rl_b_lr_ratio``; None: the SFT's).
    ``lora``: the adapters of both LoRA runs.
    ``margin``: how far below full fine-tuning LoRA may fall for the claim to hold."""

    adapt: Optional[common.TaskSpec] = None
    sft: common.FitSpec = common.FitSpec()
    sft_lora_lr: float = 1e-2
    rl: RLConfig = RLConfig(algorithm=GRPO())
    rl_lora_lr: float = 1e-4
    rl_b_lr_ratio: Optional[float] = None
    lora: LoRAConfig = LoRAConfig()
    margin: float = 0.03

    def __post_init__(self):
        super().__post_init__()
        check_fields(self, sft_lora_lr="> 0", rl_lora_lr="> 0", margin=">= 0")
        if self.rl_b_lr_ratio is not None:
            check_fields(self, rl_b_lr_ratio="> 0")


def losses(cfg: Config) -> dict:
    """{FitSpec path: loss factory} of the run's fit phases besides the warm-up."""
    return {"sft": sft_loss}


def rl_runs(cfg: Config) -> list:
    """[(config path, RLConfig)] of the run's RL phases (what :mod:`.plan` compiles)."""
    return [("rl", cfg.rl)]


CLAIM = ("LoRA matches full fine-tuning with a fraction of the trainable parameters "
         "(GPT-3 175B: WikiSQL 73.4 vs 73.8, MNLI-m 91.7 vs 89.5)")

RUNS = ("sft-full", "sft-lora", "grpo-full", "grpo-lora")


def _lora_rl(cfg: Config) -> RLConfig:
    lora = cfg.lora if cfg.rl_b_lr_ratio is None else dataclasses.replace(
        cfg.lora, b_lr_ratio=cfg.rl_b_lr_ratio)
    return dataclasses.replace(cfg.rl, lora=lora, seed=cfg.seed,
                               optim=dataclasses.replace(cfg.rl.optim, lr=cfg.rl_lora_lr))


def sizes(cfg: Config, model_config) -> dict:
    """{run: (trainable parameters, optimizer-state bytes)} from shapes."""
    shapes = param_shapes(model_config)
    lora_params = count(init_shapes(shapes, cfg.lora))
    full_params = count(shapes)
    rl_lora = _lora_rl(cfg)
    return {"sft-full": (full_params, optimizer_state_bytes(model_config, cfg.sft.optim)),
            "sft-lora": (lora_params, optimizer_state_bytes(model_config, cfg.sft.optim,
                                                            cfg.lora)),
            "grpo-full": (full_params, optimizer_state_bytes(model_config, cfg.rl.optim)),
            "grpo-lora": (lora_params, optimizer_state_bytes(model_config, rl_lora.optim,
                                                             cfg.lora))}


def run(cfg: Config, run_dir) -> Result:
    run = open_run(run_dir, cfg, total_phases=7)
    env, base, own = common.warm_start(run, cfg)
    if cfg.adapt is not None:  # the base is adapted to another task's problems
        env = common.make_env(cfg.adapt, cfg.model, cfg.mesh, cfg.num_devices, cfg.prompt)
        own = env.train
    max_new = cfg.rl.max_new_tokens

    def evaluate(params) -> list:
        return greedy_correct(env, params, env.eval, max_new, cfg.batch_size)

    start = common.eval_phase(run, env, base, "eval-base", max_new, cfg.batch_size)
    examples = common.sft_examples(env, [env.task.prompt(p) for p in own],
                                   [env.task.solution(p) for p in own])
    correct = {"base": start}

    def sft(lora: Optional[LoRAConfig]) -> Trained:
        spec = cfg.sft if lora is None else dataclasses.replace(
            cfg.sft, optim=dataclasses.replace(cfg.sft.optim, lr=cfg.sft_lora_lr))
        params, metrics = common.fit_examples(env, base, sft_loss(env.model_config),
                                              examples, spec, seed=cfg.seed, lora=lora)
        return Trained(params, env.model_config, {"correct": evaluate(params),
                                                  "final_loss": float(metrics["loss"])})

    sft_full = run_phase(run, "sft-full", lambda: sft(None), Trained, mesh=env.mesh)
    sft_lora = run_phase(run, "sft-lora", lambda: sft(cfg.lora), Trained, mesh=env.mesh)
    for name, done in (("sft-full", sft_full), ("sft-lora", sft_lora)):
        correct[name] = done.metrics["correct"]
        log_metrics(run, {"phase": name, "accuracy": float(np.mean(correct[name]))})
    full_rl = dataclasses.replace(cfg.rl, seed=cfg.seed)
    for name, rl in (("grpo-full", full_rl), ("grpo-lora", _lora_rl(cfg))):
        done = rl_phase(run, env, sft_full.params, own, rl, name, cfg.batch_size)
        correct[name] = done.correct
        log_metrics(run, {"phase": name, "accuracy": float(np.mean(done.correct)),
                          "seconds": done.seconds})
    outcomes = {"correct": correct,
                "sizes": {k: list(v) for k, v in sizes(cfg, env.model_config).items()}}
    write_outcomes(Path(run_dir), outcomes)
    return report(run_dir, cfg, [outcomes])


def _groups(outcomes, key) -> list[np.ndarray]:
    return [np.asarray(o["correct"][key], float) for o in outcomes]


def effects(outcomes: Sequence[dict], cfg: Config) -> list[stats.Effect]:
    """LoRA vs full fine-tuning (paired on the eval problems) against -margin, for SFT and
    GRPO; and each stage's gain over its start (SFT over the base, GRPO over full SFT)."""
    found = []
    for stage, start in (("sft", "base"), ("grpo", "sft-full")):
        diff = stats.paired_difference(_groups(outcomes, f"{stage}-lora"),
                                       _groups(outcomes, f"{stage}-full"))
        found.append(stats.Effect(
            claim=f"LoRA {stage.upper()} is within {cfg.margin:g} of full fine-tuning",
            direction=1, value=diff, threshold=-cfg.margin,
            problems=len(outcomes[0]["correct"][start]), seeds=len(outcomes),
            detail=f"paired on the eval problems: LoRA minus full ({stage})"))
        found.append(stats.paired_effect(
            f"full {stage.upper()} raises greedy accuracy over its start",
            _groups(outcomes, f"{stage}-full"), _groups(outcomes, start),
            detail=f"{stage}-full minus {start}"))
    return found


def report(run_dir, cfg: Config, outcomes: Sequence[dict]) -> Result:
    """report.md: accuracy, trainable parameters and optimizer state of each run."""
    run_dir = Path(run_dir)
    size = outcomes[0]["sizes"]
    rows = []
    for name in ("base",) + RUNS:
        acc = stats.mean_interval(_groups(outcomes, name))
        params, opt = size.get(name, (0, 0))
        rows.append({"run": name, "greedy accuracy": acc.estimate,
                     "95% interval": f"[{acc.low:.3f}, {acc.high:.3f}]",
                     "trainable parameters": params or "",
                     "optimizer state MiB": round(opt / 2 ** 20, 3) if opt else ""})
    found = effects(outcomes, cfg)
    ratio = {s: size[f"{s}-lora"][1] / size[f"{s}-full"][1] for s in ("sft", "grpo")}
    P = len(outcomes[0]["correct"]["base"])
    title = common.title("LoRA vs full fine-tuning", cfg)
    if cfg.adapt is not None:
        task = cfg.adapt
        title += (f", adapted to {task.data_file or task.name} "
                  f"{task.difficulty or task.knobs or ''}").rstrip()
    path = write_report(run_dir / "report.md", title, [
        ("Results", markdown_table(rows) + f"\n\n{P} eval problems x {len(outcomes)} "
         f"seed(s); LoRA rank {cfg.lora.rank} on {', '.join(cfg.lora.targets)} "
         f"(+ {', '.join(cfg.lora.full) or 'nothing'} whole); optimizer state of LoRA / "
         f"full: SFT {ratio['sft']:.3f}, GRPO {ratio['grpo']:.3f} (Adam's moments, from "
         "the shapes the runs train); intervals: bootstrap over seeds and problems."),
        ("Effect checks", markdown_table([e.row() for e in found]))])
    acc = {r["run"]: r["greedy accuracy"] for r in rows}
    headline = (f"SFT full {acc['sft-full']:.3f} vs LoRA {acc['sft-lora']:.3f} "
                f"({found[0].value}); GRPO full {acc['grpo-full']:.3f} vs LoRA "
                f"{acc['grpo-lora']:.3f} ({found[2].value}); LoRA optimizer state "
                f"{ratio['sft']:.2f}x full's; {P} problems")
    return Result(rows=rows, effects=found, report=path, headline=headline)
