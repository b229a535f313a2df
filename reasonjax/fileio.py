"""Atomic file and directory writes: a crash leaves the old content or the new, never half.

In a multi-process run (a TPU slice over several hosts, sharing the run directory) every
process runs the same program: :func:`atomic_dir` then uses one temporary directory for
all of them (orbax writes each process's shards into it) and process 0 renames it, with a
barrier on each side; single files are written by every process to its own temporary and
renamed, so the last identical copy wins whole; appends and plots are left to
:func:`is_primary`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def replace_dir(src: Path, dst: Path) -> None:
    """Moves complete directory ``src`` to ``dst``, replacing an existing ``dst``."""
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dst)


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
        replace_dir(tmp, path)
    sync(f"renamed {path}")


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yields a temporary directory beside ``path``; on success it becomes ``path``. In a
    multi-process run every process must enter it (see the module doc)."""
    path = Path(path).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    if _processes() > 1:
        with _shared_dir(path) as tmp:
            yield tmp
        return
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        yield tmp
        replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
