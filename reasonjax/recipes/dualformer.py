"""Dualformer (Su et al., 2024, "Dualformer: Controllable Fast and Slow Thinking by Learning
with Randomized Reasoning Traces") against its Searchformer baseline on A* mazes.

Pipeline as implemented (each stage a resumable phase):

1. ``searchformer``: SFT from scratch on the training mazes' full solutions (the maze
   task in ``auto`` mode with traces: the control line ``slow``, the whole A* trace, the
   plan): the Searchformer baseline.
2. ``dualformer``: the same model, init, data, steps and optimizer, but every training
   row is a randomised solution (:func:`reasonjax.data.tasks.maze.randomize_steps`): the
   trace kept or dropped to level 1-4 with ``drop.probs`` (level 4: control line
   ``fast`` and the plan alone), ``drop.copies`` independent draws per maze.
3. ``eval-<model>-<mode>``: greedy decoding on the held-out mazes with the control line in
   the prompt (``slow``: trace then plan; ``fast``: the plan directly), for Searchformer in
   slow mode and Dualformer in slow and fast mode; per maze: whether the plan is optimal
   (the task's verifier with ``optimal=True``), the trace tokens written (the trace lines
   and their newlines, in the policy's tokens) and all tokens generated.

Effects (95% intervals, paired on the same mazes): (a) Dualformer's slow-mode optimal rate
is not below Searchformer's by more than ``margin`` (held when the interval of the
difference lies above -margin); (b) Dualformer's slow mode writes fewer trace tokens.
Fast mode's optimal rate is reported beside them.

Departures from the paper: a decoder-only model with the control line at the start of
the completion (the paper: an encoder-decoder whose first decoder token, ``create`` or
``plan``, is the control); mazes from this project's generator (walls drawn per cell);
a training row's drop level is drawn ``drop.copies`` times per maze up front instead of
anew every epoch.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Sequence

import jax
import numpy as np

from reasonjax import parallel
from reasonjax.config import ConfigError, check_fields
from reasonjax.data.tasks import maze
from reasonjax.driver import longest_prompt
from reasonjax.driver import run as run_driver
from reasonjax.eval import stats
from reasonjax.eval.report import markdown_table, write_report
from reasonjax.recipes import common
from reasonjax.recipes.common import RecipeEnv, Trained
from reasonjax.recipes.rundir import Result, log_metrics, open_run, run_phase, write_outcomes
from reasonjax.search.sampler import SampleConfig, SamplingConfig
from reasonjax.train.sft import sft_loss


@dataclasses.dataclass(frozen=True)
class Config(common.RecipeConfig):
    """``warmup``: the training of both models (same spec); ``drop``: Dualformer's
    randomised traces; ``max_new_tokens``: the decoding budget of an evaluation;
    ``margin``: the non-inferiority margin of claim (a)."""

    drop: maze.TraceDrop = maze.TraceDrop()
    max_new_tokens: int = 448
    margin: float = 0.05

    def __post_init__(self):
        super().__post_init__()
        check_fields(self, max_new_tokens=">= 1", margin=">= 0")


def losses(cfg: Config) -> dict:
    """Both trainings are the warm-up's SFT step (same loss, spec and shapes), which
    :mod:`reasonjax.recipes.plan` compiles already; nothing else is trained."""
    return {}


CLAIM = ("randomised trace dropping keeps slow mode's optimal rate (97.6% vs Searchformer's "
         "93.3% on 30x30 mazes) with 45.5% fewer reasoning steps; fast mode 80%")

EVALS = (("searchformer", maze.SLOW), ("dualformer", maze.SLOW), ("dualformer", maze.FAST))


def check_task(env: RecipeEnv) -> None:
    """The recipe needs the maze task with traces, in auto mode (the training format)."""
    t = env.task
    if not isinstance(t, maze.Maze) or not t.trace or t.mode != "auto":
        raise ConfigError("task: dualformer trains on mazes with traces in auto mode; set "
                          "task.name=maze task.knobs.trace=true task.knobs.mode=auto")


def randomized_solutions(task: maze.Maze, problems: Sequence, drop: maze.TraceDrop,
                         seed: int) -> tuple[list[str], list[str], list[int]]:
    """(prompts, completions, levels) of Dualformer's training rows: ``drop.copies``
    rows per problem, each with a level drawn from ``drop.probs`` and the trace dropped
    to it; one ``random.Random`` per (seed, problem index, copy), so a row does not
    depend on the others."""
    prompts, completions, levels = [], [], []
    for i, p in enumerate(problems):
        for k in range(drop.copies):
            rng = random.Random(f"dualformer/{seed}/{i}/{k}")
            level = maze.sample_level(drop.probs, rng)
            steps = maze.randomize_steps(p.steps, level, rng, drop.create_drop)
            prompts.append(task.prompt(p))
            completions.append(task.step_delimiter.join(steps))
            levels.append(level)
    return prompts, completions, levels


def train_dualformer(env: RecipeEnv, cfg: Config) -> Trained:
    """Phase ``dualformer``: SFT from the warm-up's init on randomised solutions."""
    params = env.init_params
    if params is None:
        params = parallel.init_params(env.model_config, jax.random.key(cfg.seed), env.mesh)
    prompts, completions, levels = randomized_solutions(env.task, env.train, cfg.drop,
                                                        cfg.seed)
    params, metrics = common.fit_examples(
        env, params, sft_loss(env.model_config),
        common.sft_examples(env, prompts, completions), cfg.warmup, seed=cfg.seed)
    loss = metrics.get("loss")
    return Trained(params, env.model_config,
                   {"final_loss": None if loss is None else float(loss),
                    "levels": [levels.count(v) for v in maze.DROP_LEVELS]})


def mode_env(env: RecipeEnv, mode: str) -> RecipeEnv:
    """``env`` whose task prompts with the control line of ``mode`` (one prompt length
    over the eval problems)."""
    task = dataclasses.replace(env.task, mode=mode)
    out = dataclasses.replace(env, task=task, prompt_len=None)
    return dataclasses.replace(out, prompt_len=longest_prompt(out, env.eval))


def trace_tokens(env: RecipeEnv, completion: str) -> int:
    """Tokens of the trace lines of ``completion`` (each with its delimiter)."""
    lines = [s for s in env.task.split_steps(completion) if maze.is_trace_step(s)]
    return len(env.tokenizer.encode("".join(s + env.delimiter for s in lines))) if lines \
        else 0


def evaluate(env: RecipeEnv, params, mode: str, cfg: Config) -> dict:
    """Greedy decoding of every eval maze in ``mode``: per maze, optimal (the plan
    verifies with optimal=True), trace tokens, tokens generated, finished (EOS)."""
    menv = mode_env(env, mode)
    greedy = SampleConfig(n=1, max_new_tokens=cfg.max_new_tokens,
                          sampling=SamplingConfig(temperature=0.0))
    records = run_driver(menv, params, menv.eval, greedy, common.rng_for(cfg.seed, mode),
                         batch_size=min(cfg.batch_size, len(menv.eval)))
    return {"optimal": [bool(r.correct) for r in records],
            "trace_tokens": [trace_tokens(menv, r.completion or "") for r in records],
            "tokens": [r.candidates[0].tokens if r.candidates else 0 for r in records],
            "finished": [bool(r.candidates and r.candidates[0].finished) for r in records]}


def run(cfg: Config, run_dir) -> Result:
    """The pipeline in the module docstring; writes run_dir/report.md."""
    r = open_run(run_dir, cfg, total_phases=2 + len(EVALS))
    env = common.env_for(cfg)
    check_task(env)
    models = {"searchformer": common.warmup(r, env, cfg.warmup, seed=cfg.seed,
                                            name="searchformer")}
    dual = run_phase(r, "dualformer", lambda: train_dualformer(env, cfg), Trained,
                     mesh=env.mesh)
    log_metrics(r, {"phase": "dualformer", "levels": dual.metrics["levels"]})
    models["dualformer"] = dual.params
    outcomes = {}
    for model, mode in EVALS:
        name = f"{model}_{mode}"
        done = run_phase(r, f"eval-{model}-{mode}",
                         lambda: evaluate(env, models[model], mode, cfg))
        log_metrics(r, {"phase": f"eval-{model}-{mode}",
                        "optimal": float(np.mean(done["optimal"])),
                        "trace_tokens": float(np.mean(done["trace_tokens"]))})
        outcomes[name] = done
    outcomes["levels"] = dual.metrics["levels"]
    write_outcomes(Path(run_dir), outcomes)
    return report(run_dir, cfg, [outcomes])


def _per_seed(outcomes: Sequence[dict], name: str, key: str) -> list[np.ndarray]:
    return [np.asarray(o[name][key], float) for o in outcomes]


def effects(outcomes: Sequence[dict], cfg: Config) -> list[stats.Effect]:
    """(a) non-inferiority of Dualformer's slow-mode optimal rate (paired difference
    against -margin), (b) fewer slow-mode trace tokens (paired difference < 0)."""
    dual, search = "dualformer_slow", "searchformer_slow"
    a, b = _per_seed(outcomes, dual, "optimal"), _per_seed(outcomes, search, "optimal")
    ta, tb = _per_seed(outcomes, dual, "trace_tokens"), _per_seed(outcomes, search,
                                                                  "trace_tokens")
    mean = lambda xs: float(np.mean(np.concatenate(xs)))  # noqa: E731
    return [
        stats.Effect(
            claim=f"Dualformer's slow-mode optimal rate is not below Searchformer's by more "
                  f"than {cfg.margin:g}", direction=1,
            value=stats.paired_difference(a, b), threshold=-cfg.margin, problems=len(a[0]),
            seeds=len(a), detail=f"optimal rate {mean(a):.3f} (Dualformer) vs "
                                 f"{mean(b):.3f} (Searchformer); paired difference"),
        stats.paired_effect(
            "Dualformer's slow mode writes fewer trace tokens than Searchformer", ta, tb,
            direction=-1, detail=f"mean trace tokens {mean(ta):.1f} (Dualformer) vs "
                                 f"{mean(tb):.1f} (Searchformer); paired difference"),
    ]


def report(run_dir, cfg: Config, outcomes: Sequence[dict]) -> Result:
    """report.md from one outcome dict per seed."""
    run_dir = Path(run_dir)
    rows = []
    for model, mode in EVALS:
        name = f"{model}_{mode}"
        opt = stats.mean_interval(_per_seed(outcomes, name, "optimal"))
        tr = stats.mean_interval(_per_seed(outcomes, name, "trace_tokens"))
        rows.append({"model": model, "mode": mode, "optimal rate": opt.estimate,
                     "optimal 95%": f"[{opt.low:.3f}, {opt.high:.3f}]",
                     "trace tokens": tr.estimate, "trace 95%": f"[{tr.low:.1f}, {tr.high:.1f}]",
                     "tokens generated": float(np.mean(np.concatenate(
                         _per_seed(outcomes, name, "tokens")))),
                     "finished": float(np.mean(np.concatenate(
                         _per_seed(outcomes, name, "finished"))))})
    found = effects(outcomes, cfg)
    levels = np.sum([o["levels"] for o in outcomes], 0)
    P = len(outcomes[0]["searchformer_slow"]["optimal"])
    title = common.title("Dualformer vs Searchformer", cfg)
    path = write_report(run_dir / "report.md", title, [
        ("Results", markdown_table(rows) + f"\n\n{P} held-out mazes x {len(outcomes)} "
         "seed(s), greedy decoding with the mode's control line in the prompt; optimal: "
         "the plan reaches the goal by a shortest path; trace tokens: the trace lines "
         "written; intervals: bootstrap over seeds and mazes. Dualformer's training rows "
         "by drop level 0-4: " + ", ".join(str(int(n)) for n in levels) + "."),
        ("Effect checks", markdown_table([e.row() for e in found]))])
    s, d, f = rows
    headline = (f"slow optimal {d['optimal rate']:.3f} (Dualformer) vs "
                f"{s['optimal rate']:.3f} (Searchformer), trace tokens "
                f"{d['trace tokens']:.0f} vs {s['trace tokens']:.0f}; fast optimal "
                f"{f['optimal rate']:.3f}; {P} mazes")
    return Result(rows=rows, effects=found, report=path, headline=headline)
