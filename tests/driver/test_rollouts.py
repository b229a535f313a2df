"""Host-side labelling of rollouts: preference pairs from grouped samples and per-step
process labels, checked against hand-written expectations."""

import numpy as np

from reasonjax.data.task import get_task
from reasonjax.driver.rollouts import Rollouts, preference_pairs, process_labels

ARITH = get_task("arithmetic")


def _rollouts(completions, correct):
    R = len(completions)
    return Rollouts(batch={}, completions=list(completions),
                    rewards=np.asarray(correct, np.float32), correct=np.asarray(correct, bool),
                    lengths=np.zeros(R, np.int32))


def test_preference_pairs_pair_right_with_wrong_in_order_per_group():
    p0, p1, p2 = (ARITH.from_instance(e) for e in ("2+3", "4*5", "9-1"))
    # n=3: problem 0 has two right (a, c) and one wrong (b) -> one pair (a, b);
    # problem 1 is all right -> none; problem 2 has one right (f), two wrong (d, e) -> (f, d).
    ro = _rollouts(["a", "b", "c", "x", "y", "z", "d", "e", "f"],
                   [1, 0, 1, 1, 1, 1, 0, 0, 1])
    prompts, chosen, rejected = preference_pairs(ARITH, [p0, p1, p2], ro, 3)
    assert prompts == ["2+3\n", "9-1\n"]
    assert chosen == ["a", "f"]
    assert rejected == ["b", "d"]


def test_preference_pairs_none_when_groups_agree():
    p = ARITH.from_instance("2+3")
    assert preference_pairs(ARITH, [p], _rollouts(["u", "v"], [0, 0]), 2) == ([], [], [])


def test_process_labels_exact_task_marks_steps_after_the_first_error():
    p = ARITH.from_instance("2+3*4")  # 2+12 -> 14
    assert process_labels(ARITH, p, "2+12\n14\nanswer: 14") == (
        ["2+12", "14", "answer: 14"], [1.0, 1.0, 1.0], True)
    # wrong reduction at step 0: every prefix is wrong; an answer step makes it complete
    assert process_labels(ARITH, p, "5*4\nanswer: 20\n") == (
        ["5*4", "answer: 20"], [0.0, 0.0], True)
    # right step, then a wrong answer; no answer step at all -> incomplete
    assert process_labels(ARITH, p, "2+12\nanswer: 15") == (
        ["2+12", "answer: 15"], [1.0, 0.0], True)
    assert process_labels(ARITH, p, "2+12") == (["2+12"], [1.0], False)


def test_process_labels_outcome_for_every_step_without_a_step_checker():
    gsm = get_task("gsm8k")
    p = gsm.from_instance("Tom has 3 apples and buys 4. How many?", "#### 7")
    assert process_labels(gsm, p, "3+4=7\n#### 7") == (["3+4=7", "#### 7"], [1.0, 1.0], True)
    assert process_labels(gsm, p, "3+4=8\n#### 8") == (["3+4=8", "#### 8"], [0.0, 0.0], True)
    # an empty completion is one empty step, labelled with the (failed) outcome
    assert process_labels(gsm, p, "") == ([""], [0.0], False)
