"""PNG line plots for reports (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from reasonjax.fileio import is_primary


def line_plot(path: str | Path, series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
              *, xlabel: str, ylabel: str, title: str, logx: bool = False,
              dashed: Optional[Mapping[str, tuple[Sequence[float], Sequence[float]]]] = None,
              bands: Optional[Mapping[str, tuple[Sequence[float], Sequence[float]]]] = None,
              ylim: Optional[tuple[float, float]] = None) -> Path:
    """One line (with markers) per series name -> (xs, ys); ``dashed`` adds fitted curves;
    ``bands`` shades a series' (or fitted curve's) interval: name -> (lows, highs) at its
    xs."""
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    for name, (xs, ys) in series.items():
        line, = ax.plot(xs, ys, marker="o", label=name)
        if bands and name in bands:
            lows, highs = bands[name]
            ax.fill_between(xs, lows, highs, color=line.get_color(), alpha=0.2, linewidth=0)
    for name, (xs, ys) in (dashed or {}).items():
        line, = ax.plot(xs, ys, linestyle="--", label=name)
        if bands and name in bands:
            lows, highs = bands[name]
            ax.fill_between(xs, lows, highs, color=line.get_color(), alpha=0.12, linewidth=0)
    if logx:
        ax.set_xscale("log", base=2)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if is_primary():  # one writer in a multi-process run
        fig.savefig(path)
    plt.close(fig)
    return path
