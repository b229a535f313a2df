"""Intervals for the figures a replication reports, and the effect verdicts built on them.

- :func:`wilson`: the Wilson score interval of a proportion (k successes of n);
- :func:`bootstrap`: a percentile interval of any statistic by resampling, hierarchically
  when there are several seeds: seeds with replacement, then each drawn seed's items
  (problems, solutions, steps) with replacement. With paired items (two methods judged on
  the SAME problems, each item holding both outcomes) the interval is the paired one;
- :func:`paired_difference`: mean(a - b) over paired per-item outcomes [S][P], pooled over
  seeds, with its hierarchical bootstrap interval;
- :class:`Effect` / :func:`effect`: a paper's claim checked by the sign of an interval:
  ``held`` when the 95% interval of (ours - threshold) excludes 0 in the claim's
  direction, ``contradicted`` when it excludes 0 the other way, else ``inconclusive``.

Resampling is seeded, so the same outcomes give the same interval every time.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Optional, Sequence

import numpy as np

LEVEL = 0.95
RESAMPLES = 2000
VERDICTS = ("held", "inconclusive", "contradicted")


def z_value(level: float = LEVEL) -> float:
    """The two-sided standard-normal quantile: 1.96 at 95%."""
    from statistics import NormalDist

    return NormalDist().inv_cdf(0.5 + level / 2)


@dataclasses.dataclass(frozen=True)
class Interval:
    """A point estimate with its ``level`` interval [low, high]."""

    estimate: float
    low: float
    high: float
    level: float = LEVEL

    def __str__(self) -> str:
        return f"{self.estimate:.3f} [{self.low:.3f}, {self.high:.3f}]"

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


def wilson(successes: int, n: int, level: float = LEVEL) -> Interval:
    """Wilson score interval of the proportion successes / n (Wilson, 1927)."""
    if n <= 0 or not 0 <= successes <= n:
        raise ValueError(f"wilson: need 0 <= successes <= n and n > 0, got {successes}/{n}")
    z = z_value(level)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half), level)


def _as_groups(groups) -> list[np.ndarray]:
    out = [np.asarray(g) for g in groups]
    if not out or any(len(g) == 0 for g in out):
        raise ValueError("bootstrap: need at least one seed, each with at least one item")
    return out


def bootstrap(groups: Sequence, statistic: Callable[[list[np.ndarray]], float],
              level: float = LEVEL, resamples: int = RESAMPLES, seed: int = 0) -> Interval:
    """Percentile interval of ``statistic`` (a function of one array of items per seed,
    e.g. the mean of the per-seed means) under hierarchical resampling of ``groups`` (one
    array per seed, items along the first axis). One seed: items only."""
    groups = _as_groups(groups)
    rng = np.random.default_rng(seed)
    S = len(groups)
    draws = np.empty(resamples)
    for r in range(resamples):
        seeds = rng.integers(0, S, S) if S > 1 else [0]
        draws[r] = statistic([groups[s][rng.integers(0, len(groups[s]), len(groups[s]))]
                              for s in seeds])
    if np.all(np.isnan(draws)):  # the statistic is undefined on these items (e.g. no fit)
        return Interval(float(statistic(groups)), float("nan"), float("nan"), level)
    lo, hi = np.nanpercentile(draws, [50 * (1 - level), 50 * (1 + level)])
    return Interval(float(statistic(groups)), float(lo), float(hi), level)


def mean_of_means(groups: list[np.ndarray]) -> float:
    """The seeds' mean of their items' means (each seed weighs the same)."""
    return float(np.mean([np.mean(g) for g in groups]))


def paired_difference(a: Sequence, b: Sequence, level: float = LEVEL,
                      resamples: int = RESAMPLES, seed: int = 0) -> Interval:
    """mean(a - b) with its interval; ``a`` / ``b``: per seed, per-item outcomes of two
    methods (or rounds) on the same items ([S][P], 0/1 or any numbers)."""
    a, b = _as_groups(a), _as_groups(b)
    if [len(x) for x in a] != [len(x) for x in b]:
        raise ValueError(f"paired_difference: a and b must hold the same items per seed, got "
                         f"{[len(x) for x in a]} vs {[len(x) for x in b]}")
    diffs = [x.astype(float) - y.astype(float) for x, y in zip(a, b)]
    return bootstrap(diffs, mean_of_means, level, resamples, seed)


def mean_interval(values: Sequence, level: float = LEVEL, resamples: int = RESAMPLES,
                  seed: int = 0) -> Interval:
    """The pooled mean of per-item values [S][P] with its hierarchical bootstrap interval
    (one seed of 0/1 outcomes: close to :func:`wilson`)."""
    return bootstrap(values, mean_of_means, level, resamples, seed)


@dataclasses.dataclass(frozen=True)
class Effect:
    """A claim checked by an interval.

    claim: the paper's claim in words. direction: +1 when the claim says ``value`` is
    above ``threshold``, -1 below. value: our estimate (a difference, a rate, a fit's r2)
    with its interval. threshold: what the claim compares against (0 for differences).
    problems / seeds: what the interval rests on. detail: the figures in words."""

    claim: str
    direction: int
    value: Interval
    threshold: float
    problems: int
    seeds: int
    detail: str = ""

    @property
    def verdict(self) -> str:
        low = (self.value.low - self.threshold) * self.direction
        high = (self.value.high - self.threshold) * self.direction
        low, high = min(low, high), max(low, high)
        if math.isnan(low) or math.isnan(high):
            return "inconclusive"
        if low > 0:
            return "held"
        if high < 0:
            return "contradicted"
        return "inconclusive"

    def row(self) -> dict:
        """The effect as a report table row."""
        sign = ">" if self.direction > 0 else "<"
        return {"claim": self.claim, "ours (95% interval)": str(self.value),
                "needs": f"{sign} {self.threshold:g}", "problems": self.problems,
                "seeds": self.seeds, "verdict": self.verdict, "figures": self.detail}

    def to_json(self) -> dict:
        return {**dataclasses.asdict(self), "verdict": self.verdict}


def effect(claim: str, groups: Sequence, statistic: Callable[[list[np.ndarray]], float] =
           mean_of_means, *, threshold: float = 0.0, direction: int = 1, detail: str = "",
           problems: Optional[int] = None, seed: int = 0) -> Effect:
    """The :class:`Effect` of ``statistic`` over ``groups`` (per seed, items on the first
    axis; see :func:`bootstrap`) against ``threshold``. ``problems``: the item count to
    report (default: the items of the first seed)."""
    groups = _as_groups(groups)
    return Effect(claim=claim, direction=direction,
                  value=bootstrap(groups, statistic, seed=seed), threshold=threshold,
                  problems=problems if problems is not None else len(groups[0]),
                  seeds=len(groups), detail=detail)


def paired_effect(claim: str, a: Sequence, b: Sequence, *, direction: int = 1,
                  detail: str = "", seed: int = 0) -> Effect:
    """The claim that method ``a`` beats ``b`` (direction +1; -1: falls below) on the same
    problems: the paired difference mean(a - b) and its interval against 0."""
    a, b = _as_groups(a), _as_groups(b)
    return Effect(claim=claim, direction=direction, value=paired_difference(a, b, seed=seed),
                  threshold=0.0, problems=len(a[0]), seeds=len(a), detail=detail)


def tally(effects: Sequence[Effect]) -> str:
    """'2 held, 1 inconclusive' (the verdicts that occur, in VERDICTS order)."""
    counts = {v: sum(e.verdict == v for e in effects) for v in VERDICTS}
    return ", ".join(f"{n} {v}" for v, n in counts.items() if n) or "no checks"
