"""Resampling against an imperfect verifier (Inference Scaling fLaws, Stroebl et al., 2024).

Sample up to k solutions and return the first one the verifier accepts (abstain if none
is accepted). The verifier accepts a correct solution with probability ``tpr`` and an
incorrect one with probability ``fpr`` (false positives). For a problem whose samples are
correct with probability p, per sample: a = p * tpr (accept, correct), b = (1 - p) * fpr
(accept, wrong), r = 1 - a - b (reject). Then

    P(correct answer) = a (1 - r^k) / (1 - r),  P(wrong answer) = b (1 - r^k) / (1 - r).

Resampling cannot push accuracy past a / (a + b): false positives cap it. With a negative
utility ``cost`` for a wrong answer relative to abstaining, the expected utility
P(correct) - cost * P(wrong) summed over problems of different difficulty can peak at a
small k ("the optimal number of samples can be less than 10").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class VerifiedResampling:
    """Curves over ks: accuracy, wrong-answer rate and utility; the best k for utility."""

    ks: np.ndarray
    accuracy: np.ndarray
    wrong: np.ndarray
    utility: np.ndarray
    best_k: int


def verified_resampling(p_correct: Sequence[float], ks: Sequence[int], fpr: float,
                        tpr: float = 1.0, cost: float = 0.0) -> VerifiedResampling:
    """Expected outcomes of verifier-filtered resampling, averaged over problems.

    p_correct: per-problem probability a sample is correct (e.g. c / n from n samples).
    """
    p = np.asarray(p_correct, float)[:, None]
    if not (0 <= fpr <= 1 and 0 <= tpr <= 1):
        raise ValueError(f"fpr and tpr must lie in [0, 1], got fpr={fpr}, tpr={tpr}")
    if np.any((p < 0) | (p > 1)):
        raise ValueError("p_correct must lie in [0, 1]")
    ks = np.asarray(ks, int)
    a = p * tpr
    b = (1 - p) * fpr
    r = 1 - a - b
    accept_any = 1 - r ** ks[None, :]
    accepted = a + b
    share_a = np.divide(a, accepted, out=np.zeros_like(a), where=accepted > 0)
    acc = (share_a * accept_any).mean(0)
    wrong = ((1 - share_a) * np.where(accepted > 0, accept_any, 0.0)).mean(0)
    utility = acc - cost * wrong
    return VerifiedResampling(ks=ks, accuracy=acc, wrong=wrong, utility=utility,
                              best_k=int(ks[int(np.argmax(utility))]))
