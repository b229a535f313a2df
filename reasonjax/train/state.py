"""Train state and the optimizer built from config.

``TrainState`` is one pytree (params, optimizer state, step, rng) so it is jitted,
sharded and checkpointed as a whole. The optimizer is optax AdamW behind global-norm
clipping, with linear warmup and cosine / linear decay, optional gradient accumulation
(``optax.MultiSteps``) and optional frozen subtrees (``optax.multi_transform`` with
``set_to_zero``: frozen params get no update and no Adam moments).
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Literal, Optional

import flax
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from reasonjax.config import ConfigError, check_fields


@flax.struct.dataclass
class TrainState:
    """params: model params (fp32 master copy under mixed precision).
    opt_state: the optax state. step: [] int32, train steps taken (batches consumed).
    rng: [2] uint32 raw key data (checkpointable); split once per step."""

    params: Any
    opt_state: Any
    step: jax.Array
    rng: jax.Array


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """AdamW with warmup + decay.

    lr: peak learning rate. schedule: decay after warmup, from lr to lr * min_lr_ratio at
    ``decay_steps`` (counted in optimizer updates, i.e. after accumulation; None: the
    whole run, filled in by :meth:`for_steps` when a run knows its length).
    clip_norm: global-norm clipping of the (accumulated) gradient; null disables it.
    weight_decay applies to matrices (``kernel`` / ``embedding``), not to norms or biases.
    accum_steps: micro-batches per optimizer update. trainable: ``all``, ``value_head``,
    ``all_but_value_head``, or a regex over '/'-joined param paths (e.g. ``layers/.*``);
    the rest is frozen.
    """

    lr: float = 3e-4
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_steps: int = 0
    decay_steps: Optional[int] = None
    min_lr_ratio: float = 0.1
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.0
    clip_norm: Optional[float] = 1.0
    accum_steps: int = 1
    trainable: str = "all"

    def __post_init__(self):
        check_fields(self, lr=">= 0", warmup_steps=">= 0", decay_steps=">= 1",
                     min_lr_ratio="in [0, 1]", b1="in [0, 1)", b2="in [0, 1)", eps="> 0",
                     weight_decay=">= 0", clip_norm="> 0", accum_steps=">= 1")


    def for_steps(self, steps: int) -> "OptimConfig":
        """This config with ``decay_steps`` unset replaced by the optimizer updates of a
        ``steps``-step run (steps // accum_steps), so the decay spans the run."""
        if self.decay_steps is not None:
            return self
        return dataclasses.replace(self, decay_steps=max(steps // self.accum_steps, 1))


def check_steps(steps: int, optim) -> None:
    """A run of ``steps`` micro-batches must make at least one optimizer update."""
    if 0 < steps < optim.accum_steps:
        raise ConfigError(f"steps: {steps} micro-batches make no optimizer update with "
                          f"optim.accum_steps={optim.accum_steps} (the weights would not "
                          f"change): raise steps to a multiple of {optim.accum_steps}")


def make_schedule(cfg: OptimConfig):
    """lr(update) = lr * warmup(update) * decay(update).

    warmup = min((u + 1) / warmup_steps, 1) (the first update already moves);
    decay over f = clip((u - warmup_steps) / (decay_steps - warmup_steps), 0, 1):
    cosine: m + (1 - m) (1 + cos(pi f)) / 2; linear: 1 - (1 - m) f; constant: 1.
    """
    if cfg.decay_steps is None and cfg.schedule != "constant":
        raise ConfigError(f"optim.decay_steps is unset for a {cfg.schedule} schedule: set it, "
                          "or build the schedule from optim.for_steps(total steps)")
    w, total, m = cfg.warmup_steps, cfg.decay_steps or 1, cfg.min_lr_ratio

    def schedule(count):
        u = jnp.asarray(count, jnp.float32)
        warm = jnp.minimum((u + 1) / w, 1.0) if w > 0 else 1.0
        f = jnp.clip((u - w) / max(total - w, 1), 0.0, 1.0)
        if cfg.schedule == "cosine":
            decay = m + (1 - m) * 0.5 * (1 + jnp.cos(math.pi * f))
        elif cfg.schedule == "linear":
            decay = 1 - (1 - m) * f
        else:
            decay = 1.0
        return cfg.lr * warm * decay

    return schedule


def param_paths(params) -> Any:
    """Pytree of '/'-joined key paths, e.g. 'layers/attn/q/kernel'."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: "/".join(str(getattr(k, "key", k)) for k in path), params)


def trainable_mask(params, trainable: str) -> Any:
    """Pytree of bools: True where the param is trained."""
    paths = param_paths(params)
    if trainable == "all":
        return jax.tree.map(lambda _: True, paths)
    if trainable == "value_head":
        return jax.tree.map(lambda p: p.startswith("value_head/"), paths)
    if trainable == "all_but_value_head":
        return jax.tree.map(lambda p: not p.startswith("value_head/"), paths)
    try:
        pattern = re.compile(trainable)
    except re.error as e:
        raise ConfigError(f"optim.trainable={trainable!r} is not a valid regex: {e}") from None
    mask = jax.tree.map(lambda p: bool(pattern.search(p)), paths)
    if not any(jax.tree.leaves(mask)):
        raise ConfigError(f"optim.trainable={trainable!r} matches no parameter; paths look like "
                          f"{jax.tree.leaves(paths)[:3]}")
    return mask


def _decay_mask(params):
    return jax.tree.map(lambda p: p.endswith("kernel") or p.endswith("embedding"),
                        param_paths(params))


def make_optimizer(cfg: OptimConfig, params=None) -> optax.GradientTransformation:
    """The optax transformation for ``cfg``. ``params`` (arrays or shapes) is needed only
    when ``cfg.trainable`` freezes something."""
    tx = optax.adamw(make_schedule(cfg), b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                     weight_decay=cfg.weight_decay, mask=_decay_mask)
    if cfg.clip_norm is not None:
        tx = optax.chain(optax.clip_by_global_norm(cfg.clip_norm), tx)
    if cfg.trainable != "all":
        if params is None:
            raise ValueError("make_optimizer: pass params to freeze subtrees "
                             f"(optim.trainable={cfg.trainable!r})")
        labels = jax.tree.map(lambda t: "train" if t else "freeze",
                              trainable_mask(params, cfg.trainable))
        tx = optax.multi_transform({"train": tx, "freeze": optax.set_to_zero()}, labels)
    if cfg.accum_steps > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=cfg.accum_steps)
    return tx


def learning_rate(cfg: OptimConfig, step) -> jax.Array:
    """The learning rate used by train step ``step`` (accounting for accumulation)."""
    return make_schedule(cfg)(jnp.asarray(step) // cfg.accum_steps)


def _path_keys(path) -> tuple:
    return tuple(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))) for k in path)


def opt_state_shardings(opt_state_shapes, params, param_shardings, mesh: Mesh):
    """Shardings for an optimizer state: every leaf that mirrors a param (Adam moments,
    accumulated gradients) takes that param's sharding; scalars and the rest replicate.

    A leaf mirrors a param when its key path ends with the param's path and the shapes
    agree (optax nests the param tree inside its states)."""
    by_path = {}
    for path, (p, s) in zip(
            (_path_keys(k) for k, _ in jax.tree_util.tree_flatten_with_path(params)[0]),
            zip(jax.tree.leaves(params), jax.tree.leaves(param_shardings))):
        by_path[path] = (tuple(p.shape), s)
    replicated = NamedSharding(mesh, P())
    depth = max(len(k) for k in by_path)

    def pick(path, leaf):
        keys = _path_keys(path)
        for n in range(min(depth, len(keys)), 0, -1):
            hit = by_path.get(keys[-n:])
            if hit is not None and hit[0] == tuple(leaf.shape):
                return hit[1]
        return replicated

    return jax.tree_util.tree_map_with_path(pick, opt_state_shapes)


def state_shardings(optimizer: optax.GradientTransformation, params, param_shardings,
                    mesh: Mesh) -> TrainState:
    """A TrainState of shardings matching ``create_train_state``'s output. ``params`` may be
    arrays or ``jax.ShapeDtypeStruct``s: only their shapes are read (the optimizer state is
    traced with ``jax.eval_shape``, never built)."""
    opt_shapes = jax.eval_shape(optimizer.init, params)
    replicated = NamedSharding(mesh, P())
    return TrainState(params=param_shardings,
                      opt_state=opt_state_shardings(opt_shapes, params, param_shardings, mesh),
                      step=replicated, rng=replicated)


def create_train_state(params, optimizer: optax.GradientTransformation, seed: int = 0,
                       mesh: Optional[Mesh] = None, param_shardings=None,
                       shardings: Optional[TrainState] = None) -> TrainState:
    """A fresh TrainState; with ``mesh`` and ``param_shardings`` (or the state's
    ``shardings`` from :func:`state_shardings`, when the caller already has them) every leaf
    is created on its sharding (optimizer moments sharded like their params)."""
    def init(p):
        return TrainState(params=p, opt_state=optimizer.init(p),
                          step=jnp.zeros((), jnp.int32),
                          rng=jax.random.key_data(jax.random.key(seed)))

    if shardings is None and mesh is None:
        return jax.jit(init)(params)
    if shardings is None:
        if param_shardings is None:
            raise ValueError("create_train_state: pass param_shardings with mesh "
                             "(reasonjax.parallel.param_shardings(model_config, mesh))")
        shardings = state_shardings(optimizer, params, param_shardings, mesh)
    return jax.jit(init, in_shardings=(shardings.params,), out_shardings=shardings)(params)
