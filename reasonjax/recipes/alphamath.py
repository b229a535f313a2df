"""AlphaMath Almost Zero (Chen et al., 2024, "AlphaMath Almost Zero: process Supervision
without process"): MCTS turns final-answer supervision into value targets for every step,
and one set of parameters learns policy and value together.

Pipeline as implemented:

1. ``warmup``: SFT on the training problems' reference solutions (tiny: a model trained
   from scratch; paper: the checkpoint, optionally fine-tuned).
2. For each round r = 1..``rounds``:
   - ``mcts-round-r``: MCTS (PUCT, :mod:`reasonjax.search.mcts`) over ``search.problems``
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

What the tiny preset shows (arithmetic ``easy``: two steps, a reduction then the answer):
the value head learns which PROBLEMS are hard (held-out correct-over-wrong ranking ~0.8
over all pairs) but barely which of one problem's candidate steps are right (within-
problem ranking 0.55-0.57 over ~100 held-out pairs), and that is what step beam search
needs, so value-guided SBS stays below greedy. The cause is the data: MCTS commits to one
move at a time and the tiny policy is consistent, so only ~7% of the searched problems
have both a correct and a wrong complete path (within-problem contrast); doubling the
simulations (8 -> 16) added ~10% more value targets and did not change this, and 4x the
searched problems (512 -> 2048 a round) moved the within-problem ranking from chance to
~0.56 and stopped the joint training from lowering greedy accuracy (0.625 -> 0.531 ->
0.445 with 512 problems and 40 steps; 0.625 -> 0.594 -> 0.609 now). More exploration
(root Dirichlet noise 0.25, search temperature 1.3) gives ~1.8x the within-problem pairs
(166 / 208) but leaves their ranking at 0.54 (SBS 0.43, greedy 0.58). For contrast, the
test_time_scaling recipe's PRM (same model size, 16k samples with exact step labels, 8
per problem) does rank within a problem well enough to beat majority voting. With 512
problems a round, training the value head harder did not help either (measured on
held-out search problems, not the eval set): 200-400 joint steps or value_coef 5-20 fit the
training targets (MAE 0.08-0.2) but held-out MAE stays ~0.4, held-out ranking does not
improve, and the SFT term overfits the few hundred correct paths (greedy accuracy on
unsearched training problems 0.73 -> 0.38-0.48); training the linear head alone on the
frozen trunk does not fit the targets (MAE ~0.6).
"""

from __future__ import annotations

import dataclasses
from functools import partial
from pathlib import Path
from typing import Sequence

import jax
import numpy as np

from reasonjax.data import formatting
from reasonjax.data.task import Problem
from reasonjax.eval.plots import line_plot
from reasonjax.eval.report import markdown_table, write_report
from reasonjax.recipes import mcts_data
from reasonjax.recipes.common import (Env, FitSpec, RecipeConfig, decode, fit, on_mesh,
                                      prompts_of, rng_for, sample_completions)
from reasonjax.recipes.replicate import Result
from reasonjax.recipes.rundir import log_metrics, open_run, run_phase
from reasonjax.search.beam import BeamConfig, beam_search
from reasonjax.search.mcts import mcts
from reasonjax.search.sampler import SamplingConfig
from reasonjax.search.scoring import StepScorer
from reasonjax.search.voting import VotingConfig, voting
from reasonjax.train.logprobs import forward
from reasonjax.train.value import JointConfig, joint_loss


@dataclasses.dataclass(frozen=True)
class EvalSpec:
    """Inference on the held-out problems. Every method decodes at most ``max_steps``
    steps of ``step_tokens`` tokens; sampled methods use ``temperature``.
    vote_n: samples per majority vote; beams (B1) x expansions (B2): step beam search;
    mcts_simulations / mcts_actions: MCTS at inference; batch_size: problems per call."""

    max_steps: int = 4
    step_tokens: int = 16
    temperature: float = 1.0
    vote_n: int = 8
    beams: int = 2
    expansions: int = 4
    mcts_simulations: int = 8
    mcts_actions: int = 4
    batch_size: int = 64


@dataclasses.dataclass(frozen=True)
class Config(RecipeConfig):
    rounds: int = 2
    search: mcts_data.SearchSpec = mcts_data.SearchSpec()
    train: FitSpec = FitSpec(steps=300)
    value_coef: float = 1.0
    value_holdout: float = 0.1
    eval: EvalSpec = EvalSpec()


# ---------------------------------------------------------------------------------------
# Evaluation: one function per inference method, each -> (correct [P], tokens generated
# per problem; filler rows of the last batch are real searches on repeated problems and
# count in the mean)


def _batches(env: Env, problems: Sequence[Problem], size: int):
    """Prompt batches of ``size`` problems, all left-padded to the env's longest prompt and
    the last one filled with repeats so every call compiles once; yields (problems, tokens,
    mask) with the real problems only."""
    length, pad = env.prompt_len, env.tokenizer.pad_id or 0
    for start in range(0, len(problems), size):
        chunk = list(problems[start:start + size])
        batch = prompts_of(env, chunk + [chunk[0]] * (size - len(chunk)))
        extra = length - batch["prompt_tokens"].shape[1]
        yield (chunk, np.pad(batch["prompt_tokens"], ((0, 0), (extra, 0)),
                             constant_values=pad),
               np.pad(batch["prompt_mask"], ((0, 0), (extra, 0))))


def eval_greedy(env: Env, params, problems, spec: EvalSpec, rng) -> tuple[list[bool], float]:
    """(correct per problem, generated tokens per problem) of greedy decoding."""
    s = sample_completions(env, params, problems, rng, n=1, temperature=0.0,
                           max_new_tokens=spec.max_steps * spec.step_tokens,
                           batch_size=spec.batch_size)
    return [c[0] for c in s.correct], s.tokens_generated / len(problems)


def eval_majority(env: Env, params, problems, spec: EvalSpec, rng) -> tuple[list[bool], float]:
    cfg = VotingConfig(n=spec.vote_n, max_steps=spec.max_steps, step_tokens=spec.step_tokens,
                       sampling=SamplingConfig(temperature=spec.temperature),
                       pad_id=env.tokenizer.pad_id or 0, weighting="majority")
    extract = lambda ids: env.task.extract_answer(decode(env, ids, len(ids)))
    correct, spent = [], []
    for i, (chunk, tokens, mask) in enumerate(_batches(env, problems, spec.batch_size)):
        out = on_mesh(env, voting, params, tokens, mask, jax.random.fold_in(rng, i), cfg,
                      env.stop, extract)
        correct += [w is not None and env.task.answer_correct(p, w)
                    for p, w in zip(chunk, out.winners)]
        spent.append(_per_problem(out.search.compute, tokens))
    return correct, float(np.mean(spent))


def _per_problem(compute, tokens) -> float:
    return float(np.asarray(compute.tokens_generated)) / tokens.shape[0]


def eval_beam(env: Env, params, problems, spec: EvalSpec, rng) -> tuple[list[bool], float]:
    """Step-level beam search ranked by the tanh value head (AlphaMath's SBS)."""
    cfg = BeamConfig(n=spec.beams * spec.expansions, beam_width=spec.expansions,
                     max_steps=spec.max_steps, step_tokens=spec.step_tokens,
                     sampling=SamplingConfig(temperature=spec.temperature),
                     scorer=StepScorer(kind="value", transform="tanh"),
                     pad_id=env.tokenizer.pad_id or 0)
    correct, spent = [], []
    for i, (chunk, tokens, mask) in enumerate(_batches(env, problems, spec.batch_size)):
        out = on_mesh(env, beam_search, params, tokens, mask, jax.random.fold_in(rng, i),
                      cfg, env.stop)
        best = np.asarray(out.chosen_tokens())
        lens = np.asarray(out.lengths)[np.arange(len(best)), np.asarray(out.chosen)]
        correct += [env.task.verify(p, decode(env, best[b], lens[b]))
                    for b, p in enumerate(chunk)]
        spent.append(_per_problem(out.compute, tokens))
    return correct, float(np.mean(spent))


def eval_mcts(env: Env, params, problems, spec: EvalSpec, rng) -> tuple[list[bool], float]:
    """MCTS at inference: the value head scores every node (no verifier); the answer is
    the path the moves build."""
    search = mcts_data.SearchSpec(num_actions=spec.mcts_actions,
                                  num_simulations=spec.mcts_simulations,
                                  max_steps=spec.max_steps, step_tokens=spec.step_tokens,
                                  temperature=spec.temperature)
    cfg = search.mcts_config(env.tokenizer.pad_id or 0)
    correct, spent = [], []
    for i, (chunk, tokens, mask) in enumerate(_batches(env, problems, spec.batch_size)):
        out = on_mesh(env, mcts, params, tokens, mask, jax.random.fold_in(rng, i), cfg,
                      env.stop)
        path, length = np.asarray(out.path), np.asarray(out.length)
        correct += [env.task.verify(p, mcts_data.path_text(env, path[b, :length[b]])[0])
                    for b, p in enumerate(chunk)]
        spent.append(_per_problem(out.compute, tokens))
    return correct, float(np.mean(spent))


METHODS = {"greedy": eval_greedy, "majority vote": eval_majority,
           "value-guided step beam search": eval_beam, "MCTS (value head)": eval_mcts}


def method_label(name: str, spec: EvalSpec) -> str:
    return {"greedy": "greedy",
            "majority vote": f"majority vote (N={spec.vote_n})",
            "value-guided step beam search":
                f"value-guided step beam search (B1={spec.beams}, B2={spec.expansions})",
            "MCTS (value head)": f"MCTS, value head (K={spec.mcts_actions}, "
                                 f"{spec.mcts_simulations} sims/move)"}[name]


def evaluate(env: Env, params, names: Sequence[str], spec: EvalSpec, rng) -> dict:
    """{method: {"accuracy", "tokens_per_problem"}} on the held-out problems."""
    out = {}
    for name in names:
        correct, tokens = METHODS[name](env, params, env.eval, spec, jax.random.fold_in(
            rng, len(out)))
        out[name] = {"accuracy": float(np.mean(correct)), "tokens_per_problem": tokens}
    return out


# ---------------------------------------------------------------------------------------
# Training data


def joint_examples(env: Env, records: Sequence[dict], problems: Sequence[Problem]) -> list:
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


def value_quality(env: Env, params, records: Sequence[dict], problems: Sequence[Problem],
                  seq_len: int) -> dict:
    """The tanh value head against ``records``' targets: ``value_mae`` over every step
    end; ``final_auc``: how often a correct complete path's final value beats a wrong
    one's over all such pairs (problem difficulty alone can earn this); ``same_problem``:
    the same over pairs of ONE problem (what step beam search needs), with their count
    ``same_problem_pairs``. 0.5 = chance; NaN without such pairs."""
    nan = float("nan")
    if not records:
        return {"value_mae": nan, "final_auc": nan, "same_problem": nan,
                "same_problem_pairs": 0}
    rows = [formatting.fit(ex, "joint", seq_len, on_overflow="truncate")[0]
            for ex in joint_examples(env, records, problems)]
    rows += [rows[0]] * (-len(rows) % 64)  # one compile for every round's count
    batch = formatting.stack(rows)
    values = np.tanh(np.asarray(_values(env.model_config, params, batch)))[:len(records)]
    mask = batch["value_mask"][:len(records)] > 0
    err = np.abs(values - batch["value_targets"][:len(records)])[mask]
    final = [(r["problem"], r["correct"], values[i, np.nonzero(mask[i])[0][-1]])
             for i, r in enumerate(records) if r["complete"]]
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


@partial(jax.jit, static_argnums=0)
def _values(model_config, params, batch):
    return forward(model_config, params, batch).values


def round_problems(cfg: Config, n_train: int, rnd: int) -> list[int]:
    """The training problems searched in round ``rnd``: a fresh seeded shuffle per round."""
    order = np.random.default_rng([cfg.seed, rnd]).permutation(n_train)
    return [int(i) for i in order[:min(cfg.search.problems, n_train)]]


# ---------------------------------------------------------------------------------------
# The recipe


def run(cfg: Config, run_dir: str | Path) -> Result:
    run_dir = Path(run_dir)
    run = open_run(run_dir, cfg, total_phases=3 + 3 * cfg.rounds)
    env, params, verifier = mcts_data.warm_start(run, cfg)
    search_problems = verifier.problems
    per_round = ["greedy", "value-guided step beam search"]

    def eval_phase(r: int, params):
        res = run_phase(run, f"eval-round-{r}", lambda: evaluate(
            env, params, per_round, cfg.eval, rng_for(cfg.seed, "eval")))
        log_metrics(run, {"phase": f"eval-round-{r}", **{
            f"{m}/accuracy": v["accuracy"] for m, v in res.items()}})
        return res

    rounds = [eval_phase(0, params)]
    searched = []
    for r in range(1, cfg.rounds + 1):
        def search_phase(params=params, r=r):
            found = mcts_data.search(env, params, round_problems(cfg, len(search_problems), r),
                                     cfg.search, verifier, rng_for(cfg.seed, f"mcts-{r}"))
            records = mcts_data.value_records(env, found)
            return {"records": records, "solved": float(np.mean(found.solved)),
                    "tokens_generated": found.tokens_generated,
                    "correct_paths": sum(x["correct"] for x in records)}

        found = run_phase(run, f"mcts-round-{r}", search_phase)
        log_metrics(run, {"phase": f"mcts-round-{r}", "solved": found["solved"],
                          "paths": len(found["records"]),
                          "correct_paths": found["correct_paths"]})
        searched.append(found)

        def train_phase(params=params, found=found, r=r):
            train, held = split_records(found["records"], cfg.value_holdout, cfg.seed + r)
            quality = lambda p: {f"held-out {k}": v for k, v in value_quality(
                env, p, held, search_problems, cfg.train.seq_len).items()}
            examples = joint_examples(env, train, search_problems)
            if not examples:  # a search that finished no step: nothing to learn from
                return {"params": params, "model_config": env.model_config,
                        "metrics": quality(params)}
            new, metrics = fit(env, params, joint_loss(env.model_config,
                                                       JointConfig(value_coef=cfg.value_coef)),
                               examples, "joint", cfg.train, seed=cfg.seed + r)
            return {"params": new, "model_config": env.model_config,
                    "metrics": {**{k: float(v) for k, v in metrics.items()}, **quality(new)}}

        trained = run_phase(run, f"train-round-{r}", train_phase)
        log_metrics(run, {"phase": f"train-round-{r}", **trained["metrics"]})
        params = trained["params"]
        found["value"] = trained["metrics"]
        rounds.append(eval_phase(r, params))

    final = run_phase(run, "eval-methods", lambda: evaluate(
        env, params, ["majority vote", "MCTS (value head)"], cfg.eval,
        rng_for(cfg.seed, "eval-methods")))
    log_metrics(run, {"phase": "eval-methods", **{f"{m}/accuracy": v["accuracy"]
                                                  for m, v in final.items()}})
    results = {**rounds[-1], **final}
    return _report(cfg, run_dir, results, rounds, searched)


def _report(cfg: Config, run_dir: Path, results: dict, rounds: list, searched: list) -> Result:
    rows = [{"method": method_label(m, cfg.eval), "accuracy": results[m]["accuracy"],
             "tokens / problem": results[m]["tokens_per_problem"]} for m in METHODS]
    greedy = results["greedy"]["accuracy"]
    sbs = results["value-guided step beam search"]["accuracy"]
    claim = "value-guided step beam search beats greedy at equal model"
    checks = {claim: sbs > greedy}
    round_rows = [{"round": r, "greedy": res["greedy"]["accuracy"],
                   "value-guided SBS": res["value-guided step beam search"]["accuracy"],
                   "MCTS solved (train)": searched[r - 1]["solved"] if r else float("nan"),
                   "correct paths": searched[r - 1]["correct_paths"] if r else 0,
                   "value-target paths": len(searched[r - 1]["records"]) if r else 0,
                   **{label: searched[r - 1]["value"].get(f"held-out {k}", float("nan"))
                      if r else float("nan") for k, label in
                      (("value_mae", "value MAE"), ("final_auc", "correct>wrong, all pairs"),
                       ("same_problem", "correct>wrong, same problem"),
                       ("same_problem_pairs", "same-problem pairs"))}}
                  for r, res in enumerate(rounds)]
    xs = list(range(len(rounds)))
    line_plot(run_dir / "accuracy_vs_round.png",
              {"greedy": (xs, [r["greedy"] for r in round_rows]),
               "value-guided SBS": (xs, [r["value-guided SBS"] for r in round_rows])},
              xlabel="round (0 = after warm-up)", ylabel="held-out accuracy",
              title="AlphaMath: accuracy per round", ylim=(0, 1))
    line_plot(run_dir / "accuracy_vs_compute.png",
              {r["method"].split(" (")[0]: ([r["tokens / problem"]], [r["accuracy"]])
               for r in rows},
              xlabel="tokens generated per problem", ylabel="held-out accuracy",
              title="AlphaMath: final model, accuracy vs compute", logx=True, ylim=(0, 1))
    n_eval = cfg.task.eval_size
    effect = [{"claim": claim, "ours": f"SBS {sbs:.3f} vs greedy {greedy:.3f} "
                                      f"({n_eval} problems)", "held": checks[claim]}]
    report = write_report(run_dir / "report.md", "AlphaMath Almost Zero (tiny replication)", [
        ("Final model: accuracy by inference method", markdown_table(rows)),
        ("Effect checks", markdown_table(effect)),
        ("Per round (round 0 = after warm-up)", markdown_table(round_rows) +
         f"\n\nValue columns: the tanh value head after the round's training, on the paths of "
         f"the {cfg.value_holdout:.0%} of the round's searched problems kept out of training: "
         "mean |value - Q| over step ends, and how often a correct complete path's final "
         "value beats a wrong one's, over all pairs and within a problem (0.5 = chance)."),
        ("Plots", "![accuracy vs round](accuracy_vs_round.png)\n\n"
                  "![accuracy vs compute](accuracy_vs_compute.png)"),
    ])
    return Result(rows=rows, checks=checks, report=report)
