"""grain input pipelines: source -> shard -> shuffle -> encode -> pad or pack -> batch.

Sources are random-access grain ``MapDataset``s of records (usually :class:`Problem`):
an in-memory list (:func:`problems_source`, for data recipes make each round), a task
generated lazily by index (:func:`task_source`), a TFDS ArrayRecord dataset
(:func:`tfds_source`) or a local file (:func:`local_source`).

:func:`make_pipeline` turns a source into fixed-shape batches of one kind of
:mod:`reasonjax.data.formats`. Order of operations and why:

1. shard by JAX process (``source[process_index::process_count]``, after dropping the
   last ``len % process_count`` records so shards are equal): each host reads a
   disjoint part; ``batch_size`` is the per-process batch (global = batch_size x
   process_count, assembled with ``parallel.shard_batch``);
2. shuffle with ``seed`` (a different permutation every epoch) and repeat ``num_epochs``
   (None: forever);
3. encode (``encode(record) -> example``, see :mod:`.formatting`), then truncate longer
   sequences (counted in ``stats.truncated`` with a warning) or raise, by ``on_overflow``;
4. pad each sequence to ``seq_len``, or pack several per row (``pack=True``, sft / value /
   joint: grain's first-fit packing; ``positions`` restart and ``segment_ids`` count
   1, 2, ... per row);
5. batch (``drop_remainder``: every batch has the same shape, so nothing recompiles).

The iterator (``iter(pipeline.dataset)``) has ``get_state()`` -> a JSON-able dict and
``set_state(state)``; store it with
``checkpoint.save_state(manager, step, state, data_state=it.get_state())`` and a restored
iterator yields exactly the batches the interrupted one would have. Prompt pipelines
yield ``(batch, index)``: ``index`` [B] int64 is each row's position in the source, so
answers stay on the host (``source[index[i]]``).
"""

from __future__ import annotations

import dataclasses
import threading
import warnings
from typing import Any, Callable, NamedTuple, Optional, Sequence

import grain
import numpy as np

from reasonjax.data import formatting
from reasonjax.data.task import Problem, Task, decode_problem, get_task
from reasonjax.models.tokenizer import Tokenizer

KINDS = ("sft", "preference", "unpaired", "value", "joint", "prompt")  # of .formats
PACKABLE = ("sft", "value", "joint")


@dataclasses.dataclass
class PipelineStats:
    """Counters of one pipeline (not part of the checkpointed state)."""

    truncated: int = 0
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, repr=False)

    def add_truncated(self) -> int:
        with self.lock:
            self.truncated += 1
            return self.truncated


class Pipeline(NamedTuple):
    dataset: grain.IterDataset
    stats: PipelineStats


# ---------------------------------------------------------------------------------------
# Sources


def problems_source(problems: Sequence[Any]) -> grain.MapDataset:
    """An in-memory list of records (e.g. Problems made by a recipe this round)."""
    if len(problems) == 0:
        raise ValueError("problems_source: the list is empty")
    return grain.MapDataset.source(list(problems))


class TaskSource:
    """Random-access view of a task's problem stream: item i = ``task.problem(i, seed)``."""

    def __init__(self, task: Task, size: int, seed: int | str = 0):
        if size < 1:
            raise ValueError(f"task_source: size must be >= 1, got {size}")
        self.task, self.size, self.seed = task, size, seed

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> Problem:
        return self.task.problem(int(index) % self.size, self.seed)

    def __repr__(self) -> str:
        return f"TaskSource({self.task!r}, size={self.size}, seed={self.seed!r})"


def task_source(task: Task | str, size: int, seed: int | str = 0,
                **knobs) -> grain.MapDataset:
    """``size`` problems of a task, generated on access (nothing stored)."""
    if isinstance(task, str):
        task = get_task(task, **knobs)
    return grain.MapDataset.source(TaskSource(task, size, seed))


def tfds_source(name: str, split: str, data_dir: str) -> grain.MapDataset:
    """A split of a TFDS dataset written by :mod:`.tfds_builders`, decoded to Problems
    (tfds reads the prepared files; the builder classes need not be imported)."""
    import tensorflow_datasets as tfds

    source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    return grain.MapDataset.source(source).map(decode_problem)


def local_source(path: str, format: str, on_error: str = "skip") -> grain.MapDataset:
    """Problems from a local JSONL / JSON / Parquet file (see :mod:`.local`)."""
    from reasonjax.data.local import load_local

    return problems_source(load_local(path, format, on_error).problems)


# ---------------------------------------------------------------------------------------
# Encoders: record -> variable-length example


def sft_encoder(tok: Tokenizer) -> Callable[[Problem], dict]:
    """Problem -> sft example (its task's prompt and reference solution)."""
    def encode(problem: Problem) -> dict:
        task = get_task(problem.task)
        return formatting.encode_completion(tok, task.prompt(problem), task.solution(problem))
    return encode


def prompt_encoder(tok: Tokenizer) -> Callable[[Problem], dict]:
    """Problem -> prompt example (its task's prompt)."""
    def encode(problem: Problem) -> dict:
        return formatting.encode_prompt(tok, get_task(problem.task).prompt(problem))
    return encode


# ---------------------------------------------------------------------------------------
# Pipeline


def _rename_packed(ex: dict) -> dict:
    """grain's packing names -> the formats' names (one segmentation for all keys)."""
    out = {k: v for k, v in ex.items()
           if not (k.endswith("_segment_ids") or k.endswith("_positions"))}
    out["segment_ids"] = ex["tokens_segment_ids"]
    out["positions"] = ex["tokens_positions"]
    return out


def make_pipeline(source: grain.MapDataset | Sequence[Any], encode: Callable[[Any], dict],
                  kind: str, seq_len: int, batch_size: int, *, seed: int = 0,
                  shuffle: bool = True, num_epochs: Optional[int] = None, pack: bool = False,
                  num_packing_bins: Optional[int] = None, on_overflow: str = "truncate",
                  shard_index: Optional[int] = None, shard_count: Optional[int] = None,
                  drop_remainder: bool = True, read_threads: int = 2) -> Pipeline:
    """Batches of ``kind`` [batch_size, seq_len] from ``source`` (see module docstring).

    encode: record -> example (``formatting.encode_*`` output); e.g. :func:`sft_encoder`.
    shard_index / shard_count: default ``jax.process_index()`` / ``jax.process_count()``.
    """
    if kind not in KINDS:
        raise ValueError(f"make_pipeline: kind must be one of {KINDS}, got {kind!r}")
    if pack and kind not in PACKABLE:
        raise ValueError(f"make_pipeline: pack=True works for {PACKABLE}, not {kind!r} "
                         "(pairs and per-sequence scalars cannot share a row)")
    if seq_len < 1 or batch_size < 1:
        raise ValueError(f"make_pipeline: seq_len and batch_size must be >= 1, got "
                         f"{seq_len}, {batch_size}")
    if on_overflow not in formatting.OVERFLOW:
        raise ValueError(f"on_overflow must be one of {formatting.OVERFLOW}, got "
                         f"{on_overflow!r}")
    if shard_index is None or shard_count is None:
        import jax

        shard_index, shard_count = jax.process_index(), jax.process_count()
    if not 0 <= shard_index < shard_count:
        raise ValueError(f"shard_index {shard_index} is not in 0..{shard_count - 1}")

    ds = source if isinstance(source, grain.MapDataset) else problems_source(source)
    if len(ds) < shard_count:
        raise ValueError(f"the source has {len(ds)} records, fewer than the {shard_count} "
                         "shards (processes) reading it")
    ds = ds.map_with_index(lambda i, record: (i, record))
    # equal shards: every process must produce the same number of batches or multi-host
    # steps stall at the end of a finite run; the last len % shard_count records are dropped
    ds = ds[:len(ds) - len(ds) % shard_count][shard_index::shard_count]
    if shuffle:
        ds = ds.shuffle(seed=seed)
    ds = ds.repeat(num_epochs)
    stats = PipelineStats()

    def encode_one(item):
        index, record = item
        example, truncated = formatting.clip(encode(record), kind, seq_len, on_overflow,
                                             what=f"record {index}")
        if truncated and stats.add_truncated() == 1:
            warnings.warn(f"record {index}: sequence longer than seq_len={seq_len} was "
                          "truncated; pipeline.stats.truncated counts them", stacklevel=2)
        if not pack:
            example = formatting.pad(example, kind, seq_len)
        return (np.int64(index), example) if kind == "prompt" else example

    ds = ds.map(encode_one)
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=read_threads,
                                              prefetch_buffer_size=4 * batch_size))
    if pack:
        keys = [k for k in ("tokens", "loss_mask", "value_mask", "value_targets")
                if kind != "sft" or k in ("tokens", "loss_mask")]
        it = grain.experimental.FirstFitPackIterDataset(
            it, length_struct={k: seq_len for k in keys},
            num_packing_bins=num_packing_bins or batch_size, seed=seed, shuffle_bins=False)
        it = it.map(_rename_packed)
    it = it.batch(batch_size, drop_remainder=drop_remainder)
    if kind == "prompt":
        it = it.map(lambda b: (b[1], b[0]))
    return Pipeline(it, stats)
