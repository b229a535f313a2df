"""coverage recipe: k grid, majority vote over subsets, analysis against hand-computed
values and the pass@k estimator, and a micro end-to-end run."""

import math

import numpy as np
import pytest

from reasonjax.checkpoint import load_model_and_tokenizer
from reasonjax.eval.passk import pass_at_k
from reasonjax.models.tokenizer import CharTokenizer
from reasonjax.recipes import coverage
from reasonjax.recipes.replicate import load_config, replicate


def test_ks_for_is_powers_of_two_then_n():
    assert coverage.ks_for(64) == [1, 2, 4, 8, 16, 32, 64]
    assert coverage.ks_for(6) == [1, 2, 4, 6]
    assert coverage.ks_for(1) == [1]


def test_majority_accuracy_hand_computed():
    answers = [["7", "7", "3", None], ["1", "2", "2", "1"], [None, None, None, None]]
    right = [[True, True, False, False], [True, False, False, True], [False] * 4]
    # k = n: problem 0 -> 7 (right); problem 1 tie 1 vs 2 -> the first seen in the random
    # order; problem 2: no answer (wrong).
    acc = coverage.majority_accuracy(answers, right, [4], trials=200, seed=0)[0]
    assert 1 / 3 + 0.3 / 3 < acc < 1 / 3 + 0.7 / 3
    # k = 1: the fraction of right answers among samples (no answer counts as wrong).
    acc1 = coverage.majority_accuracy(answers, right, [1], trials=4000, seed=1)[0]
    assert acc1 == pytest.approx((2 / 4 + 2 / 4 + 0) / 3, abs=0.02)
    only = coverage.majority_accuracy([["5", "5", "6"]], [[True, True, False]], [3], 3, 0)
    assert only[0] == 1.0


def test_analyse_matches_the_estimator_and_checks():
    rng = np.random.default_rng(0)
    p = rng.uniform(0.0, 0.6, size=40)
    correct = rng.uniform(size=(40, 16)) < p[:, None]
    answers = [["right" if c else f"wrong{i % 3}" for i, c in enumerate(row)]
               for row in correct]
    cfg = load_config("coverage", "tiny", ["verifier.fpr=0.2"])
    samples = {"correct": correct.tolist(), "answers": answers,
               "answer_correct": correct.tolist()}
    tables = [coverage.problem_table(samples, cfg)]
    a = coverage.analyse(tables, cfg)
    assert a["ks"] == [1, 2, 4, 8, 16]
    want = [np.mean([pass_at_k(16, int(c), k) for c in correct.sum(1)]) for k in a["ks"]]
    np.testing.assert_allclose(a["passk"], want)
    assert a["passk"][0] == pytest.approx(correct.mean())
    assert all(lo <= c <= hi for c, lo, hi in zip(a["passk"], a["passk_low"],
                                                   a["passk_high"]))
    assert all(0.0 <= m <= c + 1e-9 for m, c in zip(a["majority"], a["passk"]))
    assert a["verifier"][0] == pytest.approx(correct.mean())  # k=1 with tpr 1: pass@1
    a_fit, a_low, a_high = a["fit"]["a"]
    assert a_low <= a_fit <= a_high < 0 and a["fit"]["r2"][0] > 0.9
    found = coverage.effects(tables, cfg)
    assert [e.verdict == "held" for e in found][2:] == [True, True]
    saturated = {"correct": np.ones((3, 4), bool).tolist(), "answers": [["x"] * 4] * 3,
                 "answer_correct": np.ones((3, 4), bool).tolist()}
    sat = [coverage.problem_table(saturated, cfg)]
    assert coverage.analyse(sat, cfg)["fit"] is None
    assert all(math.isnan(f) for f in coverage.analyse(sat, cfg)["fitted"])
    assert coverage.effects(sat, cfg)[1].verdict != "held"


def test_no_effect_is_never_held():
    """Synthetic outcomes with nothing to find: every sample wrong (coverage flat at 0, no
    fit, majority = coverage = verifier): no check comes out held."""
    cfg = load_config("coverage", "tiny")
    flat = {"correct": np.zeros((64, 8), bool).tolist(), "answers": [["1"] * 8] * 64,
            "answer_correct": np.zeros((64, 8), bool).tolist()}
    tables = [coverage.problem_table(flat, cfg) for _ in range(3)]
    assert all(e.verdict != "held" for e in coverage.effects(tables, cfg))


def test_micro_run_writes_report_and_plot(tmp_path):
    res = replicate("coverage", "tiny", [
        "task.train_size=8", "task.eval_size=4", "warmup.steps=3", "warmup.batch_size=4",
        "num_devices=1", "model.overrides={n_layers: 1}", "sampling.n=4",
        "sampling.max_new_tokens=8", "vote_trials=2"], tmp_path)
    assert [r["k"] for r in res.rows] == [1, 2, 4]
    for row in res.rows:
        assert list(row) == ["k", "coverage", "coverage 95%", "power-law fit",
                             "majority vote", "verifier (fpr 0.1)"]
        assert all(0.0 <= row[c] <= 1.0 for c in ("coverage", "majority vote",
                                                  "verifier (fpr 0.1)"))
    assert len(res.checks) == 4
    text = res.report.read_text()
    assert text.index("| k | coverage |") < text.index("## Effect checks")
    assert all(v in ("held", "inconclusive", "contradicted") for v in res.checks.values())
    assert (tmp_path / "coverage.png").stat().st_size > 0
    assert (tmp_path / "phases" / "samples" / "result.json").is_file()
    # the warm-up model loads with its tokenizer, as `reasonjax search MODEL` reads it
    config, _, tok = load_model_and_tokenizer(tmp_path / "phases" / "warmup" / "model")
    assert (config.n_layers, tok.vocab_size) == (1, CharTokenizer().vocab_size)
