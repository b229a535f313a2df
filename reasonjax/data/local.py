"""Loaders for local GSM8K-, MATH- and multiple-choice-style files (JSONL, JSON, Parquet).

``load_local(path, format)`` reads every record into a :class:`Problem` of the task
``format`` (``gsm8k``, ``math``, ``mc``; see :mod:`reasonjax.data.tasks.real`). A record
that cannot be used (invalid JSON, bytes that are not UTF-8, a missing or mistyped field,
no extractable answer) is reported as ``file:line: reason``; with ``on_error="skip"``
(default) it is logged, counted and skipped, with ``on_error="fail"`` the first one
raises. An empty file, or a file with no usable record, is an error.

Accepted field names (override with ``fields={"question": "prompt", ...}``):

- gsm8k: question (or problem), answer (GSM8K's ``"...\\n#### 72"`` or ``"72"``),
  optional solution;
- math: problem (or question), solution (answer = its last ``\\boxed{}``) and/or answer;
- mc: question (a string, or ARC's ``{"stem", "choices"}``), choices (a list of strings,
  HF ARC's ``{"text": [...], "label": [...]}`` or a list of ``{"text", "label"}``),
  answerKey (or answer: a label or a 0-based index).

A path may be a ``.jsonl`` file (one object per line; blank lines are ignored), a
``.json`` file (one object or a list), a ``.parquet`` file, an ``.arrow`` file, or a
directory of such files (read in sorted order, e.g. MATH's one-JSON-per-problem layout).

Hugging Face datasets on disk load without the ``datasets`` library, without network and
without running a loading script: a ``save_to_disk`` directory of one split
(``data-*.arrow`` + ``state.json``), one split's ``<builder>-<split>*.arrow`` files of the
datasets cache (``~/.cache/huggingface/datasets/...``), or the hub cache's Parquet files
(``~/.cache/huggingface/hub/datasets--<org>--<name>/snapshots/<rev>/...``). Their
metadata JSON files are skipped; a directory holding several splits (a DatasetDict, a
cache directory) is refused with the path of one split to give instead.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

from reasonjax.data.task import Problem, TaskError, get_task
from reasonjax.errors import DataError, first_line

log = logging.getLogger(__name__)

FORMATS = ("gsm8k", "math", "mc")
SUFFIXES = (".jsonl", ".json", ".parquet", ".arrow")
# The metadata files of a Hugging Face datasets directory: never records.
HF_METADATA = ("dataset_info.json", "state.json", "dataset_dict.json")
_HF_SPLIT = re.compile(r"^.+?-([A-Za-z0-9_.]+?)(?:-\d{5}-of-\d{5})?\.arrow$")

_ALIASES = {
    "gsm8k": {"question": ("question", "problem"), "answer": ("answer",),
              "solution": ("solution",)},
    "math": {"question": ("problem", "question"), "answer": ("answer",),
             "solution": ("solution",)},
    "mc": {"question": ("question",), "choices": ("choices",),
           "answer": ("answerKey", "answer", "label")},
}
_REQUIRED = {"gsm8k": ("question", "answer"), "math": ("question",),
             "mc": ("question", "answer")}


class LocalDataError(DataError):
    """A local data file cannot be used; the message names the file (and line)."""


class RecordError(ValueError):
    """One record is unusable; the message says why."""


@dataclasses.dataclass
class LoadReport:
    """problems: the usable records; errors: ``file:line: reason`` for every skipped one;
    n_records: records seen (blank lines excluded)."""

    problems: list[Problem]
    errors: list[str]
    n_records: int

    @property
    def n_skipped(self) -> int:
        return len(self.errors)


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        _one_split(path)
        found = sorted(p for p in path.rglob("*") if p.suffix in SUFFIXES and p.is_file()
                       and p.name not in HF_METADATA
                       and not any(s.startswith(".") for s in p.relative_to(path).parts))
        if not found:
            raise LocalDataError(f"{path}: directory holds no {', '.join(SUFFIXES)} files")
        return found
    if not path.is_file():
        raise LocalDataError(f"{path}: no such file or directory")
    if path.suffix not in SUFFIXES:
        raise LocalDataError(f"{path}: unknown file type {path.suffix!r}; expected one of "
                             f"{SUFFIXES}")
    return [path]


def _one_split(path: Path) -> None:
    """Refuses a Hugging Face datasets directory that holds several splits (their records
    would be mixed): a ``save_to_disk`` DatasetDict, or a datasets cache directory with
    one ``<builder>-<split>[-NNNNN-of-NNNNN].arrow`` set per split."""
    if (path / "dataset_dict.json").is_file():
        try:
            splits = json.loads((path / "dataset_dict.json").read_text())["splits"]
        except (ValueError, KeyError, TypeError):
            splits = sorted(p.name for p in path.iterdir() if p.is_dir())
        raise LocalDataError(f"{path} is a DatasetDict saved with save_to_disk (splits "
                             f"{splits}); give one split's directory, e.g. {path / splits[0]}")
    if (path / "dataset_info.json").is_file():
        by_split: dict[str, list[str]] = {}
        for f in sorted(path.glob("*.arrow")):
            m = _HF_SPLIT.match(f.name)
            if m:
                by_split.setdefault(m.group(1), []).append(f.name)
        if len(by_split) > 1:
            raise LocalDataError(
                f"{path} is a datasets cache directory with splits {sorted(by_split)}; give "
                f"one split's file, e.g. {path / next(iter(by_split.values()))[0]}")


MAX_RECORD_BYTES = 2**20  # a JSONL line longer than this is skipped (or fatal), never parsed


def read_records(path: str | Path, max_record_bytes: int = MAX_RECORD_BYTES
                 ) -> Iterator[tuple[str, Any]]:
    """Yields (``file:line``, record dict) or (``file:line``, RecordError) for every record,
    so callers can report bad lines without stopping. A JSONL line over
    ``max_record_bytes`` is a RecordError, read past in bounded chunks."""
    for file in _files(Path(path)):
        if file.stat().st_size == 0:
            raise LocalDataError(f"{file}: the file is empty; expected {file.suffix} records")
        if file.suffix == ".jsonl":
            yield from _jsonl(file, max_record_bytes)
        elif file.suffix == ".arrow":
            yield from _arrow(file)
        elif file.suffix == ".json":
            yield from _json(file)
        else:
            yield from _parquet(file)


def _lines(f, limit: int) -> Iterator[tuple[bytes, int]]:
    """(line, its length) of a binary file; a line over ``limit`` bytes comes back empty
    with its true length, having been read past in chunks (memory stays bounded)."""
    while True:
        raw = f.readline(limit + 1)
        if not raw:
            return
        if len(raw) <= limit or raw.endswith(b"\n"):
            yield raw, len(raw)
            continue
        size = len(raw)
        while not raw.endswith(b"\n"):
            raw = f.readline(2**20)
            if not raw:
                break
            size += len(raw)
        yield b"", size


def _jsonl(file: Path, limit: int = MAX_RECORD_BYTES) -> Iterator[tuple[str, Any]]:
    with open(file, "rb") as f:
        for lineno, (raw, size) in enumerate(_lines(f, limit), start=1):
            where = f"{file}:{lineno}"
            if size > limit:
                yield where, RecordError(f"the record is {size:,} bytes, over the "
                                         f"{limit:,}-byte limit (max_record_bytes)")
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield where, RecordError(
                    f"not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1}); "
                    "re-encode the file as UTF-8")
                continue
            if not line.strip():
                continue
            yield where, _parse_json(line)


def _parse_json(text: str):
    try:
        record = json.loads(text)
    except json.JSONDecodeError as e:
        return RecordError(f"invalid JSON: {e.msg} (column {e.colno})")
    if not isinstance(record, dict):
        return RecordError(f"expected a JSON object, got {type(record).__name__}")
    return record


def _json(file: Path) -> Iterator[tuple[str, Any]]:
    try:
        text = file.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise LocalDataError(f"{file}: not valid UTF-8 (byte offset {e.start}); re-encode the "
                             "file as UTF-8") from None
    if not text.strip():
        raise LocalDataError(f"{file}: the file is empty; expected JSON records")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise LocalDataError(f"{file}:{e.lineno}: invalid JSON: {e.msg} (column {e.colno})") \
            from None
    items = data if isinstance(data, list) else [data]
    for i, record in enumerate(items):
        where = f"{file}[{i}]" if isinstance(data, list) else str(file)
        if not isinstance(record, dict):
            yield where, RecordError(f"expected a JSON object, got {type(record).__name__}")
        else:
            yield where, record


def _arrow(file: Path) -> Iterator[tuple[str, Any]]:
    """An Arrow IPC file: the stream format Hugging Face datasets writes (save_to_disk,
    its cache), or the random-access file format; read with pyarrow, no datasets code."""
    try:
        import pyarrow as pa
    except ImportError:
        raise LocalDataError(f"{file}: reading Arrow needs pyarrow (pip install pyarrow)") \
            from None
    row = 0
    with pa.memory_map(str(file)) as source:
        try:
            try:
                reader = pa.ipc.open_stream(source)
            except pa.ArrowInvalid:
                source.seek(0)
                reader = pa.ipc.open_file(source)
            batches = (iter(reader) if isinstance(reader, pa.ipc.RecordBatchStreamReader)
                       else (reader.get_batch(i) for i in range(reader.num_record_batches)))
            for batch in batches:
                for record in batch.to_pylist():
                    yield f"{file}:row {row}", record
                    row += 1
        except (pa.ArrowException, OSError) as e:  # truncated data raises OSError
            raise LocalDataError(f"{file}: not a readable Arrow file after row {row} "
                                 f"({first_line(e)}); the file is truncated or corrupt") from None


def _parquet(file: Path) -> Iterator[tuple[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise LocalDataError(f"{file}: reading Parquet needs pyarrow (pip install pyarrow)") \
            from None
    try:
        pf = pq.ParquetFile(file)
    except Exception as e:  # noqa: BLE001 - pyarrow raises ArrowInvalid, OSError, ...
        raise LocalDataError(f"{file}: not a readable Parquet file: {e}") from None
    row = 0
    batches = pf.iter_batches(batch_size=1024)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except Exception as e:  # noqa: BLE001 - corrupt pages: OSError, ArrowInvalid, ...
            raise LocalDataError(f"{file}: unreadable after row {row} ({first_line(e)}); "
                                 "the file is truncated or corrupt") from None
        for record in batch.to_pylist():
            yield f"{file}:row {row}", record
            row += 1


def _field(record: Mapping, format: str, key: str, fields: Mapping[str, str],
           required: bool) -> Any:
    names = (fields[key],) if key in fields else _ALIASES[format][key]
    for name in names:
        if name in record and record[name] is not None:
            return record[name]
    if required:
        raise RecordError(f"missing field {names[0]!r} (the record has keys "
                          f"{sorted(record)}); name it with fields={{{key!r}: ...}}")
    return None


def _text(value: Any, name: str) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise RecordError(f"field {name!r} must be a string, got {type(value).__name__}")
    return value


def problem_from_record(record: Mapping, format: str,
                        fields: Optional[Mapping[str, str]] = None) -> Problem:
    """A Problem of task ``format`` from one record; raises RecordError saying why not."""
    fields = dict(fields or {})
    task = get_task(format)
    get = lambda key: _field(record, format, key, fields,  # noqa: E731
                             key in _REQUIRED[format])
    try:
        if format == "gsm8k":
            solution = get("solution")
            return task.from_instance(_text(get("question"), "question"),
                                      _text(get("answer"), "answer"),
                                      None if solution is None else _text(solution, "solution"))
        if format == "math":
            answer, solution = get("answer"), get("solution")
            if answer is None and solution is None:
                raise RecordError("needs a 'solution' with \\boxed{} or an 'answer' field")
            return task.from_instance(
                _text(get("question"), "question"),
                None if answer is None else _text(answer, "answer"),
                None if solution is None else _text(solution, "solution"))
        question = get("question")
        choices = get("choices")
        if isinstance(question, dict):  # original ARC: {"stem", "choices": [{text, label}]}
            choices = question.get("choices", choices)
            question = question.get("stem")
        if choices is None:
            raise RecordError("missing field 'choices' (or question.choices)")
        texts, labels = _choices(choices)
        answer = get("answer")
        if not isinstance(answer, (str, int)) or isinstance(answer, bool):
            raise RecordError(f"field 'answer' must be a label or an index, got {answer!r}")
        return task.from_instance(_text(question, "question"), texts, answer, labels)
    except TaskError as e:
        raise RecordError(str(e)) from None


def _choices(choices: Any) -> tuple[list[str], Optional[list[str]]]:
    if isinstance(choices, dict) and "text" in choices:
        labels = choices.get("label")
        return [_text(t, "choices.text") for t in choices["text"]], \
            None if labels is None else [_text(x, "choices.label") for x in labels]
    if isinstance(choices, list) and choices and all(isinstance(c, dict) for c in choices):
        try:
            return [_text(c["text"], "choices.text") for c in choices], \
                [_text(c["label"], "choices.label") for c in choices]
        except KeyError as e:
            raise RecordError(f"a choice lacks the key {e.args[0]!r}") from None
    if isinstance(choices, list):
        return [_text(c, "choices") for c in choices], None
    raise RecordError(f"field 'choices' must be a list or {{'text', 'label'}}, got "
                      f"{type(choices).__name__}")


def load_local(path: str | Path, format: str, on_error: str = "skip",
               fields: Optional[Mapping[str, str]] = None,
               max_record_bytes: int = MAX_RECORD_BYTES) -> LoadReport:
    """Reads ``path`` into Problems of task ``format`` (see module docstring); JSONL
    records over ``max_record_bytes`` are bad records (skipped and counted, or fatal)."""
    if format not in FORMATS:
        raise LocalDataError(f"format must be one of {FORMATS}, got {format!r}")
    if on_error not in ("skip", "fail"):
        raise LocalDataError(f"on_error must be 'skip' or 'fail', got {on_error!r}")
    problems, errors, n = [], [], 0
    for where, record in read_records(path, max_record_bytes):
        n += 1
        try:
            if isinstance(record, RecordError):
                raise record
            p = problem_from_record(record, format, fields)
        except RecordError as e:
            message = f"{where}: {e}"
            if on_error == "fail":
                raise LocalDataError(message + " (on_error='skip' skips bad records)") \
                    from None
            log.warning("skipped %s", message)
            errors.append(message)
            continue
        problems.append(dataclasses.replace(p, meta={**p.meta, "source": where}))
    if n == 0:
        raise LocalDataError(f"{path}: no records (only blank lines)")
    if not problems:
        raise LocalDataError(f"{path}: none of the {n} records is usable; first error: "
                             f"{errors[0]}")
    return LoadReport(problems=problems, errors=errors, n_records=n)
