"""RL on incorrect synthetic data (Setlur et al., 2024, "RL on Incorrect Synthetic Data
Scales the Efficiency of LLM Math Reasoning by Eight-Fold"): SFT on positive solutions,
then per-step DPO whose pairs come from the SFT model's own wrong (negative) solutions,
cut at their critical step, against SFT on ``scale`` times as many positives.

Three arms at one seed, each judged greedily on the same eval problems:

(a) ``sft``: SFT on the reference solutions of the first ``positives`` (P) training
    problems.
(b) ``dpo``: (a), then per-step DPO (reference = (a)) on pairs from negatives: sample
    ``sampling.n`` solutions per negative problem from (a); for every wrong one, roll out
    (a) ``rollouts.n`` times from each of its prefixes (:func:`.process_labels.prefix_counts`
    through :func:`.process_labels.prefix_oracle` with a ``store``), so V(s_m) = correct / k
    and step j has advantage A_j = V(s_{j+1}) - V(s_j)
    (:func:`.process_labels.step_advantages`); its critical step is the first with
    A_j <= -``threshold``
    (:func:`.process_labels.critical_step`). The pair shares the prompt and the steps
    before the critical one; rejected = the negative from its critical step on
    (``unit: rest``) or the critical step alone (``unit: step``); chosen = a correct
    rollout from the same prefix (one of those that measured V there: A_j <= -threshold
    < 0 needs V(s_j) > 0, so one exists), whole or its first step.
(c) ``sft_scaled``: SFT on the first ``scale`` * P problems' reference solutions, same
    optimizer steps as (a): the "more positive data" reference.

``negative_problems``: 0 samples the negatives on (a)'s own P problems (the paper's
setting: negatives of the synthetic problems the positives came from); n > 0 on the next
n training problems, whose answers the verifier reads but whose reference solutions (a)
and (b) never see (with n <= (scale - 1) P they are among (c)'s positives). A tiny model
memorises its P problems, so its samples there are almost all right; see
:func:`reasonjax.recipes.common.split_train`.

Departures: the paper's positives are synthetic solutions from stronger models (GPT-4 /
Gemini) on synthetic problems, its negatives are samples of the SFT model, and its
per-step DPO follows Self-Explore (Hwang et al., 2024: the first pit = first step from
which no rollout succeeds); here positives are the task's reference solutions, and the
critical step is the first whose advantage is <= -threshold, a fixed drop in success
rate (Self-Explore's pit is the first step after which V = 0: a drop of the whole value
before it). Negatives may come from problems other than the positives' (see
``negative_problems``). No explicit per-pair advantage
weight: cutting the pair at the critical step is how the paper's per-step DPO
concentrates credit there (its section 6: per-step DPO ~ advantage-weighted RL).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from reasonjax.config import ConfigError, check_fields
from reasonjax.data import formatting
from reasonjax.data.task import Problem
from reasonjax.driver import run as run_driver
from reasonjax.eval import stats
from reasonjax.eval.plots import line_plot
from reasonjax.eval.report import markdown_table, write_report
from reasonjax.recipes import common, process_labels
from reasonjax.recipes.common import RecipeEnv, Trained
from reasonjax.recipes.rundir import Result, log_metrics, open_run, run_phase, write_outcomes
from reasonjax.search.sampler import SampleConfig
from reasonjax.train.preference import PreferenceConfig, preference_loss
from reasonjax.train.state import OptimConfig

UNITS = ("rest", "step")


@dataclasses.dataclass(frozen=True)
class Config(common.RecipeConfig):
    """``positives``: P, the problems whose reference solutions (a) and (b) learn from
    (``warmup``: the SFT fit of arms a and c); ``scale``: k, arm (c) learns from k P;
    ``negative_problems``: where (b)'s negatives are sampled (0: the P problems);
    ``sampling``: samples per negative problem; ``rollouts``: k rollouts per prefix;
    ``threshold``: a critical step's advantage is <= -threshold; ``unit``: what a pair
    contrasts after the shared prefix (``rest``: the rest of the solution, ``step``: one
    step); ``dpo`` / ``preference``: the per-step DPO fit; ``margin``: how far (b) may
    fall below (c) for the efficiency claim to hold."""

    positives: int = 500
    scale: int = 4
    negative_problems: int = 0
    sampling: SampleConfig = SampleConfig(n=4, max_new_tokens=24)
    rollouts: process_labels.RolloutSpec = process_labels.RolloutSpec()
    threshold: float = 0.5
    unit: str = "rest"
    dpo: common.FitSpec = common.FitSpec(steps=100, optim=OptimConfig(lr=1e-4,
                                                                     warmup_steps=10))
    preference: PreferenceConfig = PreferenceConfig(beta=0.1)
    margin: float = 0.02

    def __post_init__(self):
        super().__post_init__()
        check_fields(self, positives=">= 1", scale=">= 2", negative_problems=">= 0",
                     margin=">= 0")
        if not 0 < self.threshold <= 1:
            raise ConfigError(f"threshold={self.threshold}: a drop in success rate, in (0, 1]")
        if self.unit not in UNITS:
            raise ConfigError(f"unit={self.unit!r}: choose one of {UNITS}")
        if self.warmup_problems:
            raise ConfigError("warmup_problems: unused here (positives and negative_problems "
                              "split the training problems); leave it 0")


def losses(cfg: Config) -> dict:
    """{FitSpec path: loss factory} of the run's training phases besides the SFT warm-up
    (what :mod:`reasonjax.recipes.plan` compiles)."""
    return {"dpo": lambda mc: preference_loss(mc, cfg.preference)}


CLAIM = ("per-step DPO on negatives with advantage-chosen critical steps matches SFT on "
         "~8x more positive data")


# ---------------------------------------------------------------------------------------
# Pairs (pure)


def critical_pair(task, steps: Sequence[str], correct: Sequence[int], k: int,
                  rollouts: Mapping[int, tuple[Sequence[str], Sequence[bool]]],
                  threshold: float, unit: str) -> tuple[Optional[int], Optional[dict]]:
    """The critical step of one wrong solution and its pair.

    ``correct``: its :class:`~.process_labels.PrefixCounts` row (prefixes m = 0 .. n);
    ``rollouts[m]``: (texts, correct) of the rollouts from prefix m. Returns (critical
    step j or None, pair or None). The pair: ``prefix`` = steps[:j]; ``rejected`` = the
    steps from j on joined by the task's delimiter (``unit: rest``) or steps[j]
    (``step``); ``chosen`` = the first correct rollout from prefix j (split into steps
    and rejoined; ``step``: its first step) that differs from the rejected text;
    ``*_final``: the text ends the solution (its last step is an answer step);
    ``advantage``: A_j. None when no step is critical or no such rollout exists."""
    adv = process_labels.step_advantages(correct, k)
    j = process_labels.critical_step(adv, threshold)
    if j is None:
        return None, None
    d = task.step_delimiter
    rejected_steps = list(steps[j:]) if unit == "rest" else [steps[j]]
    texts, ok = rollouts.get(j, ((), ()))
    for text, good in zip(texts, ok):
        chosen_steps = task.split_steps(text)
        if not good or not chosen_steps:
            continue
        if unit == "step":
            chosen_steps = chosen_steps[:1]
        if chosen_steps == rejected_steps:
            continue
        return j, {"prefix": list(steps[:j]), "chosen": d.join(chosen_steps),
                   "rejected": d.join(rejected_steps),
                   "chosen_final": bool(task.is_final_step(chosen_steps[-1])),
                   "rejected_final": bool(task.is_final_step(rejected_steps[-1])),
                   "critical": j, "advantage": float(adv[j])}
    return j, None


def encode_pairs(env: RecipeEnv, pairs: Sequence[dict]) -> list[dict]:
    """Preference examples whose loss reads only the continuations after the prefix."""
    return [formatting.encode_step_preference(
        env.tokenizer, p["prompt"], p["prefix"], p["chosen"], p["rejected"], env.delimiter,
        chosen_final=p["chosen_final"], rejected_final=p["rejected_final"]) for p in pairs]


# ---------------------------------------------------------------------------------------
# Phases


@dataclasses.dataclass(frozen=True)
class Pairs:
    """The negatives' pairs and what it took: samples drawn, their accuracy, wrong ones
    with at least one step, those with a critical step, rollouts spent, and per located
    critical step ``agreement``: it is the exact first error (exact tasks only)."""

    pairs: list
    samples: int
    sample_accuracy: float
    negatives: int
    critical: int
    rollouts: int
    agreement: list


def collect_pairs(env: RecipeEnv, params, problems: Sequence[Problem], cfg: Config) -> Pairs:
    """Phase ``pairs``: (a)'s samples of ``problems``, their wrong ones' prefix values
    and critical steps, and one pair per wrong solution where one is found."""
    records = run_driver(env, params, problems, cfg.sampling,
                         common.rng_for(cfg.seed, "negatives"),
                         batch_size=min(cfg.batch_size, len(problems)))
    neg, group = [], []
    for g, rec in enumerate(records):
        for c in rec.candidates:
            steps = env.task.split_steps(c.completion)
            if c.correct is False and steps:
                neg.append((rec.problem, steps))
                group.append(g)
    probs, steps = [p for p, _ in neg], [s for _, s in neg]
    store: dict = {}
    oracle = process_labels.prefix_oracle(env, params, probs, steps,
                                          common.rng_for(cfg.seed, "rollouts"), cfg.rollouts,
                                          store=store)
    # a finished wrong solution's last prefix is its own outcome (0 of k); an unfinished
    # one is rolled out too
    outcome = [False if env.task.is_final_step(s[-1]) else None for s in steps]
    counts = process_labels.prefix_counts([len(s) for s in steps], outcome, oracle,
                                          cfg.rollouts.n, group=group)
    first: dict[int, int] = {}
    for i, g in enumerate(group):
        first.setdefault(g, i)
    pairs, critical, agreement = [], 0, []
    for i, (problem, s) in enumerate(neg):
        here = {m: store[(i, m)] for m in range(1, len(s) + 1) if (i, m) in store}
        here[0] = store[(first[group[i]], 0)] if (first[group[i]], 0) in store else ((), ())
        j, pair = critical_pair(env.task, s, counts.correct[i], counts.k, here,
                                cfg.threshold, cfg.unit)
        if j is None:
            continue
        critical += 1
        if env.task.exact_steps:
            agreement.append(env.task.check_steps(problem, s).first_error == j)
        if pair is not None:
            pairs.append({"prompt": env.task.prompt(problem), **pair,
                          "problem": problem.to_json()})
    drawn = [c.correct for rec in records for c in rec.candidates]
    return Pairs(pairs=pairs, samples=len(drawn),
                 sample_accuracy=float(np.mean([bool(c) for c in drawn])) if drawn else 0.0,
                 negatives=len(neg), critical=critical, rollouts=int(sum(counts.rollouts)),
                 agreement=agreement)


def _eval(run, env: RecipeEnv, params, name: str, cfg: Config) -> list:
    return common.eval_phase(run, env, params, name, cfg.sampling.max_new_tokens,
                             cfg.batch_size)


def _check_sizes(env: RecipeEnv, cfg: Config) -> None:
    n = len(env.train)
    if cfg.scale * cfg.positives > n:
        raise ConfigError(f"scale={cfg.scale}: arm (c) needs scale x positives = "
                          f"{cfg.scale * cfg.positives} training problems, there are {n}; "
                          "raise task.train_size or lower positives / scale")
    if cfg.positives + cfg.negative_problems > n:
        raise ConfigError(f"negative_problems={cfg.negative_problems}: positives + "
                          f"negative_problems exceeds the {n} training problems; raise "
                          "task.train_size")


def run(cfg: Config, run_dir) -> Result:
    run_ = open_run(run_dir, cfg, total_phases=7)
    env = common.env_for(cfg)
    _check_sizes(env, cfg)
    P, k = cfg.positives, cfg.scale
    sft = common.warmup(run_, dataclasses.replace(env, train=env.train[:P]), cfg.warmup,
                        seed=cfg.seed, name="sft")
    correct_a = _eval(run_, env, sft, "eval-sft", cfg)
    scaled = common.warmup(run_, dataclasses.replace(env, train=env.train[:k * P]),
                           cfg.warmup, seed=cfg.seed, name="sft-scaled")
    correct_c = _eval(run_, env, scaled, "eval-sft-scaled", cfg)
    del scaled
    own = env.train[P:P + cfg.negative_problems] if cfg.negative_problems else env.train[:P]
    data = run_phase(run_, "pairs", lambda: collect_pairs(env, sft, own, cfg), Pairs)
    log_metrics(run_, {"phase": "pairs", "pairs": len(data.pairs), "samples": data.samples,
                       "sample_accuracy": data.sample_accuracy, "negatives": data.negatives,
                       "critical": data.critical})

    def train():
        if not data.pairs:
            return Trained(sft, env.model_config, {"skipped": "no pairs"})
        loss = preference_loss(env.model_config, cfg.preference)
        params, metrics = common.fit_examples(env, sft, loss, encode_pairs(env, data.pairs),
                                              cfg.dpo, seed=cfg.seed, ref_params=sft)
        return Trained(params, env.model_config,
                       {k_: float(v) for k_, v in metrics.items()})

    dpo = run_phase(run_, "dpo", train, Trained, mesh=env.mesh).params
    correct_b = _eval(run_, env, dpo, "eval-dpo", cfg)
    adv = [p["advantage"] for p in data.pairs]
    outcomes = {"correct": {"sft": correct_a, "dpo": correct_b, "sft_scaled": correct_c},
                "pairs": {"pairs": len(data.pairs), "samples": data.samples,
                          "sample_accuracy": data.sample_accuracy,
                          "negatives": data.negatives, "critical": data.critical,
                          "rollouts": data.rollouts, "agreement": data.agreement,
                          "mean_advantage": float(np.mean(adv)) if adv else float("nan"),
                          "critical_steps": [p["critical"] for p in data.pairs]}}
    write_outcomes(Path(run_dir), outcomes)
    return report(run_dir, cfg, [outcomes])


# ---------------------------------------------------------------------------------------
# Effects and report


def _arm(outcomes: Sequence[dict], name: str) -> list:
    return [np.asarray(o["correct"][name], float) for o in outcomes]


def effects(outcomes: Sequence[dict], cfg: Config) -> list[stats.Effect]:
    """Paired on the eval problems: (b) above (a); (b) not below (c) by more than
    ``margin`` (the efficiency claim); (c) above (a) (the k-fold data the comparison
    needs does help SFT); and the critical steps' agreement with the exact first errors
    (exact tasks) against 0.8."""
    a, b, c = _arm(outcomes, "sft"), _arm(outcomes, "dpo"), _arm(outcomes, "sft_scaled")
    k = cfg.scale
    found = [
        stats.paired_effect("per-step DPO on negatives raises accuracy over SFT on the same "
                            "positives", b, a, detail="paired: (b) SFT + per-step DPO minus "
                            "(a) SFT on P"),
        stats.Effect(claim=f"SFT on P + per-step DPO is within {cfg.margin:g} of SFT on "
                           f"{k}x positives (the efficiency claim)", direction=1,
                     value=stats.paired_difference(b, c), threshold=-cfg.margin,
                     problems=len(b[0]), seeds=len(b),
                     detail=f"paired: (b) minus (c) SFT on {k}P; needs > -margin"),
        stats.paired_effect(f"SFT on {k}x positives beats SFT on P (the gap to close)", c, a,
                            detail="paired: (c) minus (a)")]
    agree = [np.asarray(o["pairs"]["agreement"], float) for o in outcomes]
    if all(len(x) for x in agree):
        found.append(stats.effect("advantage-chosen critical steps are the exact first "
                                  "errors", agree, threshold=0.8,
                                  detail="per wrong solution with a critical step"))
    return found


def _mean(xs) -> float:
    return float(np.mean(xs)) if len(xs) else float("nan")


def report(run_dir, cfg: Config, outcomes: Sequence[dict]) -> Result:
    """report.md and the accuracy-vs-positives plot from one outcome dict per seed."""
    run_dir = Path(run_dir)
    P, k = cfg.positives, cfg.scale
    arms = (("(a) SFT", "sft", P), ("(b) SFT + per-step DPO on negatives", "dpo", P),
            (f"(c) SFT on {k}x positives", "sft_scaled", k * P))
    acc: dict[str, Any] = {key: stats.mean_interval(_arm(outcomes, key)) for _, key, _ in arms}
    pairs = [o["pairs"] for o in outcomes]
    rows = [{"arm": label, "positive solutions": n, "greedy accuracy": acc[key].estimate,
             "95% interval": f"[{acc[key].low:.3f}, {acc[key].high:.3f}]",
             "pairs": _mean([p["pairs"] for p in pairs]) if key == "dpo" else 0}
            for label, key, n in arms]
    found = effects(outcomes, cfg)
    line_plot(run_dir / "accuracy_vs_positives.png",
              {"SFT": ([P, k * P], [acc["sft"].estimate, acc["sft_scaled"].estimate]),
               "SFT + per-step DPO": ([P], [acc["dpo"].estimate])},
              bands={"SFT": ([acc["sft"].low, acc["sft_scaled"].low],
                             [acc["sft"].high, acc["sft_scaled"].high])},
              xlabel="positive solutions", ylabel="greedy accuracy (95% interval)",
              title="RL on incorrect synthetic data", logx=True, ylim=(0, 1))
    data = [{"samples": _mean([p["samples"] for p in pairs]),
             "sample accuracy": _mean([p["sample_accuracy"] for p in pairs]),
             "wrong": _mean([p["negatives"] for p in pairs]),
             "critical step found": _mean([p["critical"] for p in pairs]),
             "pairs": _mean([p["pairs"] for p in pairs]),
             "rollouts": _mean([p["rollouts"] for p in pairs]),
             "mean critical advantage": _mean([p["mean_advantage"] for p in pairs]),
             "critical at step 1": _mean([x == 0 for p in pairs
                                          for x in p["critical_steps"]]),
             "critical = exact first error": _mean([x for p in pairs
                                                    for x in p["agreement"]])}]
    n_eval = len(outcomes[0]["correct"]["sft"])
    path = write_report(run_dir / "report.md", common.title("RL on incorrect synthetic data",
                                                            cfg), [
        ("Results", markdown_table(rows) + f"\n\n{n_eval} eval problems x {len(outcomes)} "
         "seed(s); intervals: bootstrap over seeds and problems; pairs: mean per seed."),
        ("Negatives and pairs", markdown_table(data)),
        ("Effect checks", markdown_table([e.row() for e in found])),
        ("Plots", "![accuracy vs positives](accuracy_vs_positives.png)")])
    gap = acc["sft_scaled"].estimate - acc["sft"].estimate
    closed = (acc["dpo"].estimate - acc["sft"].estimate) / gap if gap > 0 else float("nan")
    headline = (f"SFT {acc['sft'].estimate:.3f}, + per-step DPO {acc['dpo'].estimate:.3f}, "
                f"SFT on {k}x {acc['sft_scaled'].estimate:.3f} (gap closed {closed:.2f}); "
                f"(b)-(a) {found[0].value}, (b)-(c) {found[1].value}; "
                f"{rows[1]['pairs']:.0f} pairs; {n_eval} problems")
    return Result(rows=rows, effects=found, report=path, headline=headline)
