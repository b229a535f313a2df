"""Run directories: resolved config, metrics JSONL, and resumable phases.

A recipe is a sequence of named phases (``sft``, ``mcts-round-1``, ``train-round-1``,
...). Each phase's result is written atomically to ``phases/<name>/``: params through
orbax, everything else as JSON. Rerunning a recipe with the same run directory loads the
results of completed phases instead of recomputing them, so an interrupted run resumes
from its last completed phase::

    run = open_run("runs/alphamath", cfg)
    sft = run_phase(run, "sft", lambda: Trained(params=..., model_config=..., accuracy=0.4),
                    Trained, mesh=env.mesh)
    log_metrics(run, {"phase": "sft", "accuracy": sft.accuracy})

Layout::

    config.yaml      the resolved config (a rerun must match it)
    metrics.jsonl    one JSON object per line
    tokenizer/       the tokenizer's files (:func:`keep_tokenizer`)
    phases/<name>/   result.json (+ model/ when the result holds params, with the
                     tokenizer's files, so it loads with load_model_and_tokenizer)
    report.md, *.png written by the recipe at the end

A phase's result is a dataclass (or a dict) whose ``params`` / ``model_config`` are saved
with orbax and every other field as JSON. The object :func:`run_phase` returns is rebuilt
from what was written (params placed on the mesh's shardings), so a fresh and a resumed
run hand the next phase identical objects, and results are frozen: a phase never changes
one after it was saved.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

from rich.console import Console

from reasonjax import checkpoint, parallel, provenance
from reasonjax.config import read_yaml, save_yaml, to_dict
from reasonjax.errors import RunDirError
from reasonjax.fileio import atomic_dir, atomic_write_text, dumps, is_primary, loads
from reasonjax.models import hf

console = Console(stderr=True)
T = TypeVar("T")
MODEL_FIELDS = ("params", "model_config")


OUTCOMES = "outcomes.json"
TOKENIZER_DIR = "tokenizer"


@dataclasses.dataclass
class Result:
    """What a recipe returns: the headline table (rows of the report's first table), the
    effect checks (:class:`reasonjax.eval.stats.Effect`: claim, interval, verdict), the
    report's path and a one-line ``headline`` of the measured figures (README table)."""

    rows: list[dict]
    effects: list
    report: Path
    headline: str = ""

    @property
    def checks(self) -> dict[str, str]:
        """claim -> verdict (held / inconclusive / contradicted)."""
        return {e.claim: e.verdict for e in self.effects}


def write_outcomes(run_dir: Path, outcomes: dict) -> Path:
    """Writes the per-problem outcomes a recipe's report and effects are computed from
    (``outcomes.json``), so ``reasonjax report`` can recompute them and pool seeds."""
    path = Path(run_dir) / OUTCOMES
    atomic_write_text(path, dumps(outcomes))
    return path


def load_outcomes(run_dir: Path) -> dict:
    path = Path(run_dir) / OUTCOMES
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the run in {run_dir} has not finished "
                                "(rerun its `reasonjax replicate` command to resume it)")
    return loads(path.read_text())


@dataclasses.dataclass(frozen=True)
class Run:
    """A run directory and the resolved config it was opened with."""

    path: Path
    config: Any
    total_phases: int = 0


INPUT_FIELDS = ("model.checkpoint", "task.data_file", "task.eval_file",
                "prompt.few_shot_file")


def input_fingerprints(config) -> dict:
    """{field: fingerprint} of the files a recipe config reads (:data:`INPUT_FIELDS`)."""
    out = {}
    for field in INPUT_FIELDS:
        obj = config
        for name in field.split("."):
            obj = getattr(obj, name, None)
        if obj:
            out[field] = provenance.fingerprint(obj)
    return out


def open_run(path: str | Path, config, total_phases: int = 0) -> Run:
    """Creates ``path`` (or reopens it to resume) and records the resolved config and the
    fingerprints of the files it reads (``inputs.json``).

    Reopening with a different config, or after an input file changed, is an error once
    a phase has completed (its results would not match); before that, the new settings
    replace the old with a warning (a first attempt that failed early locks nothing).
    Fields added to the config classes since the run started, left at their defaults,
    are not a change (:func:`reasonjax.provenance.fill_added_fields`).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RunDirError(f"run directory {path} is a file; give a directory path")
    path.mkdir(parents=True, exist_ok=True)
    has_results = bool(completed_phases(Run(path, config)))
    provenance.check_or_record(path / "config.yaml", to_dict(config), has_results,
                               read=read_yaml, write=lambda p, saved: save_yaml(saved, p),
                               config=config)
    provenance.check_or_record(path / "inputs.json", input_fingerprints(config), has_results)
    return Run(path=path, config=config, total_phases=total_phases)


def keep_tokenizer(run: Run, tokenizer) -> None:
    """Writes ``tokenizer``'s files to ``run.path / "tokenizer"`` (once per run directory),
    so that every model a phase saves afterwards carries them: ``reasonjax search
    <run>/phases/<name>/model`` then needs nothing else. A character tokenizer is saved;
    a file-backed one (HF ``tokenizer.json``, SentencePiece) has its directory's tokenizer
    files copied. In a multi-process run every process must call it."""
    target = run.path / TOKENIZER_DIR
    if target.is_dir():
        return
    with atomic_dir(target) as tmp:
        if is_primary():
            if hasattr(tokenizer, "save"):
                tokenizer.save(tmp)
            else:
                hf.copy_tokenizer_files(Path(tokenizer.path).parent, tmp)


def completed_phases(run: Run) -> list[str]:
    d = run.path / "phases"
    return sorted(p.name for p in d.iterdir() if (p / "result.json").exists()) \
        if d.is_dir() else []


def _fields(result) -> dict:
    if isinstance(result, dict):
        return dict(result)
    if dataclasses.is_dataclass(result):
        return {f.name: getattr(result, f.name) for f in dataclasses.fields(result)}
    raise TypeError(f"a phase must return a dataclass or a dict, got {type(result).__name__}")


def _build(kind: type, fields: dict, path: Path, mesh) -> Any:
    """The result of ``kind`` from its JSON ``fields`` and, when ``path`` holds a model,
    its params restored onto ``mesh``'s shardings (None: one device, unsharded)."""
    fields = dict(fields)
    if (path / "model").is_dir():
        config = checkpoint.read_model_config(path / "model")
        shardings = parallel.param_shardings(config, mesh) if mesh is not None else None
        fields["model_config"], fields["params"] = checkpoint.load_model(path / "model",
                                                                         shardings)
    return kind(**fields)


def run_phase(run: Run, name: str, compute: Callable[[], T], kind: type = dict,
              mesh=None) -> T:
    """The result of phase ``name`` (a ``kind``: a dataclass, or dict): loaded if completed
    before, else computed and saved atomically, then rebuilt from what was saved (see the
    module docstring). ``params`` (with its ``model_config``) go through orbax and are
    placed on ``mesh``; every other field must be JSON-serialisable."""
    target = run.path / "phases" / name
    done = completed_phases(run)
    index = f"{len(done) + 1}/{run.total_phases}" if run.total_phases else str(len(done) + 1)
    if (target / "result.json").exists():
        console.print(f"[dim]phase {name}: done earlier, loading {target}[/dim]")
        return load_phase(target, kind, mesh)
    console.rule(f"phase {index}: {name}")
    start = time.time()
    fields = _fields(compute())
    with atomic_dir(target, overwrite=True) as tmp:
        rest = {k: v for k, v in fields.items() if k not in MODEL_FIELDS}
        if fields.get("params") is not None:
            if fields.get("model_config") is None:
                raise ValueError(f"phase {name}: a result with params needs its model_config")
            tokenizer = run.path / TOKENIZER_DIR
            checkpoint.save_model(tmp / "model", fields["model_config"], fields["params"],
                                  tokenizer_dir=tokenizer if tokenizer.is_dir() else None)
        text = dumps(rest, indent=1)
        atomic_write_text(tmp / "result.json", text)
    console.print(f"[green]phase {name} finished in {time.time() - start:.1f}s[/green]")
    return load_phase(target, kind, mesh)


def load_phase(path: Path, kind: type = dict, mesh=None) -> Any:
    """A saved phase result (see :func:`run_phase`)."""
    return _build(kind, loads((path / "result.json").read_text()), path, mesh)


def log_metrics(run: Run, record: dict) -> None:
    """Appends one JSON line to metrics.jsonl (one record per line, flushed; process 0
    of a multi-process run), unless the file already holds that exact line: a resumed
    run logs again what its loaded phases return, and those lines are written once."""
    if not is_primary():
        return
    path, line = run.path / "metrics.jsonl", dumps(record)
    if path.exists() and line in path.read_text().splitlines():
        return
    with open(path, "a") as f:
        f.write(line + "\n")
