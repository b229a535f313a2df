"""One write discipline for every file and directory reasonjax writes.

Content goes to a temporary sibling (``.NAME.tmp-HOST-PID-XXXX``), is fsynced and then
renamed over the destination, so a crash leaves the old content or the new, never half.
A destination that exists is replaced only when the caller says so (``overwrite``); the
CLI asks the user for ``--overwrite`` before replacing anything it did not create.
Temporaries left by killed processes (their PID is gone on this host) are removed the next
time the same destination is written. Files and directories get ordinary permissions
(0666 / 0777 less the umask), not ``mkstemp``'s private 0600 / 0700.

In a multi-process run (a TPU slice over several hosts, sharing the run directory) every
process runs the same program: :func:`atomic_dir` then uses one temporary directory for
all of them (orbax writes each process's shards into it) and process 0 renames it, with a
barrier on each side; single files are written by every process to its own temporary and
renamed, so the last identical copy wins whole; appends and plots are left to
:func:`is_primary`.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import socket
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from reasonjax.errors import DataError, RunDirError, warn

_HOST = re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname())[:40] or "host"


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once at import: os.umask can only be read by setting it, which races with threads
# (orbax's) creating files.
_UMASK = _read_umask()


def _tmp_prefix(path: Path, kind: str = "tmp") -> str:
    return f".{path.name}.{kind}-{_HOST}-{os.getpid()}-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(path: Path) -> list[Path]:
    """Removes the temporaries that killed processes on this host left beside ``path``
    (``.NAME.tmp-HOST-PID-*`` / ``.NAME.old-HOST-PID-*`` whose PID is gone). Returns
    what was removed."""
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.(tmp|old)-{_HOST}-(\d+)-")
    removed = []
    if not path.parent.is_dir():
        return removed
    for entry in path.parent.iterdir():
        m = pattern.match(entry.name)
        if m is None or _alive(int(m.group(2))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def _finish_tree(root: Path) -> None:
    """Gives everything under ``root`` ordinary permissions (writers such as safetensors
    create private 0600 files) and fsyncs its files and directories."""
    mask = _UMASK
    for dirpath, _, files in os.walk(root):
        os.chmod(dirpath, 0o777 & ~mask)
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fchmod(fd, 0o666 & ~mask)
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot fsync a directory
    finally:
        os.close(fd)


def refuse_existing(path: Path, overwrite: bool, what: str = "destination") -> None:
    """Raises RunDirError when ``path`` exists and ``overwrite`` is false."""
    if not overwrite and (path.exists() or path.is_symlink()):
        kind = "directory" if path.is_dir() else "file"
        raise RunDirError(f"{what} {path} exists (a {kind}); nothing was written. Pass "
                          "--overwrite to replace it, or choose another path")


def make_parent(path: Path) -> None:
    """Creates ``path``'s parent directories; a component that is a file raises
    NotADirectoryError naming it (mkdir would blame the path with "exists")."""
    parent = Path(path).absolute().parent
    for p in [parent, *parent.parents]:
        if p.exists():
            if not p.is_dir():
                raise NotADirectoryError(20, "Not a directory", str(p))
            break
    parent.mkdir(parents=True, exist_ok=True)


def check_writable(path: str | Path) -> Path:
    """Makes ``path``'s parent directory and checks a file can be created in it, so a
    command fails before its work, not after (a parent that is a file, no permission)."""
    path = Path(path).absolute()
    make_parent(path)
    parent = path.parent
    if path.is_dir():
        raise IsADirectoryError(21, "Is a directory", str(path))
    fd, probe = tempfile.mkstemp(prefix=_tmp_prefix(path, "tmp"), dir=parent)
    os.close(fd)
    os.unlink(probe)
    return path


def replace_dir(src: Path, dst: Path) -> None:
    """Moves complete directory ``src`` to ``dst``, replacing whatever ``dst`` holds (a
    directory or a file); nothing of the old ``dst`` is left behind."""
    if dst.exists() or dst.is_symlink():
        old = dst.with_name(f"{_tmp_prefix(dst, 'old')}{os.urandom(3).hex()}")
        os.replace(dst, old)
        os.replace(src, dst)
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)
    else:
        os.replace(src, dst)
    _fsync_dir(dst.parent)


def _processes() -> int:
    import jax

    return jax.process_count()


def is_primary() -> bool:
    """Process 0 of a multi-process run (always true in a single process)."""
    import jax

    return jax.process_index() == 0


def sync(tag: str) -> None:
    """A barrier across the processes of a multi-process run (a no-op in one)."""
    if _processes() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(tag)


@contextmanager
def _shared_dir(path: Path) -> Iterator[Path]:
    tmp = path.with_name(f".{path.name}.tmp-shared")
    if is_primary():
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    sync(f"mkdir {path}")
    yield tmp
    sync(f"written {path}")
    if is_primary():
        _finish_tree(tmp)
        replace_dir(tmp, path)
    sync(f"renamed {path}")


@contextmanager
def atomic_dir(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yields a temporary directory beside ``path``; on success it is fsynced and becomes
    ``path``. An existing ``path`` is refused (:class:`RunDirError`) unless ``overwrite``.
    In a multi-process run every process must enter it (see the module doc)."""
    path = Path(path).absolute()
    refuse_existing(path, overwrite)
    make_parent(path)
    if _processes() > 1:
        with _shared_dir(path) as tmp:
            yield tmp
        return
    clean_stale(path)
    tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(path), dir=path.parent))
    try:
        yield tmp
        _finish_tree(tmp)
        replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_text(path: str | Path, text: str, overwrite: bool = True) -> Path:
    """Writes ``text`` to ``path`` through a fsynced temporary sibling and a rename. An
    existing ``path`` is refused (:class:`RunDirError`) when ``overwrite`` is false."""
    path = Path(path)
    refuse_existing(path, overwrite)
    make_parent(path)
    clean_stale(path)
    fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(path), dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        if e.filename is None:  # a failed write names no file: name the destination
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def json_safe(obj: Any) -> tuple[Any, list[dict]]:
    """``obj`` with every NaN / Inf float replaced by None, and where each was:
    ``{"path": [key or index, ...], "value": "NaN" | "Infinity" | "-Infinity"}`` (JSON
    has no NaN, and a bare ``NaN`` token breaks every other reader)."""
    bad: list[dict] = []

    def walk(x, path):
        if isinstance(x, float) and not math.isfinite(x):
            bad.append({"path": list(path), "value": json.dumps(x)})
            return None
        if isinstance(x, dict):
            return {k: walk(v, path + (k,)) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [walk(v, path + (i,)) for i, v in enumerate(x)]
        if hasattr(x, "item") and getattr(x, "shape", None) == ():
            return walk(x.item(), path)
        return x

    return walk(obj, ()), bad


NONFINITE = "nonfinite"


def dumps(obj: Any, **kwargs) -> str:
    """``json.dumps`` that never writes NaN / Inf: they become null, and a mapping gets a
    ``"nonfinite"`` list saying where and what they were (:func:`loads` puts them back)."""
    clean, bad = json_safe(obj)
    if bad and isinstance(clean, dict):
        clean = {**clean, NONFINITE: bad}
    return json.dumps(clean, allow_nan=False, **kwargs)


def loads(text: str) -> Any:
    """The inverse of :func:`dumps`: NaN / Inf restored where ``"nonfinite"`` says."""
    obj = json.loads(text)
    if not isinstance(obj, dict) or not isinstance(obj.get(NONFINITE), list):
        return obj
    for entry in obj.pop(NONFINITE):
        *parents, last = entry["path"]
        node = obj
        for key in parents:
            node = node[key]
        node[last] = float(entry["value"])
    return obj


def read_json(path: str | Path, error: type = DataError) -> dict:
    """A JSON file holding one object; unreadable text, invalid JSON or another top-level
    type raise ``error`` naming the file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise error(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise error(f"{path}: expected a JSON object at the top level, got "
                    f"{type(data).__name__}")
    return data


def read_jsonl(path: str | Path, warn=warn) -> list[dict]:
    """The JSON objects of a JSONL file the project appends to (metrics). A last line
    that does not parse is what a kill mid-append leaves: it is dropped, with
    ``warn(message)``; a bad line before it raises DataError naming file and line."""
    path = Path(path)
    lines = path.read_text(errors="replace").split("\n")
    records = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError(f"expected a JSON object, got {type(record).__name__}")
        except ValueError as e:
            if all(not rest.strip() for rest in lines[i:]):
                warn(f"{path}:{i}: dropped a torn last line ({e}); a kill mid-write "
                     "leaves one")
                break
            raise DataError(f"{path}:{i}: not a JSON object ({e}); fix or delete the "
                            "line") from None
        records.append(record)
    return records
