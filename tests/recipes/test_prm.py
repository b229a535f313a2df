"""Monte Carlo process labels against a toy completion oracle, and the prm recipe at a
micro size end to end."""

import math

import numpy as np
import pytest

from reasonjax.recipes import process_labels as pl
from reasonjax.recipes.replicate import replicate


def toy_oracle(first_errors, k, log):
    """Prefix m of solution i leads to k correct rollouts when it holds no error (m <=
    first error), else 0. Every call's queries are appended to ``log``."""
    def oracle(queries, kk):
        assert kk == k
        log.append(list(queries))
        return np.asarray([k if first_errors[i] is None or m <= first_errors[i] else 0
                           for i, m in queries])
    return oracle


def test_math_shepherd_rolls_out_every_prefix_but_a_finished_last_step():
    log = []
    labels = pl.math_shepherd_labels([3, 2, 2], [False, True, None],
                                     toy_oracle([1, None, 0], 4, log), k=4)
    assert log == [[(0, 1), (0, 2), (1, 1), (2, 1), (2, 2)]]  # one batched call
    assert labels.hard == [[1.0, 0.0, 0.0], [1.0, 1.0], [0.0, 0.0]]
    assert labels.rollouts == [8, 4, 8]
    assert labels.rollouts_per_label == pytest.approx(20 / 7)
    assert labels.rounds == 1


def test_math_shepherd_soft_labels_are_fractions_and_hard_is_any():
    counts = {(0, 1): 3, (0, 2): 1, (0, 3): 0}
    labels = pl.math_shepherd_labels(
        [4], [True], lambda q, k: np.asarray([counts[x] for x in q]), k=4)
    assert labels.soft == [[0.75, 0.25, 0.0, 1.0]]
    assert labels.hard == [[1.0, 1.0, 0.0, 1.0]]


def test_omegaprm_binary_search_finds_the_first_error_in_log_rounds():
    log = []
    labels = pl.omegaprm_labels([8, 3, 2], [False, True, False],
                                toy_oracle([5, None, 0], 2, log), k=2)
    # solution 0: lo=0 hi=8 -> probe 4 (good) -> probe 6 (bad) -> probe 5 (good): error 5.
    # solution 1 is correct: no search. solution 2: probe 1 (bad): error 0.
    assert log == [[(0, 4), (2, 1)], [(0, 6)], [(0, 5)]]
    assert labels.hard == [[1.0] * 5 + [0.0] * 3, [1.0] * 3, [0.0, 0.0]]
    assert [pl.first_error(h) for h in labels.hard] == [5, None, 0]
    assert labels.rollouts == [6, 0, 2] and labels.rounds == 3
    assert labels.soft[0] == [1.0] * 5 + [0.0] * 3  # probed 4, 5 -> 1; probed 6 -> 0


def test_omegaprm_soft_labels_keep_the_measured_estimates():
    counts = {4: 1, 2: 3, 3: 0}
    labels = pl.omegaprm_labels([6], [False],
                                lambda q, k: np.asarray([counts.get(m, 0) for _, m in q]), k=4)
    # lo=0 hi=6: probe 3 (0 -> hi=3), probe 1 (0 -> hi=1): first error at step 0.
    assert labels.hard == [[0.0] * 6]
    assert labels.soft == [[0.0] * 6]
    counts = {3: 2, 4: 0}
    labels = pl.omegaprm_labels([6], [False],
                                lambda q, k: np.asarray([counts.get(m, 0) for _, m in q]), k=4)
    # probe 3 (2/4 -> lo=3), probe 4 (0 -> hi=4): first error at step index 3.
    assert labels.hard == [[1.0, 1.0, 1.0, 0.0, 0.0, 0.0]]
    assert labels.soft == [[1.0, 1.0, 0.5, 0.0, 0.0, 0.0]]
    assert labels.rollouts == [8]


def test_agreement_counts_steps():
    assert pl.agreement([[1.0, 0.0], [0.0]], [[True, True], [False]]) == pytest.approx(2 / 3)


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    overrides = ["task.train_size=24", "task.eval_size=4", "warmup.steps=4",
                 "warmup.batch_size=8", "samples.problems=6", "samples.n=2",
                 "rollouts.k=2", "rollouts.batch_size=16", "prm.steps=2",
                 "prm.batch_size=8", "num_devices=1"]
    path = tmp_path_factory.mktemp("prm")
    return replicate("prm", "tiny", overrides, path), path


def test_prm_recipe_micro_end_to_end(micro):
    result, path = micro
    assert [r["labels"] for r in result.rows] == ["math_shepherd", "omegaprm",
                                                  "exact (ceiling)"]
    for row in result.rows:
        assert row["rollouts"] >= 0
        for key in ("agreement with exact", "positive fraction", "PRM step accuracy"):
            assert 0.0 <= row[key] <= 1.0 and math.isfinite(row[key])
    ms, om = result.rows[0], result.rows[1]
    assert om["rollouts"] <= ms["rollouts"]  # at most as many probes as prefixes
    assert len(result.checks) == 5
    text = result.report.read_text()
    assert "| labels | rollouts | rollouts per label |" in text
    assert "Effect checks" in text
    assert (path / "agreement_vs_rollouts.png").is_file()
    assert (path / "prm_accuracy.png").is_file()
