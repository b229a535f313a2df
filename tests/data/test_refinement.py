"""GLoRe refinement prompts and training pairs, against hand-written values."""

import random

import pytest

from reasonjax.data.refinement import (RefineFormat, first_error_from_scores, global_examples,
                                       global_prompt, local_examples, local_prompt,
                                       local_solution)
from reasonjax.data.task import get_task
from reasonjax.errors import ConfigError

TASK = get_task("arithmetic")
P = TASK.from_instance("1+2*3+4")  # 1+6+4 -> 7+4 -> answer: 11
FMT = RefineFormat(draft="D:\n{draft}\n", global_marker="G:\n", local_marker="L:\n",
                   mark="!")


def test_global_and_local_prompts():
    draft = "1+6+4\n7+5\nanswer: 12"
    assert global_prompt(TASK, P, draft, FMT) == "1+2*3+4\nD:\n" + draft + "\nG:\n"
    steps = TASK.split_steps(draft)
    assert local_prompt(TASK, P, steps, 1, FMT) == \
        "1+2*3+4\nD:\n1+6+4\n!7+5\nanswer: 12\nL:\n1+6+4\n"
    assert local_prompt(TASK, P, steps, 0, FMT).endswith("D:\n!1+6+4\n7+5\nanswer: 12\nL:\n")
    assert local_solution(TASK, steps, 1, "7+4\nanswer: 11") == "1+6+4\n7+4\nanswer: 11"
    with pytest.raises(ValueError, match="first_error=3"):
        local_prompt(TASK, P, steps, 3, FMT)


def test_format_fields_are_checked():
    with pytest.raises(ConfigError, match="draft"):
        RefineFormat(draft="x")
    with pytest.raises(ConfigError, match="mark"):
        RefineFormat(mark="")
    with pytest.raises(ConfigError, match="local_marker"):
        RefineFormat(global_marker="r:\n", local_marker="r:\n")


def test_first_error_from_scores():
    assert first_error_from_scores([0.9, 0.6, 0.4, 0.8]) == 2
    assert first_error_from_scores([0.9, 0.6], threshold=0.7) == 1
    assert first_error_from_scores([0.9, 0.8]) is None and first_error_from_scores([]) is None


def test_global_pairs_every_distinct_wrong_draft_with_a_right_target():
    right = "1+6+4\n7+4\nanswer: 11"
    attempts = ["1+6+4\n7+5\nanswer: 12", right, "1+6+4\n7+5\nanswer: 12", "3*3+4\nanswer: 13"]
    pairs = global_examples(TASK, P, attempts, [False, True, False, False], FMT,
                            random.Random(0))
    assert pairs == [(global_prompt(TASK, P, attempts[0], FMT), right),
                     (global_prompt(TASK, P, attempts[3], FMT), right)]
    assert global_examples(TASK, P, attempts[:1], [False], FMT, random.Random(0)) == []
    ref = global_examples(TASK, P, attempts[:1], [False], FMT, random.Random(0),
                          per_draft=2, reference=True)
    assert [c for _, c in ref] == [TASK.solution(P)] * 2


def test_local_pairs_rewrite_from_the_exact_first_error():
    right = "1+6+4\n7+4\nanswer: 11"
    late = "1+6+4\n7+5\nanswer: 12"     # first error at step 1: the prefix "1+6+4" is shared
    early = "3*3+4\nanswer: 13"         # first error at step 0: any right solution fits
    unanswered = "1+6+4"                # no wrong step: not a local-refinement draft
    pairs = local_examples(TASK, P, [late, right, early, unanswered],
                           [False, True, False, False], FMT, random.Random(0))
    assert pairs == [
        (local_prompt(TASK, P, TASK.split_steps(late), 1, FMT), "7+4\nanswer: 11"),
        (local_prompt(TASK, P, TASK.split_steps(early), 0, FMT), right)]
    # a right solution with another prefix does not fit a late error
    other = "1+2*3+4\n1+6+4\n7+4\nanswer: 11"
    assert local_examples(TASK, P, [late, other], [False, True], FMT,
                          random.Random(0)) == []
    ref = local_examples(TASK, P, [late], [False], FMT, random.Random(0), reference=True)
    assert ref == [(local_prompt(TASK, P, TASK.split_steps(late), 1, FMT),
                    "7+4\nanswer: 11")]
