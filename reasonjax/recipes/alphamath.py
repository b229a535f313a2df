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
     params.
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
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import jax
import numpy as np

from reasonjax.data import formatting
from reasonjax.data.task import Problem
from reasonjax.eval.plots import line_plot
from reasonjax.eval.report import markdown_table, write_report
from reasonjax.recipes import mcts_data
from reasonjax.recipes.common import (Env, FitSpec, RecipeConfig, decode, env_for, fit,
                                      prompts_of, rng_for, warmup)
from reasonjax.recipes.replicate import Result
from reasonjax.recipes.rundir import log_metrics, open_run, run_phase
from reasonjax.search.beam import BeamConfig, beam_search
from reasonjax.search.mcts import mcts
from reasonjax.search.sampler import SamplingConfig, sample
from reasonjax.search.scoring import StepScorer
from reasonjax.search.voting import VotingConfig, voting
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
    warmup_problems: int = 0
    search: mcts_data.SearchSpec = mcts_data.SearchSpec()
    train: FitSpec = FitSpec(steps=300)
    value_coef: float = 1.0
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
    correct, spent = [], []
    for chunk, tokens, mask in _batches(env, problems, spec.batch_size):
        out = sample(env.model_config, params, tokens, mask, rng,
                     max_new_tokens=spec.max_steps * spec.step_tokens, n=1,
                     sampling=SamplingConfig(temperature=0.0), stop=env.stop,
                     pad_id=env.tokenizer.pad_id or 0)
        toks, lens = np.asarray(out.tokens), np.asarray(out.lengths)
        for b, p in enumerate(chunk):
            correct.append(env.task.verify(p, decode(env, toks[b, 0], lens[b, 0])))
        spent.append(float(np.mean(lens)))
    return correct, float(np.mean(spent))


def eval_majority(env: Env, params, problems, spec: EvalSpec, rng) -> tuple[list[bool], float]:
    cfg = VotingConfig(n=spec.vote_n, max_steps=spec.max_steps, step_tokens=spec.step_tokens,
                       sampling=SamplingConfig(temperature=spec.temperature),
                       pad_id=env.tokenizer.pad_id or 0, weighting="majority")
    extract = lambda ids: env.task.extract_answer(decode(env, ids, len(ids)))
    correct, spent = [], []
    for i, (chunk, tokens, mask) in enumerate(_batches(env, problems, spec.batch_size)):
        out = voting(env.model_config, params, tokens, mask, jax.random.fold_in(rng, i), cfg,
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
        out = beam_search(env.model_config, params, tokens, mask, jax.random.fold_in(rng, i),
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
        out = mcts(env.model_config, params, tokens, mask, jax.random.fold_in(rng, i), cfg,
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


def round_problems(cfg: Config, n_train: int, rnd: int) -> list[int]:
    """The training problems searched in round ``rnd``: a fresh seeded shuffle per round."""
    order = np.random.default_rng([cfg.seed, rnd]).permutation(n_train)
    return [int(i) for i in order[:min(cfg.search.problems, n_train)]]


# ---------------------------------------------------------------------------------------
# The recipe


def run(cfg: Config, run_dir: str | Path) -> Result:
    run_dir = Path(run_dir)
    run = open_run(run_dir, cfg, total_phases=3 + 3 * cfg.rounds)
    env = env_for(cfg)
    warm_env, search_problems = mcts_data.split_train(env, cfg.warmup_problems)
    params = warmup(run, warm_env, cfg.warmup, seed=cfg.seed)
    verifier = mcts_data.ProblemVerifier(env, search_problems)
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
            examples = joint_examples(env, found["records"], search_problems)
            if not examples:  # a search that finished no step: nothing to learn from
                return {"params": params, "model_config": env.model_config, "metrics": {}}
            new, metrics = fit(env, params, joint_loss(env.model_config,
                                                       JointConfig(value_coef=cfg.value_coef)),
                               examples, "joint", cfg.train, seed=cfg.seed + r)
            return {"params": new, "model_config": env.model_config,
                    "metrics": {k: float(v) for k, v in metrics.items()}}

        trained = run_phase(run, f"train-round-{r}", train_phase)
        log_metrics(run, {"phase": f"train-round-{r}", **trained["metrics"]})
        params = trained["params"]
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
                   "value-target paths": len(searched[r - 1]["records"]) if r else 0}
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
        ("Per round (round 0 = after warm-up)", markdown_table(round_rows)),
        ("Plots", "![accuracy vs round](accuracy_vs_round.png)\n\n"
                  "![accuracy vs compute](accuracy_vs_compute.png)"),
    ])
    return Result(rows=rows, checks=checks, report=report)
