"""pass@k against brute-force enumeration; power-law fit recovers known parameters."""

import itertools
import math

import numpy as np
import pytest

from reasonjax.eval.passk import coverage_curve, fit_power_law, log_linearity, pass_at_k


@pytest.mark.parametrize("n,c,k", [(5, 2, 1), (5, 2, 3), (6, 0, 2), (6, 6, 4), (7, 3, 5),
                                   (8, 1, 8)])
def test_pass_at_k_equals_enumeration_of_subsets(n, c, k):
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    brute = sum(any(samples[i] for i in s) for s in subsets) / len(subsets)
    assert pass_at_k(n, c, k) == pytest.approx(brute, abs=1e-12)
    assert pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k))


def test_pass_at_1_is_mean_accuracy_and_bad_args():
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="1 <= k <= n"):
        pass_at_k(4, 1, 5)
    with pytest.raises(ValueError, match="0 <= c <= n"):
        pass_at_k(4, 5, 1)


def test_coverage_curve_is_monotone_and_matches_pass_at_k():
    rng = np.random.default_rng(0)
    correct = rng.random((50, 16)) < rng.random((50, 1)) * 0.3
    ks = [1, 2, 4, 8, 16]
    cov = coverage_curve(correct, ks)
    assert np.all(np.diff(cov) >= 0)
    assert cov[0] == pytest.approx(correct.mean())
    assert cov[-1] == pytest.approx(correct.any(1).mean())


def test_power_law_fit_recovers_parameters():
    ks = np.array([1, 2, 4, 8, 16, 32, 64, 128])
    cov = np.exp(-1.7 * ks ** -0.45)
    fit = fit_power_law(ks, cov)
    assert fit.a == pytest.approx(-1.7, rel=1e-6) and fit.b == pytest.approx(-0.45, rel=1e-6)
    assert fit.r2 == pytest.approx(1.0)
    np.testing.assert_allclose(fit(ks), cov, rtol=1e-6)
    assert log_linearity(ks, 0.1 + 0.05 * np.log(ks)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least two points"):
        fit_power_law([1, 2], [1.0, 1.0])
