"""Run directories: resolved config, metrics JSONL, and resumable phases.

A recipe is a sequence of named phases (``sft``, ``mcts-round-1``, ``train-round-1``,
...). Each phase's result is written atomically to ``phases/<name>/``: params through
orbax, everything else as JSON. Rerunning a recipe with the same run directory loads the
results of completed phases instead of recomputing them, so an interrupted run resumes
from its last completed phase::

    run = open_run("runs/alphamath", cfg)
    sft = run_phase(run, "sft", lambda: {"params": train_sft(...), "accuracy": 0.41})
    log_metrics(run, {"phase": "sft", "accuracy": sft["accuracy"]})

Layout::

    config.yaml      the resolved config (a rerun must match it)
    metrics.jsonl    one JSON object per line
    phases/<name>/   result.json (+ params/ when the result holds params)
    report.md, *.png written by the recipe at the end
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Callable

import yaml
from rich.console import Console

from reasonjax import checkpoint
from reasonjax.config import ConfigError, save_yaml, to_dict
from reasonjax.fileio import atomic_dir, atomic_write_text

console = Console(stderr=True)


@dataclasses.dataclass(frozen=True)
class Run:
    """A run directory and the resolved config it was opened with."""

    path: Path
    config: Any
    total_phases: int = 0


def _diff(a, b, prefix="") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _diff(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [f"{prefix[:-1]}: {a!r} -> {b!r}"]


def open_run(path: str | Path, config, total_phases: int = 0) -> Run:
    """Creates ``path`` (or reopens it to resume) and records the resolved config.

    Reopening with a different config is an error: results of completed phases would not
    match it.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    cfg_file = path / "config.yaml"
    if cfg_file.exists():
        saved = yaml.safe_load(cfg_file.read_text())
        changes = _diff(saved, json.loads(json.dumps(to_dict(config))))
        if changes:
            raise ConfigError(
                f"run directory {path} was started with a different config ("
                + "; ".join(changes[:5]) + "); rerun with the same settings to resume, or "
                "use a new run directory")
    else:
        save_yaml(config, cfg_file)
    return Run(path=path, config=config, total_phases=total_phases)


def completed_phases(run: Run) -> list[str]:
    d = run.path / "phases"
    return sorted(p.name for p in d.iterdir() if (p / "result.json").exists()) \
        if d.is_dir() else []


def run_phase(run: Run, name: str, compute: Callable[[], dict]) -> dict:
    """Returns the result of phase ``name``: loaded if completed before, else computed
    (and saved atomically). A result is a dict; ``params`` (a model-params pytree) and
    ``model_config`` are stored with orbax, every other value must be JSON-serialisable.
    """
    target = run.path / "phases" / name
    done = completed_phases(run)
    index = f"{len(done) + 1}/{run.total_phases}" if run.total_phases else str(len(done) + 1)
    if (target / "result.json").exists():
        console.print(f"[dim]phase {name}: done earlier, loading {target}[/dim]")
        return load_phase(target)
    console.rule(f"phase {index}: {name}")
    start = time.time()
    result = compute()
    if not isinstance(result, dict):
        raise TypeError(f"phase {name} must return a dict, got {type(result).__name__}")
    with atomic_dir(target) as tmp:
        rest = {k: v for k, v in result.items() if k not in ("params", "model_config")}
        if "params" in result:
            if "model_config" not in result:
                raise ValueError(f"phase {name}: a result with params needs its model_config")
            checkpoint.save_model(tmp / "model", result["model_config"], result["params"])
        atomic_write_text(tmp / "result.json", json.dumps(rest, indent=1))
    console.print(f"[green]phase {name} finished in {time.time() - start:.1f}s[/green]")
    return result


def load_phase(path: Path) -> dict:
    result = json.loads((path / "result.json").read_text())
    if (path / "model").is_dir():
        result["model_config"], result["params"] = checkpoint.load_model(path / "model")
    return result


def log_metrics(run: Run, record: dict) -> None:
    """Appends one JSON line to metrics.jsonl (one record per line, flushed)."""
    with open(run.path / "metrics.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
