"""What a run directory was made from, so a rerun resumes only what it would recompute.

A run directory (``reasonjax train``, a recipe) records its resolved settings and the
fingerprints of its input files (checkpoint, data file) the first time it is opened;
reopening it with anything different stops with one line naming the differing fields and
the two ways out. Cached intermediates (samples, labels) carry the settings that made
them (:func:`stamp` / :func:`matches`) and are rebuilt when those differ::

    settings = {"kind": "sft", "task": ..., "config": to_dict(cfg),
                "inputs": {"data": fingerprint("gsm8k.jsonl")}}
    check_or_record(run_dir / "run.json", settings)
"""

from __future__ import annotations

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


def diff(saved: Any, now: Any, prefix: str = "") -> list[str]:
    """``field: old -> new`` for every leaf that differs between two JSON-like trees."""
    if isinstance(saved, dict) and isinstance(now, dict):
        out = []
        for k in sorted(set(saved) | set(now), key=str):
            out += diff(saved.get(k), now.get(k), f"{prefix}{k}.")
        return out
    return [] if saved == now else [f"{prefix[:-1]}: {saved!r} -> {now!r}"]


def _plain(settings: Any) -> Any:
    return json.loads(json.dumps(settings, default=str))


def check_or_record(path: str | Path, settings: dict, what: str = "run directory") -> None:
    """Writes ``settings`` (JSON-like) to ``path`` on first use; later calls must pass
    the same, else :class:`RunDirError` names the differing fields."""
    from reasonjax.fileio import atomic_write_text

    path = Path(path)
    now = _plain(settings)
    if not path.exists():
        atomic_write_text(path, json.dumps(now, indent=1) + "\n")
        return
    try:
        saved = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise RunDirError(f"{path}: unreadable ({e}); it records what the {what} "
                          f"{path.parent} was made from. Use a new run directory") from None
    refuse_changes(saved, now, path.parent, what)


def refuse_changes(saved: Any, now: Any, run_dir: Path, what: str = "run directory") -> None:
    """Raises RunDirError listing up to five differing fields when ``saved != now``."""
    changes = diff(saved, _plain(now))
    if changes:
        more = f" and {len(changes) - 5} more" if len(changes) > 5 else ""
        raise RunDirError(
            f"{what} {run_dir} was started with other settings (" + "; ".join(changes[:5])
            + f"{more}); rerun with the same settings to resume it, or use a new run "
            "directory")


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
