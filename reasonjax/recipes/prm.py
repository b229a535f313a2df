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
5. With ``tree_plv`` set: ``label-tree_plv``, a best-first tree on each label problem
   (:func:`.process_labels.tree_pairs`, ``rollouts`` valuing each step) and its sibling
   step pairs, then ``prm-tree_plv``, a Tree-PLV verifier (He et al., 2024; the value head
   ranked on the pairs, :func:`reasonjax.train.tree_plv.tree_plv_loss`) from the warm-up
   policy, measured as the BCE PRMs are; the check is its best-of-N against the BCE PRM
   on Math-Shepherd labels, the paper's comparison.

Departures: OmegaPRM's tree (MCTS over a question's rollouts, reusing them across
solutions) is replaced by the binary search on each policy sample; the PRMs are small
value heads on the policy rather than separate 7B models; the vote is over the
``samples.n`` held-out samples per eval problem (the papers verify 256 / 64).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from reasonjax.config import ConfigError, check_fields
from reasonjax.data import formatting
from reasonjax.data.task import Problem
from reasonjax.eval.plots import line_plot
from reasonjax.driver import run as run_driver
from reasonjax.driver.values import head_values
from reasonjax.eval import stats
from reasonjax.eval.report import markdown_table, write_report
from reasonjax.recipes import common, process_labels
from reasonjax.recipes.common import RecipeEnv
from reasonjax.recipes.rundir import Result, log_metrics, open_run, run_phase, write_outcomes
from reasonjax.search.sampler import SampleConfig
from reasonjax.search.voting import answer_ids, vote
from reasonjax.train.tree_plv import tree_plv_loss
from reasonjax.train.value import ValueConfig, value_loss

LABELERS = ("math_shepherd", "omegaprm")
TARGETS = ("hard", "soft")


CLAIM = ("Monte Carlo labels need no human annotation; OmegaPRM's binary search needs "
         "O(log n) rollouts; PRM verification beats self-consistency")


@dataclasses.dataclass(frozen=True)
class TreePLVArm:
    """Tree-PLV beside the BCE PRMs: a best-first ``tree`` per label problem, sibling steps
    whose values differ by more than ``margin`` as pairs, the verifier's ranking ``fit``."""

    tree: process_labels.TreeSpec = process_labels.TreeSpec()
    margin: float = 0.25
    fit: common.FitSpec = common.FitSpec(steps=300)

    def __post_init__(self):
        check_fields(self, margin="in [0, 1)")


@dataclasses.dataclass(frozen=True)
class Config(common.RecipeConfig):
    """``samples``: policy solutions per problem, for the first ``label_problems``
    training problems (the label set) and for every eval problem (held out);
    ``rollouts``: Monte Carlo rollouts per probed prefix; ``targets``: the PRM's BCE
    targets (hard | soft); ``prm``: the PRM fit; ``tree_plv``: a Tree-PLV arm (None: none).
    """

    samples: SampleConfig = SampleConfig(n=4, max_new_tokens=48)
    label_problems: int = 256
    rollouts: process_labels.RolloutSpec = process_labels.RolloutSpec()
    targets: str = "hard"
    prm: common.FitSpec = common.FitSpec(steps=300)
    tree_plv: Optional[TreePLVArm] = None

    def __post_init__(self):
        super().__post_init__()
        check_fields(self, label_problems=">= 1")


def losses(cfg: Config) -> dict:
    """{FitSpec path: loss factory} of the run's training phases (what
    :mod:`reasonjax.recipes.plan` compiles)."""
    out = {"prm": lambda mc: value_loss(mc, ValueConfig("bce"))}
    if cfg.tree_plv is not None:
        out["tree_plv.fit"] = tree_plv_loss
    return out


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


def solution_score(scores) -> float:
    """A solution's PRM score: the minimum over its step scores (Math-Shepherd); 0 when no
    step end was scored (all cut off by the PRM's seq_len)."""
    return float(np.min(scores)) if len(scores) else 0.0


def vote_outcomes(group, answers, correct, weights, n_problems: int) -> dict:
    """Per problem (lists of 0/1 over ``n_problems``), whether choosing among its solutions
    gives a right answer (solution i belongs to problem ``group[i]``, has answer
    ``answers[i]`` (None: no answer), verifies or not (``correct[i]``), and PRM score
    ``weights[i]`` >= 0): ``majority`` (most frequent answer; self-consistency),
    ``weighted`` (answer with the largest total score) and ``best_of_n`` (the single
    highest-scored solution). Ties go to the first solution; a problem without solutions
    counts as wrong."""
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
        out[name] = [int(ok[b, k]) if k >= 0 else 0 for b, k in enumerate(winner)]
    best = np.argmax(np.where(np.arange(width) < np.asarray([len(r) for r in rows])[:, None],
                              w, -1.0), axis=-1)
    out["best_of_n"] = [int(x) for x in ok[np.arange(n_problems), best]]
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
            "rollouts_each": labels.rollouts,
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
        return self.measure(params, metrics)

    def tree_plv(self, pairs: list[dict]) -> dict:
        """``prm-tree_plv``: the verifier ranked on the step ``pairs``, measured alike."""
        env, arm = self.env, self.cfg.tree_plv
        examples = [formatting.encode_step_preference(
            env.tokenizer, env.task.prompt(Problem.from_json(r["problem"])), r["prefix"],
            r["chosen"], r["rejected"], env.delimiter, r["chosen_final"], r["rejected_final"])
            for r in pairs]
        params, metrics = common.fit_examples(env, self.policy,
                                              tree_plv_loss(env.model_config), examples,
                                              arm.fit, seed=self.cfg.seed)
        return {**self.measure(params, metrics),
                "ranking_accuracy": float(metrics.get("ranking_accuracy", float("nan")))}

    def measure(self, params, metrics) -> dict:
        """Step accuracy (exact tasks) and the votes of the held-out solutions scored by
        ``params``' value head (sigmoid, each solution its minimum step score)."""
        env, cfg = self.env, self.cfg
        scores = head_values(env, params, self.examples, "value", cfg.prm.seq_len, "sigmoid",
                             cfg.prm.batch_size)
        votes = vote_outcomes(self.held["group"], self.held["answer"], self.held["correct"],
                              [solution_score(s) for s in scores], len(env.eval))
        scored = [(x, bool(e)) for ss, es in zip(scores, self.held["exact"])
                  for x, e in zip(ss, es)] if env.task.exact_steps else []
        return {"step_hits": [int((x > 0.5) == e) for x, e in scored],
                "step_labels": [int(e) for _, e in scored], "votes": votes,
                "final_loss": float(metrics.get("loss", float("nan")))}


def run(cfg: Config, run_dir) -> Result:
    if cfg.targets not in TARGETS:
        raise ConfigError(f"targets={cfg.targets!r}: choose one of {TARGETS}")
    env = common.env_for(cfg)
    exact = env.task.exact_steps  # without a step checker: no agreement / ceiling / accuracy
    run = open_run(run_dir, cfg, total_phases=2 + 2 * len(LABELERS) + int(exact)
                   + 2 * (cfg.tree_plv is not None))
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
    sets = [(name, labels[name][cfg.targets]) for name in LABELERS]
    if exact:
        sets.append(("exact", label["exact"]))
    prms = {}
    for name, targets in sets:
        prms[name] = run_phase(run, f"prm-{name}", lambda: trainer(targets))
        log_metrics(run, {"phase": f"prm-{name}", "final_loss": prms[name]["final_loss"],
                          **{k: float(np.mean(v)) for k, v in prms[name]["votes"].items()}})
    trees = None
    if cfg.tree_plv is not None:
        trees = run_phase(run, "label-tree_plv",
                          lambda: tree_pairs(env, policy, own[:cfg.label_problems], cfg))
        log_metrics(run, {"phase": "label-tree_plv", "pairs": len(trees["pairs"]),
                          "tokens_generated": trees["tokens_generated"]})
        prms["tree_plv"] = run_phase(run, "prm-tree_plv", lambda: trainer.tree_plv(
            trees["pairs"]))
        log_metrics(run, {"phase": "prm-tree_plv", "final_loss": prms["tree_plv"]["final_loss"],
                          **{k: float(np.mean(v)) for k, v in prms["tree_plv"]["votes"].items()}})
    outcomes = {"label": {k: label[k] for k in ("steps", "correct", "exact")},
                "held": {k: held[k] for k in ("group", "correct", "exact")},
                "labels": {n: {k: labels[n][k] for k in ("hard", "rollouts_each", "rounds",
                                                         "tokens_generated")}
                           for n in LABELERS}, "prms": prms, "labelers_agree": labelers_agree,
                "eval_problems": len(env.eval)}
    if trees is not None:
        outcomes["tree_plv"] = {"pairs": len(trees["pairs"]),
                                "tokens_generated": trees["tokens_generated"]}
    write_outcomes(Path(run_dir), outcomes)
    return report(run_dir, cfg, [outcomes])


def tree_pairs(env: RecipeEnv, policy, problems, cfg: Config) -> dict:
    """``label-tree_plv`` phase: Tree-PLV's step pairs from a best-first tree on each of
    ``problems`` grown with ``policy`` and the tokens that cost."""
    spent: list[int] = []
    pairs = process_labels.tree_pairs(env, policy, problems,
                                      common.rng_for(cfg.seed, "label-tree_plv"),
                                      cfg.tree_plv.tree, cfg.rollouts, cfg.tree_plv.margin,
                                      spent)
    if not pairs:
        raise ValueError(f"tree_plv: no sibling steps of the {len(problems)} trees differ in "
                         f"value by more than tree_plv.margin={cfg.tree_plv.margin}; lower it "
                         "or raise tree_plv.tree.children or rollouts.n")
    return {"pairs": [{**r, "problem": r["problem"].to_json()} for r in pairs],
            "tokens_generated": int(sum(spent))}


def _positive(labels) -> float:
    flat = [float(x) for ls in labels for x in ls]
    return float(np.mean(flat)) if flat else float("nan")


def _per_label(o: dict, name: str) -> np.ndarray:
    """Rollouts per label of each labelled solution of one seed."""
    steps = [len(s) for s in o["label"]["steps"]]
    return np.asarray(o["labels"][name]["rollouts_each"], float) / np.maximum(steps, 1)


def _agreement(o: dict, name: str) -> np.ndarray:
    """Per labelled step: the labeler's hard label equals the exact one."""
    return np.asarray([float((h >= 0.5) == bool(e)) for hs, es in
                       zip(o["labels"][name]["hard"], o["label"]["exact"])
                       for h, e in zip(hs, es)])


def _baseline_hits(o: dict, name: str) -> np.ndarray:
    """Per held-out step the PRM ``name`` scored (steps cut off by its seq_len are not):
    always predicting the majority exact label (over every held-out step) is right."""
    majority = np.mean([bool(e) for es in o["held"]["exact"] for e in es]) >= 0.5
    return np.asarray([float(bool(e) == majority) for e in o["prms"][name]["step_labels"]])


def effects(outcomes: Sequence[dict], cfg: Config) -> list[stats.Effect]:
    """Rollouts per label (OmegaPRM below Math-Shepherd), label agreement with the exact
    labels (> 0.8) and PRM step accuracy over the majority-class baseline (exact tasks),
    and the PRM-weighted vote over majority vote, each pooled over the seeds."""
    exact = outcomes[0]["label"]["exact"] is not None
    found = [stats.paired_effect(
        "OmegaPRM spends fewer rollouts per label than Math-Shepherd",
        [_per_label(o, "math_shepherd") for o in outcomes],
        [_per_label(o, "omegaprm") for o in outcomes],
        detail="per labelled solution: Math-Shepherd minus OmegaPRM rollouts per step")]
    for n in LABELERS if exact else ():
        found.append(stats.effect(f"{n} labels agree with the exact step labels",
                                  [_agreement(o, n) for o in outcomes], threshold=0.8,
                                  detail="per labelled step"))
    for n in LABELERS if exact else ():
        found.append(stats.paired_effect(
            f"PRM on {n} labels beats the majority-class baseline",
            [np.asarray(o["prms"][n]["step_hits"], float) for o in outcomes],
            [_baseline_hits(o, n) for o in outcomes],
            detail="per held-out step: PRM right minus always-majority right"))
    for n in LABELERS:
        found.append(stats.paired_effect(
            f"PRM on {n} labels: weighted vote beats majority vote",
            [np.asarray(o["prms"][n]["votes"]["weighted"], float) for o in outcomes],
            [np.asarray(o["prms"][n]["votes"]["majority"], float) for o in outcomes],
            detail=f"paired on the eval problems ({cfg.samples.n} samples each)"))
    if "tree_plv" in outcomes[0]["prms"]:
        found.append(stats.paired_effect(
            "Tree-PLV beats the BCE PRM (Math-Shepherd labels) at best-of-N",
            [np.asarray(o["prms"]["tree_plv"]["votes"]["best_of_n"], float) for o in outcomes],
            [np.asarray(o["prms"]["math_shepherd"]["votes"]["best_of_n"], float)
             for o in outcomes],
            detail=f"paired on the eval problems ({cfg.samples.n} samples each)"))
    return found


# (vote_outcomes key, report column) of each way to choose among a problem's samples
VOTE_COLUMNS = (("majority", "majority vote"), ("weighted", "PRM-weighted vote"),
                ("best_of_n", "best-of-N by PRM"))


def report(run_dir, cfg: Config, outcomes: Sequence[dict]) -> Result:
    """report.md and plots from one outcome dict per seed."""
    run_dir = Path(run_dir)
    exact = outcomes[0]["label"]["exact"] is not None
    names = list(LABELERS) + (["exact"] if exact else [])
    mean = lambda f: float(np.mean([f(o) for o in outcomes]))
    rows = []
    for n in names:
        lab = n != "exact"
        row = {"labels": "exact (ceiling)" if not lab else n,
               "tokens generated": mean(lambda o: o["labels"][n].get(
                   "tokens_generated", float("nan"))) if lab else 0,
               "rollouts": mean(lambda o: sum(o["labels"][n]["rollouts_each"])) if lab else 0,
               "rollouts per label": mean(lambda o: np.mean(_per_label(o, n))) if lab else 0.0,
               "positive fraction": mean(lambda o: _positive(
                   o["labels"][n]["hard"] if lab else o["label"]["exact"]))}
        if exact:
            row["agreement with exact"] = mean(lambda o: np.mean(_agreement(o, n))) \
                if lab else 1.0
            row["PRM step accuracy"] = mean(lambda o: np.mean(o["prms"][n]["step_hits"]))
        for key, label in VOTE_COLUMNS:
            row[label] = mean(lambda o: np.mean(o["prms"][n]["votes"][key]))
        rows.append(row)
    plots = _plots(run_dir, cfg, rows, exact)
    if "tree_plv" in outcomes[0]["prms"]:  # ranked, not labelled: no label columns
        row = {k: float("nan") for k in rows[0]}  # no step accuracy: a ranked head
        row.update({"labels": "Tree-PLV (step pairs)", "tokens generated": mean(
            lambda o: o["tree_plv"]["tokens_generated"])})
        for key, label in VOTE_COLUMNS:
            row[label] = mean(lambda o: np.mean(o["prms"]["tree_plv"]["votes"][key]))
        rows.append(row)
    found = effects(outcomes, cfg)
    o = outcomes[0]
    note = (f"{len(o['label']['steps'])} labelled solutions and {len(o['held']['group'])} "
            f"held-out solutions ({cfg.samples.n} per eval problem) a seed, "
            f"{len(outcomes)} seed(s) (means over the seeds); k = {cfg.rollouts.n} rollouts "
            f"per probe; PRM targets: {cfg.targets}; Math-Shepherd and OmegaPRM hard labels "
            f"agree on {mean(lambda o: o['labelers_agree']):.3f} of steps"
            + ("" if exact else "; the task has no exact step checker, so agreement with "
               "exact labels and PRM step accuracy are not measured")
            + (f"; Tree-PLV: {mean(lambda o: o['tree_plv']['pairs']):.0f} step pairs from "
               f"best-first trees ({cfg.tree_plv.tree.expansions} expansions of "
               f"{cfg.tree_plv.tree.children} children, margin {cfg.tree_plv.margin:g}) on "
               "the same label problems, ranking accuracy "
               f"{mean(lambda o: o['prms']['tree_plv']['ranking_accuracy']):.3f} on its last "
               "batch; its head is ranked, not calibrated, so it has no step accuracy"
               if "tree_plv" in o else ""))
    title = common.title("Monte Carlo process labels and PRMs", cfg)
    path = write_report(run_dir / "report.md", title, [
        ("Results", markdown_table(rows) + "\n\n" + note),
        ("Effect checks", markdown_table([e.row() for e in found])),
        ("Plots", "\n\n".join(f"![{t}]({f})" for f, t in plots))])
    headline = (f"rollouts per label {rows[0]['rollouts per label']:.2f} (Math-Shepherd) vs "
                f"{rows[1]['rollouts per label']:.2f} (OmegaPRM); PRM vote "
                f"{rows[0]['PRM-weighted vote']:.3f} / {rows[1]['PRM-weighted vote']:.3f} vs "
                f"majority {rows[0]['majority vote']:.3f}")
    if "tree_plv" in o:
        headline += (f"; best-of-N Tree-PLV {rows[-1]['best-of-N by PRM']:.3f} vs "
                     f"Math-Shepherd PRM {rows[0]['best-of-N by PRM']:.3f}")
    headline += f"; {o['eval_problems']} problems"
    return Result(rows=rows, effects=found, report=path, headline=headline)


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
