"""Local GSM8K / MATH / multiple-choice loaders and their bad-input reports."""

import json

import pytest

from reasonjax.data import local
from reasonjax.data.local import LocalDataError, load_local
from reasonjax.data.task import get_task

GSM = [
    {"question": "Tom has 3 apples and buys 4. How many?",
     "answer": "He has 3 + 4 = <<3+4=7>>7 apples.\n#### 7"},
    {"question": "A pen costs $2. What do 500 pens cost?", "answer": "2 * 500 = 1000\n#### 1,000"},
]
MATH = [
    {"problem": "What is $1/2 + 1/4$?", "solution": "We add.\n\nSo it is $\\boxed{\\frac{3}{4}}$.",
     "level": "Level 1", "type": "Algebra"},
    {"problem": "Compute $2^3$.", "answer": "8"},
]
ARC_HF = {"question": "Which is a gas?", "choices": {"text": ["rock", "steam", "ice"],
                                                     "label": ["A", "B", "C"]}, "answerKey": "B"}
ARC_ORIG = {"question": {"stem": "Which is hot?", "choices": [
    {"text": "sun", "label": "1"}, {"text": "snow", "label": "2"}]}, "answerKey": "1"}
MC_PLAIN = {"question": "2+2?", "choices": ["3", "4"], "answer": 1}


def _jsonl(path, records, extra_lines=()):
    with open(path, "wb") as f:
        for r in records:
            f.write((json.dumps(r) + "\n").encode())
        for line in extra_lines:
            f.write(line)
    return path


def test_gsm8k_jsonl(tmp_path):
    report = load_local(_jsonl(tmp_path / "g.jsonl", GSM), "gsm8k")
    a, b = report.problems
    assert a.steps == ("He has 3 + 4 = 7 apples.", "#### 7") and a.answer == "7"
    assert b.answer == "1,000" and a.meta["source"] == f"{tmp_path / 'g.jsonl'}:1"
    task = get_task("gsm8k")
    assert task.verify(b, "so 1000 in total\n#### 1000")
    assert not task.verify(b, "#### 100")
    assert report.n_records == 2 and report.n_skipped == 0


def test_math_json_list_and_parquet(tmp_path):
    (tmp_path / "m.json").write_text(json.dumps(MATH))
    report = load_local(tmp_path / "m.json", "math")
    a, b = report.problems
    assert a.answer == r"\frac{3}{4}" and a.steps == ("We add.", r"So it is $\boxed{\frac{3}{4}}$.")
    assert b.answer == "8" and b.steps[-1] == r"The answer is $\boxed{8}$."
    task = get_task("math")
    assert task.step_delimiter == "\n\n"
    assert task.verify(a, r"Adding gives \boxed{0.75}") and not task.verify(a, r"\boxed{3/5}")

    import pyarrow as pa
    import pyarrow.parquet as pq
    table = pa.Table.from_pylist([{"problem": r["problem"], "solution": r.get("solution"),
                                   "answer": r.get("answer")} for r in MATH])
    pq.write_table(table, tmp_path / "m.parquet")
    again = load_local(tmp_path / "m.parquet", "math").problems
    assert [(p.question, p.answer) for p in again] == [(p.question, p.answer) for p in report.problems]
    assert again[0].meta["source"].endswith("m.parquet:row 0")


def test_multiple_choice_layouts(tmp_path):
    report = load_local(_jsonl(tmp_path / "arc.jsonl", [ARC_HF, ARC_ORIG, MC_PLAIN]), "mc")
    a, b, c = report.problems
    assert a.question == "Which is a gas?\nA) rock\nB) steam\nC) ice" and a.answer == "B"
    assert b.answer == "A" and b.question.endswith("A) sun\nB) snow")  # relettered
    assert c.answer == "B"
    task = get_task("mc")
    assert task.prompt(a).endswith("C) ice\n")
    assert task.verify(a, "The answer is (B).") and task.verify(a, "answer: b")
    assert not task.verify(a, "answer: A")


def test_directory_of_files(tmp_path):
    (tmp_path / "algebra").mkdir()
    for i, record in enumerate(MATH):
        (tmp_path / "algebra" / f"{i}.json").write_text(json.dumps(record))
    assert [p.answer for p in load_local(tmp_path, "math").problems] == [r"\frac{3}{4}", "8"]


def test_bad_lines_are_reported_skipped_and_counted(tmp_path, caplog):
    path = _jsonl(tmp_path / "bad.jsonl", GSM[:1], extra_lines=[
        b'{"question": "x", "answer": "#### 1"\n',                 # line 2: malformed JSON
        b'{"question": "y"}\n',                                     # line 3: missing field
        b'{"question": "caf\xe9", "answer": "#### 2"}\n',          # line 4: latin-1 byte
        b"\n",                                                       # line 5: blank, ignored
        b'[1, 2]\n',                                                 # line 6: not an object
        b'{"question": 5, "answer": {"a": 1}}\n',                   # line 7: wrong type
        b'{"question": "z", "answer": "####  "}\n',                 # line 8: empty answer
    ] + [(json.dumps(GSM[1]) + "\n").encode()])                     # line 9: good
    with caplog.at_level("WARNING"):
        report = load_local(path, "gsm8k")
    assert len(report.problems) == 2 and report.n_skipped == 6 and report.n_records == 8
    where = [e.split(": ", 1)[0] for e in report.errors]
    assert where == [f"{path}:{n}" for n in (2, 3, 4, 6, 7, 8)]
    reasons = dict(e.split(": ", 1) for e in report.errors)
    assert "invalid JSON" in reasons[f"{path}:2"]
    assert "missing field 'answer'" in reasons[f"{path}:3"] and "fields=" in reasons[f"{path}:3"]
    assert "not valid UTF-8" in reasons[f"{path}:4"] and "0xe9" in reasons[f"{path}:4"]
    assert "expected a JSON object" in reasons[f"{path}:6"]
    assert "must be a string" in reasons[f"{path}:7"]
    assert "answer is empty" in reasons[f"{path}:8"]
    assert sum("skipped" in r.message for r in caplog.records) == 6


def test_fail_mode_stops_at_first_bad_line(tmp_path):
    path = _jsonl(tmp_path / "bad.jsonl", GSM, extra_lines=[b"{oops\n"])
    with pytest.raises(LocalDataError, match=r"bad\.jsonl:3: invalid JSON"):
        load_local(path, "gsm8k", on_error="fail")


def test_empty_and_all_bad_files_are_errors(tmp_path):
    (tmp_path / "empty.jsonl").write_bytes(b"")
    with pytest.raises(LocalDataError, match="empty"):
        load_local(tmp_path / "empty.jsonl", "gsm8k")
    (tmp_path / "blank.jsonl").write_bytes(b"\n  \n")
    with pytest.raises(LocalDataError, match="no records"):
        load_local(tmp_path / "blank.jsonl", "gsm8k")
    _jsonl(tmp_path / "allbad.jsonl", [{"q": 1}, {"q": 2}])
    with pytest.raises(LocalDataError, match="none of the 2 records.*allbad.jsonl:1"):
        load_local(tmp_path / "allbad.jsonl", "gsm8k")
    with pytest.raises(LocalDataError, match="no such file"):
        load_local(tmp_path / "missing.jsonl", "gsm8k")
    (tmp_path / "data.csv").write_text("a,b\n")
    with pytest.raises(LocalDataError, match="unknown file type"):
        load_local(tmp_path / "data.csv", "gsm8k")
    with pytest.raises(LocalDataError, match="format must be"):
        load_local(tmp_path / "empty.jsonl", "csv")


def test_field_mapping(tmp_path):
    path = _jsonl(tmp_path / "x.jsonl", [{"prompt": "1+1?", "target": "2"}])
    with pytest.raises(LocalDataError, match="missing field 'question'"):
        load_local(path, "gsm8k", on_error="fail")
    (p,) = load_local(path, "gsm8k", fields={"question": "prompt", "answer": "target"}).problems
    assert (p.question, p.answer, p.steps) == ("1+1?", "2", ("#### 2",))


def test_read_records_yields_errors_in_place(tmp_path):
    path = _jsonl(tmp_path / "r.jsonl", GSM[:1], extra_lines=[b"nope\n"])
    items = list(local.read_records(path))
    assert isinstance(items[0][1], dict) and isinstance(items[1][1], local.RecordError)


def test_an_over_long_record_is_skipped_in_bounded_memory(tmp_path):
    """A 20 MB line between two good records: skipped and counted with its size, the
    records after it still read, and never held whole (read in chunks of the limit)."""
    good = json.dumps({"question": "What is 1 + 1?", "answer": "#### 2"})
    path = tmp_path / "big.jsonl"
    with open(path, "w") as f:
        f.write(good + "\n" + json.dumps({"question": "x" * 20_000_000, "answer": "#### 3"})
                + "\n" + good + "\n")
    report = load_local(path, "gsm8k", max_record_bytes=4096)
    assert len(report.problems) == 2 and report.n_skipped == 1
    assert report.errors == [f"{path}:2: the record is 20,000,037 bytes, over the 4,096-byte "
                             "limit (max_record_bytes)"]
    assert report.problems[1].meta["source"] == f"{path}:3"


def test_hugging_face_datasets_on_disk_load_without_the_datasets_library(tmp_path,
                                                                           monkeypatch):
    """save_to_disk directories and the datasets cache, written by the real `datasets`
    library, read back through pyarrow alone (the library is hidden while loading)."""
    import sys

    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    rows = {"question": [r["question"] for r in GSM], "answer": [r["answer"] for r in GSM]}
    train = datasets.Dataset.from_dict(rows)
    test = datasets.Dataset.from_dict({k: v[:2] for k, v in rows.items()})
    train.save_to_disk(str(tmp_path / "one"))
    datasets.DatasetDict({"train": train, "test": test}).save_to_disk(str(tmp_path / "dict"))
    _jsonl(tmp_path / "train.jsonl", GSM)
    _jsonl(tmp_path / "test.jsonl", GSM[:2])
    datasets.load_dataset("json", data_files={"train": str(tmp_path / "train.jsonl"),
                                              "test": str(tmp_path / "test.jsonl")},
                          cache_dir=str(tmp_path / "cache"))
    cache = next(p.parent for p in (tmp_path / "cache").rglob("dataset_info.json"))
    test_arrow = next(p for p in cache.glob("*-test*.arrow"))
    monkeypatch.setitem(sys.modules, "datasets", None)          # no datasets code below
    expected = [p.question for p in load_local(tmp_path / "train.jsonl", "gsm8k").problems]
    assert [p.question for p in load_local(tmp_path / "one", "gsm8k").problems] == expected
    split = load_local(tmp_path / "dict" / "test", "gsm8k").problems
    assert [p.answer for p in split] == [p.answer for p in
                                        load_local(tmp_path / "test.jsonl", "gsm8k").problems]
    assert split[0].meta["source"].endswith("data-00000-of-00001.arrow:row 0")
    assert len(load_local(test_arrow, "gsm8k").problems) == 2
    with pytest.raises(LocalDataError, match=r"DatasetDict saved with save_to_disk \(splits "
                                             r"\['train', 'test'\]\); give one split's"):
        load_local(tmp_path / "dict", "gsm8k")
    with pytest.raises(LocalDataError, match=r"datasets cache directory with splits "
                                             r"\['test', 'train'\]"):
        load_local(cache, "gsm8k")


def test_a_truncated_arrow_file_names_the_file(tmp_path):
    import pyarrow as pa

    table = pa.table({"question": [f"q{i}" for i in range(500)],
                      "answer": [f"#### {i}" for i in range(500)]})
    with pa.OSFile(str(tmp_path / "d.arrow"), "wb") as sink:
        with pa.ipc.new_stream(sink, table.schema) as writer:
            for batch in table.to_batches(max_chunksize=100):
                writer.write_batch(batch)
    data = (tmp_path / "d.arrow").read_bytes()
    (tmp_path / "d.arrow").write_bytes(data[:len(data) // 2])
    with pytest.raises(LocalDataError, match=r"d.arrow: not a readable Arrow file after row"):
        load_local(tmp_path / "d.arrow", "gsm8k")
