"""Imperfect-verifier resampling: closed form vs Monte Carlo; the fLaws accuracy cap."""

import numpy as np
import pytest

from reasonjax.eval.verifier import verified_resampling


def _simulate(p, k, fpr, tpr, trials, rng):
    correct = wrong = 0
    for _ in range(trials):
        for pi in p:
            for _ in range(k):
                ok = rng.random() < pi
                if rng.random() < (tpr if ok else fpr):
                    correct += ok
                    wrong += not ok
                    break
    return correct / (trials * len(p)), wrong / (trials * len(p))


def test_closed_form_matches_simulation():
    rng = np.random.default_rng(0)
    p = [0.05, 0.3, 0.8]
    res = verified_resampling(p, [1, 4, 16], fpr=0.1, tpr=0.9)
    for i, k in enumerate([1, 4, 16]):
        acc, wrong = _simulate(p, k, 0.1, 0.9, 3000, rng)
        assert res.accuracy[i] == pytest.approx(acc, abs=0.02)
        assert res.wrong[i] == pytest.approx(wrong, abs=0.02)


def test_false_positives_cap_accuracy_and_bend_utility():
    p = np.linspace(0.0, 0.9, 10)
    ks = np.array([1, 2, 4, 8, 16, 64, 1024])
    perfect = verified_resampling(p, ks, fpr=0.0)
    assert perfect.accuracy[-1] == pytest.approx(np.mean(p > 0), abs=1e-6)
    flawed = verified_resampling(p, ks, fpr=0.2)
    cap = np.mean(p / (p + (1 - p) * 0.2))
    assert flawed.accuracy[-1] == pytest.approx(cap, abs=1e-6) and cap < perfect.accuracy[-1]
    costly = verified_resampling(p, ks, fpr=0.2, cost=2.0)
    assert costly.best_k < ks[-1] and costly.utility[-1] < costly.utility.max()
    with pytest.raises(ValueError, match="fpr and tpr"):
        verified_resampling(p, ks, fpr=1.5)
