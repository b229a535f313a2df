"""The errors reasonjax expects, and the exit code and one-line message each maps to.

Library code raises these with a message that names the field, file, line or tensor and
the fix; :func:`describe` turns any exception the CLI catches into (exit code, message):

====  ===================================================================
code  meaning
====  ===================================================================
1     the command ran and reports a failure (``data validate`` found bad records)
2     bad arguments or config (:class:`ConfigError`, argparse, other ``ValueError``)
3     ``reasonjax plan``: a program does not fit the chips' memory
4     bad input data (:class:`DataError`)
5     a checkpoint is missing, corrupt or of another model (:class:`CheckpointError`)
6     a run directory or destination conflicts (:class:`RunDirError`)
7     the file system refused (disk full, permissions, a path under a file)
8     training diverged (:class:`NonFiniteLossError`)
130   interrupted (Ctrl-C / SIGINT)
====  ===================================================================
"""

from __future__ import annotations

import errno
import re


class ReasonjaxError(Exception):
    """An expected failure whose message says what is wrong and how to fix it."""

    exit_code = 1


class ConfigError(ReasonjaxError, ValueError):
    """A config value or key is wrong; the message names the field and the fix."""

    exit_code = 2


class DataError(ReasonjaxError, ValueError):
    """An input data file cannot be used; the message names the file (and line)."""

    exit_code = 4


class CheckpointError(ReasonjaxError, ValueError):
    """A checkpoint cannot be read or written; the message names the file/tensor and fix."""

    exit_code = 5


class RunDirError(ReasonjaxError):
    """A run directory holds a run with other settings, or a destination exists; the
    message names the differing fields and the ways out."""

    exit_code = 6


class NonFiniteLossError(ReasonjaxError, FloatingPointError):
    """Training produced a NaN / Inf loss or gradient; the message names the step and the
    last good checkpoint."""

    exit_code = 8


INTERRUPTED = 130

_OS_HINTS = {
    errno.ENOSPC: "the disk is full; free space and rerun the same command (completed "
                  "checkpoints and phases are kept)",
    errno.EDQUOT: "the disk quota is exceeded; free space and rerun the same command",
    errno.EACCES: "permission denied; choose a writable location or fix the permissions",
    errno.EPERM: "operation not permitted; choose a writable location",
    errno.EROFS: "the file system is read-only; choose a writable location",
    errno.ENOTDIR: "a path component is a file, not a directory; choose another path",
    errno.EEXIST: "it already exists; choose another path",
    errno.EISDIR: "it is a directory, not a file; give a file path",
    errno.ENOENT: "no such file or directory; check the path",
}


def _os_message(e: OSError) -> str:
    where = " -> ".join(str(f) for f in (e.filename, e.filename2) if f is not None)
    hint = _OS_HINTS.get(e.errno, e.strerror or str(e))
    return f"{where}: {hint}" if where else f"{e.strerror or e}: {hint}"


def warn(message: str) -> None:
    """One line ``warning: MESSAGE`` on stderr: something was skipped or repaired and the
    run goes on (a torn metrics line, an unreadable checkpoint moved aside)."""
    import sys

    print(f"warning: {one_line(message)}", file=sys.stderr, flush=True)


def _disk_full(text: str):
    if "No space left on device" not in text and "os_error_code='28'" not in text:
        return None
    m = re.search(r'local file "([^"]+)"', text) or re.search(r'writing: "([^"]+)"', text)
    where = f"writing {m.group(1)}: " if m else ""
    return where + _OS_HINTS[errno.ENOSPC]


def first_line(e: BaseException, limit: int | None = None) -> str:
    """The first line of an exception's message (its type's name when empty), cut to
    ``limit`` characters when given: library errors can run to pages."""
    text = str(e).strip()
    line = text.splitlines()[0] if text else type(e).__name__
    return line if limit is None or len(line) <= limit else line[:limit] + "..."


def one_line(text: str) -> str:
    """``text`` with its lines joined (messages go to one line of stderr)."""
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def describe(e: BaseException) -> tuple[int, str]:
    """(exit code, one-line message) for an exception the CLI reports without traceback,
    or (0, "") when it is unexpected (a bug: the traceback is shown)."""
    if isinstance(e, KeyboardInterrupt):
        return INTERRUPTED, ("interrupted; finished checkpoints and phases are kept, rerun "
                             "the same command to resume")
    if isinstance(e, ReasonjaxError):
        return e.exit_code, one_line(e)
    if isinstance(e, OSError):
        if isinstance(e, FileNotFoundError) and e.filename is None:
            return 2, one_line(e)  # a library check ("--model X: not found ...")
        return 7, one_line(_os_message(e))
    full = _disk_full(str(e))
    if full is not None:  # tensorstore (orbax) reports ENOSPC inside a ValueError
        return 7, full
    if isinstance(e, ValueError):
        return 2, one_line(e)
    return 0, ""
