"""The training loop: batches from a checkpointable iterator through the sharded step,
with evaluation, checkpoints of the state AND the data iterator, metrics and a guard.

::

    state, metrics = train(loss, state, iterator, LoopConfig(steps=1000, run_dir="runs/sft"),
                           optimizer=tx, mesh=mesh, shardings=state_shardings(...))

- Data: any iterator of batches (dicts of numpy arrays) with ``get_state() -> dict`` and
  ``set_state(dict)``, e.g. ``iter(grain.MapDataset(...).batch(B).to_iter_dataset())``.
- Checkpoints (``<run_dir>/checkpoints``, orbax, keep-last-N, atomic): the TrainState and
  the iterator state after the same step, so a resumed run sees exactly the batches an
  uninterrupted run would have seen. ``train`` resumes from the latest checkpoint found.
- Metrics: one JSON line per step in ``<run_dir>/metrics.jsonl`` (lines past the resumed
  step are dropped on resume), TensorBoard events in ``<run_dir>/tensorboard`` when
  ``tensorboardX`` is installed, and a progress bar with loss and tokens/s.
- Guard: a non-finite loss or gradient norm stops training with
  :class:`NonFiniteLossError` naming the step; the state that produced it (or any later
  one) is never saved, so the latest checkpoint is the last good one.
- Metrics reach the host one step late, so the device never waits for the host between
  steps (see :func:`train`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, NamedTuple, Optional, Sequence

import jax
import numpy as np
import optax
from jax.sharding import Mesh
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from reasonjax import checkpoint
from reasonjax.config import check_fields
from reasonjax.errors import NonFiniteLossError  # noqa: F401  (re-exported)
from reasonjax.fileio import atomic_write_text, dumps, read_jsonl
from reasonjax.train.loss import Loss
from reasonjax.train.state import TrainState
from reasonjax.train.step import make_eval_step, make_train_step, tokens_in

METRICS_FILE = "metrics.jsonl"
CHECKPOINTS = "checkpoints"


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    """steps: train steps in total (a resumed run finishes the same total).
    run_dir: checkpoints + metrics; None keeps nothing on disk.
    checkpoint_every: save every k steps (and at the end). eval_every: call eval_fn every
    k steps (0: never). keep_checkpoints: how many to keep."""

    steps: int
    run_dir: Optional[str] = None
    checkpoint_every: int = 100
    keep_checkpoints: int = 3
    async_checkpoint: bool = True
    eval_every: int = 0
    progress: bool = True

    def __post_init__(self):
        check_fields(self, steps=">= 0", checkpoint_every=">= 1", keep_checkpoints=">= 1",
                     eval_every=">= 0")


class MetricsWriter:
    """JSONL (+ TensorBoard when tensorboardX is installed) on process 0. Reopening a run
    keeps the records whose ``step`` is at most ``resume_step`` (a torn last line left by
    a kill is dropped with a warning); NaN / Inf values are written as null (see
    :func:`reasonjax.fileio.dumps`)."""

    def __init__(self, run_dir: Optional[Path], resume_step: int):
        self.enabled = run_dir is not None and jax.process_index() == 0
        self.file = None
        self.tb = None
        if not self.enabled:
            return
        path = run_dir / METRICS_FILE
        if path.exists():
            kept = [r for r in read_jsonl(path) if r.get("step", 0) <= resume_step]
            atomic_write_text(path, "".join(dumps(r) + "\n" for r in kept))
        self.file = path.open("a")
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            return
        self.tb = SummaryWriter(str(run_dir / "tensorboard"))

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        self.file.write(dumps({"step": step, **metrics}) + "\n")
        self.file.flush()
        if self.tb is not None:
            for k, v in metrics.items():
                if isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, step)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        if self.tb is not None:
            self.tb.close()


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The metrics JSONL of a run as a list of dicts."""
    path = Path(run_dir) / METRICS_FILE
    return read_jsonl(path) if path.exists() else []


def _data_state(data) -> dict:
    state = data.get_state()
    if not isinstance(state, dict):
        raise TypeError(f"data iterator get_state() returned {type(state).__name__}; the "
                        "loop checkpoints it as JSON and needs a dict")
    return state


def _check_iterator(data, checkpointing: bool) -> None:
    if checkpointing and not (hasattr(data, "get_state") and hasattr(data, "set_state")):
        raise TypeError(
            f"the data iterator ({type(data).__name__}) has no get_state()/set_state(); "
            "checkpoints must hold the data position so a resumed run continues on the same "
            "batches. Use a grain iterator (iter(dataset.to_iter_dataset())) or set "
            "run_dir=None")


def _host_metrics(metrics: Mapping) -> dict[str, float]:
    return {k: float(np.asarray(v)) for k, v in jax.device_get(dict(metrics)).items()}


def restore_latest(run_dir: str | Path, state: TrainState, shardings: TrainState):
    """(state, data_state, step) from the newest intact checkpoint of ``run_dir``,
    restored onto ``shardings``, skipping (and moving aside, with a warning) unreadable
    newer ones; None when there is none."""
    manager = checkpoint.make_manager(Path(run_dir) / CHECKPOINTS, async_save=False)
    target = checkpoint.abstract_tree(state, shardings)
    try:
        restored = checkpoint.restore_intact(manager, target)
    finally:
        manager.close()
    if restored is None:
        return None
    new_state, data_state, _ = restored
    return new_state, data_state, int(new_state.step)


class _InFlight(NamedTuple):
    """A dispatched step: its number, its metrics (device arrays, maybe not computed yet),
    its batch's real tokens and when it was dispatched."""

    step: int
    metrics: Mapping
    tokens: int
    dispatched: float


class _Run(NamedTuple):
    """What finishing a step writes to: the loop config, the checkpoint manager (None
    without a run dir), the metrics writer, the data iterator (its position is saved with
    the state), eval_fn, hooks, and the progress bar with its task id."""

    config: LoopConfig
    manager: Any
    writer: MetricsWriter
    data: Iterator
    eval_fn: Optional[Callable[[Any], dict]]
    hooks: Sequence[Callable[[int, TrainState, dict], None]]
    progress: Progress
    bar: Any


def train(loss: Loss, state: TrainState, data: Iterator, config: LoopConfig, *,
          mesh: Mesh, shardings: TrainState,
          optimizer: Optional[optax.GradientTransformation] = None,
          step_fn: Optional[Callable] = None, ref_params: Any = None,
          eval_fn: Optional[Callable[[Any], dict]] = None,
          lr_schedule: Optional[Callable] = None, rules=None,
          hooks: Sequence[Callable[[int, TrainState, dict], None]] = ()
          ) -> tuple[TrainState, dict]:
    """Trains ``state`` to ``config.steps`` steps. Returns (final state, last metrics).

    The step is ``make_train_step(loss, optimizer, mesh, shardings, ...)`` unless a
    ``step_fn`` built that way is passed (callers that train in rounds reuse one and skip
    recompiling). ``eval_fn(params) -> {name: number}`` runs every ``eval_every`` steps
    (logged with an ``eval/`` prefix). ``hooks(step, state, metrics)`` run after each
    step's checkpoint. When ``config.run_dir`` has checkpoints, training resumes from the
    latest one (state and data position) instead of starting from ``state``.

    Metrics come to the host one step late (as in nanodo): step k + 1 is dispatched before
    step k's metrics are pulled, so the device never waits for the host. A step whose
    state the host uses (checkpoint, eval, hooks: a run with hooks never runs ahead) is
    finished before the next is dispatched, since dispatching donates that state; so a
    non-finite step is always caught before any later state is saved.
    """
    if (optimizer is None) == (step_fn is None):
        raise ValueError("train: pass exactly one of optimizer (to build the step) or step_fn")
    run_dir = Path(config.run_dir) if config.run_dir else None
    _check_iterator(data, run_dir is not None)
    manager = None
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        resumed = restore_latest(run_dir, state, shardings)
        if resumed is not None:
            state, data_state, _ = resumed
            if data_state is not None:
                data.set_state(data_state)
        manager = checkpoint.make_manager(run_dir / CHECKPOINTS, config.keep_checkpoints,
                                          config.async_checkpoint)
    start = int(state.step)
    writer = MetricsWriter(run_dir, start)
    if step_fn is None:
        step_fn = make_train_step(loss, optimizer, mesh, shardings, rules=rules,
                                  lr_schedule=lr_schedule)
    try:
        with progress_bar(config.progress) as progress:
            bar = progress.add_task(loss.name, total=config.steps, completed=start, info="")
            run = _Run(config, manager, writer, data, eval_fn, hooks, progress, bar)
            state, last = _steps(run, step_fn, state, ref_params, start)
    finally:
        writer.close()
        if manager is not None:
            manager.wait_until_finished()
            manager.close()
    return state, last


def _steps(run: _Run, step_fn: Callable, state: TrainState, ref_params: Any, start: int
           ) -> tuple[TrainState, dict]:
    """Steps ``start + 1 .. config.steps`` of :func:`train`, one step late (its docstring)."""
    last: dict = {}
    in_flight: Optional[_InFlight] = None
    done_at = time.perf_counter()
    for step in range(start + 1, run.config.steps + 1):
        try:
            batch = next(run.data)
        except StopIteration:
            run.progress.console.print(f"data ran out after step {step - 1}; stopping")
            break
        dispatched = time.perf_counter()
        state, metrics = step_fn(state, batch, ref_params)
        flight = _InFlight(step, metrics, tokens_in(batch), dispatched)
        if in_flight is not None:
            last, done_at = _finish(run, in_flight, None, done_at)
        in_flight = flight
        if _needs_state(run, step):
            last, done_at = _finish(run, flight, state, done_at)
            in_flight = None
    if in_flight is not None:
        last, done_at = _finish(run, in_flight, None, done_at)
    return state, last


def _evaluates(run: _Run, step: int) -> bool:
    return bool(run.eval_fn is not None and run.config.eval_every
                and step % run.config.eval_every == 0)


def _saves(run: _Run, step: int) -> bool:
    return run.manager is not None and (step % run.config.checkpoint_every == 0
                                        or step == run.config.steps)


def _needs_state(run: _Run, step: int) -> bool:
    """Whether the host uses step's state, so it must finish before the next dispatch."""
    return bool(run.hooks) or _evaluates(run, step) or _saves(run, step)


def _finish(run: _Run, flight: _InFlight, state: Optional[TrainState], done_at: float
            ) -> tuple[dict, float]:
    """Pulls a step's metrics to the host and guards them; with the step's ``state`` (only
    given while no later step was dispatched) evaluates, checkpoints and runs the hooks;
    logs. Returns (metrics, when the step finished)."""
    metrics = _host_metrics(flight.metrics)
    finished = time.perf_counter()
    step = flight.step
    check_finite(metrics, step, run.manager)
    # The device runs steps in order: this one started at its dispatch or when the
    # previous one finished, whichever came later.
    seconds = finished - max(flight.dispatched, done_at)
    metrics["tokens_per_s"] = flight.tokens / max(seconds, 1e-9)
    metrics["step_seconds"] = seconds
    if state is not None and _evaluates(run, step):
        metrics.update({f"eval/{k}": float(v) for k, v in run.eval_fn(state.params).items()})
    if state is not None and _saves(run, step):
        checkpoint.save_state(run.manager, step, state, _data_state(run.data))
    run.writer.write(step, metrics)
    for hook in run.hooks:
        hook(step, state, metrics)
    run.progress.update(run.bar, completed=step, info=(
        f"loss {metrics['loss']:.4f}  {metrics['tokens_per_s']:,.0f} tok/s"))
    return metrics, finished


def progress_bar(enabled: bool = True) -> Progress:
    """The rich progress bar every training loop reports through (description, bar,
    done / total, an info field, elapsed time); lines go to its ``console``. Disabled:
    nothing is drawn."""
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                    MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                    TimeElapsedColumn(), disable=not enabled)


def check_finite(metrics: Mapping[str, float], step: int, manager, unit: str = "step"
                 ) -> None:
    """Raises :class:`NonFiniteLossError` when ``loss`` or ``grad_norm`` is NaN / Inf,
    naming the ``unit`` (step, iteration) and the last good checkpoint of ``manager``."""
    bad = [k for k in ("loss", "grad_norm") if k in metrics and not math.isfinite(metrics[k])]
    if not bad:
        return
    last_good = None
    if manager is not None:
        manager.wait_until_finished()
        last_good = manager.latest_step()
    where = (f"the last good checkpoint is {unit} {last_good} in {manager.directory}"
             if last_good is not None else "no checkpoint was written")
    values = ", ".join(f"{k}={metrics[k]}" for k in bad)
    raise NonFiniteLossError(
        f"non-finite {values} at {unit} {step}; training stopped and this {unit}'s state was "
        f"not saved ({where}). Lower optim.lr, enable optim.clip_norm, or inspect the batch "
        f"of {unit} {step}")


def make_loss_eval(loss: Loss, mesh: Mesh, param_shardings, batches: Sequence[Mapping],
                   ref_params: Any = None, rules=None) -> Callable[[Any], dict]:
    """An ``eval_fn`` averaging ``loss``'s metrics over fixed ``batches``."""
    eval_step = make_eval_step(loss, mesh, param_shardings, rules=rules)

    def eval_fn(params) -> dict:
        totals: dict[str, float] = {}
        for batch in batches:
            for k, v in _host_metrics(eval_step(params, batch, ref_params)).items():
                totals[k] = totals.get(k, 0.0) + v
        return {k: v / len(batches) for k, v in totals.items()}

    return eval_fn
