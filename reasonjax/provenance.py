"""What a run directory was made from, so a rerun resumes only what it would recompute.

A run directory (``reasonjax train``, a recipe) records its resolved settings and the
fingerprints of its input files (checkpoint, data file) the first time it is opened;
reopening it with anything different stops with one line naming the differing fields and
the two ways out. A field added to a config class since the run started, at its default,
is not a difference (:func:`fill_added_fields`: a new field's default keeps the behaviour
the run was made with). Cached intermediates (samples, labels) carry the settings that made
them (:func:`stamp` / :func:`matches`) and are rebuilt when those differ::

    settings = {"kind": "sft", "task": ..., "config": to_dict(cfg),
                "inputs": {"data": fingerprint("gsm8k.jsonl")}}
    check_or_record(run_dir / "run.json", settings)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any, Optional

from reasonjax.errors import RunDirError

_HASHED_BYTES = 64 * 2**20  # files up to this size are hashed whole; larger: size + ends


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    size = path.stat().st_size
    with open(path, "rb") as f:
        if size <= _HASHED_BYTES:
            for chunk in iter(lambda: f.read(2**20), b""):
                h.update(chunk)
        else:  # a multi-GB weight shard: its size and first / last MiB
            h.update(str(size).encode())
            h.update(f.read(2**20))
            f.seek(size - 2**20)
            h.update(f.read(2**20))
    return h.hexdigest()[:16]


def fingerprint(path: Optional[str | Path]) -> Optional[str]:
    """A short digest of a file, or of a directory's files (names, and contents as in
    :func:`_file_digest`); None for None. Moving or copying the input keeps it."""
    if path is None:
        return None
    path = Path(path)
    if path.is_file():
        return _file_digest(path)
    if not path.is_dir():
        return "missing"
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = f.relative_to(path)
        if any(part.startswith(".") for part in rel.parts):
            continue  # temporaries of an interrupted write
        h.update(str(rel).encode())
        h.update(_file_digest(f).encode())
    return h.hexdigest()[:16]


def diff(saved: Any, now: Any) -> list[str]:
    """``field: old -> new`` for every leaf that differs between two JSON-like trees,
    shallowest fields first (``data.task`` before ``data.knobs.n_ops``)."""
    found: list[tuple[int, str, str]] = []

    def walk(a, b, path):
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b), key=str):
                walk(a.get(k), b.get(k), path + (str(k),))
        elif a != b:
            found.append((len(path), ".".join(path), f"{'.'.join(path)}: {a!r} -> {b!r}"))

    walk(saved, now, ())
    return [line for _, _, line in sorted(found)]


def _plain(settings: Any) -> Any:
    return json.loads(json.dumps(settings, default=str))


def _plain_value(value: Any) -> Any:
    return _plain(dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value)


def fill_added_fields(saved: Any, config: Any) -> Any:
    """``saved`` (a config tree recorded when the run started) with each field that the
    ``config`` dataclass has and ``saved`` lacks filled in, where ``config`` holds that
    field's default: the field was added to the code since, and left at its default it
    changes nothing. Nested configs are walked the same way; a missing field set to
    anything else stays missing, for :func:`diff` to report."""
    if not (dataclasses.is_dataclass(config) and isinstance(saved, dict)):
        return saved
    out = dict(saved)
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.name in out:
            out[f.name] = fill_added_fields(out[f.name], value)
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            continue
        if _plain_value(default) == _plain_value(value):
            out[f.name] = _plain_value(value)
    return out


def _read(path: Path) -> Any:
    return json.loads(path.read_text())


def _write(path: Path, settings: Any) -> None:
    from reasonjax.fileio import atomic_write_text

    atomic_write_text(path, json.dumps(settings, indent=1) + "\n")


def check_or_record(path: str | Path, settings: dict, has_results: bool = True,
                    what: str = "run directory", read=_read, write=_write,
                    config: Any = None) -> None:
    """Writes ``settings`` (JSON-like) to ``path`` on first use; later calls must pass
    the same, else :class:`RunDirError` names the differing fields. While the directory
    holds no results yet (``has_results`` false: a first attempt failed before its first
    checkpoint or phase) new settings replace the old, with a warning. ``read(path)`` /
    ``write(path, settings)``: the file's format (JSON; a recipe's config.yaml is YAML).
    config: the dataclass ``settings`` were made from; fields it gained since the file
    was written count as unchanged at their defaults (:func:`fill_added_fields`), and the
    file is rewritten with them."""
    path = Path(path)
    now = _plain(settings)
    if path.exists():
        try:
            saved = read(path)
        except (ValueError, UnicodeDecodeError) as e:
            if has_results:
                raise RunDirError(f"{path}: unreadable ({e}); it records what the {what} "
                                  f"{path.parent} was made from. Use a new run "
                                  "directory") from None
            saved = None
        if saved == now:
            return
        if config is not None:
            saved = fill_added_fields(saved, config)
        if refuse_changes(saved, now, path.parent, what, has_results):
            write(path, now)  # equal once the fields added since are filled in
            return
    write(path, now)


def refuse_changes(saved: Any, now: Any, run_dir: Path, what: str = "run directory",
                   has_results: bool = True) -> bool:
    """Raises RunDirError listing up to five differing fields when ``saved != now`` and
    the directory ``has_results``; without results it warns that the new settings replace
    the old. Returns whether they are equal."""
    from reasonjax.errors import warn

    changes = diff(saved, _plain(now))
    if changes and not has_results:
        warn(f"{what} {run_dir} holds no results yet; its settings are replaced ("
             + "; ".join(changes[:3]) + ("..." if len(changes) > 3 else "") + ")")
        return False
    if changes:
        more = f" and {len(changes) - 5} more" if len(changes) > 5 else ""
        raise RunDirError(
            f"{what} {run_dir} was started with other settings (" + "; ".join(changes[:5])
            + f"{more}); rerun with the same settings to resume it, or use a new run "
            "directory")
    return True


STAMP = "_settings"


def stamp(settings: dict) -> str:
    """The first line of a cached JSONL file: the settings that produced it."""
    return json.dumps({STAMP: _plain(settings)}) + "\n"


def matches(first_line: str, settings: dict) -> bool:
    """Whether a cached file's first line is the :func:`stamp` of ``settings``."""
    try:
        head = json.loads(first_line)
    except ValueError:
        return False
    return isinstance(head, dict) and head.get(STAMP) == _plain(settings)
