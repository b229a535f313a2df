"""Result tables as Markdown, and the run report (``report.md``) recipes write."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from reasonjax.fileio import atomic_write_text


def format_value(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return f"{v:.4g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"
    return str(v)


def markdown_table(rows: Sequence[Mapping[str, Any]],
                   columns: Sequence[str] | None = None) -> str:
    """A GitHub Markdown table; columns default to the keys of the first row."""
    if not rows:
        raise ValueError("markdown_table: no rows")
    columns = list(columns or rows[0].keys())
    missing = [c for c in columns if any(c not in r for r in rows)]
    if missing:
        raise ValueError(f"markdown_table: rows lack column(s) {missing}")
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(format_value(r[c]) for c in columns) + " |")
    return "\n".join(lines)


def write_report(path: str | Path, title: str,
                 sections: Sequence[tuple[str, str]]) -> Path:
    """Writes ``# title`` then each (heading, body) section; plots as relative images."""
    text = [f"# {title}", ""]
    for heading, body in sections:
        text += [f"## {heading}", "", body.rstrip(), ""]
    atomic_write_text(path, "\n".join(text))
    return Path(path)
