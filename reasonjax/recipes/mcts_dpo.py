"""MCTS-DPO (Xie et al., 2024, "Monte Carlo Tree Search Boosts Reasoning via Iterative
Preference Learning"): MCTS breaks the final-answer reward into step-level preferences,
and step-level DPO learns from them on-policy, round after round.

Pipeline as implemented:

1. ``warmup``: SFT on the training problems' reference solutions (tiny: a model trained
   from scratch; paper: the SFT checkpoint). ``eval-round-0``: its greedy accuracy.
2. For each round r = 1..``rounds``, with the policy of the previous round:
   - ``mcts-round-r``: MCTS (PUCT, :mod:`reasonjax.search.mcts`) over ``search_problems``
     training problems: K candidate steps per node sampled from the policy, prior = their
     mean log-prob, terminal nodes scored by the verifier (+1 / -1). From every node with
     two or more visited children, the highest-Q child's step is preferred to the
     lowest-Q child's, after the node's path
     (:func:`reasonjax.recipes.mcts_data.pair_records`).
   - ``train-round-r``: step-level DPO on those pairs
     (:func:`reasonjax.data.formatting.encode_step_preference`: the loss reads only the
     step tokens), the reference being the round's starting policy; then greedy accuracy
     on the held-out problems.

Departure from the paper: the paper's node value mixes the outcome with the model's own
self-evaluation ("is this step correct?" probability). A tiny model trained from scratch
has no such ability, so non-terminal nodes are valued by the (untrained, zero) value head
and Q comes from the verifier's rewards backed up through the tree: the outcome term of
the paper's reward alone. Rounds and problems are far fewer than the paper's.

Notes on what the tiny preset shows: docs/recipes/mcts_dpo.md.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import numpy as np

from reasonjax.config import ConfigError, check_fields
from reasonjax.data import formatting
from reasonjax.data.task import Problem
from reasonjax.driver import run as run_driver
from reasonjax.eval import stats
from reasonjax.eval.plots import line_plot
from reasonjax.eval.report import markdown_table, write_report
from reasonjax.recipes import common, mcts_data
from reasonjax.recipes.common import (FitSpec, RecipeConfig, RecipeEnv, Trained, fit_examples,
                                      rng_for, warm_start)
from reasonjax.recipes.rundir import Result, log_metrics, open_run, run_phase, write_outcomes
from reasonjax.search.mcts import MCTSConfig
from reasonjax.search.sampler import SampleConfig, SamplingConfig
from reasonjax.train.preference import PreferenceConfig, preference_loss


@dataclasses.dataclass(frozen=True)
class Config(RecipeConfig):
    """``search``: the MCTS (terminal nodes judged by the verifier) over
    ``search_problems`` problems a round; ``train`` / ``dpo``: the step-level DPO fit
    (``visit_smoothing``: each pair's label smoothing from the search's visit counts,
    :func:`visit_smoothing`, for ``dpo.loss=cdpo``); ``greedy``: the evaluation decoding."""

    rounds: int = 2
    search: MCTSConfig = MCTSConfig(num_actions=4, num_simulations=8, max_steps=4,
                                    step_tokens=16, terminal_reward="verifier")
    search_problems: int = 128
    train: FitSpec = FitSpec(steps=100)
    dpo: PreferenceConfig = PreferenceConfig()
    visit_smoothing: bool = False
    greedy: SampleConfig = SampleConfig(n=1, max_new_tokens=64,
                                        sampling=SamplingConfig(temperature=0.0))

    def __post_init__(self):
        super().__post_init__()
        check_fields(self, rounds=">= 1", search_problems=">= 1")


CLAIM = "on-policy rounds of MCTS + step-level DPO raise accuracy (GSM8K +5.9)"


def losses(cfg: Config) -> dict:
    """{FitSpec path: loss factory} of the run's training phases (what
    :mod:`reasonjax.recipes.plan` compiles)."""
    return {"train": lambda mc: preference_loss(mc, cfg.dpo)}


@dataclasses.dataclass(frozen=True)
class Paired:
    """A round's MCTS: step pairs (:func:`mcts_data.pair_records`), the share of problems
    solved, tokens generated."""

    pairs: list
    solved: float
    tokens_generated: int


def visit_smoothing(record: dict) -> float:
    """A pair's label smoothing from the search's visits: the share of the two children's
    visits that went to the rejected step (0.5: the search could not tell them apart)."""
    n_c, n_r = record["visits_chosen"], record["visits_rejected"]
    return min(0.5, n_r / max(n_c + n_r, 1))


def pair_examples(env: RecipeEnv, records: Sequence[dict], problems: Sequence[Problem],
                  smoothing: bool = False) -> list:
    """``preference`` examples, one per step pair: context = prompt + the shared prefix
    steps, continuations = the chosen and rejected steps; with ``smoothing`` each carries
    its :func:`visit_smoothing` as ``label_smoothing`` (conservative DPO)."""
    out = []
    for r in records:
        ex = formatting.encode_step_preference(
            env.tokenizer, env.task.prompt(problems[r["problem"]]), r["prefix"], r["chosen"],
            r["rejected"], env.delimiter, chosen_final=r["chosen_final"],
            rejected_final=r["rejected_final"])
        if smoothing:
            ex["label_smoothing"] = np.float32(visit_smoothing(r))
        out.append(ex)
    return out


def greedy(env: RecipeEnv, params, cfg: Config) -> list:
    """Each eval problem's greedy correctness."""
    return [r.correct for r in run_driver(env, params, env.eval, cfg.greedy,
                                          rng_for(cfg.seed, "eval"),
                                          batch_size=min(cfg.batch_size, len(env.eval)))]


def search_round(env: RecipeEnv, params, own, cfg: Config, r: int) -> Paired:
    """``mcts-round-r``: MCTS over this round's problems, read into step pairs."""
    ids = mcts_data.round_problems(cfg.seed, r, cfg.search_problems, len(own))
    found = mcts_data.search(env, params, [own[i] for i in ids], ids, cfg.search,
                             rng_for(cfg.seed, f"mcts-{r}"), cfg.batch_size)
    return Paired(pairs=mcts_data.pair_records(env, found),
                  solved=float(np.mean(found.solved)), tokens_generated=found.tokens_generated)


def train_round(env: RecipeEnv, params, own, found: Paired, cfg: Config, r: int) -> Trained:
    """``train-round-r``: step-level DPO on the round's pairs, the reference being the
    round's starting policy (on-policy iterations), then greedy accuracy."""
    examples = pair_examples(env, found.pairs, own, cfg.visit_smoothing)
    metrics = {}
    if examples:  # no node had two visited children of different Q: nothing to learn
        params, metrics = fit_examples(env, params, preference_loss(env.model_config, cfg.dpo),
                                       examples, cfg.train, seed=cfg.seed + r,
                                       ref_params=params)
    return Trained(params, env.model_config, {"correct": greedy(env, params, cfg),
                                              **{k: float(v) for k, v in metrics.items()}})


def run(cfg: Config, run_dir: str | Path) -> Result:
    if cfg.visit_smoothing and cfg.dpo.loss not in ("cdpo", "robust"):
        raise ConfigError(f"visit_smoothing=true smooths the labels of a conservative loss: "
                          f"set dpo.loss=cdpo (or robust), not {cfg.dpo.loss!r}")
    run_dir = Path(run_dir)
    run = open_run(run_dir, cfg, total_phases=2 + 2 * cfg.rounds)
    env, params, own = warm_start(run, cfg)
    start = run_phase(run, "eval-round-0", lambda: {"correct": greedy(env, params, cfg)})
    log_metrics(run, {"phase": "eval-round-0",
                      "greedy/accuracy": float(np.mean(start["correct"]))})
    correct, rounds = [start["correct"]], []
    for r in range(1, cfg.rounds + 1):
        found = run_phase(run, f"mcts-round-{r}",
                          lambda: search_round(env, params, own, cfg, r), Paired)
        log_metrics(run, {"phase": f"mcts-round-{r}", "solved": found.solved,
                          "pairs": len(found.pairs)})
        trained = run_phase(run, f"train-round-{r}",
                            lambda: train_round(env, params, own, found, cfg, r), Trained,
                            mesh=env.mesh)
        m = {k: v for k, v in trained.metrics.items() if k != "correct"}
        log_metrics(run, {"phase": f"train-round-{r}",
                          "greedy/accuracy": float(np.mean(trained.metrics["correct"])), **m})
        params = trained.params
        correct.append(trained.metrics["correct"])
        rounds.append({"solved": found.solved, "pairs": len(found.pairs), **m})
    outcomes = {"correct": correct, "rounds": rounds}
    write_outcomes(run_dir, outcomes)
    return report(run_dir, cfg, [outcomes])


def effects(outcomes: Sequence[dict], cfg: Config) -> list[stats.Effect]:
    """The last round's greedy accuracy vs round 0 on the same problems."""
    last = len(outcomes[0]["correct"]) - 1
    if last == 0:
        return []
    return [stats.paired_effect(
        f"round {last} greedy accuracy above round 0 (after warm-up)",
        [np.asarray(o["correct"][last], float) for o in outcomes],
        [np.asarray(o["correct"][0], float) for o in outcomes],
        detail=f"paired on the eval problems: round {last} minus round 0")]


def report(run_dir, cfg: Config, outcomes: Sequence[dict]) -> Result:
    """report.md and the per-round plot from one outcome dict per seed."""
    run_dir = Path(run_dir)
    R = len(outcomes[0]["correct"])
    acc = [stats.mean_interval([np.asarray(o["correct"][r], float) for o in outcomes])
           for r in range(R)]
    nan = float("nan")
    mean = lambda key, r: float(np.mean([o["rounds"][r - 1].get(key, nan) for o in outcomes]))
    rows = [{"round": r, "greedy accuracy": acc[r].estimate,
             "95% interval": f"[{acc[r].low:.3f}, {acc[r].high:.3f}]",
             "MCTS solved (train)": mean("solved", r) if r else nan,
             "pairs": mean("pairs", r) if r else 0,
             "DPO loss (last step)": mean("loss", r) if r else nan,
             "reward accuracy (last step)": mean("reward_accuracy", r) if r else nan}
            for r in range(R)]
    found = effects(outcomes, cfg)
    xs = list(range(R))
    line_plot(run_dir / "accuracy_vs_round.png",
              {"greedy": (xs, [a.estimate for a in acc])},
              bands={"greedy": ([a.low for a in acc], [a.high for a in acc])},
              xlabel="round (0 = after warm-up)", ylabel="held-out greedy accuracy",
              title="MCTS-DPO: greedy accuracy per round (95% interval)", ylim=(0, 1))
    P = len(outcomes[0]["correct"][0])
    sections = [("Greedy accuracy per round", markdown_table(rows) + f"\n\n{P} eval "
                 f"problems x {len(outcomes)} seed(s); per-round counts are means over the "
                 "seeds; intervals: bootstrap over seeds and problems.")]
    if found:
        sections.append(("Effect checks", markdown_table([e.row() for e in found])))
    sections.append(("Plots", "![accuracy vs round](accuracy_vs_round.png)"))
    path = write_report(run_dir / "report.md", common.title("MCTS-DPO", cfg), sections)
    headline = (f"greedy {acc[0].estimate:.3f} (round 0) -> " + " -> ".join(
        f"{a.estimate:.3f}" for a in acc[1:]) + (f"; last minus round 0 {found[0].value}"
                                                 if found else "") +
        f"; {rows[-1]['pairs']:.0f} pairs a round; {P} problems")
    return Result(rows=rows, effects=found, report=path, headline=headline)
