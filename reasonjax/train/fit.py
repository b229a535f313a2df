"""Whole training runs as library calls: a loss on in-memory rows, or SFT on a task.

These are what recipes and the ``reasonjax train`` command call:

- :func:`fit`: any :class:`~reasonjax.train.loss.Loss` (DPO family, KTO, value / PRM,
  AlphaMath joint, SFT) on rows held in memory, e.g. ``preference_batch(...)`` of this
  round's pairs, shuffled every epoch by a grain iterator (so a run with ``run_dir``
  resumes on the same batches);
- :func:`sft_on_task`: SFT on a built-in task's generated solutions (from scratch or from
  given params);
- :func:`setup`: the mesh, sharded params, optimizer and TrainState every run starts with;
- :func:`make_fit_step`: :func:`fit`'s jitted step alone, from param shapes.

With no ``mesh`` a run uses one device; pass ``parallel.make_mesh(...)`` to shard. With
``FitConfig.lora`` (or ``setup(..., lora=...)``) the state trains LoRA adapters on the
frozen base (:mod:`reasonjax.train.lora`), which the step gets as its reference params.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple, Optional, Sequence, Union

import grain
import jax
import numpy as np
import optax
from jax.sharding import Mesh

from reasonjax import parallel
from reasonjax.config import ConfigError, check_fields
from reasonjax.data import pipeline
from reasonjax.data.formats import BatchError
from reasonjax.data.task import Problem, Task
from reasonjax.models.config import ModelConfig
from reasonjax.models.tokenizer import Tokenizer, check_vocab
from reasonjax.train import lora as lora_lib
from reasonjax.train.lora import LoRAConfig
from reasonjax.train.loop import LoopConfig, train
from reasonjax.train.loss import Loss
from reasonjax.train.sft import SFTConfig, sft_loss, with_mask_token
from reasonjax.train.step import make_train_step
from reasonjax.train.state import (OptimConfig, TrainState, check_steps, create_train_state,
                                   make_optimizer, make_schedule, state_shardings)


@dataclasses.dataclass(frozen=True)
class FitConfig:
    """steps: train steps (optimizer updates x accum_steps). batch_size: global rows per
    step. seed: data order and the step rng. checkpoint_every / eval_every / progress: see
    :class:`~reasonjax.train.loop.LoopConfig`. lora: train LoRA adapters on the frozen
    params instead of the params (None: full fine-tuning)."""

    steps: int = 100
    batch_size: int = 16
    seed: int = 0
    optim: OptimConfig = OptimConfig()
    checkpoint_every: int = 100
    eval_every: int = 0
    progress: bool = True
    lora: Optional[LoRAConfig] = None

    def __post_init__(self):
        check_fields(self, steps=">= 0", batch_size=">= 1", checkpoint_every=">= 1",
                     eval_every=">= 0")
        check_steps(self.steps, self.optim)


@dataclasses.dataclass(frozen=True)
class TaskSFTConfig:
    """SFT on a task's reference solutions. seq_len: padded (or packed) row length;
    num_problems: size of the generated problem stream (cycled); data_seed: its seed
    (evaluate on another seed); pack: several solutions per row."""

    fit: FitConfig = FitConfig(steps=1000, batch_size=32)
    seq_len: int = 64
    num_problems: int = 100_000
    data_seed: str = "train"
    pack: bool = False
    sft: SFTConfig = SFTConfig()

    def __post_init__(self):
        check_fields(self, seq_len=">= 2", num_problems=">= 1")


class Setup(NamedTuple):
    """What a run starts from: the mesh, the TrainState on it, the state's shardings, the
    optimizer and the params' shardings. With LoRA the state trains the adapter tree;
    ``frozen`` is the base on the mesh (the step's reference params) and ``lora`` its
    config; both None otherwise."""

    mesh: Mesh
    state: TrainState
    shardings: TrainState
    optimizer: optax.GradientTransformation
    param_shardings: Any
    frozen: Any = None
    lora: Optional[LoRAConfig] = None

    def model_params(self, trained):
        """The params the model runs with, from the state's ``trained`` params."""
        return trained if self.lora is None else lora_lib.merge(self.frozen, trained,
                                                                self.lora)

    def loss(self, loss: Loss) -> Loss:
        """``loss`` as the step trains it (on the adapters, with the base, under LoRA)."""
        return loss if self.lora is None else lora_lib.wrap_loss(loss, self.lora)

    def reference(self, ref_params, start_params=None):
        """The step's reference params: the frozen base under LoRA (a LoRA run's reference
        *is* its base: None or the run's own ``start_params`` mean it, another one is
        refused), else ``ref_params``."""
        if self.lora is None:
            return ref_params
        if ref_params is not None and ref_params is not self.frozen \
                and ref_params is not start_params:
            raise ConfigError("lora: the reference of a LoRA run is its frozen base; drop "
                              "the separate reference params (or train without lora)")
        return self.frozen


def single_device_mesh() -> Mesh:
    return parallel.make_mesh(parallel.MeshConfig(data=1), jax.devices()[:1])


def param_shapes(model_config: ModelConfig, params=None):
    """``jax.ShapeDtypeStruct``s of ``params`` (of a fresh init of ``model_config`` when
    None), for what needs shapes only; nothing is computed or allocated."""
    if params is None:
        return jax.eval_shape(lambda: parallel.init_params(model_config, jax.random.key(0)))
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), params)


def _optimizer_and_shardings(model_config: ModelConfig, shapes, optim: OptimConfig,
                             mesh: Mesh, lora: Optional[LoRAConfig] = None):
    """(optimizer, param shardings, TrainState shardings) from param shapes alone (under
    LoRA the TrainState's params are the adapter tree of those shapes)."""
    parallel.validate_model_mesh(model_config, mesh)
    param_shardings = parallel.param_shardings(model_config, mesh)
    trained, trained_shardings = shapes, param_shardings
    if lora is not None:
        if optim.trainable != "all":
            raise ConfigError(f"optim.trainable={optim.trainable!r} with lora: LoRA trains its "
                              "adapters and lora.full modules; leave optim.trainable at all")
        trained = lora_lib.init_shapes(shapes, lora)
        trained_shardings = lora_lib.shardings(trained, param_shardings, mesh)
    optimizer = trained_optimizer(optim, trained, lora)
    return optimizer, param_shardings, state_shardings(optimizer, trained, trained_shardings,
                                                       mesh)


def trained_optimizer(optim: OptimConfig, trained, lora: Optional[LoRAConfig] = None
                      ) -> optax.GradientTransformation:
    """The optimizer of the tree a run trains (the params, or under ``lora`` the adapter
    tree, with LoRA+'s scaling of B when asked: :func:`reasonjax.train.lora.optimizer`)."""
    tx = make_optimizer(optim, trained)
    return tx if lora is None else lora_lib.optimizer(tx, lora)


def optimizer_state_bytes(model_config: ModelConfig, optim: OptimConfig,
                          lora: Optional[LoRAConfig] = None) -> int:
    """Bytes of the optimizer state a run of ``model_config`` with ``optim`` (and ``lora``)
    holds, from shapes alone (nothing is allocated): Adam's moments of what it trains."""
    shapes = param_shapes(model_config)
    trained = shapes if lora is None else lora_lib.init_shapes(shapes, lora)
    # (the schedule's length changes no shape)
    state = jax.eval_shape(trained_optimizer(optim.for_steps(1), trained, lora).init,
                           trained)
    return int(sum(np.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(state)))


def setup(model_config: ModelConfig, params, optim: OptimConfig, *, seed: int = 0,
          mesh: Optional[Mesh] = None, lora: Optional[LoRAConfig] = None) -> Setup:
    """Mesh (default: one device), params placed on their shardings (or initialised from
    ``seed`` when ``params`` is None), optimizer, TrainState and its shardings. The
    shardings come from shapes; the state is built once, directly on them. With ``lora``
    the params become the frozen base (in ``lora.base_dtype``) and the state trains the
    adapters."""
    mesh = mesh or single_device_mesh()
    if params is None:
        params = parallel.init_params(model_config, jax.random.key(seed), mesh)
    optimizer, param_shardings, shardings = _optimizer_and_shardings(
        model_config, param_shapes(model_config, params), optim, mesh, lora)
    params = jax.device_put(params, param_shardings)
    if lora is None:
        state = create_train_state(params, optimizer, seed=seed, shardings=shardings)
        return Setup(mesh, state, shardings, optimizer, param_shardings)
    frozen = params if lora.base_dtype is None else jax.jit(
        lambda p: lora_lib.cast_base(p, lora), out_shardings=param_shardings)(params)
    trained = jax.jit(lambda p: lora_lib.init(p, lora), out_shardings=shardings.params)(
        frozen)
    state = create_train_state(trained, optimizer, seed=seed, shardings=shardings)
    return Setup(mesh, state, shardings, optimizer, param_shardings, frozen, lora)


def rows_iterator(rows: Mapping[str, np.ndarray], batch_size: int, seed: int = 0):
    """A checkpointable iterator of batches drawn from ``rows`` (dict of arrays [N, ...]):
    shuffled anew every epoch, repeated forever, every batch full (a batch may span two
    epochs, so fewer rows than ``batch_size`` are fine). In a multi-process run every
    process holds all rows and draws the same batches, and yields its share of each
    (:func:`reasonjax.parallel.local_rows`)."""
    sizes = {k: np.shape(v)[0] if np.ndim(v) else None for k, v in rows.items()}
    n = next(iter(sizes.values()))
    if any(s != n for s in sizes.values()):
        raise BatchError(f"rows need the same leading size for every key, got {sizes}")
    if n == 0:
        raise BatchError("no rows to train on")
    host = {k: np.asarray(v) for k, v in rows.items()}
    ds = grain.MapDataset.range(n).shuffle(seed=seed).repeat(None)
    ds = ds.map(lambda i: {k: v[i] for k, v in host.items()})
    batches = ds.to_iter_dataset().batch(batch_size, drop_remainder=True)
    if jax.process_count() > 1:
        parallel.local_rows(np.zeros(batch_size), "batch_size")  # divisible, or say so
        batches = batches.map(lambda b: {k: parallel.local_rows(v) for k, v in b.items()})
    return iter(batches)


def fit(loss: Loss, model_config: ModelConfig, params, data: Union[Mapping, Any],
        cfg: FitConfig = FitConfig(), *, ref_params: Any = None, mesh: Optional[Mesh] = None,
        run_dir: Optional[str] = None, eval_fn: Optional[Callable[[Any], dict]] = None,
        step_fn: Optional[Callable] = None) -> tuple[Any, dict]:
    """Trains ``params`` on ``loss`` for ``cfg.steps`` steps. Returns (params, last metrics).

    data: rows of the loss's batch kind (a dict of arrays [N, ...], e.g.
    ``formatting.preference_batch(...)``; see :func:`rows_iterator`) or an iterator of
    batches with get_state/set_state. ref_params: the frozen reference (DPO family, KTO)
    unless the rows carry precomputed reference log-probs. With ``run_dir`` the run
    checkpoints and resumes there and writes ``metrics.jsonl``. step_fn: a
    :func:`make_fit_step` of the same loss, optimizer config and mesh, to share one compile
    between several fits."""
    cfg = dataclasses.replace(cfg, optim=cfg.optim.for_steps(cfg.steps))
    if isinstance(data, Mapping):
        loss.check(data, ref_params is not None or cfg.lora is not None)
        data = rows_iterator(data, cfg.batch_size, cfg.seed)
    s = setup(model_config, params, cfg.optim, seed=cfg.seed, mesh=mesh, lora=cfg.lora)
    if s.lora is not None:
        ref_params = s.reference(ref_params, params)
    elif ref_params is not None:
        ref_params = parallel.shard_params(ref_params, model_config, s.mesh)
    loop = LoopConfig(steps=cfg.steps, run_dir=run_dir, checkpoint_every=cfg.checkpoint_every,
                      eval_every=cfg.eval_every, progress=cfg.progress)
    if step_fn is None:
        step_fn = make_train_step(
            s.loss(loss), s.optimizer, s.mesh, s.shardings,
            ref_shardings=s.param_shardings if s.lora is not None else None,
            lr_schedule=make_schedule(cfg.optim))
    state, metrics = train(s.loss(loss), s.state, data, loop, mesh=s.mesh,
                           shardings=s.shardings, step_fn=step_fn, ref_params=ref_params,
                           eval_fn=None if eval_fn is None else (
                               lambda trained: eval_fn(s.model_params(trained))))
    if s.lora is not None and run_dir is not None:
        lora_lib.save_adapters(Path(run_dir) / lora_lib.ADAPTERS_DIR, state.params, s.lora)
    return s.model_params(state.params), metrics


def make_fit_step(loss: Loss, model_config: ModelConfig, params, optim: OptimConfig, *,
                  mesh: Optional[Mesh] = None, lora: Optional[LoRAConfig] = None
                  ) -> Callable:
    """The jitted train step :func:`fit` would build, to pass as ``fit(..., step_fn=...)``
    to several fits of the same loss, optimizer config, param shapes, mesh and ``lora``
    (the fits' ``FitConfig.lora``). Only the shapes of ``params`` are read (None: the
    shapes of a fresh init); no state is built."""
    mesh = mesh or single_device_mesh()
    optimizer, param_shardings, shardings = _optimizer_and_shardings(
        model_config, param_shapes(model_config, params), optim, mesh, lora)
    if lora is not None:
        loss = lora_lib.wrap_loss(loss, lora)
    return make_train_step(loss, optimizer, mesh, shardings, ref_shardings=param_shardings,
                           lr_schedule=make_schedule(optim))


def task_sft_iterator(tok: Tokenizer, task: Task, cfg: TaskSFTConfig,
                      problems: Optional[Sequence[Problem]] = None):
    """Batches of the task's (prompt, reference solution) rows, per :class:`TaskSFTConfig`;
    with ``problems`` (e.g. a local file's) those, cycled, instead of generated ones."""
    source = (pipeline.task_source(task, cfg.num_problems, seed=cfg.data_seed)
              if problems is None else pipeline.problems_source(problems))
    pipe = pipeline.make_pipeline(source, pipeline.sft_encoder(tok), "sft", cfg.seq_len,
                                  cfg.fit.batch_size // jax.process_count(),
                                  seed=cfg.fit.seed, pack=cfg.pack)
    return iter(pipe.dataset)


def sft_on_task(model_config: ModelConfig, tok: Tokenizer, task: Task,
                cfg: TaskSFTConfig = TaskSFTConfig(), *, params=None,
                problems: Optional[Sequence[Problem]] = None,
                run_dir: Optional[str] = None, mesh: Optional[Mesh] = None,
                eval_fn: Optional[Callable[[Any], dict]] = None) -> tuple[Any, dict]:
    """SFT of ``model_config`` on ``task``'s reference solutions (of ``problems`` when
    given, else of the generated stream). Returns (params, last metrics). params=None
    trains from scratch (initialised from ``cfg.fit.seed``)."""
    check_vocab(model_config.vocab_size, tok)
    return fit(sft_loss(model_config, with_mask_token(cfg.sft, tok)), model_config, params,
               task_sft_iterator(tok, task, cfg, problems), cfg.fit, mesh=mesh,
               run_dir=run_dir, eval_fn=eval_fn)
