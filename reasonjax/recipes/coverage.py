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
from pathlib import Path
from typing import Sequence

import jax.numpy as jnp
import numpy as np

from reasonjax.config import ConfigError
from reasonjax.eval.passk import coverage_curve, fit_power_law, log_linearity
from reasonjax.eval.plots import line_plot
from reasonjax.eval.report import markdown_table, write_report
from reasonjax.eval.verifier import verified_resampling
from reasonjax.driver import run as run_driver
from reasonjax.recipes.common import RecipeConfig, rng_for, warm_start
from reasonjax.recipes.rundir import Result, log_metrics, open_run, run_phase
from reasonjax.search.sampler import SampleConfig
from reasonjax.search.voting import answer_ids, vote


@dataclasses.dataclass(frozen=True)
class VerifierSpec:
    """The fLaws verifier: false / true positive rates and the cost of a wrong answer
    relative to abstaining (for the utility-optimal k)."""

    fpr: float = 0.1
    tpr: float = 1.0
    cost: float = 1.0


@dataclasses.dataclass(frozen=True)
class Config(RecipeConfig):
    sampling: SampleConfig = SampleConfig(n=64, max_new_tokens=48)
    verifier: VerifierSpec = dataclasses.field(default_factory=VerifierSpec)
    vote_trials: int = 16
    log_linear_r2: float = 0.9


def ks_for(n: int) -> list[int]:
    """1, 2, 4, ... up to n, and n itself."""
    ks = [1 << i for i in range(n.bit_length()) if 1 << i <= n]
    return ks if ks[-1] == n else ks + [n]


def majority_accuracy(answers: Sequence[Sequence], correct_PN, ks: Sequence[int],
                      trials: int, seed: int) -> np.ndarray:
    """[len(ks)] majority-vote accuracy over k samples, averaged over problems and
    ``trials`` random k-subsets (without replacement) of each problem's n samples.

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
        out.append(float(won.mean()))
    return np.asarray(out)


def analyse(correct_PN, answers, answer_correct_PN, cfg: Config) -> dict:
    """Every curve and fit of the report from the samples (JSON-able)."""
    correct_PN = np.asarray(correct_PN, bool)
    n = correct_PN.shape[1]
    ks = ks_for(n)
    cov = coverage_curve(correct_PN, ks)
    try:
        fit = fit_power_law(ks, cov)
        fitted = [float(v) for v in fit(ks)]
        fit_d = {"a": fit.a, "b": fit.b, "r2": fit.r2}
    except ValueError:  # fewer than two points strictly inside (0, 1): nothing to fit
        fitted, fit_d = [float("nan")] * len(ks), None
    v = cfg.verifier
    ver = verified_resampling(correct_PN.mean(1), ks, fpr=v.fpr, tpr=v.tpr, cost=v.cost)
    return {"ks": ks, "coverage": [float(c) for c in cov], "fit": fit_d, "fitted": fitted,
            "log_linear_r2": float(log_linearity(ks, cov)),
            "majority": [float(m) for m in majority_accuracy(
                answers, answer_correct_PN, ks, cfg.vote_trials, cfg.seed)],
            "verifier": [float(a) for a in ver.accuracy],
            "verifier_utility": [float(u) for u in ver.utility], "best_k": ver.best_k}


def effect_checks(a: dict, cfg: Config) -> list[dict]:
    ks, cov, maj, ver = a["ks"], a["coverage"], a["majority"], a["verifier"]
    rising = all(y >= x for x, y in zip(cov, cov[1:])) and cov[-1] > cov[0]
    fit = a["fit"]
    return [
        {"claim": f"coverage rises log-linearly with k (r2 of coverage vs log k >= "
                  f"{cfg.log_linear_r2})",
         "ours": f"r2 {a['log_linear_r2']:.3f}; coverage {cov[0]:.3f} -> {cov[-1]:.3f} "
                 f"(k {ks[0]} -> {ks[-1]})",
         "held": rising and a["log_linear_r2"] >= cfg.log_linear_r2},
        {"claim": f"an exponentiated power law exp(a k^b) models coverage (fit r2 >= "
                  f"{cfg.log_linear_r2})",
         "ours": (f"a {fit['a']:.3f}, b {fit['b']:.3f}, r2 {fit['r2']:.3f}" if fit
                  else "no fit: fewer than two k with 0 < coverage < 1"),
         "held": bool(fit) and fit["r2"] >= cfg.log_linear_r2},
        {"claim": "majority vote plateaus below coverage",
         "ours": f"majority {maj[0]:.3f} -> {maj[-1]:.3f} vs coverage {cov[-1]:.3f} "
                 f"at k={ks[-1]}",
         "held": maj[-1] < cov[-1]},
        {"claim": f"false positives (fpr={cfg.verifier.fpr}) cap verified resampling below "
                  "coverage",
         "ours": f"verifier {ver[-1]:.3f} vs coverage {cov[-1]:.3f} at k={ks[-1]}; "
                 f"utility-optimal k={a['best_k']} (cost {cfg.verifier.cost})",
         "held": ver[-1] < cov[-1]},
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
    a = analyse(samples["correct"], samples["answers"], samples["answer_correct"], cfg)
    log_metrics(r, {"phase": "samples", "tokens_generated": samples["tokens_generated"],
                    **{k: a[k] for k in ("coverage", "majority", "verifier", "fit",
                                         "log_linear_r2")}})
    rows = [{"k": k, "coverage": c, "power-law fit": f, "majority vote": m,
             f"verifier (fpr {cfg.verifier.fpr})": v}
            for k, c, f, m, v in zip(a["ks"], a["coverage"], a["fitted"], a["majority"],
                                     a["verifier"])]
    checks = effect_checks(a, cfg)
    line_plot(run_dir / "coverage.png",
              {"coverage (pass@k)": (a["ks"], a["coverage"]),
               "majority vote": (a["ks"], a["majority"]),
               f"verifier, fpr {cfg.verifier.fpr}": (a["ks"], a["verifier"])},
              dashed={"exp(a k^b) fit": (a["ks"], a["fitted"])} if a["fit"] else None,
              xlabel="samples per problem k", ylabel="fraction of problems", logx=True,
              title="repeated sampling: coverage vs k", ylim=(0.0, 1.0))
    fit = a["fit"]
    fit_text = (f"coverage(k) ~ exp({fit['a']:.4g} * k^{fit['b']:.4g}), r2 {fit['r2']:.4f} "
                "(least squares of log(-log coverage) on log k)" if fit else
                "no power-law fit: fewer than two k with 0 < coverage < 1")
    path = write_report(run_dir / "report.md", "Repeated sampling: coverage (Monkeys, fLaws)", [
        ("Coverage, majority vote and verified resampling vs k",
         markdown_table(rows) + f"\n\n{len(env.eval)} problems x {s.n} samples "
         f"(temperature {s.sampling.temperature}), {samples['tokens_generated']} tokens generated. "
         f"coverage: unbiased pass@k. majority vote: mean over {cfg.vote_trials} random "
         f"k-subsets. verifier: fLaws model with fpr {cfg.verifier.fpr}, tpr "
         f"{cfg.verifier.tpr}; utility-optimal k = {a['best_k']} at cost "
         f"{cfg.verifier.cost}.\n\n{fit_text}"),
        ("Effect checks", markdown_table(checks, ["claim", "ours", "held"])),
        ("Plots", "![coverage.png](coverage.png)"),
    ])
    return Result(rows=rows, checks={c["claim"]: bool(c["held"]) for c in checks},
                  report=path)
