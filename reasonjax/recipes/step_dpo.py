"""Step-DPO (Lai et al., 2024, "Step-DPO: Step-wise Preference Optimization for Long-chain
Reasoning of LLMs"): DPO where the unit is one reasoning step.

Pipeline as implemented (each stage a resumable phase):

1. ``warmup``: SFT on the training problems' reference solutions (or a checkpoint).
2. ``eval-0``: greedy accuracy of the warm-up model on the eval problems.
3. per round r: ``pairs-r``: sample ``n`` solutions per training problem (those after
   ``warmup_problems``) from the current policy; for every wrong one, locate its first
   wrong step, with the task's exact step check (``locate: exact``) or OmegaPRM's Monte
   Carlo binary search (``locate: monte_carlo``, :mod:`.process_labels`); sample
   ``corrections.n`` continuations from the prefix before that step and keep those whose
   final answer verifies; a pair is (prompt + correct previous steps; chosen = the first
   step of a verified correction, rejected = the wrong step). ``train-r``: step-level DPO
   on the pairs (``formatting.encode_step_preference``: the loss reads only the step
   tokens), reference = the warm-up params (the paper's reference is the SFT model), then
   greedy accuracy.

Departures from the paper: the paper locates the first error with a strong model / human
check (or MC labels) and collects corrections by sampling the policy with the correct
prefix, as here; it uses a fixed 10K-pair dataset, whereas rounds > 1 here resample
on-policy (round 1 is the paper's setting).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from reasonjax.config import ConfigError, check_fields
from reasonjax.data import formatting
from reasonjax.driver import run as run_driver
from reasonjax.driver.records import greedy_correct
from reasonjax.eval import stats
from reasonjax.eval.plots import line_plot
from reasonjax.eval.report import markdown_table, write_report
from reasonjax.recipes import common, process_labels
from reasonjax.recipes.common import RecipeEnv
from reasonjax.recipes.rundir import Result, log_metrics, open_run, run_phase, write_outcomes
from reasonjax.search.sampler import SampleConfig
from reasonjax.train.preference import PreferenceConfig, preference_loss
from reasonjax.train.state import OptimConfig


@dataclasses.dataclass(frozen=True)
class Config(common.RecipeConfig):
    """``sampling``: policy samples per training problem (``n``); ``locate`` the first
    error exactly or by Monte Carlo binary search (``locate_rollouts``); ``corrections``:
    rollouts from the prefix before it; ``dpo`` / ``preference``: the step-level DPO fit."""

    rounds: int = 1
    sampling: SampleConfig = SampleConfig(n=4, max_new_tokens=48)
    locate: str = "exact"  # exact | monte_carlo
    locate_rollouts: process_labels.RolloutSpec = process_labels.RolloutSpec()
    corrections: process_labels.RolloutSpec = process_labels.RolloutSpec()
    dpo: common.FitSpec = common.FitSpec(steps=200, optim=OptimConfig(lr=1e-4,
                                                                     warmup_steps=20))
    preference: PreferenceConfig = PreferenceConfig(beta=0.1)

    def __post_init__(self):
        super().__post_init__()
        check_fields(self, rounds=">= 1")


def losses(cfg: Config) -> dict:
    """{FitSpec path: loss factory} of the run's training phases (what
    :mod:`reasonjax.recipes.plan` compiles)."""
    return {"dpo": lambda mc: preference_loss(mc, cfg.preference)}


CLAIM = "Step-DPO on pairs at the first wrong step raises accuracy (~+3% on MATH)"


@dataclasses.dataclass(frozen=True)
class PairsRound:
    """A round's step pairs and what it took to find them: ``exact`` per pair (chosen step
    exactly right, rejected exactly wrong; exact tasks only), ``agreement`` per located
    solution (the located first error is the exact one; Monte Carlo on exact tasks)."""

    pairs: list
    samples: int
    sample_accuracy: float
    wrong: int
    located: int
    locate_rollouts: int
    exact: list
    agreement: list


@dataclasses.dataclass(frozen=True)
class Round:
    """A trained round: params, and each eval problem's greedy correctness."""

    params: Any
    model_config: Any
    correct: list
    reward_accuracy: float


LOCATES = ("exact", "monte_carlo")


def locate_first_errors(env: RecipeEnv, params, problems, steps, rng, cfg: Config) -> list:
    """First wrong step of each (wrong) solution: the exact check, or OmegaPRM's binary
    search with the policy's rollouts. Returns per solution (index or None, rollouts)."""
    if cfg.locate == "exact":
        return [(env.task.check_steps(p, s).first_error, 0) for p, s in zip(problems, steps)]
    oracle = process_labels.prefix_oracle(env, params, problems, steps, rng,
                                          cfg.locate_rollouts)
    labels = process_labels.omegaprm_labels([len(s) for s in steps], [False] * len(steps),
                                            oracle, cfg.locate_rollouts.n)
    return [(process_labels.first_error(h), r) for h, r in zip(labels.hard, labels.rollouts)]


def step_pairs(env: RecipeEnv, problems, steps, errors, corrections) -> list[dict]:
    """Step-level pairs from wrong solutions. ``errors[i]``: first wrong step of solution
    i (None: skipped); ``corrections.texts[j] / .correct[j]``: continuations sampled from
    the prefix before the j-th located error (in order). At most one pair per solution:
    the first verified correction whose first step differs from the wrong step."""
    pairs, j = [], 0
    for problem, s, e in zip(problems, steps, errors):
        if e is None:
            continue
        texts, ok = corrections.texts[j], corrections.correct[j]
        j += 1
        for text, good in zip(texts, ok):
            first = env.task.split_steps(text)[:1]
            if good and first and first[0] != s[e]:
                pairs.append({"prompt": env.task.prompt(problem), "prefix": list(s[:e]),
                              "chosen": first[0], "rejected": s[e],
                              "problem": problem.to_json()})
                break
    return pairs


def pair_exactness(env: RecipeEnv, pairs) -> list[bool]:
    """Per pair: its chosen step is exactly correct and its rejected step exactly wrong
    after the shared prefix (the task's step check)."""
    from reasonjax.data.task import Problem

    good = []
    for p in pairs:
        problem = Problem.from_json(p["problem"])
        c = env.task.check_steps(problem, p["prefix"] + [p["chosen"]]).correct[-1]
        r = env.task.check_steps(problem, p["prefix"] + [p["rejected"]]).correct[-1]
        good.append(bool(c and not r))
    return good



def encode_pairs(env: RecipeEnv, pairs) -> list[dict]:
    final = env.task.is_final_step
    return [formatting.encode_step_preference(
        env.tokenizer, p["prompt"], p["prefix"], p["chosen"], p["rejected"], env.delimiter,
        chosen_final=final(p["chosen"]), rejected_final=final(p["rejected"])) for p in pairs]


def collect_pairs(env: RecipeEnv, params, own, cfg: Config, r: int) -> PairsRound:
    """Round ``r``'s pairs from the policy's wrong samples of the problems ``own``."""
    records = run_driver(env, params, own, cfg.sampling, common.rng_for(cfg.seed, f"pairs-{r}"),
                         batch_size=min(cfg.batch_size, len(own)))
    wrong = [(rec.problem, env.task.split_steps(c.completion)) for rec in records
             for c in rec.candidates if not c.correct]
    wrong = [(p, st) for p, st in wrong if st]
    problems, steps = [w[0] for w in wrong], [w[1] for w in wrong]
    located = locate_first_errors(env, params, problems, steps,
                                  common.rng_for(cfg.seed, f"locate-{r}"), cfg)
    errors = [e for e, _ in located]
    exact = env.task.exact_steps
    truth = [env.task.check_steps(p, st).first_error for p, st in wrong] if exact else []
    prefixes = [(p, st[:e]) for p, st, e in zip(problems, steps, errors) if e is not None]
    fixes = process_labels.rollouts_from_prefixes(
        env, params, prefixes, common.rng_for(cfg.seed, f"fix-{r}"), cfg.corrections)
    pairs = step_pairs(env, problems, steps, errors, fixes)
    return PairsRound(
        pairs=pairs, samples=len(own) * cfg.sampling.n,
        sample_accuracy=float(np.mean([c.correct for rec in records for c in rec.candidates])),
        wrong=len(wrong), located=sum(e is not None for e in errors),
        locate_rollouts=sum(n for _, n in located),
        exact=pair_exactness(env, pairs) if exact else [],
        agreement=[a == b for a, b in zip(errors, truth)]
        if exact and cfg.locate == "monte_carlo" else [])


def train_round(env: RecipeEnv, params, ref, data: PairsRound, cfg: Config, r: int) -> Round:
    """Step-level DPO on a round's pairs against the warm-up reference, then greedy
    correctness on the eval problems."""
    loss = preference_loss(env.model_config, cfg.preference)
    new, metrics = common.fit_examples(env, params, loss, encode_pairs(env, data.pairs),
                                       cfg.dpo, seed=cfg.seed + r, ref_params=ref)
    return Round(new, env.model_config,
                 greedy_correct(env, new, env.eval, cfg.sampling.max_new_tokens,
                                cfg.batch_size),
                 float(metrics.get("reward_accuracy", float("nan"))))


def run(cfg: Config, run_dir) -> Result:
    if cfg.locate not in LOCATES:
        raise ConfigError(f"locate={cfg.locate!r}: choose one of {LOCATES}")
    run = open_run(run_dir, cfg, total_phases=2 + 2 * cfg.rounds)
    env = common.env_for(cfg)
    if cfg.locate == "exact" and not env.task.exact_steps:
        raise ConfigError(f"locate=exact: task {env.task.name!r} has no exact step checker; "
                          "set locate=monte_carlo")
    env, ref, own = common.warm_start(run, cfg, env)
    start = common.eval_phase(run, env, ref, "eval-0", cfg.sampling.max_new_tokens,
                              cfg.batch_size)
    correct, rounds, params = [start], [], ref
    for r in range(1, cfg.rounds + 1):
        data = run_phase(run, f"pairs-{r}", lambda: collect_pairs(env, params, own, cfg, r),
                         PairsRound)
        log_metrics(run, {"phase": f"pairs-{r}", "pairs": len(data.pairs),
                          "samples": data.samples, "sample_accuracy": data.sample_accuracy,
                          "wrong": data.wrong, "located": data.located})
        if data.pairs:
            done = run_phase(run, f"train-{r}", lambda: train_round(env, params, ref, data,
                                                                     cfg, r), Round,
                             mesh=env.mesh)
            params = done.params
            correct.append(done.correct)
        else:
            correct.append(correct[-1])
        log_metrics(run, {"phase": f"train-{r}", "accuracy": float(np.mean(correct[-1]))})
        rounds.append({k: v for k, v in dataclasses.asdict(data).items() if k != "pairs"}
                      | {"pairs": len(data.pairs)})
    outcomes = {"correct": correct, "rounds": rounds}
    write_outcomes(Path(run_dir), outcomes)
    return report(run_dir, cfg, [outcomes])


def _mean(xs) -> float:
    return float(np.mean(xs)) if len(xs) else float("nan")


def effects(outcomes: Sequence[dict], cfg: Config) -> list[stats.Effect]:
    """Greedy accuracy after the last round vs the warm-up model on the same problems,
    pair exactness and (Monte Carlo) first-error agreement against 0.8."""
    found = [stats.paired_effect(
        "Step-DPO raises greedy accuracy over the warm-up model",
        [np.asarray(o["correct"][-1], float) for o in outcomes],
        [np.asarray(o["correct"][0], float) for o in outcomes],
        detail="paired on the eval problems: last round minus warm-up")]
    exact = [np.asarray([x for r in o["rounds"] for x in r["exact"]], float) for o in outcomes]
    if all(len(x) for x in exact):
        found.append(stats.effect(
            "step pairs are exact (chosen step correct, rejected step wrong)", exact,
            threshold=0.8, detail=f"{sum(map(len, exact))} pairs over the seeds"))
    agree = [np.asarray([x for r in o["rounds"] for x in r["agreement"]], float)
             for o in outcomes]
    if all(len(x) for x in agree):
        found.append(stats.effect("Monte Carlo first errors match the exact ones", agree,
                                  threshold=0.8, detail="per located wrong solution"))
    return found


def report(run_dir, cfg: Config, outcomes: Sequence[dict]) -> Result:
    """report.md and the per-round plot from one outcome dict per seed."""
    run_dir = Path(run_dir)
    R = len(outcomes[0]["correct"])
    acc = [stats.mean_interval([np.asarray(o["correct"][r], float) for o in outcomes])
           for r in range(R)]
    rows = []
    for r in range(R):
        row = {"stage": "warm-up" if r == 0 else f"round {r}",
               "greedy accuracy": acc[r].estimate, "95% interval": f"[{acc[r].low:.3f}, "
                                                                   f"{acc[r].high:.3f}]"}
        for key, label in (("samples", "samples"), ("sample_accuracy", "sample accuracy"),
                           ("wrong", "wrong"), ("located", "errors located"),
                           ("locate_rollouts", "rollouts to locate"), ("pairs", "pairs")):
            row[label] = _mean([o["rounds"][r - 1][key] for o in outcomes]) if r else 0
        row["pair precision"] = _mean([x for o in outcomes for x in
                                       (o["rounds"][r - 1]["exact"] if r else [])])
        rows.append(row)
    found = effects(outcomes, cfg)
    xs = list(range(R))
    line_plot(run_dir / "accuracy_vs_round.png",
              {"greedy": (xs, [a.estimate for a in acc])},
              bands={"greedy": ([a.low for a in acc], [a.high for a in acc])},
              xlabel="round (0 = warm-up)", ylabel="greedy accuracy (95% interval)",
              title="Step-DPO: greedy accuracy per round", ylim=(0, 1))
    P = len(outcomes[0]["correct"][0])
    title = common.title("Step-DPO", cfg)
    path = write_report(run_dir / "report.md", title, [
        ("Results", markdown_table(rows) + f"\n\n{P} eval problems x {len(outcomes)} "
         "seed(s); per-round counts are means over the seeds; intervals: bootstrap over "
         "seeds and problems."),
        ("Effect checks", markdown_table([e.row() for e in found])),
        ("Plots", "![accuracy vs round](accuracy_vs_round.png)")])
    gain = found[0].value
    headline = (f"greedy {acc[0].estimate:.3f} -> {acc[-1].estimate:.3f}, difference "
                f"{gain}; {rows[-1]['pairs']:.0f} pairs a seed; {P} problems")
    return Result(rows=rows, effects=found, report=path, headline=headline)
