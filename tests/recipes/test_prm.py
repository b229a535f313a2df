"""Monte Carlo process labels against a toy completion oracle, PRM-weighted voting by
hand, and the prm recipe at a micro size end to end, on a task with an exact step checker
(arithmetic) and on a local GSM8K-style file (none)."""

import json
import math

import numpy as np
import pytest

from reasonjax.recipes import process_labels as pl
from reasonjax.recipes import prm
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


def test_vote_outcomes_majority_weighted_and_best_of_n_by_hand():
    # problem 0: answers 5 (wrong, scores .2 .3), 7 (right, .9) -> majority picks 5 (2 vs
    # 1 votes), the weighted vote 7 (.9 vs .5), best-of-N 7. problem 1: answers 1 (right,
    # .4) and None (.95): majority and weighted pick 1, best-of-N the unanswered one.
    # problem 2 has no solutions: wrong for all three.
    got = prm.vote_outcomes([0, 0, 0, 1, 1], ["5", "5", "7", "1", None],
                            [False, False, True, True, False], [0.2, 0.3, 0.9, 0.4, 0.95], 3)
    assert got == {"majority": [0, 1, 0], "weighted": [1, 1, 0], "best_of_n": [1, 0, 0]}
    assert prm.solution_score(np.asarray([0.8, 0.3, 0.6])) == pytest.approx(0.3)
    assert prm.solution_score(np.zeros(0)) == 0.0


MICRO = ["task.eval_size=4", "warmup.steps=0", "model.overrides={n_layers: 1}",
         "label_problems=4", "samples.n=2", "samples.max_new_tokens=12", "rollouts.n=2",
         "rollouts.max_new_tokens=12", "rollouts.batch_size=8", "prm.steps=2",
         "prm.batch_size=8", "prm.seq_len=32", "num_devices=1"]


TREE_PLV = ["tree_plv={tree: {children: 2, expansions: 2, max_depth: 3}, margin: 0.0, "
            "fit: {steps: 2, batch_size: 8, seq_len: 32}}"]


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    """The recipe with its Tree-PLV arm. An untrained policy neither ends a step within 12
    tokens nor answers right, so (as in the train CLI's tree_plv test) a sample's first 3
    characters make a tree's step and the verifier is the parity of the text's length:
    mixed step values, every call still real."""
    from reasonjax.data.tasks.arithmetic import Arithmetic

    path = tmp_path_factory.mktemp("prm")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Arithmetic, "verify", lambda self, problem, text: len(text) % 2 == 0)
        mp.setattr("reasonjax.recipes.process_labels.first_step",
                   lambda delimiter, text, is_final: text[:3] or None)
        return replicate("prm", "tiny", MICRO + TREE_PLV + ["task.train_size=8"], path), path


@pytest.fixture(scope="module")
def gsm8k_micro(tmp_path_factory):
    path = tmp_path_factory.mktemp("prm-gsm8k")
    data = path / "gsm8k.jsonl"
    data.write_text("".join(json.dumps({
        "question": f"{a} cats, {b} come?",
        "answer": f"{a}+{b}=<<{a}+{b}={a + b}>>{a + b}\n#### {a + b}"}) + "\n"
        for a, b in [(1, 2), (3, 4), (2, 2), (5, 1), (4, 4), (6, 3), (7, 1), (2, 8)]))
    return replicate("prm", "tiny", MICRO + ["task.name=gsm8k", f"task.data_file={data}",
                                             "task.train_size=0", "tree_plv=null"],
                     path / "run"), path / "run"


def _finite_fraction(x):
    return math.isfinite(x) and 0.0 <= x <= 1.0


def test_prm_recipe_micro_end_to_end(micro):
    result, path = micro
    assert [r["labels"] for r in result.rows] == ["math_shepherd", "omegaprm",
                                                  "exact (ceiling)", "Tree-PLV (step pairs)"]
    *labelled, plv = result.rows
    for row in labelled:
        assert row["rollouts"] >= 0 and row["tokens generated"] >= 0
        for key in ("agreement with exact", "positive fraction", "PRM step accuracy",
                    "majority vote", "PRM-weighted vote", "best-of-N by PRM"):
            assert _finite_fraction(row[key]), (key, row[key])
    ms, om = result.rows[0], result.rows[1]
    assert om["rollouts"] <= ms["rollouts"]  # at most as many probes as prefixes
    assert ms["rollouts"] % 2 == 0 and ms["rollouts per label"] <= 2  # k=2 per prefix
    assert len({r["majority vote"] for r in result.rows}) == 1  # same samples, no PRM
    # Tree-PLV is ranked on pairs, not labelled: no label columns, its own votes.
    assert plv["tokens generated"] > 0 and math.isnan(plv["rollouts"])
    assert math.isnan(plv["PRM step accuracy"]) and math.isnan(plv["agreement with exact"])
    for key in ("PRM-weighted vote", "best-of-N by PRM"):
        assert _finite_fraction(plv[key])
    assert len(result.checks) == 8
    assert "PRM on omegaprm labels: weighted vote beats majority vote" in result.checks
    assert "Tree-PLV beats the BCE PRM (Math-Shepherd labels) at best-of-N" in result.checks
    text = result.report.read_text()
    assert "| labels | tokens generated | rollouts | rollouts per label | positive fraction " \
           "| agreement with exact | PRM step accuracy | majority vote | PRM-weighted vote |" \
        in text
    assert "Effect checks" in text and "hard labels agree on" in text
    assert "step pairs from best-first trees (2 expansions of 2 children" in text
    phases = [json.loads(line)["phase"] for line in
              (path / "metrics.jsonl").read_text().splitlines()]
    assert phases[-2:] == ["label-tree_plv", "prm-tree_plv"]
    pairs = json.loads((path / "phases" / "label-tree_plv" / "result.json").read_text())
    assert pairs["pairs"] and all(r["chosen"] != r["rejected"] and r["gap"] > 0
                                  for r in pairs["pairs"])
    for png in ("agreement_vs_rollouts.png", "prm_accuracy.png", "vote_accuracy.png"):
        assert (path / png).is_file()


def test_prm_recipe_runs_without_an_exact_step_checker(gsm8k_micro):
    result, path = gsm8k_micro
    assert [r["labels"] for r in result.rows] == ["math_shepherd", "omegaprm"]
    for row in result.rows:
        assert set(row) == {"labels", "tokens generated", "rollouts", "rollouts per label",
                            "positive fraction", "majority vote", "PRM-weighted vote",
                            "best-of-N by PRM"}
        assert row["rollouts"] >= 0 and row["rollouts per label"] >= 0
        for key in ("positive fraction", "majority vote", "PRM-weighted vote",
                    "best-of-N by PRM"):
            assert _finite_fraction(row[key]), (key, row[key])
    assert set(result.checks) == {
        "OmegaPRM spends fewer rollouts per label than Math-Shepherd",
        "PRM on math_shepherd labels: weighted vote beats majority vote",
        "PRM on omegaprm labels: weighted vote beats majority vote"}
    text = result.report.read_text()
    assert "no exact step checker" in text and "| agreement with exact" not in text
    assert (path / "vote_accuracy.png").is_file()
    assert not (path / "prm_accuracy.png").exists()
    phases = [json.loads(line)["phase"] for line in
              (path / "metrics.jsonl").read_text().splitlines()]
    assert phases == ["samples", "label-math_shepherd", "label-omegaprm", "prm-math_shepherd",
                      "prm-omegaprm"]  # no exact-label ceiling


def test_effects_pair_the_prm_with_the_baseline_on_the_steps_it_scored():
    """Synthetic outcomes with nothing to find: both labelers spend the same rollouts,
    agree with the exact labels half the time, the PRM is right exactly where always
    predicting the majority label is, and its vote equals majority vote. A step the PRM
    did not score (cut off by its seq_len) is left out of its pairing. Nothing is held."""
    from reasonjax.recipes.replicate import load_config

    cfg = load_config("prm", "tiny")
    exact = [[True, False]] * 50
    votes = {"majority": [1, 0] * 25, "weighted": [1, 0] * 25, "best_of_n": [0, 1] * 25}
    prm_out = {"step_hits": [1, 0] * 49 + [1], "step_labels": [1, 0] * 49 + [1],
               "votes": votes}
    labels = {"hard": [[1.0, 1.0]] * 50, "rollouts_each": [4] * 50, "rounds": 1}
    outcome = {"label": {"steps": [["a", "b"]] * 50, "correct": [False] * 50,
                         "exact": exact},
               "held": {"group": list(range(50)), "correct": [False] * 50, "exact": exact},
               "labels": {"math_shepherd": labels, "omegaprm": labels},
               "prms": {"math_shepherd": prm_out, "omegaprm": prm_out, "exact": prm_out},
               "labelers_agree": 1.0, "eval_problems": 50}
    found = prm.effects([outcome, outcome], cfg)
    assert len(found) == 7 and all(e.verdict != "held" for e in found), \
        [(e.claim, e.verdict) for e in found]
    baseline = [e for e in found if "majority-class baseline" in e.claim][0]
    assert baseline.value.estimate == 0.0 and baseline.problems == 99
