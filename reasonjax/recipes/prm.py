"""Process reward models from Monte Carlo process labels: Math-Shepherd (Wang et al., 2024)
and OmegaPRM (Luo et al., 2024), checked against the task's exact step labels.

Pipeline as implemented (each stage a resumable phase):

1. ``warmup``: SFT on the training problems' reference solutions (or a checkpoint).
2. ``samples``: ``samples.n`` policy solutions for each of the first ``samples.problems``
   training problems (the label set) and for each eval problem (held out), with their
   exact step labels (``task.check_steps(...).prefix_correct``).
3. ``label-math_shepherd`` / ``label-omegaprm``: Monte Carlo labels of every step of the
   label set (:mod:`.process_labels`): Math-Shepherd rolls out ``rollouts.k`` completions
   from every prefix (hard = any correct, soft = fraction), OmegaPRM binary-searches the
   first error of wrong solutions. Each labelling round is ONE batched sampler pass over
   all its prefixes. Rollouts spent per label and agreement with the exact labels are
   recorded.
4. ``prm-<labels>``: a PRM (the value head, trained with BCE on hard or soft targets at
   each step end; ``reasonjax.train.value.value_loss``) initialised from the warm-up
   policy, for each label set and, as the ceiling, for the exact labels; its step-level
   accuracy (sigmoid(value) > 0.5 vs the exact label) on the held-out samples.

Departures: OmegaPRM's tree (MCTS over a question's rollouts, reusing them across
solutions) is replaced by the binary search on each policy sample; the PRMs are small
value heads on the policy rather than separate 7B models.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import numpy as np

from reasonjax import parallel
from reasonjax.config import ConfigError
from reasonjax.data import formatting
from reasonjax.data.task import Problem
from reasonjax.eval.plots import line_plot
from reasonjax.eval.report import markdown_table, write_report
from reasonjax.recipes import common, process_labels
from reasonjax.recipes.replicate import Result
from reasonjax.recipes.rundir import log_metrics, open_run, run_phase
from reasonjax.train.logprobs import forward
from reasonjax.train.value import ValueConfig, value_loss

LABELERS = ("math_shepherd", "omegaprm")
TARGETS = ("hard", "soft")


@dataclasses.dataclass(frozen=True)
class SampleSpec:
    """Policy solutions to label: ``n`` per problem for the first ``problems`` training
    problems (and for every eval problem, held out), at ``temperature``."""

    problems: int = 256
    n: int = 4
    temperature: float = 1.0
    max_new_tokens: int = 48


@dataclasses.dataclass(frozen=True)
class Config:
    task: common.TaskSpec = common.TaskSpec()
    model: common.ModelSpec = common.ModelSpec()
    warmup: common.FitSpec = common.FitSpec()
    mesh: parallel.MeshConfig = parallel.MeshConfig()
    num_devices: int = 0
    seed: int = 0
    samples: SampleSpec = SampleSpec()
    rollouts: process_labels.RolloutSpec = process_labels.RolloutSpec()
    targets: str = "hard"  # hard | soft: the PRM's BCE targets
    prm: common.FitSpec = common.FitSpec(steps=300, lr=1e-3)


def _solutions(env: common.Env, problems, texts) -> dict:
    """Flattened solutions of ``problems`` (one list of texts each) with exact labels."""
    out = {"problems": [], "steps": [], "correct": [], "exact": []}
    for p, ts in zip(problems, texts):
        for t in ts:
            steps = env.task.split_steps(t)
            if not steps:
                continue
            out["problems"].append(p.to_json())
            out["steps"].append(steps)
            out["correct"].append(env.task.verify(p, t))
            out["exact"].append(list(env.task.check_steps(p, steps).prefix_correct))
    return out


def step_examples(env: common.Env, sols: dict, targets) -> list[dict]:
    """Value examples (no SFT loss) with one target per step, at each step end."""
    return [formatting.encode_steps(env.tokenizer, env.task.prompt(Problem.from_json(p)), s,
                                    [float(x) for x in t], env.delimiter,
                                    complete=env.task.is_final_step(s[-1]), sft=False)
            for p, s, t in zip(sols["problems"], sols["steps"], targets)]


def step_scores(env: common.Env, params, examples, seq_len: int, batch_size: int,
                fn=None) -> list:
    """PRM score sigmoid(value) at every step end of each example: list of [n_steps].
    ``fn``: a jitted :func:`scorer` to reuse across calls."""
    fn = fn or scorer(env)
    out = []
    for start in range(0, len(examples), batch_size):
        chunk = list(examples[start:start + batch_size])
        rows = chunk + [chunk[0]] * (batch_size - len(chunk))
        batch = formatting.stack([formatting.fit(e, "value", seq_len, "truncate")[0]
                                  for e in rows])
        values = np.asarray(fn(params, {k: batch[k] for k in
                                        ("tokens", "positions", "segment_ids")}))
        for i in range(len(chunk)):
            out.append(values[i][batch["value_mask"][i] > 0])
    return out


def scorer(env: common.Env):
    """Jitted (params, batch) -> sigmoid(value head) [B, T]."""
    return jax.jit(lambda p, b: jax.nn.sigmoid(forward(env.model_config, p, b).values))


def step_accuracy(scores, exact) -> float:
    """Fraction of steps where (score > 0.5) equals the exact label. Steps cut off by the
    PRM's seq_len are skipped."""
    hits = [(s > 0.5) == bool(e) for ss, es in zip(scores, exact) for s, e in zip(ss, es)]
    return float(np.mean(hits)) if hits else float("nan")


def run(cfg: Config, run_dir) -> Result:
    if cfg.targets not in TARGETS:
        raise ConfigError(f"targets={cfg.targets!r}: choose one of {TARGETS}")
    run = open_run(run_dir, cfg, total_phases=2 + 2 * len(LABELERS) + 1)
    env = common.make_env(cfg.task, cfg.model, cfg.mesh, cfg.num_devices)
    if not env.task.exact_steps:
        raise ConfigError(f"task {env.task.name!r} has no exact step checker, and this recipe "
                          "measures Monte Carlo labels and PRMs against exact step labels; "
                          "use a built-in task (task.name=arithmetic, countdown, procbench)")
    policy = common.warmup(run, env, cfg.warmup, seed=cfg.seed)

    def sample_both():
        out = {}
        for name, problems in (("label", env.train[:cfg.samples.problems]),
                               ("held", env.eval)):
            s = common.sample_completions(env, policy, problems,
                                          common.rng_for(cfg.seed, f"samples-{name}"),
                                          n=cfg.samples.n,
                                          temperature=cfg.samples.temperature,
                                          max_new_tokens=cfg.samples.max_new_tokens)
            out[name] = _solutions(env, problems, s.texts)
        return out

    sols = run_phase(run, "samples", sample_both)
    label, held = sols["label"], sols["held"]
    log_metrics(run, {"phase": "samples", "label_solutions": len(label["steps"]),
                      "label_accuracy": float(np.mean(label["correct"])),
                      "held_solutions": len(held["steps"])})

    def labelled(name):
        def compute():
            problems = [Problem.from_json(p) for p in label["problems"]]
            spent: list[int] = []
            oracle = process_labels.prefix_oracle(
                env, policy, problems, label["steps"], common.rng_for(cfg.seed, name),
                cfg.rollouts, spent)
            n_steps = [len(s) for s in label["steps"]]
            if name == "math_shepherd":
                outcome = [c if env.task.is_final_step(s[-1]) else None
                           for c, s in zip(label["correct"], label["steps"])]
                labels = process_labels.math_shepherd_labels(n_steps, outcome, oracle,
                                                             cfg.rollouts.k)
            else:
                labels = process_labels.omegaprm_labels(n_steps, label["correct"], oracle,
                                                        cfg.rollouts.k)
            return {"hard": labels.hard, "soft": labels.soft,
                    "rollouts": sum(labels.rollouts),
                    "rollouts_per_label": labels.rollouts_per_label,
                    "rounds": labels.rounds, "tokens_generated": sum(spent),
                    "agreement": process_labels.agreement(labels.hard, label["exact"])}
        result = run_phase(run, f"label-{name}", compute)
        log_metrics(run, {"phase": f"label-{name}", **{k: result[k] for k in (
            "rollouts", "rollouts_per_label", "rounds", "agreement")}})
        return result

    labels = {name: labelled(name) for name in LABELERS}
    held_examples = step_examples(env, held, held["exact"])
    score_fn = scorer(env)

    def trained(name, targets):
        def compute():
            examples = step_examples(env, label, targets)
            params, metrics = common.fit(env, policy, value_loss(env.model_config,
                                                                 ValueConfig("bce")),
                                         examples, "value", cfg.prm, seed=cfg.seed)
            scores = step_scores(env, params, held_examples, cfg.prm.seq_len,
                                 cfg.prm.batch_size, score_fn)
            return {"step_accuracy": step_accuracy(scores, held["exact"]),
                    "final_loss": float(metrics.get("loss", float("nan")))}
        result = run_phase(run, f"prm-{name}", compute)
        log_metrics(run, {"phase": f"prm-{name}", **result})
        return result

    rows = []
    for name in LABELERS:
        lab = labels[name]
        prm = trained(name, lab[cfg.targets])
        rows.append({"labels": name, "rollouts": lab["rollouts"],
                     "rollouts per label": lab["rollouts_per_label"],
                     "agreement with exact": lab["agreement"],
                     "positive fraction": _positive(lab["hard"]),
                     "PRM step accuracy": prm["step_accuracy"]})
    exact = trained("exact", label["exact"])
    rows.append({"labels": "exact (ceiling)", "rollouts": 0, "rollouts per label": 0.0,
                 "agreement with exact": 1.0, "positive fraction": _positive(label["exact"]),
                 "PRM step accuracy": exact["step_accuracy"]})
    return _report(Path(run_dir), cfg, rows, label, held)


def _positive(labels) -> float:
    flat = [float(x) for ls in labels for x in ls]
    return float(np.mean(flat)) if flat else float("nan")


def _report(run_dir: Path, cfg: Config, rows, label, held) -> Result:
    ms, om = rows[0], rows[1]
    base = _positive(held["exact"])
    baseline = max(base, 1 - base)
    checks, lines = {}, [
        f"- label set: {len(label['steps'])} policy solutions "
        f"({np.mean(label['correct']):.2f} correct), {sum(map(len, label['steps']))} steps; "
        f"held out: {len(held['steps'])} solutions, {sum(map(len, held['steps']))} steps; "
        f"k = {cfg.rollouts.k} rollouts per probe; PRM targets: {cfg.targets}"]
    cheaper = om["rollouts per label"] < ms["rollouts per label"]
    checks["OmegaPRM spends fewer rollouts per label than Math-Shepherd"] = cheaper
    lines.append(f"- OmegaPRM's binary search needs fewer rollouts per label than per-prefix "
                 f"rollouts (paper: O(log n) rollout batches per solution): "
                 f"{om['rollouts per label']:.2f} vs {ms['rollouts per label']:.2f}; held: "
                 f"{'yes' if cheaper else 'no'}")
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
                     f"{row['PRM step accuracy']:.3f} vs {baseline:.3f} for always predicting "
                     f"the majority label (exact-label PRM: {rows[2]['PRM step accuracy']:.3f}); "
                     f"held: {'yes' if ok else 'no'}")
    series = {r["labels"]: ([r["rollouts per label"]], [r["agreement with exact"]])
              for r in (ms, om)}
    line_plot(run_dir / "agreement_vs_rollouts.png", series,
              xlabel="rollouts per label", ylabel="agreement with exact labels",
              title="Monte Carlo process labels: cost vs agreement", ylim=(0, 1))
    series = {"PRM step accuracy": (list(range(len(rows))),
                                    [r["PRM step accuracy"] for r in rows]),
              "label agreement": (list(range(len(rows))),
                                  [r["agreement with exact"] for r in rows])}
    line_plot(run_dir / "prm_accuracy.png", series,
              xlabel="labels (0 = Math-Shepherd, 1 = OmegaPRM, 2 = exact)",
              ylabel="fraction of steps", title="PRM step accuracy on held-out samples",
              ylim=(0, 1))
    report = write_report(run_dir / "report.md", "Monte Carlo process labels and PRMs", [
        ("Results", markdown_table(rows)),
        ("Effect checks", "\n".join(lines)),
        ("Plots", "![agreement vs rollouts](agreement_vs_rollouts.png)\n\n"
                  "![PRM accuracy](prm_accuracy.png)")])
    return Result(rows=rows, checks=checks, report=report)
