"""Process reward models from Monte Carlo process labels: Math-Shepherd (Wang et al., 2024)
and OmegaPRM (Luo et al., 2024), checked against the task's exact step labels where it has
them, and used at test time to weight a vote over the policy's samples.

Pipeline as implemented (each stage a resumable phase):

1. ``warmup``: SFT on the training problems' reference solutions (or a checkpoint).
2. ``samples``: ``samples.n`` policy solutions for each of the first ``label_problems``
   training problems after ``warmup_problems`` (the label set) and for each eval problem
   (held out), with their final answers and, on tasks with an exact step checker
   (``task.exact_steps``), their exact step labels (``task.check_steps(...)
   .prefix_correct``).
3. ``label-math_shepherd`` / ``label-omegaprm``: Monte Carlo labels of every step of the
   label set (:mod:`.process_labels`): Math-Shepherd rolls out ``rollouts.n`` completions
   from every prefix (hard = any correct, soft = fraction), OmegaPRM binary-searches the
   first error of wrong solutions. Each labelling round is ONE batched sampler pass over
   all its prefixes. Rollouts spent per label, the agreement of the two labelers and (with
   an exact checker) agreement with the exact labels are recorded.
4. ``prm-<labels>``: a PRM (the value head, trained with BCE on hard or soft targets at
   each step end; ``reasonjax.train.value.value_loss``) initialised from the warm-up
   policy, for each label set and, with an exact checker, as the ceiling, for the exact
   labels. Measured on the held-out samples: step-level accuracy (sigmoid(value) > 0.5 vs
   the exact label; exact tasks only) and, on every task, final-answer accuracy of the
   PRM-weighted vote (each solution weighs its minimum step score, Math-Shepherd's
   aggregation) and of best-of-N by PRM, beside the majority vote (self-consistency).

Departures: OmegaPRM's tree (MCTS over a question's rollouts, reusing them across
solutions) is replaced by the binary search on each policy sample; the PRMs are small
value heads on the policy rather than separate 7B models; the vote is over the
``samples.n`` held-out samples per eval problem (the papers verify 256 / 64).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Optional

import numpy as np

from reasonjax.config import ConfigError
from reasonjax.data import formatting
from reasonjax.data.task import Problem
from reasonjax.eval.plots import line_plot
from reasonjax.driver import run as run_driver
from reasonjax.eval.report import markdown_table, write_report
from reasonjax.recipes import common, process_labels
from reasonjax.recipes.common import RecipeEnv
from reasonjax.recipes.rundir import Result, log_metrics, open_run, run_phase
from reasonjax.search.sampler import SampleConfig
from reasonjax.search.voting import answer_ids, vote
from reasonjax.train.value import ValueConfig, value_loss

LABELERS = ("math_shepherd", "omegaprm")
TARGETS = ("hard", "soft")


@dataclasses.dataclass(frozen=True)
class Config(common.RecipeConfig):
    """``samples``: policy solutions per problem, for the first ``label_problems``
    training problems (the label set) and for every eval problem (held out);
    ``rollouts``: Monte Carlo rollouts per probed prefix; ``targets``: the PRM's BCE
    targets (hard | soft); ``prm``: the PRM fit."""

    samples: SampleConfig = SampleConfig(n=4, max_new_tokens=48)
    label_problems: int = 256
    rollouts: process_labels.RolloutSpec = process_labels.RolloutSpec()
    targets: str = "hard"
    prm: common.FitSpec = common.FitSpec(steps=300)


def _solutions(env: RecipeEnv, problems, texts) -> dict:
    """Flattened solutions of ``problems`` (one list of texts each): the index of their
    problem (``group``), steps, final answer, whether it verifies and, on tasks with an
    exact step checker, the exact step labels (else ``exact`` is None)."""
    exact = env.task.exact_steps
    out = {"problems": [], "group": [], "steps": [], "answer": [], "correct": [],
           "exact": [] if exact else None}
    for g, (p, ts) in enumerate(zip(problems, texts)):
        for t in ts:
            steps = env.task.split_steps(t)
            if not steps:
                continue
            out["problems"].append(p.to_json())
            out["group"].append(g)
            out["steps"].append(steps)
            out["answer"].append(env.task.extract_answer(t))
            out["correct"].append(env.task.verify(p, t))
            if exact:
                out["exact"].append(list(env.task.check_steps(p, steps).prefix_correct))
    return out


def step_examples(env: RecipeEnv, sols: dict, targets) -> list[dict]:
    """Value examples (no SFT loss) with one target per step, at each step end."""
    return [formatting.encode_steps(env.tokenizer, env.task.prompt(Problem.from_json(p)), s,
                                    [float(x) for x in t], env.delimiter,
                                    complete=env.task.is_final_step(s[-1]), sft=False)
            for p, s, t in zip(sols["problems"], sols["steps"], targets)]


def step_accuracy(scores, exact) -> float:
    """Fraction of steps where (score > 0.5) equals the exact label. Steps cut off by the
    PRM's seq_len are skipped."""
    hits = [(s > 0.5) == bool(e) for ss, es in zip(scores, exact) for s, e in zip(ss, es)]
    return float(np.mean(hits)) if hits else float("nan")


def solution_score(scores) -> float:
    """A solution's PRM score: the minimum over its step scores (Math-Shepherd); 0 when no
    step end was scored (all cut off by the PRM's seq_len)."""
    return float(np.min(scores)) if len(scores) else 0.0


def vote_accuracy(group, answers, correct, weights, n_problems: int) -> dict:
    """Final-answer accuracy over ``n_problems`` problems of choosing among each problem's
    solutions (solution i belongs to problem ``group[i]``, has answer ``answers[i]`` (None:
    no answer), verifies or not (``correct[i]``), and PRM score ``weights[i]`` >= 0):
    ``majority`` (most frequent answer; self-consistency), ``weighted`` (answer with the
    largest total score) and ``best_of_n`` (the single highest-scored solution). Ties go to
    the first solution; a problem without solutions counts as wrong."""
    rows = [[i for i, g in enumerate(group) if g == b] for b in range(n_problems)]
    width = max([len(r) for r in rows] + [1])
    ids = answer_ids([[answers[i] for i in r] for r in rows])
    ids = np.pad(ids, ((0, 0), (0, width - ids.shape[1])), constant_values=-1)
    ok = np.zeros((n_problems, width), bool)
    w = np.zeros((n_problems, width), np.float32)
    for b, r in enumerate(rows):
        ok[b, :len(r)] = [correct[i] for i in r]
        w[b, :len(r)] = [weights[i] for i in r]
    out = {}
    for name, weight in (("majority", (ids >= 0).astype(np.float32)), ("weighted", w)):
        winner = np.asarray(vote(ids, weight)[0])
        out[name] = float(np.mean([ok[b, k] if k >= 0 else False
                                   for b, k in enumerate(winner)])) if n_problems else 0.0
    best = np.argmax(np.where(np.arange(width) < np.asarray([len(r) for r in rows])[:, None],
                              w, -1.0), axis=-1)
    out["best_of_n"] = float(np.mean(ok[np.arange(n_problems), best])) if n_problems else 0.0
    return out


def sample_solutions(env: RecipeEnv, policy, own, cfg: Config) -> dict:
    """``samples`` phase: the label set's and the held-out problems' solutions."""
    out = {}
    for name, problems in (("label", own[:cfg.label_problems]), ("held", env.eval)):
        records = run_driver(env, policy, problems, cfg.samples,
                             common.rng_for(cfg.seed, f"samples-{name}"),
                             batch_size=min(cfg.batch_size, len(problems)))
        out[name] = _solutions(env, problems, [[c.completion for c in r.candidates]
                                               for r in records])
    return out


def monte_carlo_labels(env: RecipeEnv, policy, label: dict, name: str, cfg: Config) -> dict:
    """``label-<name>`` phase: Math-Shepherd or OmegaPRM labels of the label set."""
    problems = [Problem.from_json(p) for p in label["problems"]]
    spent: list[int] = []
    oracle = process_labels.prefix_oracle(env, policy, problems, label["steps"],
                                          common.rng_for(cfg.seed, name), cfg.rollouts, spent)
    n_steps = [len(s) for s in label["steps"]]
    if name == "math_shepherd":
        outcome = [c if env.task.is_final_step(s[-1]) else None
                   for c, s in zip(label["correct"], label["steps"])]
        labels = process_labels.math_shepherd_labels(n_steps, outcome, oracle, cfg.rollouts.n)
    else:
        labels = process_labels.omegaprm_labels(n_steps, label["correct"], oracle,
                                                cfg.rollouts.n)
    return {"hard": labels.hard, "soft": labels.soft, "rollouts": sum(labels.rollouts),
            "rollouts_per_label": labels.rollouts_per_label, "rounds": labels.rounds,
            "tokens_generated": sum(spent),
            "agreement": process_labels.agreement(labels.hard, label["exact"])
            if env.task.exact_steps else float("nan")}


@dataclasses.dataclass
class PRMTrainer:
    """Trains one PRM per label set of the ``label`` solutions from the warm-up policy,
    sharing one compiled step, and measures each on the held-out solutions (``held``,
    their ``examples``)."""

    env: RecipeEnv
    policy: Any
    label: dict
    held: dict
    examples: list
    cfg: Config
    step: Any = None

    def __call__(self, targets) -> dict:
        env, cfg = self.env, self.cfg
        loss = value_loss(env.model_config, ValueConfig("bce"))
        if self.step is None:
            self.step = common.fit_step(env, self.policy, loss, cfg.prm)
        params, metrics = common.fit_examples(env, self.policy, loss,
                                              step_examples(env, self.label, targets),
                                              cfg.prm, seed=cfg.seed, step=self.step)
        scores = common.head_values(env, params, self.examples, "value", cfg.prm.seq_len,
                                    "sigmoid", cfg.prm.batch_size)
        votes = vote_accuracy(self.held["group"], self.held["answer"], self.held["correct"],
                              [solution_score(s) for s in scores], len(env.eval))
        return {"step_accuracy": step_accuracy(scores, self.held["exact"])
                if env.task.exact_steps else float("nan"), **votes,
                "final_loss": float(metrics.get("loss", float("nan")))}


def result_row(name: str, lab: Optional[dict], prm: dict, label: dict, exact: bool) -> dict:
    """One row of the results table: a label set (``lab`` None: the exact labels)."""
    r = {"labels": name, "rollouts": lab["rollouts"] if lab else 0,
         "rollouts per label": lab["rollouts_per_label"] if lab else 0.0,
         "positive fraction": _positive(lab["hard"] if lab else label["exact"])}
    if exact:
        r.update({"agreement with exact": lab["agreement"] if lab else 1.0,
                  "PRM step accuracy": prm["step_accuracy"]})
    return {**r, "majority vote": prm["majority"], "PRM-weighted vote": prm["weighted"],
            "best-of-N by PRM": prm["best_of_n"]}


def run(cfg: Config, run_dir) -> Result:
    if cfg.targets not in TARGETS:
        raise ConfigError(f"targets={cfg.targets!r}: choose one of {TARGETS}")
    env = common.env_for(cfg)
    exact = env.task.exact_steps  # without a step checker: no agreement / ceiling / accuracy
    run = open_run(run_dir, cfg, total_phases=2 + 2 * len(LABELERS) + int(exact))
    env, policy, own = common.warm_start(run, cfg, env)
    sols = run_phase(run, "samples", lambda: sample_solutions(env, policy, own, cfg))
    label, held = sols["label"], sols["held"]
    log_metrics(run, {"phase": "samples", "label_solutions": len(label["steps"]),
                      "label_accuracy": float(np.mean(label["correct"])),
                      "held_solutions": len(held["steps"])})
    labels = {}
    for name in LABELERS:
        labels[name] = run_phase(run, f"label-{name}",
                                 lambda: monte_carlo_labels(env, policy, label, name, cfg))
        log_metrics(run, {"phase": f"label-{name}", **{k: labels[name][k] for k in (
            "rollouts", "rollouts_per_label", "rounds", "agreement")}})
    labelers_agree = process_labels.agreement(
        labels[LABELERS[0]]["hard"],
        [[h >= 0.5 for h in hs] for hs in labels[LABELERS[1]]["hard"]])
    # Targets only matter for training, so held-out examples carry placeholder zeros when
    # there are no exact labels.
    held_examples = step_examples(env, held, held["exact"] if exact else
                                  [[0.0] * len(s) for s in held["steps"]])
    trainer = PRMTrainer(env, policy, label, held, held_examples, cfg)
    sets = [(name, labels[name], labels[name][cfg.targets]) for name in LABELERS]
    if exact:
        sets.append(("exact (ceiling)", None, label["exact"]))
    rows = []
    for name, lab, targets in sets:
        phase = f"prm-{name.split(' ')[0]}"
        prm = run_phase(run, phase, lambda: trainer(targets))
        log_metrics(run, {"phase": phase, **prm})
        rows.append(result_row(name, lab, prm, label, exact))
    return _report(Path(run_dir), cfg, rows, label, held, labelers_agree, exact)


def _positive(labels) -> float:
    flat = [float(x) for ls in labels for x in ls]
    return float(np.mean(flat)) if flat else float("nan")


def _plots(run_dir: Path, cfg: Config, rows: list, exact: bool) -> list[tuple[str, str]]:
    """Writes the report's plots; returns their (file, title)."""
    ms, om = rows[0], rows[1]
    xs = list(range(len(rows)))
    names = ", ".join(f"{i} = {r['labels']}" for i, r in enumerate(rows))
    plots = [("vote_accuracy.png", "PRMs at test time")]
    line_plot(run_dir / "vote_accuracy.png",
              {k: (xs, [r[k] for r in rows]) for k in
               ("majority vote", "PRM-weighted vote", "best-of-N by PRM")},
              xlabel=f"PRM labels ({names})", ylabel="final-answer accuracy",
              title=f"Choosing among {cfg.samples.n} samples per eval problem", ylim=(0, 1))
    if exact:
        series = {r["labels"]: ([r["rollouts per label"]], [r["agreement with exact"]])
                  for r in (ms, om)}
        line_plot(run_dir / "agreement_vs_rollouts.png", series,
                  xlabel="rollouts per label", ylabel="agreement with exact labels",
                  title="Monte Carlo process labels: cost vs agreement", ylim=(0, 1))
        series = {k: (xs, [r[k] for r in rows])
                  for k in ("PRM step accuracy", "agreement with exact")}
        line_plot(run_dir / "prm_accuracy.png", series, xlabel=f"labels ({names})",
                  ylabel="fraction of steps", title="PRM step accuracy on held-out samples",
                  ylim=(0, 1))
        plots += [("agreement_vs_rollouts.png", "agreement vs rollouts"),
                  ("prm_accuracy.png", "PRM accuracy")]
    return plots


def _report(run_dir: Path, cfg: Config, rows, label, held, labelers_agree: float,
            exact: bool) -> Result:
    ms, om = rows[0], rows[1]
    n_eval = len(set(held["group"]))
    checks, lines = {}, [
        f"- label set: {len(label['steps'])} policy solutions "
        f"({np.mean(label['correct']):.2f} correct), {sum(map(len, label['steps']))} steps; "
        f"held out: {len(held['steps'])} solutions ({cfg.samples.n} per eval problem, "
        f"{np.mean(held['correct']):.2f} correct), {sum(map(len, held['steps']))} steps; "
        f"k = {cfg.rollouts.n} rollouts per probe; PRM targets: {cfg.targets}; "
        f"Math-Shepherd and OmegaPRM hard labels agree on {labelers_agree:.3f} of steps"
        + ("" if exact else "; the task has no exact step checker, so agreement with exact "
           "labels and PRM step accuracy are not measured")]
    cheaper = om["rollouts per label"] < ms["rollouts per label"]
    checks["OmegaPRM spends fewer rollouts per label than Math-Shepherd"] = cheaper
    lines.append(f"- OmegaPRM's binary search needs fewer rollouts per label than per-prefix "
                 f"rollouts (paper: O(log n) rollout batches per solution): "
                 f"{om['rollouts per label']:.2f} vs {ms['rollouts per label']:.2f}; held: "
                 f"{'yes' if cheaper else 'no'}")
    if exact:
        base = _positive(held["exact"])
        baseline = max(base, 1 - base)
        for row in (ms, om):
            ok = row["agreement with exact"] >= 0.8
            checks[f"{row['labels']} labels agree with the exact step labels"] = ok
            lines.append(f"- {row['labels']} hard labels equal the exact step labels on "
                         f"{row['agreement with exact']:.3f} of steps; held (>= 0.8): "
                         f"{'yes' if ok else 'no'}")
        for row in (ms, om):
            ok = row["PRM step accuracy"] > baseline
            checks[f"PRM on {row['labels']} labels beats the majority-class baseline"] = ok
            lines.append(f"- PRM trained on {row['labels']} labels: held-out step accuracy "
                         f"{row['PRM step accuracy']:.3f} vs {baseline:.3f} for always "
                         f"predicting the majority label (exact-label PRM: "
                         f"{rows[2]['PRM step accuracy']:.3f}); held: {'yes' if ok else 'no'}")
    for row in (ms, om):
        ok = row["PRM-weighted vote"] > row["majority vote"]
        checks[f"PRM on {row['labels']} labels: weighted vote beats majority vote"] = ok
        lines.append(f"- PRM-weighted vote beats majority vote (Math-Shepherd: verification "
                     f"with the PRM beats self-consistency on GSM8K and MATH): PRM on "
                     f"{row['labels']} labels, final-answer accuracy on {n_eval} eval "
                     f"problems {row['PRM-weighted vote']:.3f} vs {row['majority vote']:.3f} "
                     f"(best-of-N by PRM: {row['best-of-N by PRM']:.3f}); held: "
                     f"{'yes' if ok else 'no'}")
    plots = _plots(run_dir, cfg, rows, exact)
    report = write_report(run_dir / "report.md", "Monte Carlo process labels and PRMs", [
        ("Results", markdown_table(rows)),
        ("Effect checks", "\n".join(lines)),
        ("Plots", "\n\n".join(f"![{t}]({f})" for f, t in plots))])
    return Result(rows=rows, checks=checks, report=report)
