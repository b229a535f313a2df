"""TFDS ArrayRecord datasets (no TensorFlow) for a built-in task and local files, read back
through tfds.data_source and grain."""

import json
import subprocess
import sys

import pytest
import tensorflow_datasets as tfds

from reasonjax.data import pipeline as pl
from reasonjax.data import tfds_builders as tb
from reasonjax.data.local import LocalDataError
from reasonjax.data.task import TaskError, decode_problem, get_task
from reasonjax.models.tokenizer import CharTokenizer

TOK = CharTokenizer()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tfds")


@pytest.fixture(scope="module")
def countdown_name(data_dir):
    return tb.build_task_dataset("countdown", data_dir, difficulty="easy", name="small",
                                 sizes={"train": 24, "test": 8}, seed=3)


def test_task_dataset_matches_the_generator(countdown_name, data_dir):
    assert countdown_name == "reasonjax_countdown/small"
    ds = tfds.data_source(countdown_name, data_dir=str(data_dir), download=False)
    assert {k: len(v) for k, v in ds.items()} == {"train": 24, "test": 8}
    task = get_task("countdown", "easy")
    train = sorted((decode_problem(ds["train"][i]) for i in range(24)),
                   key=lambda p: p.meta["index"])
    assert train == task.generate(24, seed="3/train")
    test = [decode_problem(ds["test"][i]) for i in range(8)]
    assert not {p.question for p in test} & {p.question for p in train}  # no overlap
    for p in test:
        assert task.verify(p, task.solution(p)) and task.check_steps(p, p.steps).solved


def test_task_dataset_reads_through_grain(countdown_name, data_dir):
    source = pl.tfds_source(countdown_name, "train", str(data_dir))
    p = pl.make_pipeline(source, pl.sft_encoder(TOK), "sft", 96, 4, seed=0, num_epochs=1,
                         shard_index=0, shard_count=1)
    texts = [TOK.decode(row[seg > 0]) for b in p.dataset
             for row, seg in zip(b["tokens"], b["segment_ids"])]
    task = get_task("countdown", "easy")
    assert sorted(texts) == sorted(task.prompt(q) + task.solution(q)
                                   for q in task.generate(24, seed="3/train"))


def test_readable_without_reasonjax(countdown_name, data_dir):
    """tfds alone (fresh process, no builder class, no TensorFlow) reads the files."""
    code = ("import json, sys, tensorflow_datasets as tfds; "
            f"ds = tfds.data_source({countdown_name!r}, data_dir={str(data_dir)!r}, "
            "download=False); r = ds['train'][0]; "
            "print(json.dumps({'n': len(ds['train']), 'q': r['question'].decode(), "
            "'tf': 'tensorflow' in sys.modules}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=str(data_dir))
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["n"] == 24 and " -> " in got["q"] and got["tf"] is False


def test_local_manual_dir_dataset(tmp_path, data_dir):
    manual = tmp_path / "manual"
    manual.mkdir()
    rows = [{"question": f"What is {i} + {i}?", "answer": f"{i} + {i} = {2 * i}\n#### {2 * i}"}
            for i in range(6)]
    with open(manual / "train.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
        f.write('{"question": "broken"\n')
    (manual / "test.jsonl").write_text(json.dumps(rows[0]) + "\n")
    name = tb.build_local_dataset(manual, data_dir, "gsm8k")
    assert name == "reasonjax_local/gsm8k"
    ds = tfds.data_source(name, data_dir=str(data_dir), download=False)
    assert len(ds["train"]) == 6 and len(ds["test"]) == 1  # the broken line was skipped
    got = sorted(decode_problem(ds["train"][i]).answer for i in range(6))
    assert got == sorted(str(2 * i) for i in range(6))
    source = pl.tfds_source(name, "train", str(data_dir))
    batch, index = next(iter(pl.make_pipeline(source, pl.prompt_encoder(TOK), "prompt", 32, 3,
                                              shard_index=0, shard_count=1).dataset))
    for row, i in zip(batch["prompt_tokens"], index):
        assert TOK.decode(row) == source[int(i)].question + "\n"

    with pytest.raises(LocalDataError, match=r"train\.jsonl:7: invalid JSON"):
        tb.build_local_dataset(manual, data_dir, "gsm8k", name="strict", on_error="fail")


def test_builder_argument_errors(tmp_path):
    with pytest.raises(TaskError, match="pass name="):
        tb.build_task_dataset("maze", tmp_path, sizes={"train": 2})
    with pytest.raises(TaskError, match="no knob|unknown key"):
        tb.build_task_dataset("maze", tmp_path, name="x", depth=3)
    with pytest.raises(TaskError, match="no TFDS builder"):
        tb.build_task_dataset("gsm8k", tmp_path)
    with pytest.raises(TaskError, match="problem space is too small"):
        tb.build_task_dataset("arithmetic", tmp_path, name="tiny", n_ops=1, max_operand=2,
                              ops="+", sizes={"train": 20, "test": 5})
    with pytest.raises(ValueError, match="no <split>"):
        (tmp_path / "empty").mkdir()
        tb.build_local_dataset(tmp_path / "empty", tmp_path, "gsm8k")
