"""Repeated-sampling metrics: unbiased pass@k, coverage curves, the exponentiated power law.

Large Language Monkeys (Brown et al., 2024): coverage = the fraction of problems solved by
ANY of k samples; estimated without bias from n >= k samples with c correct by
``pass@k = 1 - C(n-c, k) / C(n, k)`` (Chen et al., 2021). Coverage vs k is "often
log-linear and can be modelled with an exponentiated power law": ``coverage(k) ~
exp(a * k**b)`` with a < 0, b < 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct (numerically stable product form)."""
    if not 0 <= c <= n:
        raise ValueError(f"pass_at_k: need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"pass_at_k: need 1 <= k <= n, got k={k}, n={n}")
    if n - c < k:
        return 1.0
    # 1 - C(n-c, k)/C(n, k) = 1 - prod_{i=n-c+1}^{n} (1 - k / i)
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def coverage_curve(correct_PN: np.ndarray, ks: Sequence[int]) -> np.ndarray:
    """[len(ks)] mean over problems of pass@k, from a [P, n] boolean correctness matrix."""
    correct_PN = np.asarray(correct_PN, bool)
    if correct_PN.ndim != 2 or correct_PN.shape[1] == 0:
        raise ValueError(f"coverage_curve: expected a [problems, samples] matrix, "
                         f"got shape {correct_PN.shape}")
    n = correct_PN.shape[1]
    c = correct_PN.sum(1)
    return np.asarray([np.mean([pass_at_k(n, int(ci), k) for ci in c]) for k in ks])


@dataclass(frozen=True)
class PowerLawFit:
    """coverage(k) ~ exp(a * k**b); r2 of the linear fit of log(-log coverage) on log k
    (NaN when the points do not vary)."""

    a: float
    b: float
    r2: float

    def __call__(self, k) -> np.ndarray:
        return np.exp(self.a * np.asarray(k, float) ** self.b)


def fit_power_law(ks: Sequence[int], coverage: Sequence[float]) -> PowerLawFit:
    """Least squares of log(-log c) = log(-a) + b log k over points with 0 < c < 1."""
    ks = np.asarray(ks, float)
    cov = np.asarray(coverage, float)
    keep = (cov > 0) & (cov < 1)
    if keep.sum() < 2:
        raise ValueError("fit_power_law: need at least two points with 0 < coverage < 1")
    x, y = np.log(ks[keep]), np.log(-np.log(cov[keep]))
    b, log_neg_a = np.polyfit(x, y, 1)
    pred = log_neg_a + b * x
    ss_res = float(np.sum((y - pred) ** 2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")
    return PowerLawFit(a=-float(np.exp(log_neg_a)), b=float(b), r2=r2)


def log_linearity(ks: Sequence[int], coverage: Sequence[float]) -> float:
    """r2 of coverage against log k (Monkeys: coverage is often log-linear in k) when it
    rises with k; 0 when it falls and NaN when it is flat (a flat curve is no evidence
    of log-linear growth, however well a line fits it)."""
    x, y = np.log(np.asarray(ks, float)), np.asarray(coverage, float)
    slope, icept = np.polyfit(x, y, 1)
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    if ss_tot == 0:
        return float("nan")
    if slope <= 0:
        return 0.0
    return 1.0 - float(np.sum((y - (icept + slope * x)) ** 2)) / ss_tot
