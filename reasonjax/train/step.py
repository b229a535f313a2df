"""The sharded train step: one factory for every loss.

``make_train_step(loss, optimizer, mesh, shardings)`` jits
``(state, batch[, ref_params]) -> (state, metrics)`` with explicit in/out shardings over
the ('data', 'fsdp', 'tensor') mesh: the state on ``shardings`` (params by the model's
logical rules, optimizer moments like their params), the batch split on its leading axis
over ('data', 'fsdp'), frozen reference params on their own shardings, metrics replicated.
The same code runs on one CPU device and on a pod; only the mesh changes.

Before anything is compiled the wrapper checks the batch against the loss (keys, shapes,
reference, divisibility by the data axes) and raises an error naming the problem. The
check and the batch shardings are worked out once per batch signature (keys, shapes,
dtypes); a training run, whose batches share one signature, pays for them once.
Mixed precision comes from the model config: ``dtype='bfloat16'`` computes in bf16 while
``param_dtype='float32'`` keeps fp32 master params, fp32 gradients and fp32 Adam moments.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from reasonjax import parallel
from reasonjax.train.loss import Loss
from reasonjax.train.state import TrainState


def batch_spec_sharding(mesh: Mesh) -> NamedSharding:
    """Leading axis over ('data', 'fsdp'), the rest replicated: fits [B], [B, T], ..."""
    return NamedSharding(mesh, P(parallel.BATCH_AXES))


def check_step_inputs(loss: Loss, batch: Mapping, mesh: Mesh, has_ref_params: bool) -> None:
    """Raises (BatchError, ReferenceError, ConfigError) before compiling when ``batch`` or
    the reference cannot feed ``loss`` on ``mesh``."""
    loss.check(batch, has_ref_params)
    first = next(iter(batch.values()))
    rows = np.shape(first)[0] * (1 if isinstance(first, jax.Array) else jax.process_count())
    parallel.validate_batch(rows, mesh, what=f"{loss.kind} batch size")


def batch_signature(batch: Mapping) -> tuple:
    """(key, shape, dtype, is a device array) of every entry: all that validating and
    placing a batch depend on, so both are worked out once per signature."""
    def dtype(v):
        return v.dtype if hasattr(v, "dtype") else np.asarray(v).dtype

    return tuple((k, np.shape(v), str(dtype(v)), isinstance(v, jax.Array))
                 for k, v in sorted(batch.items()))


def batch_shardings(batch: Mapping, mesh: Mesh) -> dict:
    """The sharding of every entry of ``batch``: leading axis over ('data', 'fsdp'), scalars
    replicated. Raises ConfigError when the rows do not divide over the data axes."""
    out = {}
    for k, v in batch.items():
        ndim = np.ndim(v)
        if ndim and not isinstance(v, jax.Array):
            parallel.validate_batch(np.shape(v)[0] * jax.process_count(), mesh)
        out[k] = parallel.batch_sharding(mesh, ndim) if ndim else parallel.replicated(mesh)
    return out


def put_batch(batch: Mapping, shardings: Mapping) -> dict:
    """Host (numpy) rows of this process -> global arrays on ``shardings`` (one per key);
    jax arrays are moved onto theirs (a no-op when they are already there)."""
    out = {}
    for k, v in batch.items():
        if isinstance(v, jax.Array) or not np.ndim(v):
            out[k] = jax.device_put(v, shardings[k])
        else:
            out[k] = jax.make_array_from_process_local_data(shardings[k], np.asarray(v))
    return out


def place_batch(batch: Mapping, mesh: Mesh) -> dict:
    """Host (numpy) rows of this process -> global arrays on the batch sharding; jax
    arrays are moved onto it (a no-op when they are already there)."""
    return put_batch(batch, batch_shardings(batch, mesh))


def _batch_preparer(loss: Loss, mesh: Mesh) -> Callable[[Mapping, bool], dict]:
    """``prepare(batch, has_ref_params) -> placed batch``: :func:`check_step_inputs` and
    :func:`batch_shardings` run once per (batch signature, has_ref_params); later batches of
    that signature are only placed."""
    known: dict = {}

    def prepare(batch: Mapping, has_ref_params: bool) -> dict:
        signature = (batch_signature(batch), has_ref_params)
        shardings = known.get(signature)
        if shardings is None:
            check_step_inputs(loss, batch, mesh, has_ref_params)
            shardings = known[signature] = batch_shardings(batch, mesh)
        return put_batch(batch, shardings)

    return prepare


def step_program(loss: Loss, optimizer: optax.GradientTransformation, mesh: Mesh,
                 shardings: TrainState, *, with_ref: bool, ref_shardings=None,
                 lr_schedule: Optional[Callable] = None, donate: bool = True):
    """The jitted ``(state, placed batch, ref_params) -> (state, metrics)`` behind
    :func:`make_train_step`, with its in/out shardings; ``.lower()`` it on abstract
    arguments to compile ahead of time (:mod:`reasonjax.recipes.plan`). ``ref_params`` is None
    unless ``with_ref``."""
    ref_shardings = ref_shardings if ref_shardings is not None else shardings.params
    replicated = NamedSharding(mesh, P())

    def step(state: TrainState, batch, ref_params):
        key, sub = jax.random.split(jax.random.wrap_key_data(state.rng))
        (value, metrics), grads = jax.value_and_grad(loss.fn, has_aux=True)(
            state.params, batch, sub, ref_params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {**metrics, "loss": value, "grad_norm": optax.tree.norm(grads)}
        if lr_schedule is not None:
            metrics["lr"] = jnp.asarray(lr_schedule(state.step), jnp.float32)
        new_state = TrainState(params=params, opt_state=opt_state, step=state.step + 1,
                               rng=jax.random.key_data(key))
        return new_state, metrics

    return jax.jit(step,
                   in_shardings=(shardings, batch_spec_sharding(mesh),
                                 ref_shardings if with_ref else None),
                   out_shardings=(shardings, replicated),
                   donate_argnums=(0,) if donate else ())


def make_train_step(loss: Loss, optimizer: optax.GradientTransformation, mesh: Mesh,
                    shardings: TrainState, *, ref_shardings=None, rules=None,
                    lr_schedule: Optional[Callable] = None, donate: bool = True):
    """The jitted, sharded train step for ``loss``.

    Returns ``step(state, batch, ref_params=None) -> (new_state, metrics)``; metrics are
    the loss's own plus ``grad_norm`` (before clipping) and ``lr`` (when ``lr_schedule``
    maps the step to the learning rate). ``shardings``: a TrainState of shardings
    (``state.state_shardings``); ``ref_shardings``: the reference params' shardings
    (default: the params' shardings). The input state is donated unless ``donate=False``.
    """
    rules = rules if rules is not None else parallel.logical_rules()
    compiled = {}

    def get(with_ref: bool):
        if with_ref not in compiled:
            compiled[with_ref] = step_program(
                loss, optimizer, mesh, shardings, with_ref=with_ref,
                ref_shardings=ref_shardings, lr_schedule=lr_schedule, donate=donate)
        return compiled[with_ref]

    prepare = _batch_preparer(loss, mesh)

    def train_step(state: TrainState, batch: Mapping, ref_params: Any = None):
        placed = prepare(batch, ref_params is not None)
        if loss.uses_batch_reference(batch) or not loss.needs_reference:
            ref_params = None
        with parallel.activate(mesh, rules):
            return get(ref_params is not None)(state, placed, ref_params)

    return train_step


def make_eval_step(loss: Loss, mesh: Mesh, param_shardings, *, ref_shardings=None,
                   rules=None, seed: int = 0):
    """``eval_step(params, batch, ref_params=None) -> metrics``: the loss and its metrics
    without a gradient, with the same shardings and checks as the train step."""
    rules = rules if rules is not None else parallel.logical_rules()
    ref_shardings = ref_shardings if ref_shardings is not None else param_shardings
    replicated = NamedSharding(mesh, P())

    def evaluate(params, batch, ref_params):
        value, metrics = loss.fn(params, batch, jax.random.key(seed), ref_params)
        return {**metrics, "loss": value}

    compiled = {}
    prepare = _batch_preparer(loss, mesh)

    def eval_step(params, batch: Mapping, ref_params: Any = None):
        placed = prepare(batch, ref_params is not None)
        if loss.uses_batch_reference(batch) or not loss.needs_reference:
            ref_params = None
        with_ref = ref_params is not None
        if with_ref not in compiled:
            compiled[with_ref] = jax.jit(
                evaluate, in_shardings=(param_shardings, batch_spec_sharding(mesh),
                                        ref_shardings if with_ref else None),
                out_shardings=replicated)
        with parallel.activate(mesh, rules):
            return compiled[with_ref](params, placed, ref_params)

    return eval_step


def tokens_in(batch: Mapping) -> int:
    """Real (non-padding) tokens of a batch, for throughput: nonzero segment ids summed
    over every sequence of the batch (both sides of a preference pair)."""
    return int(sum(np.count_nonzero(np.asarray(v)) for k, v in batch.items()
                   if k.endswith("segment_ids")))
