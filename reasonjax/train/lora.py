"""LoRA (Hu et al., 2021, "LoRA: Low-Rank Adaptation of Large Language Models") for every
train kind: the frozen base plus a trainable low-rank update of chosen projections.

A projection kernel W (stacked over layers, [L, in..., out...]) is used as
W + (alpha / rank) * (A @ B).reshape(W.shape), A [L, in, rank] ~ N(0, 1 / in), B
[L, rank, out] = 0, so training starts exactly at the base model (an unstacked kernel such
as the LM head counts as L = 1). The trainable tree is::

    {"lora": {target: {"a": A, "b": B}}, "full": {module: subtree}}

``full`` holds the top-level modules trained whole (PEFT's ``modules_to_save``): by default
the value head, which PPO's critic and value / PRM training need and which starts at
zero. The optimizer, its moments and the run's checkpoints hold only this tree.

The update is merged into the weights before the forward (:func:`merge`), inside the
jitted step, instead of running x A B beside x W in every layer: the model, its decode
loop over per-layer weight slices and every search method stay exactly as they are, and
the merged kernels are a temporary of the step (one extra copy of the targeted matrices at
peak; the gradient reaches A and B through the merge). A maintained library was
considered: qwix (which tunix uses) intercepts the model's dot-generals by module path at
init and apply, which would have to follow both our scanned training layers and the
unrolled decode over sliced weights; the merge is a few lines and covers both.

LoRA+ (Hayou et al., 2024, "LoRA+: Efficient Low Rank Adaptation of Large Models"):
``b_lr_ratio`` > 1 gives B a learning rate that multiple of A's (and of the ``full``
modules'), by scaling B's optimizer updates (:func:`optimizer`); the paper's default ratio
is 16.

The frozen base goes to the train step in the reference slot (:func:`wrap_loss`): for
DPO and RL it *is* the reference model, so a LoRA run never holds a second copy of the
weights. ``base_dtype="bfloat16"`` stores the frozen base in bf16 (the merge computes in
the adapters' float32).
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Optional

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from reasonjax.config import ConfigError, check_fields
from reasonjax.train.loss import Loss

# Target name -> (path of its kernel's module in the params, number of input axes, whether
# the kernel is stacked over layers).
TARGETS: dict[str, tuple[tuple[str, ...], int, bool]] = {
    "q": (("layers", "attn", "q"), 1, True),
    "k": (("layers", "attn", "k"), 1, True),
    "v": (("layers", "attn", "v"), 1, True),
    "o": (("layers", "attn", "o"), 2, True),
    "gate": (("layers", "mlp", "gate"), 1, True),
    "up": (("layers", "mlp", "up"), 1, True),
    "down": (("layers", "mlp", "down"), 1, True),
    "lm_head": (("lm_head",), 1, False),
}
ADAPTERS_DIR = "adapters"  # under a run dir
ADAPTERS_FILE = "lora.json"


@dataclasses.dataclass(frozen=True)
class LoRAConfig:
    """rank / alpha: the update's rank and scale (alpha / rank). targets: the projections
    adapted (``TARGETS``: q k v o gate up down, HF's q_proj ... down_proj; and lm_head).
    full: top-level param modules trained whole (``value_head``, ``lm_head``, ``embed``,
    ...). base_dtype: ``bfloat16`` keeps the frozen base in bf16; None keeps its dtype.
    b_lr_ratio: LoRA+'s ratio of B's learning rate to A's (1: plain LoRA). seed: A's
    init."""

    rank: int = 8
    alpha: float = 16.0
    targets: tuple[str, ...] = ("q", "k", "v", "o", "gate", "up", "down")
    full: tuple[str, ...] = ("value_head",)
    base_dtype: Optional[str] = None
    b_lr_ratio: float = 1.0
    seed: int = 0

    def __post_init__(self):
        check_fields(self, rank=">= 1", alpha="> 0", b_lr_ratio="> 0")
        unknown = [t for t in self.targets if t not in TARGETS]
        if unknown or not self.targets:
            raise ConfigError(f"lora.targets: {unknown or 'empty'}; choose from "
                              f"{', '.join(TARGETS)}")
        if self.base_dtype not in (None, "bfloat16", "float32"):
            raise ConfigError(f"lora.base_dtype must be bfloat16, float32 or null, got "
                              f"{self.base_dtype!r}")

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


def _module(params, path: tuple[str, ...]):
    node = params
    for key in path:
        node = node[key]
    return node


def _kernel_2d(kernel_shape: tuple, n_in: int, stacked: bool) -> tuple[int, int, int]:
    """(layers, in, out) of a kernel [L, in..., out...] (unstacked: [in..., out...], L = 1)."""
    if not stacked:
        kernel_shape = (1,) + tuple(kernel_shape)
    return (kernel_shape[0], math.prod(kernel_shape[1:1 + n_in]),
            math.prod(kernel_shape[1 + n_in:]))


def init(base, cfg: LoRAConfig):
    """The trainable tree for the params ``base`` (the adapters read only its shapes; the
    ``full`` modules are copied from it). From shapes alone: :func:`init_shapes`."""
    key = jax.random.key(cfg.seed)
    lora = {}
    for i, name in enumerate(cfg.targets):
        path, n_in, stacked = TARGETS[name]
        if path[0] not in base:
            raise ConfigError(f"lora.targets: {name} is not in this model (tied embeddings "
                              "have no lm_head); drop it")
        L, d_in, d_out = _kernel_2d(tuple(_module(base, path)["kernel"].shape), n_in, stacked)
        a = jax.random.normal(jax.random.fold_in(key, i), (L, d_in, cfg.rank), jnp.float32)
        lora[name] = {"a": a / math.sqrt(d_in), "b": jnp.zeros((L, cfg.rank, d_out),
                                                              jnp.float32)}
    missing = [m for m in cfg.full if m not in base]
    if missing:
        raise ConfigError(f"lora.full: no module {missing} in the params; top-level modules "
                          f"are {sorted(base)}")
    full = {m: jax.tree.map(lambda x: jnp.asarray(x, jnp.float32)
                            if jnp.issubdtype(x.dtype, jnp.floating) else jnp.asarray(x),
                            base[m]) for m in cfg.full}
    return {"lora": lora, "full": full}


def init_shapes(base_shapes, cfg: LoRAConfig):
    """``jax.ShapeDtypeStruct``s of :func:`init`'s tree for params of ``base_shapes``
    (arrays or ShapeDtypeStructs); nothing is computed or allocated."""
    return jax.eval_shape(lambda b: init(b, cfg), base_shapes)


def delta(a, b, kernel_shape: tuple, scale: float) -> jax.Array:
    """scale * A @ B ([L, in, r] @ [L, r, out]) reshaped to the kernel's shape."""
    return (jnp.einsum("lir,lro->lio", a, b) * scale).reshape(kernel_shape)


def merge(base, trainable, cfg: LoRAConfig):
    """The params the model runs with: base kernels plus their updates, ``full`` modules
    from the trainable tree (a new tree; ``base`` is not modified)."""
    params = dict(base)
    for name, ab in trainable["lora"].items():
        path = TARGETS[name][0]
        node = params
        for key in path[:-1]:  # copy the dicts along the path
            node[key] = dict(node[key])
            node = node[key]
        module = dict(node[path[-1]])
        w = module["kernel"]
        module["kernel"] = w.astype(ab["a"].dtype) + delta(ab["a"], ab["b"], w.shape, cfg.scale)
        node[path[-1]] = module
    params.update(trainable["full"])
    return params


def cast_base(base, cfg: LoRAConfig):
    """The frozen base in ``cfg.base_dtype`` (floating leaves only)."""
    if cfg.base_dtype is None:
        return base
    dtype = jnp.dtype(cfg.base_dtype)
    return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating)
                        else x, base)


def optimizer(tx: optax.GradientTransformation, cfg: LoRAConfig
              ) -> optax.GradientTransformation:
    """``tx`` for the trainable tree, with B's updates scaled by ``cfg.b_lr_ratio`` (LoRA+;
    ``tx`` itself at ratio 1). The scale follows ``tx`` whole, so B's weight decay and
    learning-rate schedule scale with it, as a larger learning rate would."""
    if cfg.b_lr_ratio == 1.0:
        return tx

    def is_b(tree):
        return jax.tree_util.tree_map_with_path(
            lambda path, _: len(path) == 3 and getattr(path[0], "key", None) == "lora"
            and getattr(path[2], "key", None) == "b", tree)

    return optax.chain(tx, optax.masked(optax.scale(cfg.b_lr_ratio), is_b))


def wrap_loss(loss: Loss, cfg: LoRAConfig) -> Loss:
    """``loss`` on the trainable tree: ``fn(trainable, batch, rng, base)`` runs the inner
    loss on ``merge(base, trainable)`` with the frozen base as its reference. The train
    step must be given the base as ``ref_params`` (it always is needed)."""
    def fn(trainable, batch, rng, base):
        return loss.fn(merge(base, trainable, cfg), batch, rng, base)

    return Loss(name=f"{loss.name}+lora", kind=loss.kind, fn=fn, needs_reference=True,
                reference_keys=(), extra_keys=loss.extra_keys)


def shardings(trainable, param_shardings, mesh: Mesh):
    """The trainable tree's shardings: adapters replicated (they are small), ``full``
    modules as the model's params."""
    replicated = NamedSharding(mesh, P())
    return {"lora": jax.tree.map(lambda _: replicated, trainable["lora"]),
            "full": {m: param_shardings[m] for m in trainable["full"]}}


def count(tree) -> int:
    """Number of parameters in a tree."""
    return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))


def save_adapters(path: str | Path, trainable, cfg: LoRAConfig) -> Path:
    """Writes the trainable tree (orbax, ``params``) and ``lora.json`` (the config and the
    parameter count) to the directory ``path`` (replaced whole). The base they apply to is
    the run's model, recorded in its ``run.json``."""
    from reasonjax import checkpoint, fileio
    from reasonjax.config import to_dict

    path = Path(path)
    with fileio.atomic_dir(path, overwrite=True) as tmp:
        checkpoint.save_params(tmp / "params", jax.device_get(trainable))
        fileio.atomic_write_text(tmp / ADAPTERS_FILE, json.dumps(
            {"lora": to_dict(cfg), "parameters": count(trainable)},
            indent=1) + "\n")
    return path


def load_adapters(path: str | Path) -> tuple[Any, LoRAConfig]:
    """(trainable tree, config) written by :func:`save_adapters`."""
    from reasonjax import checkpoint, fileio
    from reasonjax.config import from_dict
    from reasonjax.errors import CheckpointError

    path = Path(path)
    meta = fileio.read_json(path / ADAPTERS_FILE, CheckpointError)
    cfg = from_dict(LoRAConfig, meta["lora"])
    return checkpoint.restore_params(path / "params"), cfg
