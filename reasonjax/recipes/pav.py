"""Process advantage verifiers (Setlur et al., 2024, "Rewarding Progress: Scaling Automated
Process Verifiers for LLM Reasoning"): the process reward of a step is its advantage under
a prover policy mu, A_mu(s, a) = Q_mu(s, a) - V_mu(s), and search ranks steps by the
effective reward Q_pi(s, a) + alpha * A_mu(s, a) (Q_pi: the base policy's value, the
ORM-like term). The paper: PAV-guided beam search is "> 8% more accurate, and 1.5-5x
more compute-efficient" than best-of-N against an outcome reward model (ORM).

Pipeline as implemented (each stage a resumable phase):

1. ``warmup``: SFT of the base policy pi on the first ``warmup_problems`` training
   problems' reference solutions (or a checkpoint).
2. ``samples``: ``samples.n`` solutions of pi for each of the next ``label_problems``
   training problems (the label set), each split into steps, with its outcome.
3. ``label``: ``rollouts.n`` = k Monte Carlo rollouts of pi from every prefix of every
   sample, the prompt included (shared by a problem's samples), in ONE batched sampler
   pass (:func:`.process_labels.prefix_counts`). From c correct of k: Q_pi = c / k, and
   the prover mu = Bo-K(pi) (``prover_k`` = K; best-of-K of the base policy, the paper's
   complementary prover family) succeeds with 1 - (1 - p)^K, estimated without bias by
   pass@K from the same rollouts (:func:`.process_labels.best_of_k_values`). So both
   targets cost one set of pi's rollouts. Per step: Q_pi after it and A_mu = V_mu after
   minus before (:func:`.process_labels.pav_targets`).
4. ``orm``: the ORM, a value head on a copy of the warm-up policy trained with BCE on the
   sample's outcome at every step end (outcome labels only: no rollouts).
   ``pav``: the PAV, a value head on another copy regressing (MSE, identity head) the
   effective reward Q_pi + alpha * A_mu of each step
   (:func:`.process_labels.effective_rewards`), so the search scorer reads the combined
   reward as an ordinary ``value`` step score.
5. ``search-<method>-n<N>``: on the eval problems, for each budget N: best-of-N ranked by
   the ORM (the paper's baseline), step beam search (keep N/M, expand M ways) ranked by
   the ORM, and beam search ranked by the PAV. Compute is each search's own
   ``Compute.tokens_generated`` per problem (every sampled token, discarded beams
   included), as in the ``scaling`` recipe.

6. With ``rl`` set, PAVs as dense RL rewards (the paper's online RL): ``adv``, a value head
   on another copy regressing A_mu alone (MSE, identity head); then ``rl-outcome``, RL of
   the warm-up policy on the training problems after the label set with the outcome
   reward only, and ``rl-pav``, the same run (same rollouts per iteration, same seed) with
   the ``adv`` head's step scores as step rewards, alpha = ``rl.prm_coef``. Each step's
   reward is its predicted A_mu under ``delta`` shaping
   (:func:`reasonjax.train.rl.shape_prm_rewards`), whose return from any token of step k
   is the step's own score, so every token of step k gets the outcome advantage plus
   alpha * A_mu(step k), the paper's policy gradient with effective reward
   Q_pi + alpha * A_mu. ``eval-base``: the warm-up policy's greedy accuracy, the start
   both runs are measured against.

Report: accuracy and tokens per method and N; the checks "PAV beam above ORM best-of-N at
equal compute" (per problem: PAV beam's correctness minus ORM best-of-N's accuracy
interpolated in log tokens at PAV's tokens, averaged over budgets), the same against ORM
beam search (does the verifier or the search do the work?), and paired at the largest N;
and the ORM best-of-N tokens needed to match PAV beam search's accuracy (the paper's
compute-efficiency ratio). With ``rl``: greedy accuracy after each RL run, the check
"PAV-rewarded RL above outcome-only RL" (paired on the eval problems), and each run's
gain over the warm-up policy.

Departures: one value model regresses the combined reward, so alpha is fixed before
training (the paper combines a Q_pi verifier and the PAV at search time, so it can tune
alpha without retraining); Q_pi and A_mu come from the same rollouts of pi (the paper
rolls out the prover); the verifiers are value heads on the policy's backbone, not
separate larger models; the ORM is trained on every step end (OVM-style), which is what
its last-step score reads anyway.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from reasonjax.config import ConfigError, check_fields
from reasonjax.data.task import Problem
from reasonjax.driver import run as run_driver
from reasonjax.eval import stats
from reasonjax.eval.plots import line_plot
from reasonjax.eval.report import markdown_table, write_report
from reasonjax.recipes import common, process_labels
from reasonjax.recipes.common import FitSpec, RecipeEnv, Trained, fit_examples, rng_for
from reasonjax.recipes.prm import step_examples
from reasonjax.recipes.rl_phase import rl_phase
from reasonjax.recipes.rundir import Result, log_metrics, open_run, run_phase, write_outcomes
from reasonjax.rl.config import RLConfig
from reasonjax.rl.shaping import make_step_rewards, value_head_scorer
from reasonjax.recipes.scaling import accuracy_at_equal_compute
from reasonjax.search.beam import BeamConfig
from reasonjax.search.best_of_n import BestOfNConfig
from reasonjax.search.sampler import SampleConfig
from reasonjax.train.value import ValueConfig, value_loss

CLAIM = ("PAV-guided beam search is >8% more accurate and 1.5-5x more compute-efficient "
         "than ORM best-of-N")
METHODS = ("orm-best-of-n", "orm-beam", "pav-beam")
REFERENCE = "orm-best-of-n"
# The verifiers' heads as their losses read them: the ORM's is a logit (BCE), the PAV's
# the regressed effective reward itself (MSE on the identity).
ORM_LOSS = ValueConfig("bce", "sigmoid")
PAV_LOSS = ValueConfig("mse", "identity")


@dataclasses.dataclass(frozen=True)
class SearchSpec:
    """Budgets N (candidates per problem; every method's ``n`` is set to N, a multiple of
    ``beam.beam_width``) and the two searches' configs (step limits, sampling, scorer
    aggregation). Each scorer's transform is its verifier's: sigmoid for the ORM,
    identity for the PAV."""

    budgets: tuple[int, ...] = (4, 8, 16)
    best_of_n: BestOfNConfig = BestOfNConfig(max_steps=4, step_tokens=16)
    beam: BeamConfig = BeamConfig(max_steps=4, step_tokens=16)

    def method(self, name: str, n: int):
        """The search config of method ``name`` (one of METHODS) at budget ``n``."""
        base = self.best_of_n if name == REFERENCE else self.beam
        transform = PAV_LOSS.transform if name.startswith("pav") else ORM_LOSS.transform
        return dataclasses.replace(base, n=n, scorer=dataclasses.replace(
            base.scorer, kind="value", transform=transform))


@dataclasses.dataclass(frozen=True)
class Config(common.RecipeConfig):
    """``samples``: pi's solutions per label-set problem (the first ``label_problems``
    training problems after the warm-up's); ``rollouts``: k Monte Carlo rollouts of pi
    per prefix; ``prover_k``: K of the prover Bo-K(pi) (1 <= K <= k; K = 1 is pi
    itself); ``alpha``: weight of the prover's advantage in the effective reward; ``orm``
    / ``pav``: the two verifier fits; ``search``: the test-time comparison. ``rl``: the
    dense-reward comparison's RL runs (None: not run), alpha there being ``rl.prm_coef``
    (its ``prm_shaping`` is set by the recipe); ``adv``: the fit of their A_mu head."""

    samples: SampleConfig = SampleConfig(n=4, max_new_tokens=48)
    label_problems: int = 256
    rollouts: process_labels.RolloutSpec = process_labels.RolloutSpec(n=8)
    prover_k: int = 4
    alpha: float = 1.0
    orm: FitSpec = FitSpec(steps=300)
    pav: FitSpec = FitSpec(steps=300)
    search: SearchSpec = SearchSpec()
    rl: Optional[RLConfig] = None
    adv: FitSpec = FitSpec(steps=300)

    def __post_init__(self):
        super().__post_init__()
        check_fields(self, label_problems=">= 1", prover_k=">= 1")
        if self.prover_k > self.rollouts.n:
            raise ConfigError(f"prover_k={self.prover_k}: the prover's success rate is "
                              f"estimated from rollouts.n={self.rollouts.n} rollouts; use "
                              "prover_k <= rollouts.n")
        width = self.search.beam.beam_width
        bad = [n for n in self.search.budgets if n % width]
        if bad or not self.search.budgets:
            raise ConfigError(f"search.budgets={list(self.search.budgets)}: every budget "
                              f"must be a positive multiple of search.beam.beam_width="
                              f"{width} (bad: {bad})")
        if self.rl is not None and self.task.data_file is None and (
                self.task.train_size - self.warmup_problems <= self.label_problems):
            raise ConfigError(_no_rl_problems(self.task.train_size, self.warmup_problems,
                                              self.label_problems))
        if self.rl is not None and self.rl.prm_shaping is not None:
            raise ConfigError(f"rl.prm_shaping={self.rl.prm_shaping}: the pav recipe sets "
                              "the shaping of its RL runs itself (none for rl-outcome, "
                              "delta for rl-pav); leave it unset and weigh A_mu with "
                              "rl.prm_coef")


def _no_rl_problems(train: int, warmup: int, label: int) -> str:
    return (f"rl: task.train_size={train} leaves no training problems for RL after the "
            f"warm-up's {warmup} and the label set's {label}; raise task.train_size or "
            "lower label_problems")


def losses(cfg: Config) -> dict:
    """{FitSpec path: loss factory} of the run's training phases (what
    :mod:`reasonjax.recipes.plan` compiles)."""
    out = {"orm": lambda mc: value_loss(mc, ORM_LOSS),
           "pav": lambda mc: value_loss(mc, PAV_LOSS)}
    if cfg.rl is not None:
        out["adv"] = lambda mc: value_loss(mc, PAV_LOSS)
    return out


def rl_runs(cfg: Config) -> list:
    """[(config path, RLConfig)] of the run's RL phases (what :mod:`.plan` compiles)."""
    return [] if cfg.rl is None else [("rl", cfg.rl)]


RL_ARMS = ("rl-outcome", "rl-pav")


# ---------------------------------------------------------------------------------------
# Pure pieces


def step_targets(counts: Sequence[int], k: int, prover_k: int, alpha: float) -> dict:
    """One solution's per-step targets from its prefix counts (m = 0 .. n, correct of
    k): Q_pi, A_mu under mu = Bo-``prover_k``(pi), and the effective reward."""
    q_values = [c / k for c in counts]
    mu_values = process_labels.best_of_k_values(counts, k, prover_k)
    q, a = process_labels.pav_targets(q_values, mu_values)
    return {"q": q, "a": a, "reward": process_labels.effective_rewards(q, a, alpha),
            "v_pi": q_values[0], "v_mu": mu_values[0]}


def equal_compute_gain(searches: dict, method: str, budgets: Sequence[int],
                       reference: str = REFERENCE) -> np.ndarray:
    """Per problem: ``method``'s correctness minus the reference's accuracy at the
    method's tokens (linear in log tokens between the reference's budgets, clamped at its
    ends; :func:`reasonjax.recipes.scaling.accuracy_at_equal_compute`), averaged over
    the budgets. ``searches``: {"<method>-n<N>": {"correct": [P], "tokens_per_problem"}}."""
    ref_tok = [searches[f"{reference}-n{n}"]["tokens_per_problem"] for n in budgets]
    ref = np.stack([np.asarray(searches[f"{reference}-n{n}"]["correct"], float)
                    for n in budgets])
    gains = []
    for n in budgets:
        out = searches[f"{method}-n{n}"]
        # interpolation is linear in the accuracies, so it applies to each problem's 0/1
        weights = [accuracy_at_equal_compute(out["tokens_per_problem"], ref_tok, e)
                   for e in np.eye(len(budgets))]
        gains.append(np.asarray(out["correct"], float) - np.asarray(weights) @ ref)
    return np.mean(gains, 0)


def tokens_to_reach(accuracy: float, ref_tokens: Sequence[float],
                    ref_accuracy: Sequence[float]) -> float:
    """The fewest tokens at which the reference curve (its measured points in token order,
    linear in log tokens between them) reaches ``accuracy``: its first point's tokens
    when it starts at or above it, NaN when it never does within its budgets."""
    order = np.argsort(ref_tokens)
    t = np.asarray(ref_tokens, float)[order]
    a = np.asarray(ref_accuracy, float)[order]
    if a[0] >= accuracy:
        return float(t[0])
    for i in range(1, len(t)):
        if a[i] >= accuracy:
            frac = (accuracy - a[i - 1]) / (a[i] - a[i - 1])
            return float(np.exp(np.log(t[i - 1]) + frac * (np.log(t[i]) - np.log(t[i - 1]))))
    return float("nan")


# ---------------------------------------------------------------------------------------
# Phases


def sample_solutions(env: RecipeEnv, policy, problems, cfg: Config) -> dict:
    """``samples`` phase: pi's solutions of the label set, split into steps."""
    records = run_driver(env, policy, problems, cfg.samples, rng_for(cfg.seed, "samples"),
                         batch_size=min(cfg.batch_size, len(problems)))
    out = {"problems": [], "group": [], "steps": [], "correct": [], "complete": []}
    for g, r in enumerate(records):
        for c in r.candidates:
            steps = env.task.split_steps(c.completion)
            if not steps:
                continue
            out["problems"].append(r.problem.to_json())
            out["group"].append(g)
            out["steps"].append(steps)
            out["correct"].append(bool(env.task.verify(r.problem, c.completion)))
            out["complete"].append(bool(env.task.is_final_step(steps[-1])))
    return out


def label(env: RecipeEnv, policy, sols: dict, cfg: Config) -> dict:
    """``label`` phase: prefix counts of pi's rollouts and each solution's targets."""
    problems = [Problem.from_json(p) for p in sols["problems"]]
    spent: list[int] = []
    oracle = process_labels.prefix_oracle(env, policy, problems, sols["steps"],
                                          rng_for(cfg.seed, "label"), cfg.rollouts, spent)
    outcome = [ok if done else None for ok, done in zip(sols["correct"], sols["complete"])]
    counts = process_labels.prefix_counts([len(s) for s in sols["steps"]], outcome, oracle,
                                          cfg.rollouts.n, group=sols["group"])
    targets = [step_targets(c, counts.k, cfg.prover_k, cfg.alpha) for c in counts.correct]
    return {"counts": counts.correct, "targets": targets, "rollouts": sum(counts.rollouts),
            "tokens_generated": sum(spent)}


def train_verifier(run, env: RecipeEnv, policy, sols: dict, targets, name: str,
                   loss_config: ValueConfig, spec: FitSpec, seed: int):
    """Phase ``name``: a value head on a copy of the policy fit to one target per step.
    Returns (model config, params) for the searches' scorer."""
    def compute():
        loss = value_loss(env.model_config, loss_config)
        params, metrics = fit_examples(env, policy, loss, step_examples(env, sols, targets),
                                       spec, seed=seed)
        final = metrics.get("loss")
        return Trained(params, env.model_config,
                       {"final_loss": None if final is None else float(final)})

    trained = run_phase(run, name, compute, Trained, mesh=env.mesh)
    log_metrics(run, {"phase": name, "final_loss": trained.metrics["final_loss"]})
    return trained.model_config, trained.params, trained.metrics["final_loss"]


def search(run, env: RecipeEnv, policy, scorer, cfg: Config, method: str, n: int) -> dict:
    """Phase ``search-<method>-n<N>``: per eval problem, whether the answer is right, and
    the tokens each problem's search generated."""
    name = f"search-{method}-n{n}"

    def compute():
        records = run_driver(env, policy, env.eval, cfg.search.method(method, n),
                             rng_for(cfg.seed, name), scorer=scorer,
                             batch_size=min(cfg.batch_size, len(env.eval)))
        return {"correct": [int(bool(r.correct)) for r in records],
                "tokens_per_problem": sum(r.compute["tokens_generated"] for r in records)
                / len(records)}

    out = run_phase(run, name, compute)
    log_metrics(run, {"phase": name, "accuracy": float(np.mean(out["correct"])),
                      "tokens_per_problem": out["tokens_per_problem"]})
    return out


def run(cfg: Config, run_dir) -> Result:
    """The pipeline in the module docstring; writes run_dir/report.md and the plot."""
    run_dir = Path(run_dir)
    budgets = sorted(set(cfg.search.budgets))
    r = open_run(run_dir, cfg, total_phases=5 + len(budgets) * len(METHODS)
                 + (4 if cfg.rl is not None else 0))
    env, policy, own = common.warm_start(r, cfg)
    if cfg.rl is not None and len(own) <= cfg.label_problems:  # data_file tasks
        raise ConfigError(_no_rl_problems(len(own) + cfg.warmup_problems,
                                          cfg.warmup_problems, cfg.label_problems))
    sols = run_phase(r, "samples", lambda: sample_solutions(
        env, policy, own[:cfg.label_problems], cfg))
    log_metrics(r, {"phase": "samples", "solutions": len(sols["steps"]),
                    "accuracy": float(np.mean(sols["correct"]))})
    labels = run_phase(r, "label", lambda: label(env, policy, sols, cfg))
    t = labels["targets"]
    log_metrics(r, {"phase": "label", "rollouts": labels["rollouts"],
                    "mean_q": float(np.mean([x for s in t for x in s["q"]])),
                    "mean_abs_advantage": float(np.mean([abs(x) for s in t for x in s["a"]]))})
    outcome = [[float(ok)] * len(s) for ok, s in zip(sols["correct"], sols["steps"])]
    orm = train_verifier(r, env, policy, sols, outcome, "orm", ORM_LOSS, cfg.orm, cfg.seed + 1)
    pav = train_verifier(r, env, policy, sols, [s["reward"] for s in t], "pav", PAV_LOSS,
                         cfg.pav, cfg.seed + 2)
    searches = {f"{m}-n{n}": search(r, env, policy, (pav if m.startswith("pav") else orm)[:2],
                                    cfg, m, n) for n in budgets for m in METHODS}
    outcomes = {"searches": searches, "eval_problems": len(env.eval),
                "label": {"solutions": len(sols["steps"]),
                          "accuracy": float(np.mean(sols["correct"])),
                          "rollouts": labels["rollouts"],
                          "tokens_generated": labels["tokens_generated"],
                          "q": [s["q"] for s in t], "a": [s["a"] for s in t],
                          "v_pi": [s["v_pi"] for s in t], "v_mu": [s["v_mu"] for s in t]},
                "final_loss": {"orm": orm[2], "pav": pav[2]}}
    if cfg.rl is not None:
        adv = train_verifier(r, env, policy, sols, [s["a"] for s in t], "adv", PAV_LOSS,
                             cfg.adv, cfg.seed + 3)
        outcomes["final_loss"]["adv"] = adv[2]
        outcomes["rl"] = dense_rewards(r, env, policy, own[cfg.label_problems:], adv[:2],
                                       cfg)
    write_outcomes(run_dir, outcomes)
    return report(run_dir, cfg, [outcomes])


def dense_rewards(run, env: RecipeEnv, policy, problems, adv, cfg: Config) -> dict:
    """``eval-base``, ``rl-outcome`` and ``rl-pav`` (module docstring, item 6): {"base":
    correctness [P], "rl-outcome" / "rl-pav": {"correct", "history", "seconds"}}."""
    base = common.eval_phase(run, env, policy, "eval-base", cfg.rl.max_new_tokens,
                             cfg.batch_size)
    adv_config, adv_params = adv
    out = {"base": base}
    for arm in RL_ARMS:
        rl, step_rewards = cfg.rl, None
        if arm == "rl-pav":
            rl = dataclasses.replace(cfg.rl, prm_shaping="delta")
            step_rewards = make_step_rewards(
                value_head_scorer(adv_config, adv_params, PAV_LOSS.transform),
                env.tokenizer, env.delimiter, rl)
        done = rl_phase(run, env, policy, problems, rl, arm, cfg.batch_size,
                        step_rewards=step_rewards)
        log_metrics(run, {"phase": arm, "accuracy": float(np.mean(done.correct)),
                          "seconds": done.seconds})
        out[arm] = {"correct": done.correct, "history": done.history,
                    "seconds": done.seconds}
    return out


# ---------------------------------------------------------------------------------------
# Report


def effects(outcomes: Sequence[dict], cfg: Config) -> list[stats.Effect]:
    """PAV beam search over ORM best-of-N and over ORM beam search at equal compute
    (pooled over the seeds), and over ORM best-of-N at the largest N (paired)."""
    budgets = sorted(set(cfg.search.budgets))
    top = max(budgets)
    detail = ("per problem: mean over budgets of PAV beam's correctness minus the {} "
              "accuracy interpolated at PAV beam's tokens")
    return [
        stats.effect("PAV beam search above ORM best-of-N at equal compute",
                     [equal_compute_gain(o["searches"], "pav-beam", budgets) for o in outcomes],
                     detail=detail.format("ORM best-of-N")),
        stats.paired_effect(
            f"PAV beam search above ORM best-of-N at N={top}",
            [o["searches"][f"pav-beam-n{top}"]["correct"] for o in outcomes],
            [o["searches"][f"{REFERENCE}-n{top}"]["correct"] for o in outcomes],
            detail="paired on the eval problems: PAV beam minus ORM best-of-N"),
        stats.effect("PAV beam search above ORM beam search at equal compute",
                     [equal_compute_gain(o["searches"], "pav-beam", budgets, "orm-beam")
                      for o in outcomes], detail=detail.format("ORM beam search"))
    ] + (rl_effects(outcomes) if all("rl" in o for o in outcomes) else [])


def rl_effects(outcomes: Sequence[dict]) -> list[stats.Effect]:
    """The dense-reward comparison's checks (paired on the eval problems)."""
    arm = lambda name: [o["rl"][name]["correct"] for o in outcomes]
    base = [o["rl"]["base"] for o in outcomes]
    return [
        stats.paired_effect("RL with PAV dense rewards above outcome-only RL", arm("rl-pav"),
                            arm("rl-outcome"), detail="paired on the eval problems: "
                            "greedy accuracy after rl-pav minus after rl-outcome"),
        stats.paired_effect("outcome-only RL raises greedy accuracy over its start",
                            arm("rl-outcome"), base, detail="rl-outcome minus the warm-up "
                            "policy"),
        stats.paired_effect("RL with PAV dense rewards raises greedy accuracy over its start",
                            arm("rl-pav"), base, detail="rl-pav minus the warm-up policy")]


def _table(outcomes: Sequence[dict], budgets) -> tuple[dict, dict]:
    """acc[method][N], tok[method][N] averaged over the seeds."""
    mean = lambda f: float(np.mean([f(o) for o in outcomes]))
    acc = {m: {n: mean(lambda o: np.mean(o["searches"][f"{m}-n{n}"]["correct"]))
               for n in budgets} for m in METHODS}
    tok = {m: {n: mean(lambda o: o["searches"][f"{m}-n{n}"]["tokens_per_problem"])
               for n in budgets} for m in METHODS}
    return acc, tok


def _loss(outcome: dict, name: str) -> str:
    value = outcome["final_loss"][name]
    return "not trained" if value is None else f"{value:.4f}"


def rl_section(outcomes: Sequence[dict], cfg: Config) -> str:
    """The dense-reward comparison's table (greedy accuracy with intervals) and its note."""
    rows = []
    for name in ("base",) + RL_ARMS:
        correct = [o["rl"][name] if name == "base" else o["rl"][name]["correct"]
                   for o in outcomes]
        ci = stats.mean_interval(correct)
        rows.append({"run": "warm-up policy" if name == "base" else name,
                     "greedy accuracy": ci.estimate, "95% interval": f"[{ci.low:.3f}, "
                     f"{ci.high:.3f}]",
                     "seconds": "" if name == "base" else float(np.mean(
                         [o["rl"][name]["seconds"] for o in outcomes]))})
    rl = cfg.rl
    note = (f"{rl.algorithm.name}, {rl.iterations} iterations x {rl.prompts_per_iteration} "
            f"prompts x {rl.samples_per_prompt} samples (equal rollouts in both runs), from "
            f"the warm-up policy; rl-pav adds alpha x A_mu of each step (alpha = "
            f"rl.prm_coef = {rl.prm_coef}) from the A_mu head (MSE, final loss of the first "
            f"seed {_loss(outcomes[0], 'adv')}).")
    return markdown_table(rows) + "\n\n" + note


def report(run_dir, cfg: Config, outcomes: Sequence[dict]) -> Result:
    """report.md and the accuracy-vs-compute plot from one outcome dict per seed."""
    run_dir = Path(run_dir)
    budgets = sorted(set(cfg.search.budgets))
    acc, tok = _table(outcomes, budgets)
    ref_tok = [tok[REFERENCE][n] for n in budgets]
    ref_acc = [acc[REFERENCE][n] for n in budgets]
    rows = []
    for n in budgets:
        need = tokens_to_reach(acc["pav-beam"][n], ref_tok, ref_acc)
        rows.append({"N": n, **{m: acc[m][n] for m in METHODS},
                     **{f"{m} tokens": tok[m][n] for m in METHODS},
                     "ORM best-of-N tokens for PAV beam's accuracy / PAV beam's":
                         need / tok["pav-beam"][n]})
    found = effects(outcomes, cfg)
    bands = {}
    for m in METHODS:
        cis = [stats.mean_interval([o["searches"][f"{m}-n{n}"]["correct"] for o in outcomes],
                                   resamples=500) for n in budgets]
        bands[m] = ([c.low for c in cis], [c.high for c in cis])
    line_plot(run_dir / "accuracy_vs_compute.png",
              {m: ([tok[m][n] for n in budgets], [acc[m][n] for n in budgets])
               for m in METHODS}, bands=bands, xlabel="generated tokens per problem",
              ylabel="accuracy (95% interval)", logx=True,
              title="ORM best-of-N vs PAV-guided beam search", ylim=(0.0, 1.0))
    flat = lambda key: np.concatenate([np.ravel([x for s in o["label"][key] for x in s])
                                       for o in outcomes])
    a = flat("a")
    lab = outcomes[0]["label"]
    P = outcomes[0]["eval_problems"]
    note = (f"{P} eval problems x {len(outcomes)} seed(s) (means over the seeds). Labels "
            f"(first seed): {lab['solutions']} solutions of pi (accuracy "
            f"{lab['accuracy']:.3f}), "
            f"{lab['rollouts']} rollouts of pi ({cfg.rollouts.n} per prefix, "
            f"{lab['tokens_generated']} tokens; not counted as test-time compute). Prover "
            f"mu = Bo-{cfg.prover_k}(pi): value at the prompt {np.mean(lab['v_mu']):.3f} vs "
            f"pi's {np.mean(lab['v_pi']):.3f}. Over all labelled steps: mean Q_pi "
            f"{np.mean(flat('q')):.3f}, mean A_mu {np.mean(a):+.3f}, mean |A_mu| "
            f"{np.mean(np.abs(a)):.3f}, A_mu > 0 on {np.mean(a > 0):.3f}, < 0 on "
            f"{np.mean(a < 0):.3f} of steps; alpha = {cfg.alpha}. Final fit losses (first "
            f"seed): ORM (BCE) {_loss(outcomes[0], 'orm')}, PAV (MSE) {_loss(outcomes[0], 'pav')}"
            ". The last column: the ORM best-of-N tokens "
            "(interpolated in log tokens) at which it matches PAV beam search's accuracy, "
            "over PAV beam search's tokens (the paper's compute-efficiency ratio; an upper "
            "bound where ORM best-of-N already matches it at its smallest budget; 'nan': "
            "never within the budgets).")
    title = common.title("Process advantage verifiers (Setlur et al.)", cfg)
    sections = [("Accuracy and tokens per problem by method and budget N",
                 markdown_table(rows) + "\n\n" + note)]
    if all("rl" in o for o in outcomes):
        sections.append(("PAVs as dense RL rewards", rl_section(outcomes, cfg)))
    path = write_report(run_dir / "report.md", title, sections + [
        ("Effect checks", markdown_table([e.row() for e in found])),
        ("Plots", "![accuracy_vs_compute.png](accuracy_vs_compute.png)")])
    top = max(budgets)
    headline = (f"N={top}: PAV beam {acc['pav-beam'][top]:.3f}, ORM best-of-N "
                f"{acc[REFERENCE][top]:.3f}, ORM beam {acc['orm-beam'][top]:.3f}; PAV beam "
                f"over ORM best-of-N at equal tokens {found[0].value}; {P} problems")
    return Result(rows=rows, effects=found, report=path, headline=headline)
