"""AlphaMath Almost Zero (Chen et al., 2024, "AlphaMath Almost Zero: process Supervision
without process"): MCTS turns final-answer supervision into value targets for every step,
and one set of parameters learns policy and value together.

Pipeline as implemented:

1. ``warmup``: SFT on the training problems' reference solutions (tiny: a model trained
   from scratch; paper: the checkpoint, optionally fine-tuned).
2. For each round r = 1..``rounds``:
   - ``mcts-round-r``: MCTS (PUCT, :mod:`reasonjax.search.mcts`) over ``search_problems``
     training problems with the current model: K candidate steps per node sampled from
     the policy, prior = their mean log-prob, non-terminal nodes valued by the tanh value
     head, terminal nodes by the verifier (+1 / -1). Every visited prefix gets its tree
     Q-value as value target; complete paths that verified are SFT targets
     (:func:`reasonjax.recipes.mcts_data.value_records`).
   - ``train-round-r``: L = SFT(correct paths) + beta * MSE(tanh(value(prefix)), Q) on ONE
     set of params (:func:`reasonjax.train.value.joint_loss`), from the previous round's
     params, on the paths of all but a seeded ``value_holdout`` fraction of the searched
     problems; the value head is then measured on the held-out ones
     (:func:`value_quality`: MAE against Q, and how often a correct complete path's final
     value beats a wrong one's, over all pairs and within one problem).
   - ``eval-round-r`` (and ``eval-round-0`` after the warm-up): greedy decoding and
     value-guided step beam search on the held-out problems.
3. ``eval-methods``: the final model with greedy decoding, majority vote over sampled
   solutions, step-level beam search ranked by the VALUE head (the paper's SBS: B1 beams,
   each expanded by B2 sampled steps, keep the top B1 by value), and MCTS at inference
   (value head at every node, no verifier), each with the tokens it generated.

Departures from the paper: the rounds are few and small (the paper runs 3 rounds over
15k problems with 64+ simulations per move); the search keeps mctx's moves (a search per
move from the chosen child) rather than the paper's one tree per problem; the next round
continues from the previous round's params rather than retraining from the base model.

Notes on what the tiny preset shows, and what was tried: docs/recipes/alphamath.md.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional, Sequence

import jax
import numpy as np

from reasonjax.config import check_fields
from reasonjax.data import formatting
from reasonjax.data.task import Problem
from reasonjax.driver import Method, accuracy
from reasonjax.driver import run as run_driver
from reasonjax.driver.values import head_values
from reasonjax.eval import stats
from reasonjax.eval.plots import line_plot
from reasonjax.eval.report import markdown_table, write_report
from reasonjax.recipes import common, mcts_data
from reasonjax.recipes.common import (FitSpec, RecipeConfig, RecipeEnv, Trained, fit_examples,
                                      rng_for, warm_start)
from reasonjax.recipes.rundir import Result, log_metrics, open_run, run_phase, write_outcomes
from reasonjax.search.beam import BeamConfig
from reasonjax.search.mcts import MCTSConfig
from reasonjax.search.sampler import SampleConfig, SamplingConfig
from reasonjax.search.scoring import StepScorer
from reasonjax.search.voting import VotingConfig
from reasonjax.train.value import JointConfig, joint_loss


CLAIM = ("MCTS with a value head on the policy's backbone, trained from Q-values without "
         "process labels; value-guided step beam search beats greedy")


@dataclasses.dataclass(frozen=True)
class EvalSpec:
    """Inference on the held-out problems, each method its library config: ``greedy``
    decoding, ``majority`` vote over sampled solutions, value-guided step beam search
    ``sbs`` (B1 = n / beam_width beams, each expanded B2 = beam_width ways, ranked by the
    tanh value head) and ``mcts`` with the value head at every node (no verifier)."""

    greedy: SampleConfig = SampleConfig(n=1, max_new_tokens=64,
                                        sampling=SamplingConfig(temperature=0.0))
    majority: VotingConfig = VotingConfig(n=8, max_steps=4, step_tokens=16)
    sbs: BeamConfig = BeamConfig(n=8, beam_width=4, max_steps=4, step_tokens=16,
                                 scorer=StepScorer(kind="value", transform="tanh"))
    mcts: MCTSConfig = MCTSConfig(num_actions=4, num_simulations=8, max_steps=4,
                                  step_tokens=16)
    curve: tuple[int, ...] = (2, 4)

    def curve_methods(self) -> dict[str, tuple[str, Method]]:
        """{label: (family, method)}: the smaller budgets of the accuracy-vs-compute
        curves, ``curve``: majority vote and SBS over n = b candidates (SBS beam width
        min(b, sbs.beam_width)), MCTS with b simulations per move."""
        out = {}
        for b in self.curve:
            width = min(b, self.sbs.beam_width)
            out[f"majority vote (N={b})"] = ("majority vote",
                                             dataclasses.replace(self.majority, n=b))
            out[f"value-guided SBS (B1={b // width}, B2={width})"] = (
                "value-guided SBS", dataclasses.replace(self.sbs, n=b, beam_width=width))
            out[f"MCTS ({b} sims/move)"] = ("MCTS, value head", dataclasses.replace(
                self.mcts, num_simulations=b))
        return out

    def methods(self) -> dict[str, Method]:
        """{report label: method config} of every inference method."""
        return {"greedy": self.greedy,
                f"majority vote (N={self.majority.n})": self.majority,
                f"value-guided step beam search (B1={self.sbs.n // self.sbs.beam_width}, "
                f"B2={self.sbs.beam_width})": self.sbs,
                f"MCTS, value head (K={self.mcts.num_actions}, "
                f"{self.mcts.num_simulations} sims/move)": self.mcts}


@dataclasses.dataclass(frozen=True)
class Config(RecipeConfig):
    """``search``: the training MCTS (terminal nodes judged by the verifier) over
    ``search_problems`` problems a round; ``train`` / ``joint``: the joint policy + value
    fit; ``value_holdout``: the share of searched problems kept out of it;
    ``later_temperature``: the search's sampling temperature from round 2 on (the authors
    raise it to 1.0 once the value head is trained; None: ``search.sampling``'s)."""

    rounds: int = 2
    search: MCTSConfig = MCTSConfig(num_actions=4, num_simulations=8, max_steps=4,
                                    step_tokens=16, terminal_reward="verifier")
    search_problems: int = 128
    later_temperature: Optional[float] = None
    train: FitSpec = FitSpec(steps=300)
    joint: JointConfig = JointConfig(value_coef=1.0)
    value_holdout: float = 0.1
    eval: EvalSpec = EvalSpec()

    def __post_init__(self):
        super().__post_init__()
        check_fields(self, rounds=">= 1", search_problems=">= 1", later_temperature=">= 0",
                     value_holdout="in [0, 1)")


def losses(cfg: Config) -> dict:
    """{FitSpec path: loss factory} of the run's training phases (for :mod:`reasonjax.recipes.plan`;
    the warm-up's SFT is common to every recipe)."""
    return {"train": lambda mc: joint_loss(mc, cfg.joint)}


@dataclasses.dataclass(frozen=True)
class Searched:
    """A round's MCTS: value-target records (:func:`mcts_data.value_records`), the share
    of problems solved, tokens generated, correct complete paths."""

    records: list
    solved: float
    tokens_generated: int
    correct_paths: int


def evaluate(env: RecipeEnv, params, methods: dict[str, Method], cfg: Config,
             rng: jax.Array) -> dict:
    """{label: {"accuracy", "correct" (per problem), "tokens_per_problem"}} of ``methods``
    on the eval problems (tokens: each problem's share of its batch's generated tokens)."""
    out = {}
    for label, method in methods.items():
        records = run_driver(env, params, env.eval, method, jax.random.fold_in(rng, len(out)),
                             batch_size=min(cfg.batch_size, len(env.eval)))
        out[label] = {"accuracy": accuracy(records), "correct": [r.correct for r in records],
                      "tokens_per_problem": float(np.mean(
                          [r.compute["tokens_generated"] for r in records]))}
    return out


# ---------------------------------------------------------------------------------------
# Training data


def joint_examples(env: RecipeEnv, records: Sequence[dict], problems: Sequence[Problem]) -> list:
    """``joint`` examples: every record's steps with their Q targets; SFT on correct
    complete paths only (value-only rows otherwise)."""
    return [formatting.encode_steps(env.tokenizer, env.task.prompt(problems[r["problem"]]),
                                    r["steps"], r["targets"], env.delimiter, r["complete"],
                                    sft=r["correct"])
            for r in records]


def split_records(records: Sequence[dict], holdout: float, seed: int) -> tuple[list, list]:
    """(train, held-out) records: a seeded ``holdout`` fraction of the searched problems
    (at least one when ``holdout`` > 0 and two or more were searched) is kept out of
    training to measure the value head on prefixes it never fitted."""
    problems = sorted({r["problem"] for r in records})
    n = min(int(np.ceil(holdout * len(problems))), len(problems) - 1) if holdout > 0 else 0
    held = set(np.random.default_rng(seed).permutation(problems)[:max(n, 0)].tolist())
    return ([r for r in records if r["problem"] not in held],
            [r for r in records if r["problem"] in held])


def value_quality(env: RecipeEnv, params, records: Sequence[dict],
                  problems: Sequence[Problem], seq_len: int) -> dict:
    """The tanh value head against ``records``' targets: ``value_mae`` over every step
    end; ``final_auc``: how often a correct complete path's final value beats a wrong
    one's over all such pairs (problem difficulty alone can earn this); ``same_problem``:
    the same over pairs of ONE problem (what step beam search needs), with their count
    ``same_problem_pairs``. 0.5 = chance; NaN without such pairs."""
    nan = float("nan")
    if not records:
        return {"value_mae": nan, "final_auc": nan, "same_problem": nan,
                "same_problem_pairs": 0}
    values = head_values(env, params, joint_examples(env, records, problems), "joint",
                         seq_len, "tanh")
    err = np.concatenate([np.abs(v - np.asarray(r["targets"][:len(v)], np.float32))
                          for v, r in zip(values, records)])
    final = [(r["problem"], r["correct"], v[-1]) for v, r in zip(values, records)
             if r["complete"] and len(v)]
    return {"value_mae": float(np.mean(err)), **ranking(final)}

def ranking(final: Sequence[tuple[int, bool, float]]) -> dict:
    """Correct-over-wrong ranking of final values [(problem, correct, value)]: over all
    pairs (``final_auc``) and within a problem (``same_problem``, ``same_problem_pairs``);
    ties count one half."""
    def rate(pairs):
        wins = [(g > b) + 0.5 * (g == b) for g, b in pairs]
        return float(np.mean(wins)) if wins else float("nan")

    good = [(p, v) for p, c, v in final if c]
    bad = [(p, v) for p, c, v in final if not c]
    same = [(g, b) for pg, g in good for pb, b in bad if pg == pb]
    return {"final_auc": rate([(g, b) for _, g in good for _, b in bad]),
            "same_problem": rate(same), "same_problem_pairs": len(same)}


# ---------------------------------------------------------------------------------------
# The recipe


def search_round(env: RecipeEnv, params, own, cfg: Config, r: int) -> Searched:
    """``mcts-round-r``: MCTS over this round's problems, read into value records."""
    ids = mcts_data.round_problems(cfg.seed, r, cfg.search_problems, len(own))
    search = cfg.search
    if r > 1 and cfg.later_temperature is not None:
        search = dataclasses.replace(search, sampling=dataclasses.replace(
            search.sampling, temperature=cfg.later_temperature))
    found = mcts_data.search(env, params, [own[i] for i in ids], ids, search,
                             rng_for(cfg.seed, f"mcts-{r}"), cfg.batch_size)
    records = mcts_data.value_records(env, found)
    return Searched(records=records, solved=float(np.mean(found.solved)),
                    tokens_generated=found.tokens_generated,
                    correct_paths=sum(x["correct"] for x in records))


def train_round(env: RecipeEnv, params, own, found: Searched, cfg: Config, r: int) -> Trained:
    """``train-round-r``: the joint loss on the round's records (all but the held-out
    problems), then the value head's quality on the held-out ones."""
    train, held = split_records(found.records, cfg.value_holdout, cfg.seed + r)
    examples = joint_examples(env, train, own)
    if examples:  # a search that finished no step leaves nothing to learn from
        params, metrics = fit_examples(env, params, joint_loss(env.model_config, cfg.joint),
                                       examples, cfg.train, seed=cfg.seed + r)
    else:
        metrics = {}
    quality = value_quality(env, params, held, own, cfg.train.seq_len)
    return Trained(params, env.model_config, {
        **{k: float(v) for k, v in metrics.items()},
        **{f"held-out {k}": v for k, v in quality.items()}})


def run(cfg: Config, run_dir: str | Path) -> Result:
    run_dir = Path(run_dir)
    run = open_run(run_dir, cfg, total_phases=4 + 3 * cfg.rounds)
    env, params, own = warm_start(run, cfg)
    methods = cfg.eval.methods()
    greedy, majority, sbs, mcts = methods
    per_round = {k: methods[k] for k in (greedy, sbs)}

    def eval_phase(r: int, params):
        res = run_phase(run, f"eval-round-{r}", lambda: evaluate(
            env, params, per_round, cfg, rng_for(cfg.seed, "eval")))
        log_metrics(run, {"phase": f"eval-round-{r}", **{
            f"{m}/accuracy": v["accuracy"] for m, v in res.items()}})
        return res

    rounds, searched, trained = [eval_phase(0, params)], [], []
    for r in range(1, cfg.rounds + 1):
        found = run_phase(run, f"mcts-round-{r}",
                          lambda: search_round(env, params, own, cfg, r), Searched)
        log_metrics(run, {"phase": f"mcts-round-{r}", "solved": found.solved,
                          "paths": len(found.records), "correct_paths": found.correct_paths})
        searched.append(found)
        done = run_phase(run, f"train-round-{r}",
                         lambda: train_round(env, params, own, found, cfg, r), Trained,
                         mesh=env.mesh)
        log_metrics(run, {"phase": f"train-round-{r}", **done.metrics})
        trained.append(done)
        params = done.params
        rounds.append(eval_phase(r, params))
    final = run_phase(run, "eval-methods", lambda: evaluate(
        env, params, {k: methods[k] for k in (majority, mcts)}, cfg,
        rng_for(cfg.seed, "eval-methods")))
    log_metrics(run, {"phase": "eval-methods", **{f"{m}/accuracy": v["accuracy"]
                                                  for m, v in final.items()}})
    curves = run_phase(run, "eval-curves", lambda: evaluate(
        env, params, {k: m for k, (_, m) in cfg.eval.curve_methods().items()}, cfg,
        rng_for(cfg.seed, "eval-curves")))
    outcomes = {"final": {**rounds[-1], **final}, "curves": curves, "rounds": rounds,
                "searched": [{"solved": f.solved, "correct_paths": f.correct_paths,
                              "paths": len(f.records)} for f in searched],
                "value": [t.metrics for t in trained]}
    write_outcomes(run_dir, outcomes)
    return report(run_dir, cfg, [outcomes])


def _correct(outcomes: Sequence[dict], label: str, r=None) -> list[np.ndarray]:
    """Per seed, each eval problem's correctness under method ``label`` (final model, or
    round ``r``)."""
    return [np.asarray((o["final"] if r is None else o["rounds"][r])[label]["correct"], float)
            for o in outcomes]


def effects(outcomes: Sequence[dict], cfg: Config) -> list[stats.Effect]:
    """Value-guided SBS and MCTS with the value head vs greedy decoding (final model),
    and the last round's greedy accuracy vs round 0, each paired on the eval problems."""
    greedy, _, sbs, mcts = cfg.eval.methods()
    last = len(outcomes[0]["rounds"]) - 1
    found = [
        stats.paired_effect("value-guided step beam search beats greedy at equal model",
                            _correct(outcomes, sbs), _correct(outcomes, greedy),
                            detail="paired on the eval problems: SBS minus greedy"),
        stats.paired_effect("MCTS with the value head beats greedy at equal model",
                            _correct(outcomes, mcts), _correct(outcomes, greedy),
                            detail="paired on the eval problems: MCTS minus greedy")]
    if last:
        found.append(stats.paired_effect(
            f"joint training raises greedy accuracy (round {last} vs round 0)",
            _correct(outcomes, greedy, last), _correct(outcomes, greedy, 0),
            detail=f"paired on the eval problems: round {last} minus round 0"))
    return found


VALUE_COLUMNS = (("value_mae", "value MAE"), ("final_auc", "correct>wrong, all pairs"),
                 ("same_problem", "correct>wrong, same problem"),
                 ("same_problem_pairs", "same-problem pairs"))


def _round_rows(outcomes: Sequence[dict], cfg: Config) -> tuple[list, list]:
    """(per-round rows, per-round (greedy, SBS) intervals) pooled over the seeds."""
    greedy, _, sbs, _ = cfg.eval.methods()
    nan = float("nan")
    rows, cis = [], []
    for r in range(len(outcomes[0]["rounds"])):
        g = stats.mean_interval(_correct(outcomes, greedy, r))
        b = stats.mean_interval(_correct(outcomes, sbs, r))
        mean = lambda f: float(np.mean([f(o) for o in outcomes]))
        rows.append({"round": r, "greedy": g.estimate, "greedy 95%": f"[{g.low:.3f}, {g.high:.3f}]",
                     "value-guided SBS": b.estimate,
                     "SBS 95%": f"[{b.low:.3f}, {b.high:.3f}]",
                     "MCTS solved (train)": mean(lambda o: o["searched"][r - 1]["solved"])
                     if r else nan,
                     "correct paths": mean(lambda o: o["searched"][r - 1]["correct_paths"])
                     if r else 0,
                     **{label: mean(lambda o: o["value"][r - 1].get(f"held-out {k}", nan))
                        if r else nan for k, label in VALUE_COLUMNS}})
        cis.append((g, b))
    return rows, cis


def _compute_plot(run_dir: Path, cfg: Config, outcomes: Sequence[dict]) -> None:
    """accuracy_vs_compute.png: each inference method at its budgets (the curve budgets
    and the headline one), tokens per problem against accuracy with its 95% band."""
    greedy, majority, sbs, mcts = cfg.eval.methods()
    points = {"greedy": [(greedy, "final")], "majority vote": [(majority, "final")],
              "value-guided SBS": [(sbs, "final")], "MCTS, value head": [(mcts, "final")]}
    for label, (family, _) in cfg.eval.curve_methods().items():
        points[family].append((label, "curves"))
    series, bands = {}, {}
    for family, labels in points.items():
        cells = sorted(((float(np.mean([o[where][m]["tokens_per_problem"] for o in outcomes])),
                         stats.mean_interval([np.asarray(o[where][m]["correct"], float)
                                              for o in outcomes], resamples=500))
                        for m, where in labels), key=lambda c: c[0])
        series[family] = ([t for t, _ in cells], [c.estimate for _, c in cells])
        bands[family] = ([c.low for _, c in cells], [c.high for _, c in cells])
    line_plot(run_dir / "accuracy_vs_compute.png", series, bands=bands,
              xlabel="tokens generated per problem", ylabel="held-out accuracy (95% interval)",
              title="AlphaMath: final model, accuracy vs compute", logx=True, ylim=(0, 1))


def report(run_dir, cfg: Config, outcomes: Sequence[dict]) -> Result:
    """report.md and plots from one outcome dict per seed."""
    run_dir = Path(run_dir)
    rows = []
    for m in cfg.eval.methods():
        ci = stats.mean_interval(_correct(outcomes, m))
        rows.append({"method": m, "accuracy": ci.estimate,
                     "95% interval": f"[{ci.low:.3f}, {ci.high:.3f}]",
                     "tokens / problem": float(np.mean([o["final"][m]["tokens_per_problem"]
                                                        for o in outcomes]))})
    found = effects(outcomes, cfg)
    round_rows, cis = _round_rows(outcomes, cfg)
    xs = list(range(len(round_rows)))
    line_plot(run_dir / "accuracy_vs_round.png",
              {"greedy": (xs, [g.estimate for g, _ in cis]),
               "value-guided SBS": (xs, [b.estimate for _, b in cis])},
              bands={"greedy": ([g.low for g, _ in cis], [g.high for g, _ in cis]),
                     "value-guided SBS": ([b.low for _, b in cis], [b.high for _, b in cis])},
              xlabel="round (0 = after warm-up)", ylabel="held-out accuracy (95% interval)",
              title="AlphaMath: accuracy per round", ylim=(0, 1))
    _compute_plot(run_dir, cfg, outcomes)
    P = len(_correct(outcomes, rows[0]["method"])[0])
    title = common.title("AlphaMath Almost Zero", cfg)
    path = write_report(run_dir / "report.md", title, [
        ("Final model: accuracy by inference method", markdown_table(rows) + f"\n\n{P} eval "
         f"problems x {len(outcomes)} seed(s); intervals: bootstrap over seeds and problems."),
        ("Effect checks", markdown_table([e.row() for e in found])),
        ("Per round (round 0 = after warm-up)", markdown_table(round_rows) +
         f"\n\nValue columns: the tanh value head after the round's training, on the paths of "
         f"the {cfg.value_holdout:.0%} of the round's searched problems kept out of training: "
         "mean |value - Q| over step ends, and how often a correct complete path's final "
         "value beats a wrong one's, over all pairs and within a problem (0.5 = chance); "
         "means over the seeds."),
        ("Plots", "![accuracy vs round](accuracy_vs_round.png)\n\n"
                  "![accuracy vs compute](accuracy_vs_compute.png)"),
    ])
    headline = ("; ".join(f"{r['method'].split(' (')[0]} {r['accuracy']:.3f} "
                          f"{r['95% interval']}" for r in rows) + f"; {P} problems")
    return Result(rows=rows, effects=found, report=path, headline=headline)
