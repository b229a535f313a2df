"""Intervals against hand-computed values, and effect verdicts: an effect with no
difference is never `held`."""

import numpy as np
import pytest

from reasonjax.eval import stats


def test_wilson_matches_hand_computed_intervals():
    # z = 1.959964; 5/10: centre (0.5 + z^2/20) / (1 + z^2/10) = 0.5, half 0.2634.
    ci = stats.wilson(5, 10)
    assert (ci.estimate, ci.low, ci.high) == pytest.approx((0.5, 0.2366, 0.7634), abs=1e-4)
    assert (stats.wilson(0, 10).low, stats.wilson(0, 10).high) == pytest.approx(
        (0.0, 0.2775), abs=1e-4)
    assert (stats.wilson(10, 10).low, stats.wilson(10, 10).high) == pytest.approx(
        (0.7225, 1.0), abs=1e-4)
    assert stats.z_value() == pytest.approx(1.959964, abs=1e-6)
    with pytest.raises(ValueError, match="0 <= successes <= n"):
        stats.wilson(3, 2)


def test_paired_difference_of_known_outcomes():
    a = np.ones(50)
    assert str(stats.paired_difference([a], [np.zeros(50)])) == "1.000 [1.000, 1.000]"
    same = stats.paired_difference([a], [a])
    assert (same.estimate, same.low, same.high) == (0.0, 0.0, 0.0)
    # 400 problems, a right on 260, b on 200, b right only where a is: the difference is
    # 60 / 400 = 0.15, SE of the paired mean sqrt(p(1-p)/n) with p = 0.15: 0.01785.
    a = np.r_[np.ones(260), np.zeros(140)]
    b = np.r_[np.ones(200), np.zeros(200)]
    ci = stats.paired_difference([a], [b])
    assert ci.estimate == pytest.approx(0.15)
    assert ci.half_width == pytest.approx(1.96 * 0.01785, rel=0.1)
    with pytest.raises(ValueError, match="same items per seed"):
        stats.paired_difference([a], [b[:10]])


def test_seed_level_resampling_widens_the_interval_when_seeds_disagree():
    rng = np.random.default_rng(0)
    agree = [rng.random(500) < 0.6 for _ in range(3)]
    disagree = [rng.random(500) < p for p in (0.4, 0.6, 0.8)]
    assert stats.mean_interval(disagree).half_width > 2 * stats.mean_interval(agree).half_width
    one = stats.mean_interval([agree[0]])
    w = stats.wilson(int(agree[0].sum()), 500)
    assert one.low == pytest.approx(w.low, abs=0.01) and one.high == pytest.approx(w.high,
                                                                                  abs=0.01)


def test_verdicts_follow_the_interval_and_the_claimed_direction():
    up = stats.Effect("a above b", 1, stats.Interval(0.1, 0.02, 0.18), 0.0, 100, 1)
    assert up.verdict == "held"
    assert stats.Effect("a below b", -1, up.value, 0.0, 100, 1).verdict == "contradicted"
    assert stats.Effect("a above 0.15", 1, up.value, 0.15, 100, 1).verdict == "inconclusive"
    assert stats.Effect("nan", 1, stats.Interval(float("nan"), float("nan"), float("nan")),
                        0.0, 0, 1).verdict == "inconclusive"
    assert stats.tally([up, up]) == "2 held"


@pytest.mark.parametrize("seeds", [1, 3])
def test_no_difference_is_never_held(seeds):
    """Two methods with exactly the same accuracy on the same problems (they err on
    different ones): the interval straddles 0 whatever the direction claimed."""
    a = [np.tile([1, 0], 500) for _ in range(seeds)]
    b = [np.tile([0, 1], 500) for _ in range(seeds)]
    for direction in (1, -1):
        e = stats.paired_effect("a beats b", a, b, direction=direction)
        assert e.value.estimate == 0.0 and e.verdict == "inconclusive"
        # every problem discordant: per-problem differences of +-1, SE 1 / sqrt(items)
        assert e.value.half_width == pytest.approx(1.96 / np.sqrt(1000 * seeds), rel=0.15)
        assert e.problems == 1000 and e.seeds == seeds


def test_effect_on_a_statistic_with_a_threshold():
    rates = [np.r_[np.ones(90), np.zeros(10)]]
    e = stats.effect("agreement above 0.8", rates, threshold=0.8)
    assert e.value.estimate == pytest.approx(0.9) and e.verdict == "held"
    assert stats.effect("agreement above 0.98", rates, threshold=0.98).verdict == \
        "contradicted"
    assert e.row()["needs"] == "> 0.8" and e.to_json()["verdict"] == "held"
