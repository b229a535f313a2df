"""Examples and batches in the formats of reasonjax.data.formats, against hand layouts."""

import numpy as np
import pytest

from reasonjax.data import formatting as fm
from reasonjax.data.formats import check_batch
from reasonjax.data.task import get_task
from reasonjax.models.tokenizer import CharTokenizer

TOK = CharTokenizer()
BOS, EOS = TOK.bos_id, TOK.eos_id


def ids(text):
    return TOK.encode(text)


def test_sft_layout():
    b = fm.sft_batch(TOK, ["1+2\n"], ["answer: 3"], seq_len=20)
    check_batch(b, "sft")
    seq = [BOS] + ids("1+2\n") + ids("answer: 3") + [EOS]
    n = len(seq)  # 1 + 4 + 9 + 1 = 15
    assert b["tokens"][0].tolist() == seq + [0] * (20 - n)
    assert b["loss_mask"][0].tolist() == [0] * 5 + [1] * 10 + [0] * 5
    assert b["positions"][0].tolist() == list(range(n)) + [0] * (20 - n)
    assert b["segment_ids"][0].tolist() == [1] * n + [0] * (20 - n)
    assert b["tokens"].dtype == np.int32 and b["loss_mask"].dtype == np.float32


def test_preference_and_step_pairs():
    b = fm.preference_batch(TOK, ["q\n"], ["good"], ["bad"], seq_len=10)
    check_batch(b, "preference")
    assert TOK.decode(b["chosen_tokens"][0]) == "q\ngood" and TOK.decode(b["rejected_tokens"][0]) == "q\nbad"
    assert b["chosen_loss_mask"][0].tolist() == [0, 0, 0, 1, 1, 1, 1, 1, 0, 0]
    assert b["rejected_loss_mask"][0].tolist() == [0, 0, 0, 1, 1, 1, 1, 0, 0, 0]

    ex = fm.encode_step_preference(TOK, "2*3+1\n", ["6+1"], "answer: 7", "answer: 8", "\n",
                                   chosen_final=True, rejected_final=True)
    ex2 = fm.encode_step_preference(TOK, "2*3+1\n", [], "6+1", "5+1", "\n")
    # shared context = prompt + previous steps with delimiters; loss only on the new step
    assert ex["chosen_tokens"].tolist() == [BOS] + ids("2*3+1\n6+1\nanswer: 7") + [EOS]
    assert ex["chosen_loss_mask"].tolist() == [0] * 11 + [1] * 10
    assert ex2["chosen_tokens"].tolist() == [BOS] + ids("2*3+1\n6+1\n")  # step + delimiter
    assert ex2["rejected_loss_mask"].sum() == 4


def test_value_layout_targets_at_step_ends():
    b = fm.value_batch(TOK, ["9-2\n"], [["7", "answer: 7"]], [[1.0, 0.5]], "\n", seq_len=20,
                       complete=[True])
    check_batch(b, "value")
    seq = [BOS] + ids("9-2\n") + ids("7\n") + ids("answer: 7") + [EOS]
    assert b["tokens"][0, :len(seq)].tolist() == seq
    assert len(seq) == 17
    ends = [6, 16]  # the "\n" after "7", and the eos
    assert np.flatnonzero(b["value_mask"][0]).tolist() == ends
    assert b["value_targets"][0, ends].tolist() == [1.0, 0.5]
    assert b["loss_mask"][0].tolist() == [0] * 5 + [1] * (len(seq) - 5) + [0] * (20 - len(seq))
    # partial solution: the last step ends with the delimiter, not eos
    ex = fm.encode_steps(TOK, "9-2\n", ["7"], [0.0], "\n", complete=False)
    assert ex["tokens"].tolist() == [BOS] + ids("9-2\n7\n") and ex["value_mask"][-1] == 1
    # joint rows without SFT
    j = fm.value_batch(TOK, ["9-2\n"], [["7"]], [[1.0]], "\n", 8, complete=[False], sft=[False])
    assert j["loss_mask"].sum() == 0 and j["value_mask"].sum() == 1
    with pytest.raises(ValueError, match="one target per step"):
        fm.encode_steps(TOK, "q", ["a", "b"], [1.0], "\n", complete=True)


def test_unpaired_and_prompt():
    b = fm.unpaired_batch(TOK, ["q\n", "r\n"], ["a", "b"], [True, False], seq_len=6)
    check_batch(b, "unpaired")
    assert b["desirable"].tolist() == [1.0, 0.0] and b["desirable"].dtype == np.float32
    p = fm.prompt_batch(TOK, ["12\n", "3\n"], length=5)
    check_batch(p, "prompt")
    assert p["prompt_tokens"].tolist() == [[0, BOS] + ids("12\n"), [0, 0, BOS] + ids("3\n")]
    assert p["prompt_mask"].tolist() == [[0, 1, 1, 1, 1], [0, 0, 1, 1, 1]]


def test_overflow_error_or_counted_truncation():
    with pytest.raises(fm.SequenceTooLong, match="example 1 has 13 tokens.*length 8"):
        fm.sft_batch(TOK, ["a\n", "abc\n"], ["x", "answer: 1"[:7]], seq_len=8)
    with pytest.warns(UserWarning, match="1 of 2 sft sequences .* truncated"):
        b = fm.sft_batch(TOK, ["a\n", "abc\n"], ["x", "answer"], seq_len=8, on_overflow="truncate")
    assert b["tokens"][1].tolist() == [BOS] + ids("abc\nans")
    assert b["segment_ids"][1].tolist() == [1] * 8
    with pytest.warns(UserWarning, match="truncated"):
        p = fm.prompt_batch(TOK, ["abcdef"], length=3, on_overflow="truncate")
    assert TOK.decode(p["prompt_tokens"][0]) == "def"  # prompts keep their end
    with pytest.raises(ValueError, match="on_overflow"):
        fm.sft_batch(TOK, ["a"], ["b"], 8, on_overflow="drop")


def test_task_texts_fit_char_tokenizer():
    task = get_task("countdown")
    ps = task.generate(8)
    b = fm.sft_batch(TOK, [task.prompt(p) for p in ps], [task.solution(p) for p in ps], 128)
    for row, p in zip(range(8), ps):
        sol = TOK.decode(b["tokens"][row][b["loss_mask"][row] > 0])
        assert sol == task.solution(p)


def test_mismatched_lengths():
    with pytest.raises(ValueError, match="different lengths"):
        fm.sft_batch(TOK, ["a", "b"], ["c"], 8)


def test_exact_process_labels_recipe_from_docstring():
    task = get_task("arithmetic")
    p = task.from_instance("2+3*4")
    steps = task.split_steps("2+12\nanswer: 15\n")  # slip at step 1
    check = task.check_steps(p, steps)
    ex = fm.encode_steps(TOK, task.prompt(p), steps, [float(c) for c in check.prefix_correct],
                         task.step_delimiter, complete=check.complete)
    assert ex["value_targets"][ex["value_mask"] > 0].tolist() == [1.0, 0.0]
    assert ex["tokens"][-1] == TOK.eos_id
