"""Revision prompts, edit distance, revision training pairs and chain votes, against
hand-written values."""

import random

import pytest

from reasonjax.data.revisions import (RevisionFormat, chain_vote, edit_distance,
                                      revision_examples, revision_prompt)
from reasonjax.data.task import get_task
from reasonjax.errors import ConfigError

TASK = get_task("arithmetic")
P = TASK.from_instance("2+3*4")  # 2+12 -> answer: 14


def test_prompt_shows_the_last_window_attempts_then_the_marker():
    fmt = RevisionFormat(window=2, attempt="A:\n{attempt}\n", marker="R:\n")
    assert revision_prompt(TASK, P, [], fmt) == "2+3*4\n"
    assert revision_prompt(TASK, P, ["5*4\nanswer: 20"], fmt) == \
        "2+3*4\nA:\n5*4\nanswer: 20\nR:\n"
    assert revision_prompt(TASK, P, ["a", "b", "c"], fmt) == "2+3*4\nA:\nb\nA:\nc\nR:\n"


def test_format_fields_are_checked():
    with pytest.raises(ConfigError, match="window"):
        RevisionFormat(window=0)
    with pytest.raises(ConfigError, match="attempt"):
        RevisionFormat(attempt="previous:")
    with pytest.raises(ConfigError, match="marker"):
        RevisionFormat(marker="")


def test_edit_distance_hand_computed():
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance("", "abc") == 3
    assert edit_distance("answer: 14", "answer: 14") == 0
    assert edit_distance("answer: 20", "answer: 14") == 2


def test_examples_put_wrong_attempts_before_a_right_target_nearest_last():
    fmt = RevisionFormat(window=4, attempt="{attempt}|", marker="R:")
    right = "2+12\nanswer: 14"
    wrong = ["5*4\nanswer: 20", "2+12\nanswer: 15", "5*4\nanswer: 20"]
    pairs = revision_examples(TASK, P, [wrong[0], right, wrong[1], wrong[2]],
                              [False, True, False, False], fmt, random.Random(0),
                              per_problem=40)
    assert len(pairs) == 40 and all(c == right for _, c in pairs)
    contexts = {p for p, _ in pairs}
    # 0, 1 or 2 distinct wrong attempts; with both, the nearer one ("...15") is last
    assert contexts == {"2+3*4\n", "2+3*4\n" + wrong[0] + "|R:",
                        "2+3*4\n" + wrong[1] + "|R:",
                        "2+3*4\n" + wrong[0] + "|" + wrong[1] + "|R:"}


def test_examples_need_a_target_and_a_wrong_attempt():
    fmt = RevisionFormat()
    rng = random.Random(0)
    assert revision_examples(TASK, P, ["2+12\nanswer: 14"], [True], fmt, rng) == []
    assert revision_examples(TASK, P, ["answer: 1"], [False], fmt, rng) == []
    pairs = revision_examples(TASK, P, ["answer: 1"], [False], fmt, rng, per_problem=3,
                              reference=True)
    assert all(c == "2+12\nanswer: 14" for _, c in pairs) and len(pairs) == 3
    with pytest.raises(ValueError, match="labels"):
        revision_examples(TASK, P, ["a"], [], fmt, rng)


def test_chain_vote_majority_then_latest():
    assert chain_vote(["1", "2", "2"]) == 2
    assert chain_vote(["1", "2"]) == 1                 # tie: the latest answer
    assert chain_vote(["2", "1", "2", "1", None]) == 3
    assert chain_vote([" 7", "8", "7 "]) == 2          # normalised: 7 twice
    assert chain_vote([None, None]) is None and chain_vote([]) is None
