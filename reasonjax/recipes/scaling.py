"""Compute-optimal test-time scaling (Snell et al., 2024, "Scaling LLM Test-Time Compute
Optimally can be More Effective than Scaling Model Parameters"; particle filtering: Puri et
al., 2025; DVTS from the public reproductions).

Pipeline as implemented:

1. ``warmup``: SFT of the policy (tiny: from scratch on the task's reference solutions;
   paper: from ``model.checkpoint``).
2. ``prm-samples``: ``prm.samples_per_problem`` policy samples per training problem
   (those after ``warmup_problems``: a tiny policy's samples on the problems it was warmed
   up on are mostly right, unlike its samples on new ones), each step labelled. With
   ``prm.labels=exact`` the label of a step is the task's EXACT check
   (``task.check_steps(...).prefix_correct``: the prefix up to this step has no error),
   which is what Monte Carlo rollout labels (Math-Shepherd) estimate, so for built-in
   tasks it is both cheaper and exact. With ``prm.labels=outcome`` (tasks from files,
   which have no step checker) every step gets the sample's final outcome (OVM, Yu et
   al., 2024). Monte Carlo labels are the ``prm`` recipe's subject; a PRM trained there can
   be passed as ``prm.checkpoint``.
3. ``prm-train``: the PRM is a copy of the warmed-up policy whose value head (and body) is
   trained with :func:`reasonjax.train.value.value_loss` (BCE at each step end). It is a
   separate scorer model, so the policy is unchanged. ``prm.checkpoint`` loads a trained
   PRM instead (its value head is read through a sigmoid) and skips both PRM phases.
4. ``difficulty``: ``difficulty.sample.n`` samples per eval problem give the policy's pass
   rate; problems are sorted by it and cut into ``difficulty.bins`` equal bins (Snell et
   al.'s oracle difficulty: quantiles of the pass rate; bin 1 easiest).
5. ``search-<method>-n<N>`` for each budget N: on each bin, best-of-N (one sample set
   gives three answers: the PRM's best candidate, majority vote and PRM-weighted vote),
   step beam search (keep N/M, expand M ways), DVTS (N/M subtrees of width M) and particle
   filtering (N particles resampled by softmax(PRM score / ``pf_temperature``)). Step
   scores aggregate with ``search.aggregate`` (``last``: the PRM's estimate that the
   whole prefix is right, Snell et al.'s choice). Compute is each method's own
   ``Compute.tokens_generated`` (every sampled token, discarded candidates included),
   per problem.

Report: accuracy per bin x method x N next to tokens per problem, the compute-optimal
method per bin and budget (highest accuracy; ties go to fewer tokens), one accuracy-vs-
compute PNG per bin, and the checks "PRM-weighted vote beats majority vote at the largest
N" and "beam search or particle filtering beats best-of-N at equal compute on the hardest
bin" (best-of-N's accuracy interpolated in log tokens at the other method's tokens,
averaged over budgets). Departures from the paper: sequential revisions are their own
recipe (:mod:`.revisions`) and lookahead search (``BeamConfig.lookahead``) is not among
this table's methods, so the tiny preset's figures stay those of the methods above.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal, Optional, Sequence

import jax
import numpy as np

from reasonjax import checkpoint
from reasonjax.config import ConfigError, check_fields
from reasonjax.data import formatting
from reasonjax.driver import run as run_driver
from reasonjax.driver import vote
from reasonjax.eval import stats
from reasonjax.eval.plots import line_plot
from reasonjax.eval.report import markdown_table, write_report
from reasonjax.recipes import common
from reasonjax.recipes.common import (FitSpec, RecipeConfig, RecipeEnv, Trained, fit_examples,
                                      rng_for, warm_start)
from reasonjax.recipes.rundir import Result, log_metrics, open_run, run_phase, write_outcomes
from reasonjax.search.beam import BeamConfig, DVTSConfig
from reasonjax.search.best_of_n import BestOfNConfig
from reasonjax.search.particles import ParticleConfig
from reasonjax.search.sampler import SampleConfig
from reasonjax.train.value import value_loss

CLAIM = ("compute-optimal method depends on difficulty; beam search beats best-of-N on "
         "hard prompts at equal compute; PRM-weighted vote beats majority")
SEARCHES = ("best-of-n", "beam", "dvts", "particles")
METHODS = ("best-of-n", "majority", "prm-vote", "beam", "dvts", "particles")


@dataclasses.dataclass(frozen=True)
class PRMSpec:
    """The process reward model: ``checkpoint`` (a trained PRM, loaded) or trained here on
    ``sample`` (``n`` policy samples per problem) of the first ``problems`` training
    problems (0 = all), labelled ``exact`` (task step check) or ``outcome``."""

    checkpoint: Optional[str] = None
    labels: Literal["exact", "outcome"] = "exact"
    sample: SampleConfig = SampleConfig(n=4, max_new_tokens=64)
    problems: int = 0
    fit: FitSpec = FitSpec(steps=300)

    def __post_init__(self):
        check_fields(self, problems=">= 0")


@dataclasses.dataclass(frozen=True)
class DifficultySpec:
    """Pass-rate bins: ``sample`` (``n`` samples per eval problem), ``bins`` equal-size
    quantile bins."""

    sample: SampleConfig = SampleConfig(n=16, max_new_tokens=64)
    bins: int = 3

    def __post_init__(self):
        check_fields(self, bins=">= 1")


@dataclasses.dataclass(frozen=True)
class SearchSpec:
    """Budgets N (candidates / particles per problem: each method's ``n`` is set to N) and
    the four searches' own configs (step limits, sampling, the PRM scorer's transform and
    aggregation, beam width M dividing every N, particle-weight temperature)."""

    budgets: tuple[int, ...] = (4, 8, 16)
    best_of_n: BestOfNConfig = BestOfNConfig(max_steps=4, step_tokens=16)
    beam: BeamConfig = BeamConfig(max_steps=4, step_tokens=16)
    dvts: DVTSConfig = DVTSConfig(max_steps=4, step_tokens=16)
    particles: ParticleConfig = ParticleConfig(max_steps=4, step_tokens=16, temperature=0.1)

    def method(self, name: str, n: int):
        """The config of search ``name`` (one of SEARCHES) at budget ``n``."""
        return dataclasses.replace(getattr(self, name.replace("-", "_")), n=n)


@dataclasses.dataclass(frozen=True)
class Config(RecipeConfig):
    prm: PRMSpec = PRMSpec()
    difficulty: DifficultySpec = DifficultySpec()
    search: SearchSpec = SearchSpec()


def losses(cfg: Config) -> dict:
    """{FitSpec path: loss factory} of the run's training phases (what
    :mod:`reasonjax.recipes.plan` compiles): the PRM fit unless a trained PRM is loaded."""
    return {} if cfg.prm.checkpoint else {"prm.fit": lambda mc: value_loss(mc)}


def check_config(cfg: Config) -> None:
    """Host-side checks that would otherwise fail deep inside a run."""
    s = cfg.search
    for name in ("beam", "dvts"):
        width = getattr(s, name).beam_width
        bad = [n for n in s.budgets if n % width]
        if bad or not s.budgets:
            raise ConfigError(f"search.budgets={list(s.budgets)}: every budget must be a "
                              f"positive multiple of search.{name}.beam_width={width} "
                              f"(bad: {bad})")
    if cfg.difficulty.bins < 1 or cfg.task.eval_size % cfg.difficulty.bins:
        raise ConfigError(f"task.eval_size={cfg.task.eval_size} must be a positive multiple of "
                          f"difficulty.bins={cfg.difficulty.bins} (equal-size bins)")


# ---------------------------------------------------------------------------------------
# Pure pieces


def step_labels(task, problem, completion: str, labels: str):
    """(steps, per-step targets, complete) for a sampled completion: ``exact`` = the
    task's prefix-correct labels, ``outcome`` = the final outcome on every step."""
    steps = task.split_steps(completion)
    if not steps:
        return steps, [], False
    complete = bool(steps) and task.is_final_step(steps[-1])
    if labels == "exact":
        check = task.check_steps(problem, steps)
        return steps, [float(c) for c in check.prefix_correct], check.complete
    outcome = float(task.verify(problem, completion))
    return steps, [outcome] * len(steps), complete


def difficulty_bins(pass_rates, n_bins: int) -> list[list[int]]:
    """Problem indices in ``n_bins`` equal bins of decreasing pass rate (bin 0 easiest;
    ties keep problem order)."""
    pass_rates = np.asarray(pass_rates, float)
    if len(pass_rates) % n_bins:
        raise ValueError(f"{len(pass_rates)} problems do not split into {n_bins} equal bins")
    order = np.argsort(-pass_rates, kind="stable")
    return [sorted(int(i) for i in chunk) for chunk in np.split(order, n_bins)]


def accuracy_at_equal_compute(tokens: float, ref_tokens, ref_accuracy) -> float:
    """The reference method's accuracy at ``tokens``: linear in log tokens between its
    measured budgets, its end values outside them."""
    order = np.argsort(ref_tokens)
    return float(np.interp(np.log(tokens), np.log(np.asarray(ref_tokens, float)[order]),
                           np.asarray(ref_accuracy, float)[order]))


def compute_optimal(acc: dict, tokens: dict) -> str:
    """The method with the highest accuracy; ties go to fewer tokens (then name order)."""
    return min(acc, key=lambda m: (-acc[m], tokens[m], m))


# ---------------------------------------------------------------------------------------
# Phases


def label_samples(env: RecipeEnv, params, problems, cfg: Config) -> dict:
    """``prm-samples`` phase: policy samples of ``problems`` with per-step targets."""
    spec = cfg.prm
    records = run_driver(env, params, problems, spec.sample, rng_for(cfg.seed, "prm-samples"),
                         batch_size=min(cfg.batch_size, len(problems)))
    rows = []
    for r in records:
        for c in r.candidates:
            steps, targets, complete = step_labels(env.task, r.problem, c.completion,
                                                   spec.labels)
            if steps:
                rows.append({"prompt": env.task.prompt(r.problem), "steps": steps,
                             "targets": targets, "complete": complete})
    flat = [t for r in rows for t in r["targets"]]
    return {"rows": rows, "positive_share": float(np.mean(flat)) if flat else 0.0,
            "tokens_generated": sum(c.tokens for r in records for c in r.candidates)}


def _prm(run, env: RecipeEnv, params, own, cfg: Config):
    """(scorer model config, scorer params): loaded, or trained in two phases on samples
    of the training problems ``own`` (those the warm-up did not see)."""
    spec = cfg.prm
    if spec.checkpoint:
        prm_config, prm_params = checkpoint.load_checkpoint(spec.checkpoint, mesh=env.mesh)
        if prm_config.vocab_size != env.model_config.vocab_size:
            raise ConfigError(f"prm.checkpoint={spec.checkpoint}: vocabulary "
                              f"{prm_config.vocab_size} differs from the policy's "
                              f"{env.model_config.vocab_size}; the PRM must share the "
                              "policy's tokenizer")
        return prm_config, prm_params
    if spec.labels == "exact" and not env.task.exact_steps:
        raise ConfigError(f"prm.labels=exact: task {env.task.name!r} has no exact step "
                          "checker; set prm.labels=outcome or prm.checkpoint=/path/to/prm")
    problems = own[:spec.problems] if spec.problems > 0 else own
    labelled = run_phase(run, "prm-samples", lambda: label_samples(env, params, problems, cfg))
    log_metrics(run, {"phase": "prm-samples", "labels": len(labelled["rows"]),
                      "positive_share": labelled["positive_share"]})

    def train():
        examples = [formatting.encode_steps(env.tokenizer, r["prompt"], r["steps"],
                                            r["targets"], env.delimiter, r["complete"],
                                            sft=False) for r in labelled["rows"]]
        prm, metrics = fit_examples(env, params, value_loss(env.model_config), examples,
                                    spec.fit, seed=cfg.seed + 1)
        loss = metrics.get("loss")
        return Trained(prm, env.model_config,
                       {"final_loss": None if loss is None else float(loss)})

    trained = run_phase(run, "prm-train", train, Trained, mesh=env.mesh)
    log_metrics(run, {"phase": "prm-train", "final_loss": trained.metrics["final_loss"]})
    return trained.model_config, trained.params


def _difficulty(run, env: RecipeEnv, params, cfg: Config
                ) -> tuple[list[list[int]], list[float]]:
    """(bins of eval-problem indices, each problem's pass rate)."""
    def compute():
        records = run_driver(env, params, env.eval, cfg.difficulty.sample,
                             rng_for(cfg.seed, "difficulty"),
                             batch_size=min(cfg.batch_size, len(env.eval)))
        rates = [float(np.mean([c.correct for c in r.candidates])) for r in records]
        return {"pass_rates": rates, "bins": difficulty_bins(rates, cfg.difficulty.bins)}

    out = run_phase(run, "difficulty", compute)
    log_metrics(run, {"phase": "difficulty", "mean_pass_rate": float(np.mean(out["pass_rates"])),
                      "bin_pass_rates": [float(np.mean([out["pass_rates"][i] for i in b]))
                                         for b in out["bins"]]})
    return out["bins"], out["pass_rates"]


def _search_bin(env: RecipeEnv, params, prm, problems, method: str, mcfg, rng):
    """Runs one method on one bin (one driver call: the bin's problems are the batch).
    Returns ({answer method: [correct per problem]}, tokens generated)."""
    records = run_driver(env, params, problems, mcfg, rng, batch_size=len(problems),
                         scorer=prm)
    out = {method: [bool(r.correct) for r in records]}
    if method == "best-of-n":
        for name, weighting in (("majority", "majority"), ("prm-vote", "prm")):
            out[name] = [bool(vote(env.task, r, weighting)[1]) for r in records]
    return out, sum(r.compute["tokens_generated"] for r in records)


def _search(run, env: RecipeEnv, params, prm, bins, cfg: Config, method: str, n: int) -> dict:
    name = f"search-{method}-n{n}"
    mcfg = cfg.search.method(method, n)

    def compute():
        per_bin = []
        for b, idx in enumerate(bins):
            correct, spent = _search_bin(env, params, prm, [env.eval[i] for i in idx],
                                         method, mcfg,
                                         jax.random.fold_in(rng_for(cfg.seed, name), b))
            per_bin.append({"correct": correct, "tokens_per_problem": spent / len(idx)})
        return {"bins": per_bin}

    out = run_phase(run, name, compute)
    log_metrics(run, {"phase": name, **{
        f"bin{b + 1}/{m}": float(np.mean(c)) for b, r in enumerate(out["bins"])
        for m, c in r["correct"].items()}})
    return out


# ---------------------------------------------------------------------------------------
# Report


def summarize(searches: dict, budgets, n_bins: int):
    """acc[bin][method][N], tok[bin][method][N] from one seed's search phases
    ({"<search>-n<N>": phase result}); bin ``n_bins`` is all problems (mean over
    equal-size bins)."""
    acc = {b: {m: {} for m in METHODS} for b in range(n_bins + 1)}
    tok = {b: {m: {} for m in METHODS} for b in range(n_bins + 1)}
    for search in SEARCHES:
        for n in budgets:
            out = searches[f"{search}-n{n}"]
            for b, r in enumerate(out["bins"]):
                for m, c in r["correct"].items():
                    acc[b][m][n] = float(np.mean(c))
                    tok[b][m][n] = float(r["tokens_per_problem"])
            for m in out["bins"][0]["correct"]:
                acc[n_bins][m][n] = float(np.mean([acc[b][m][n] for b in range(n_bins)]))
                tok[n_bins][m][n] = float(np.mean([tok[b][m][n] for b in range(n_bins)]))
    return acc, tok


def bin_name(b: int, n_bins: int) -> str:
    if b == n_bins:
        return "all"
    tag = " (easiest)" if b == 0 else " (hardest)" if b == n_bins - 1 else ""
    return f"{b + 1}{tag}"


def _correct(outcome: dict, search: str, n: int, method: str, b=None) -> np.ndarray:
    """Per-problem correctness of answer ``method`` of ``search`` at budget n: in bin b, or
    over every bin (concatenated)."""
    bins = outcome["searches"][f"{search}-n{n}"]["bins"]
    rows = [bins[b]] if b is not None else bins
    return np.concatenate([np.asarray(r["correct"][method], float) for r in rows])


def equal_compute_gain(outcome: dict, method: str, budgets, b: int) -> np.ndarray:
    """Per problem of bin b: ``method``'s correctness minus best-of-N's interpolated at the
    method's tokens (linear in log tokens between best-of-N's budgets, clamped), averaged
    over the budgets."""
    _, tok = summarize(outcome["searches"], budgets, len(outcome["bins"]))
    ref_tok = [tok[b]["best-of-n"][n] for n in budgets]
    ref = np.stack([_correct(outcome, "best-of-n", n, "best-of-n", b) for n in budgets])
    gains = []
    for n in budgets:
        weights = [accuracy_at_equal_compute(tok[b][method][n], ref_tok, e)
                   for e in np.eye(len(budgets))]
        gains.append(_correct(outcome, method, n, method, b) - np.asarray(weights) @ ref)
    return np.mean(gains, 0)


def effects(outcomes: Sequence[dict], cfg: Config) -> list[stats.Effect]:
    """PRM-weighted vote vs majority at the largest N over every problem (paired), and
    beam search / particle filtering vs best-of-N at equal compute on the hardest bin."""
    budgets = sorted(set(cfg.search.budgets))
    top, hard = max(budgets), len(outcomes[0]["bins"]) - 1
    found = [stats.paired_effect(
        f"PRM-weighted vote above majority vote at large N (N={top}, all problems)",
        [_correct(o, "best-of-n", top, "prm-vote") for o in outcomes],
        [_correct(o, "best-of-n", top, "majority") for o in outcomes],
        detail="paired on the eval problems: PRM vote minus majority")]
    for m in ("beam", "particles"):
        found.append(stats.effect(
            f"{m} above best-of-N at equal compute on the hardest bin",
            [equal_compute_gain(o, m, budgets, hard) for o in outcomes],
            detail="per problem: mean over budgets of the gain over best-of-N "
                   "interpolated at equal tokens"))
    return found


def _pooled(outcomes: Sequence[dict], budgets) -> tuple[dict, dict]:
    """acc / tok of :func:`summarize` averaged over the seeds."""
    tables = [summarize(o["searches"], budgets, len(o["bins"])) for o in outcomes]
    mean = lambda i, b, m, n: float(np.mean([t[i][b][m][n] for t in tables]))
    n_bins = len(outcomes[0]["bins"])
    acc = {b: {m: {n: mean(0, b, m, n) for n in budgets} for m in METHODS}
           for b in range(n_bins + 1)}
    tok = {b: {m: {n: mean(1, b, m, n) for n in budgets} for m in METHODS}
           for b in range(n_bins + 1)}
    return acc, tok


def report(run_dir, cfg: Config, outcomes: Sequence[dict]) -> Result:
    """report.md and one accuracy-vs-compute plot per bin from one outcome dict per seed."""
    run_dir = Path(run_dir)
    budgets = sorted(set(cfg.search.budgets))
    n_bins = len(outcomes[0]["bins"])
    acc, tok = _pooled(outcomes, budgets)
    rows = []
    for b in range(n_bins + 1):
        for n in budgets:
            a = {m: acc[b][m][n] for m in METHODS}
            t = {m: tok[b][m][n] for m in METHODS}
            rows.append({"bin": bin_name(b, n_bins), "N": n, **a,
                         "compute-optimal": compute_optimal(a, t)})
    tok_rows = [{"bin": bin_name(b, n_bins), "N": n, **{m: tok[b][m][n] for m in SEARCHES}}
                for b in range(n_bins + 1) for n in budgets]
    found = effects(outcomes, cfg)
    plots = []
    for b in range(n_bins + 1):
        name = f"accuracy_vs_compute_bin{b + 1}.png" if b < n_bins else \
            "accuracy_vs_compute_all.png"
        bands = {}
        for m in METHODS:
            search = m if m in SEARCHES else "best-of-n"
            cis = [stats.mean_interval([_correct(o, search, n, m, None if b == n_bins else b)
                                        for o in outcomes], resamples=500) for n in budgets]
            bands[m] = ([c.low for c in cis], [c.high for c in cis])
        line_plot(run_dir / name,
                  {m: ([tok[b][m][n] for n in budgets], [acc[b][m][n] for n in budgets])
                   for m in METHODS}, bands=bands,
                  xlabel="generated tokens per problem", ylabel="accuracy (95% interval)",
                  logx=True, title=f"difficulty bin {bin_name(b, n_bins)}", ylim=(0.0, 1.0))
        plots.append(name)
    rates = [float(np.mean([np.mean([o["pass_rates"][i] for i in o["bins"][b]])
                            for o in outcomes])) for b in range(n_bins)]
    rate_text = ", ".join(f"bin {bin_name(b, n_bins)}: {r:.3f}" for b, r in enumerate(rates))
    P = len(outcomes[0]["pass_rates"])
    sections = [
        ("Accuracy per difficulty bin, method and budget N",
         markdown_table(rows) + f"\n\n{P} eval problems x {len(outcomes)} seed(s) (means "
         f"over the seeds; fewer than the other recipes' 1024 because the {len(SEARCHES)} "
         f"searches x {len(budgets)} budgets per bin dominate the run time: the paired "
         f"interval of the all-problem check is +-{found[0].value.half_width:.3f}, of the "
         f"hardest-bin checks +-{found[1].value.half_width:.3f}). Bins are equal quantiles "
         "of the policy's pass rate over "
         f"{cfg.difficulty.sample.n} samples (mean pass rate {rate_text}). compute-optimal: "
         "the most accurate method at that budget (ties: fewer tokens)."),
        ("Effect checks", markdown_table([e.row() for e in found])),
        ("Generated tokens per problem (each method's compute record)",
         markdown_table(tok_rows) + "\n\nmajority and prm-vote use the best-of-n samples."),
        ("Plots", "\n".join(f"![{p}]({p})" for p in plots)),
    ]
    title = common.title("Test-time compute scaling (Snell et al.)", cfg)
    path = write_report(run_dir / "report.md", title, sections)
    top = max(budgets)
    headline = (f"N={top}, all problems: PRM vote {acc[n_bins]['prm-vote'][top]:.3f}, "
                f"majority {acc[n_bins]['majority'][top]:.3f}, best-of-N "
                f"{acc[n_bins]['best-of-n'][top]:.3f}, beam {acc[n_bins]['beam'][top]:.3f}; "
                f"hardest bin at equal tokens: beam {found[1].value}, particles "
                f"{found[2].value} over best-of-N; {P} problems")
    return Result(rows=rows, effects=found, report=path, headline=headline)


def run(cfg: Config, run_dir) -> Result:
    """The pipeline in the module docstring; writes run_dir/report.md and the plots."""
    check_config(cfg)
    run_dir = Path(run_dir)
    budgets = sorted(set(cfg.search.budgets))
    phases = 2 + (0 if cfg.prm.checkpoint else 2) + len(budgets) * len(SEARCHES)
    r = open_run(run_dir, cfg, total_phases=phases)
    env, params, own = warm_start(r, cfg)
    prm = _prm(r, env, params, own, cfg)
    bins, rates = _difficulty(r, env, params, cfg)
    searches = {f"{m}-n{n}": _search(r, env, params, prm, bins, cfg, m, n)
                for n in budgets for m in SEARCHES}
    outcomes = {"bins": bins, "pass_rates": rates, "searches": searches}
    write_outcomes(run_dir, outcomes)
    return report(run_dir, cfg, [outcomes])
