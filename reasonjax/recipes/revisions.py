"""Sequential revisions (Snell et al., 2024, "Scaling LLM Test-Time Compute Optimally can
be More Effective than Scaling Model Parameters", Sec. 6) against parallel sampling at
equal generation budget N, and, opt-in, GLoRe's global and local refiners (Havrilla et
al., 2024).

Pipeline as implemented:

1. ``warmup``: SFT of the policy (tiny: from scratch on the first ``warmup_problems``
   training problems' reference solutions; paper: from ``model.checkpoint``).
2. ``samples``: ``samples.n`` policy samples per remaining training problem, judged by
   the task's verifier.
3. ``revision-train``: the revision model, a copy of the policy fine-tuned (SFT) on
   "0 .. window wrong attempts in context -> a right attempt" of the same problem
   (:func:`reasonjax.data.revisions.revision_examples`, ``train.per_problem`` each).
4. ``revisions``: chains of ``revision.rounds`` attempts per eval problem, each round one
   driver call for every problem (:func:`reasonjax.driver.revisions.sequential_revisions`);
   the answer at budget N is the chain's N-th attempt (``last``) or a majority vote over
   its first N (``vote``).
5. ``parallel`` / ``policy-parallel``: ``revision.rounds`` independent samples per eval
   problem from the revision model (its prompt without attempts) and from the policy;
   the answer at budget N is a majority vote over the first N.
6. Opt-in (``refine.enabled``): ``refine-train`` fits one GLoRe refiner (a policy copy) on
   global pairs (wrong draft -> right sample) and local pairs (draft with its exact first
   error marked -> the rest of a right solution sharing the prefix), and ``refine``
   refines each chain's first attempt globally and, with the task's exact first error
   (an oracle: the paper locates it with a SORM), locally.

Report: accuracy per N for every answer rule next to generated and prefilled tokens per
problem, coverage (some attempt right), and the effect checks at N = ``revision.rounds``.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Sequence

import numpy as np

from reasonjax.config import check_fields
from reasonjax.data.refinement import RefineFormat, global_examples, local_examples
from reasonjax.data.revisions import chain_vote, revision_examples
from reasonjax.driver import run as run_driver
from reasonjax.driver.refinement import refine
from reasonjax.driver.revisions import Chain, RevisionConfig, sequential_revisions
from reasonjax.eval import stats
from reasonjax.eval.plots import line_plot
from reasonjax.eval.report import markdown_table, write_report
from reasonjax.recipes import common
from reasonjax.recipes.common import (FitSpec, RecipeConfig, Trained, fit_examples, rng_for,
                                      sft_examples, warm_start)
from reasonjax.recipes.rundir import Result, log_metrics, open_run, run_phase, write_outcomes
from reasonjax.search.sampler import SampleConfig
from reasonjax.train.sft import sft_loss

CLAIM = ("sequential revisions beat parallel sampling at equal N (easy prompts); the "
         "revision model improves on its first attempt")
METHODS = ("revisions (last)", "revisions (vote)", "parallel (vote)", "policy (vote)")


@dataclasses.dataclass(frozen=True)
class TrainSpec:
    """A fine-tune of the policy on (prompt, completion) pairs: ``per_problem`` pairs per
    problem (drawn), ``reference``: the reference solution is the target of problems
    with no right sample, ``fit``: the SFT phase."""

    per_problem: int = 2
    reference: bool = False
    fit: FitSpec = FitSpec(steps=1000, seq_len=160)

    def __post_init__(self):
        check_fields(self, per_problem=">= 1")


@dataclasses.dataclass(frozen=True)
class RefineSpec:
    """GLoRe refiners (opt-in): ``format`` of their prompts, ``train`` (per_problem:
    right targets per wrong draft for the global pairs), ``sample``: one refinement per
    draft (``n`` = 1)."""

    enabled: bool = False
    format: RefineFormat = RefineFormat()
    train: TrainSpec = TrainSpec(per_problem=1)
    sample: SampleConfig = SampleConfig(n=1, max_new_tokens=40)


@dataclasses.dataclass(frozen=True)
class Config(RecipeConfig):
    samples: SampleConfig = SampleConfig(n=4, max_new_tokens=40)
    train: TrainSpec = TrainSpec()
    revision: RevisionConfig = RevisionConfig()
    refine: RefineSpec = RefineSpec()


def losses(cfg: Config) -> dict:
    """{FitSpec path: loss factory} of the training phases (for :mod:`recipes.plan`)."""
    out = {"train.fit": lambda mc: sft_loss(mc)}
    if cfg.refine.enabled:
        out["refine.train.fit"] = lambda mc: sft_loss(mc)
    return out


# ---------------------------------------------------------------------------------------
# Pure pieces


def budget_table(outcome: dict, n: int) -> dict[str, list[bool]]:
    """Per eval problem, whether each answer rule of :data:`METHODS` is right at budget
    ``n`` (the first n attempts of a chain / samples), plus coverage of both."""
    chains = [Chain.from_json(c) for c in outcome["chains"]]

    def parallel_vote(p: dict) -> list[bool]:
        out = []
        for answers, correct in zip(p["answers"], p["correct"]):
            pick = chain_vote(answers[:n])
            out.append(bool(pick is not None and correct[pick]))
        return out

    return {"revisions (last)": [bool(c.last(n)) for c in chains],
            "revisions (vote)": [bool(c.voted(n)) for c in chains],
            "parallel (vote)": parallel_vote(outcome["parallel"]),
            "policy (vote)": parallel_vote(outcome["policy"]),
            "revisions (coverage)": [any(bool(x) for x in c.correct[:n]) for c in chains],
            "parallel (coverage)": [any(bool(x) for x in row[:n])
                                    for row in outcome["parallel"]["correct"]]}


def budget_tokens(outcome: dict, n: int) -> dict[str, float]:
    """Mean generated / prefilled tokens per problem at budget n: a chain's first n
    rounds; n of the R parallel samples (their share)."""
    chains = [Chain.from_json(c) for c in outcome["chains"]]
    R = len(chains[0].correct)
    out = {"revisions generated": float(np.mean([sum(c.tokens_generated[:n])
                                                 for c in chains])),
           "revisions prefilled": float(np.mean([sum(c.tokens_prefilled[:n])
                                                 for c in chains]))}
    for name in ("parallel", "policy"):
        p = outcome[name]
        out[f"{name} generated"] = float(np.mean(p["tokens_generated"])) * n / R
        out[f"{name} prefilled"] = float(np.mean(p["tokens_prefilled"])) * n / R
    return out


def _samples(records) -> dict:
    return {"answers": [[c.answer for c in r.candidates] for r in records],
            "correct": [[bool(c.correct) for c in r.candidates] for r in records],
            "tokens_generated": [r.compute["tokens_generated"] for r in records],
            "tokens_prefilled": [r.compute["tokens_prefilled"] for r in records]}


# ---------------------------------------------------------------------------------------
# Phases


def _fit(run, env, params, name: str, pairs: Sequence[tuple[str, str]], spec: TrainSpec,
         seed: int):
    def compute():
        examples = sft_examples(env, [p for p, _ in pairs], [c for _, c in pairs])
        trained, metrics = fit_examples(env, params, sft_loss(env.model_config), examples,
                                        spec.fit, seed=seed)
        loss = metrics.get("loss")
        return Trained(trained, env.model_config,
                       {"final_loss": None if loss is None else float(loss),
                        "examples": len(pairs)})

    out = run_phase(run, name, compute, Trained, mesh=env.mesh)
    log_metrics(run, {"phase": name, **out.metrics})
    return out.params


def _refine(run, env, params, own, samples, chains, cfg: Config) -> dict:
    """refine-train and refine phases (GLoRe): both refiners in one model."""
    spec = cfg.refine
    rng = random.Random(cfg.seed + 2)
    pairs = []
    for p, answers, correct in zip(own, samples["completions"], samples["correct"]):
        pairs += global_examples(env.task, p, answers, correct, spec.format, rng,
                                 spec.train.per_problem, spec.train.reference)
        pairs += local_examples(env.task, p, answers, correct, spec.format, rng,
                                spec.train.reference)
    refiner = _fit(run, env, params, "refine-train", pairs, spec.train, cfg.seed + 2)

    def compute():
        drafts = [c.completions[0] for c in chains]
        marks = [env.task.check_steps(p, env.task.split_steps(d)).first_error
                 if not c.correct[0] else None for p, d, c in zip(env.eval, drafts, chains)]
        out = {}
        for mode in ("global", "local"):
            done = refine(env, refiner, env.eval, drafts, mode, spec.sample,
                          rng_for(cfg.seed, "refine", mode),
                          batch_size=min(cfg.batch_size, len(env.eval)), fmt=spec.format,
                          first_errors=marks if mode == "local" else None)
            out[mode] = {"correct": [bool(r.correct) for r in done],
                         "tokens_generated": [r.tokens_generated for r in done]}
        return out

    return run_phase(run, "refine", compute)


def run(cfg: Config, run_dir) -> Result:
    """The pipeline in the module docstring; writes run_dir/report.md and the plot."""
    run_dir = Path(run_dir)
    r = open_run(run_dir, cfg, total_phases=6 + 2 * cfg.refine.enabled)
    env, params, own = warm_start(r, cfg)
    R, bs = cfg.revision.rounds, min(cfg.batch_size, len(env.eval))

    def draw():
        records = run_driver(env, params, own, cfg.samples, rng_for(cfg.seed, "samples"),
                             batch_size=min(cfg.batch_size, len(own)))
        return {"completions": [[c.completion for c in x.candidates] for x in records],
                "correct": [[bool(c.correct) for c in x.candidates] for x in records]}

    samples = run_phase(r, "samples", draw)
    flat = [c for row in samples["correct"] for c in row]
    log_metrics(r, {"phase": "samples", "accuracy": float(np.mean(flat))})
    rng = random.Random(cfg.seed + 1)
    pairs = [pair for p, a, c in zip(own, samples["completions"], samples["correct"])
             for pair in revision_examples(env.task, p, a, c, cfg.revision.format, rng,
                                           cfg.train.per_problem, cfg.train.reference)]
    reviser = _fit(r, env, params, "revision-train", pairs, cfg.train, cfg.seed + 1)
    chains = run_phase(r, "revisions", lambda: {"chains": [c.to_json() for c in
                       sequential_revisions(env, reviser, env.eval, cfg.revision,
                                            rng_for(cfg.seed, "revisions"),
                                            batch_size=bs)]})["chains"]
    parallel = SampleConfig(n=R, max_new_tokens=cfg.revision.sample.max_new_tokens,
                            sampling=cfg.revision.sample.sampling)
    outcomes = {"chains": chains}
    for name, model in (("parallel", reviser), ("policy", params)):
        outcomes[name] = run_phase(r, f"{name}-samples", lambda model=model, name=name:
                                   _samples(run_driver(env, model, env.eval, parallel,
                                                       rng_for(cfg.seed, name),
                                                       batch_size=bs)))
    if cfg.refine.enabled:
        outcomes["refine"] = _refine(r, env, params, own, samples,
                                     [Chain.from_json(c) for c in chains], cfg)
    write_outcomes(run_dir, outcomes)
    return report(run_dir, cfg, [outcomes])


# ---------------------------------------------------------------------------------------
# Report


def effects(outcomes: Sequence[dict], cfg: Config) -> list[stats.Effect]:
    """At N = revision.rounds, paired on the eval problems: revisions (vote) above the
    revision model's parallel vote and above the policy's, and the last revision above
    the chain's first attempt; with ``refine``, each GLoRe refinement above the first
    attempt it refines."""
    R = cfg.revision.rounds
    top = [budget_table(o, R) for o in outcomes]
    first = [budget_table(o, 1)["revisions (last)"] for o in outcomes]
    seq = [t["revisions (vote)"] for t in top]
    found = [
        stats.paired_effect(f"sequential revisions above parallel sampling at equal N={R} "
                            "(both majority votes, same revision model)",
                            seq, [t["parallel (vote)"] for t in top],
                            detail="paired: revisions (vote) minus parallel (vote)"),
        stats.paired_effect(f"sequential revisions above the policy's parallel majority at "
                            f"N={R}", seq, [t["policy (vote)"] for t in top],
                            detail="paired: revisions (vote) minus policy (vote)"),
        stats.paired_effect(f"the last of {R} revisions above the first attempt",
                            [t["revisions (last)"] for t in top], first,
                            detail="paired: attempt R minus attempt 1 of each chain"),
    ]
    if "refine" in outcomes[0]:
        found += [stats.paired_effect(
            f"GLoRe {mode} refinement above the first attempt it refines"
            + (" (oracle first error)" if mode == "local" else ""),
            [o["refine"][mode]["correct"] for o in outcomes], first,
            detail=f"paired: {mode} refinement minus the chain's first attempt")
            for mode in ("global", "local")]
    return found


def report(run_dir, cfg: Config, outcomes: Sequence[dict]) -> Result:
    """report.md and accuracy_vs_n.png from one outcome dict per seed."""
    run_dir = Path(run_dir)
    R = cfg.revision.rounds
    budgets = list(range(1, R + 1))
    rows = []
    for n in budgets:
        acc = {m: float(np.mean([np.mean(budget_table(o, n)[m]) for o in outcomes]))
               for m in budget_table(outcomes[0], n)}
        tok = {k: float(np.mean([budget_tokens(o, n)[k] for o in outcomes]))
               for k in budget_tokens(outcomes[0], n)}
        rows.append({"N": n, **acc, **tok})
    found = effects(outcomes, cfg)
    plot = "accuracy_vs_n.png"
    line_plot(run_dir / plot, {m: (budgets, [row[m] for row in rows]) for m in METHODS},
              xlabel="attempts per problem N", ylabel="accuracy", title="revisions vs "
              "parallel sampling", ylim=(0.0, 1.0))
    P = len(outcomes[0]["chains"])
    sections = [
        ("Accuracy and tokens per problem at budget N",
         markdown_table(rows) + f"\n\n{P} eval problems x {len(outcomes)} seed(s). vote: "
         "majority over the first N attempts (ties: the latest); coverage: some attempt "
         "right. Generated tokens match at equal N; revisions prefill their context."),
        ("Effect checks", markdown_table([e.row() for e in found])),
        ("Plots", f"![{plot}]({plot})"),
    ]
    if "refine" in outcomes[0]:
        first = float(np.mean([budget_table(o, 1)["revisions (last)"] for o in outcomes]))
        ref = [{"draft": "first attempt of each chain", "accuracy": first}] + [
            {"draft": f"GLoRe {mode}" + (" (oracle first error)" if mode == "local" else ""),
             "accuracy": float(np.mean([np.mean(o["refine"][mode]["correct"])
                                        for o in outcomes]))}
            for mode in ("global", "local")]
        sections.insert(2, ("GLoRe refinement of the first attempt", markdown_table(ref)))
    title = common.title("Sequential revisions (Snell et al.)", cfg)
    path = write_report(run_dir / "report.md", title, sections)
    last = rows[-1]
    headline = (f"N={R}: revisions vote {last['revisions (vote)']:.3f}, last "
                f"{last['revisions (last)']:.3f}, parallel vote {last['parallel (vote)']:.3f}"
                f", policy vote {last['policy (vote)']:.3f}; {P} problems")
    return Result(rows=rows, effects=found, report=path, headline=headline)
