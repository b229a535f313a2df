"""Repeated sampling: coverage vs k (Large Language Monkeys, Brown et al., 2024) next to
majority vote and an imperfect verifier (Inference Scaling fLaws, Stroebl et al., 2024).

Pipeline as implemented:

1. ``warmup``: SFT of the policy (tiny: from scratch on the task's reference solutions;
   paper: from ``model.checkpoint``).
2. ``samples``: ``sampling.n`` independent samples per eval problem at
   ``sampling.temperature``, each judged by the task's verifier; the final answers are
   kept for voting.
3. Analysis (cheap, recomputed on every run): coverage(k) = mean unbiased pass@k
   (``1 - C(n-c, k) / C(n, k)``) for k = 1, 2, 4, ... n; the exponentiated power law
   ``coverage ~ exp(a k^b)`` fitted by least squares on log(-log coverage) vs log k; the
   log-linearity of coverage (r2 of coverage against log k); majority-vote accuracy at
   each k, averaged over ``vote_trials`` random k-subsets of the n samples per problem
   (the paper's plateau of voting); and the expected accuracy of resampling until a
   verifier with false-positive rate ``verifier.fpr`` (true-positive rate
   ``verifier.tpr``) accepts, from each problem's per-sample success rate c / n (fLaws'
   model; utility = accuracy - ``verifier.cost`` x wrong answers gives the best k).

Report: a table per k (coverage, power-law fit, majority vote, verifier accuracy), the
fit's parameters, the effect checks (coverage rises log-linearly with k; the power law
fits; majority vote stays below coverage; false positives cap verified resampling below
coverage), and ``coverage.png`` (coverage vs k with the fit, voting and the verifier).
Departure from the papers: the verifier is the fLaws analytic model on measured success
rates rather than a learned reward model.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Sequence

import jax.numpy as jnp
import numpy as np

from reasonjax.config import ConfigError, check_fields
from reasonjax.eval import stats
from reasonjax.eval.passk import fit_power_law, log_linearity, pass_at_k
from reasonjax.eval.plots import line_plot
from reasonjax.eval.report import markdown_table, write_report
from reasonjax.eval.verifier import verified_resampling
from reasonjax.driver import run as run_driver
from reasonjax.recipes import common
from reasonjax.recipes.common import RecipeConfig, rng_for, warm_start
from reasonjax.recipes.rundir import Result, log_metrics, open_run, run_phase, write_outcomes
from reasonjax.search.sampler import SampleConfig
from reasonjax.search.voting import answer_ids, vote


@dataclasses.dataclass(frozen=True)
class VerifierSpec:
    """The fLaws verifier: false / true positive rates and the cost of a wrong answer
    relative to abstaining (for the utility-optimal k)."""

    fpr: float = 0.1
    tpr: float = 1.0
    cost: float = 1.0

    def __post_init__(self):
        check_fields(self, fpr="in [0, 1]", tpr="in [0, 1]", cost=">= 0")


@dataclasses.dataclass(frozen=True)
class Config(RecipeConfig):
    sampling: SampleConfig = SampleConfig(n=64, max_new_tokens=48)
    verifier: VerifierSpec = dataclasses.field(default_factory=VerifierSpec)
    vote_trials: int = 16
    log_linear_r2: float = 0.9

    def __post_init__(self):
        super().__post_init__()
        check_fields(self, vote_trials=">= 1", log_linear_r2="in [0, 1]")


def losses(cfg: Config) -> dict:
    """No training phase besides the warm-up (for :mod:`reasonjax.recipes.plan`)."""
    return {}


def ks_for(n: int) -> list[int]:
    """1, 2, 4, ... up to n, and n itself."""
    ks = [1 << i for i in range(n.bit_length()) if 1 << i <= n]
    return ks if ks[-1] == n else ks + [n]


CLAIM = ("coverage log-linear in k, fits an exponentiated power law; majority vote "
         "plateaus; an imperfect verifier caps accuracy, optimal k can be < 10")


def majority_table(answers: Sequence[Sequence], correct_PN, ks: Sequence[int],
                   trials: int, seed: int) -> np.ndarray:
    """[P, len(ks)] each problem's majority-vote accuracy over k samples, averaged over
    ``trials`` random k-subsets (without replacement) of its n samples.

    answers [P][n]: extracted answers (None = none); correct_PN [P, n]: that answer is
    right. A subset with no answer counts as wrong; ties go to the answer seen first."""
    ids_PN = answer_ids(answers)
    correct_PN = np.asarray(correct_PN, bool)
    P, n = ids_PN.shape
    rng = np.random.default_rng(seed)
    out = []
    for k in ks:
        picks = np.stack([np.stack([rng.permutation(n)[:k] for _ in range(trials)])
                          for _ in range(P)])                             # [P, trials, k]
        ids = np.take_along_axis(ids_PN[:, None, :], picks, 2).reshape(P * trials, k)
        ok = np.take_along_axis(correct_PN[:, None, :], picks, 2).reshape(P * trials, k)
        winner, _ = vote(jnp.asarray(ids), jnp.ones(ids.shape, jnp.float32))
        winner = np.asarray(winner)
        won = np.where(winner >= 0, ok[np.arange(P * trials), np.maximum(winner, 0)], False)
        out.append(won.reshape(P, trials).mean(1))
    return np.stack(out, 1)


def majority_accuracy(answers: Sequence[Sequence], correct_PN, ks: Sequence[int],
                      trials: int, seed: int) -> np.ndarray:
    """[len(ks)] :func:`majority_table` averaged over problems."""
    return majority_table(answers, correct_PN, ks, trials, seed).mean(0)


def problem_table(samples: dict, cfg: Config) -> dict:
    """Per-problem curves [P, K] over k = :func:`ks_for`: unbiased pass@k, majority-vote
    accuracy and verified-resampling accuracy (fLaws model on the problem's c / n)."""
    correct_PN = np.asarray(samples["correct"], bool)
    n = correct_PN.shape[1]
    ks = ks_for(n)
    by_count = np.asarray([[pass_at_k(n, c, k) for k in ks] for c in range(n + 1)])
    v = cfg.verifier
    ver = np.stack([verified_resampling([p], ks, fpr=v.fpr, tpr=v.tpr).accuracy
                    for p in correct_PN.mean(1)])
    return {"ks": ks, "passk": by_count[correct_PN.sum(1)],
            "majority": majority_table(samples["answers"], samples["answer_correct"], ks,
                                       cfg.vote_trials, cfg.seed),
            "verifier": ver}


def _fit(ks: Sequence[int], curve) -> tuple[float, float, float]:
    """(a, b, r2) of the power-law fit of a coverage curve; NaNs when it cannot be fit."""
    try:
        fit = fit_power_law(ks, curve)
        return fit.a, fit.b, fit.r2
    except ValueError:
        return float("nan"), float("nan"), float("nan")


def _fitted(ks: Sequence[int], curve, k: int) -> float:
    """The power-law fit of ``curve`` evaluated at k (NaN when it cannot be fit)."""
    a, b, _ = _fit(ks, curve)
    return float(np.exp(a * k ** b))


def _curve(groups: list[np.ndarray]) -> np.ndarray:
    """The seeds' mean coverage curve from per-seed [P, K] pass@k tables."""
    return np.mean([g.mean(0) for g in groups], 0)


def analyse(tables: Sequence[dict], cfg: Config) -> dict:
    """Pooled curves with 95% intervals (bootstrap over seeds and problems), the power-law
    fit of the pooled coverage and its parameters' intervals, log-linearity, verified
    resampling's utility and best k (JSON-able). ``tables``: one :func:`problem_table` per
    seed."""
    ks = tables[0]["ks"]
    K = len(ks)
    out = {"ks": ks}
    for name in ("passk", "majority", "verifier"):
        groups = [t[name] for t in tables]
        cis = [stats.mean_interval([g[:, j] for g in groups]) for j in range(K)]
        out[name] = [c.estimate for c in cis]
        out[name + "_low"] = [c.low for c in cis]
        out[name + "_high"] = [c.high for c in cis]
    passk = [t["passk"] for t in tables]
    fits = {k: stats.bootstrap(passk, lambda g, i=i: _fit(ks, _curve(g))[i], resamples=400)
            for i, k in enumerate(("a", "b", "r2"))}
    out["fit"] = {k: [v.estimate, v.low, v.high] for k, v in fits.items()} \
        if not math.isnan(fits["a"].estimate) else None
    out["fitted"] = [_fitted(ks, _curve(passk), k) for k in ks]
    band = [stats.bootstrap(passk, lambda g, k=k: _fitted(ks, _curve(g), k), resamples=200)
            for k in ks] if out["fit"] else []
    out["fitted_low"] = [c.low for c in band]
    out["fitted_high"] = [c.high for c in band]
    out["log_linear_r2"] = float(log_linearity(ks, out["passk"]))
    p = np.concatenate([t["passk"][:, 0] for t in tables])
    v = cfg.verifier
    ver = verified_resampling(p, ks, fpr=v.fpr, tpr=v.tpr, cost=v.cost)
    out["verifier_utility"] = [float(u) for u in ver.utility]
    out["best_k"] = ver.best_k
    return out


def effects(tables: Sequence[dict], cfg: Config) -> list[stats.Effect]:
    """The four claims, each with a 95% interval over seeds and problems."""
    ks = tables[0]["ks"]
    passk = [t["passk"] for t in tables]
    r2 = cfg.log_linear_r2
    last = len(ks) - 1
    return [
        stats.effect(f"coverage rises log-linearly with k (r2 of coverage vs log k > {r2})",
                     passk, lambda g: log_linearity(ks, _curve(g)), threshold=r2,
                     detail=f"coverage k={ks[0]} -> {ks[-1]}: "
                            f"{_curve(passk)[0]:.3f} -> {_curve(passk)[-1]:.3f}"),
        stats.effect(f"an exponentiated power law exp(a k^b) fits coverage (r2 > {r2})",
                     passk, lambda g: _fit(ks, _curve(g))[2], threshold=r2),
        stats.paired_effect("majority vote plateaus below coverage (at the largest k)",
                            [t["passk"][:, last] for t in tables],
                            [t["majority"][:, last] for t in tables],
                            detail=f"k={ks[-1]}: coverage minus majority accuracy"),
        stats.paired_effect(f"false positives (fpr={cfg.verifier.fpr}) cap verified "
                            "resampling below coverage (at the largest k)",
                            [t["passk"][:, last] for t in tables],
                            [t["verifier"][:, last] for t in tables],
                            detail=f"k={ks[-1]}: coverage minus verified accuracy"),
    ]


def run(cfg: Config, run_dir) -> Result:
    """The pipeline in the module docstring; writes run_dir/report.md and coverage.png."""
    if cfg.sampling.n < 2:
        raise ConfigError(f"sampling.n={cfg.sampling.n}: coverage vs k needs n >= 2 samples "
                          "per problem")
    run_dir = Path(run_dir)
    r = open_run(run_dir, cfg, total_phases=2)
    env, params, _ = warm_start(r, cfg)
    s = cfg.sampling

    def draw():
        records = run_driver(env, params, env.eval, s, rng_for(cfg.seed, "samples"),
                             batch_size=min(cfg.batch_size, len(env.eval)))
        answers = [[c.answer for c in r.candidates] for r in records]
        answer_ok = [[a is not None and env.task.answer_correct(p, a) for a in row]
                     for p, row in zip(env.eval, answers)]
        return {"correct": [[c.correct for c in r.candidates] for r in records],
                "answers": answers, "answer_correct": answer_ok,
                "tokens_generated": sum(c.tokens for r in records for c in r.candidates)}

    samples = run_phase(r, "samples", draw)
    log_metrics(r, {"phase": "samples", "tokens_generated": samples["tokens_generated"]})
    write_outcomes(run_dir, samples)
    return report(run_dir, cfg, [samples])


def report(run_dir, cfg: Config, outcomes: Sequence[dict]) -> Result:
    """report.md and coverage.png from one outcome dict per seed (the ``samples`` phase)."""
    run_dir = Path(run_dir)
    tables = [problem_table(o, cfg) for o in outcomes]
    a = analyse(tables, cfg)
    ks = a["ks"]
    rows = [{"k": k, "coverage": c, "coverage 95%": f"[{lo:.3f}, {hi:.3f}]",
             "power-law fit": f, "majority vote": m, f"verifier (fpr {cfg.verifier.fpr})": v}
            for k, c, lo, hi, f, m, v in zip(ks, a["passk"], a["passk_low"], a["passk_high"],
                                             a["fitted"], a["majority"], a["verifier"])]
    found = effects(tables, cfg)
    line_plot(run_dir / "coverage.png",
              {"coverage (pass@k)": (ks, a["passk"]), "majority vote": (ks, a["majority"]),
               f"verifier, fpr {cfg.verifier.fpr}": (ks, a["verifier"])},
              bands={"coverage (pass@k)": (a["passk_low"], a["passk_high"]),
                     "majority vote": (a["majority_low"], a["majority_high"]),
                     f"verifier, fpr {cfg.verifier.fpr}": (a["verifier_low"],
                                                          a["verifier_high"]),
                     "exp(a k^b) fit": (a["fitted_low"], a["fitted_high"])},
              dashed={"exp(a k^b) fit": (ks, a["fitted"])} if a["fit"] else None,
              xlabel="samples per problem k", ylabel="fraction of problems", logx=True,
              title="repeated sampling: coverage vs k (95% intervals)", ylim=(0.0, 1.0))
    fit = a["fit"]
    fit_text = ("coverage(k) ~ exp(a k^b): " + ", ".join(
        f"{k} {v[0]:.4g} [{v[1]:.4g}, {v[2]:.4g}]" for k, v in fit.items())
        + " (least squares of log(-log coverage) on log k; intervals: bootstrap)" if fit else
        "no power-law fit: fewer than two k with 0 < coverage < 1")
    P, n = len(outcomes[0]["correct"]), len(outcomes[0]["correct"][0])
    title = common.title("Repeated sampling: coverage (Monkeys, fLaws)", cfg)
    path = write_report(run_dir / "report.md", title, [
        ("Coverage, majority vote and verified resampling vs k",
         markdown_table(rows) + f"\n\n{P} problems x {n} samples x {len(outcomes)} seed(s). "
         "coverage: unbiased pass@k with its 95% interval (bootstrap over seeds and "
         f"problems). majority vote: mean over {cfg.vote_trials} random k-subsets. verifier: "
         f"fLaws model with fpr {cfg.verifier.fpr}, tpr {cfg.verifier.tpr}; "
         f"utility-optimal k = {a['best_k']} at cost {cfg.verifier.cost}.\n\n{fit_text}"),
        ("Effect checks", markdown_table([e.row() for e in found])),
        ("Plots", "![coverage.png](coverage.png)"),
    ])
    headline = (f"coverage {a['passk'][0]:.3f} (k=1) -> {a['passk'][-1]:.3f} "
                f"[{a['passk_low'][-1]:.3f}, {a['passk_high'][-1]:.3f}] (k={ks[-1]}); "
                f"majority {a['majority'][-1]:.3f}; verifier {a['verifier'][-1]:.3f}, "
                f"best k {a['best_k']}; {P} problems")
    return Result(rows=rows, effects=found, report=path, headline=headline)
