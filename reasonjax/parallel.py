"""Device mesh, logical-axis rules and sharding helpers (MaxText style).

Every parameter and main activation of the model carries logical axis names
(``embed``, ``heads``, ``mlp``, ``act_batch``...). Rules map them to the mesh axes
``('data', 'fsdp', 'tensor')``:

- ``data``: pure data parallelism (params replicated, batch split);
- ``fsdp``: batch split AND params split along ``embed`` (ZeRO-3 style);
- ``tensor``: Megatron-style split of heads, MLP hidden units and vocabulary.

Typical use::

    mesh = make_mesh(MeshConfig(data=-1, fsdp=2, tensor=2))
    validate_model_mesh(model_cfg, mesh)
    params = init_params(model_cfg, rng, mesh)           # sharded at creation
    with activate(mesh):                                  # activation constraints on
        out = jax.jit(apply_fn)(params, shard_batch(batch, mesh))

Multi-host TPU pods / multi-GPU hosts run the same program on every process after
``initialize_distributed()``; ``shard_batch`` turns each process's local rows into one
global array.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from typing import Iterator, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from reasonjax.config import ConfigError
from reasonjax.models.config import ModelConfig
from reasonjax.models.transformer import Transformer

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

DEFAULT_RULES: tuple[tuple[str, object], ...] = (
    # parameters
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("mlp", "tensor"),
    ("norm", None),
    ("layers", None),
    ("value_out", None),
    # activations
    ("act_batch", BATCH_AXES),
    ("act_length", None),
    ("act_embed", None),
    ("act_heads", "tensor"),
    ("act_kv_heads", "tensor"),
    ("act_mlp", "tensor"),
    ("act_vocab", "tensor"),
)


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Mesh shape. One axis may be -1: it takes all devices the others leave."""

    data: int = -1
    fsdp: int = 1
    tensor: int = 1
    # Logical-axis rule overrides, e.g. {"kv_heads": None} to replicate KV heads.
    rules: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        bad = [f"{name}: must be an integer >= 1 or -1, got {d!r}"
               for name, d in zip(MESH_AXES, (self.data, self.fsdp, self.tensor))
               if isinstance(d, bool) or not isinstance(d, int) or d == 0 or d < -1]
        if bad:
            raise ConfigError("; ".join(bad))

    def shape(self, n_devices: int) -> tuple[int, int, int]:
        dims = [self.data, self.fsdp, self.tensor]
        for name, d in zip(MESH_AXES, dims):
            if d == 0 or d < -1:
                raise ConfigError(f"mesh.{name}={d}: axis sizes must be positive or -1")
        wild = [i for i, d in enumerate(dims) if d == -1]
        if len(wild) > 1:
            raise ConfigError("mesh: at most one axis may be -1 "
                              f"(got data={self.data}, fsdp={self.fsdp}, tensor={self.tensor})")
        fixed = math.prod(d for d in dims if d != -1)
        if wild:
            if n_devices % fixed:
                raise ConfigError(
                    f"mesh: the fixed axes use {fixed} devices, which does not divide the "
                    f"{n_devices} available; pick sizes whose product divides {n_devices}")
            dims[wild[0]] = n_devices // fixed
        elif fixed != n_devices:
            raise ConfigError(
                f"mesh: data={self.data} x fsdp={self.fsdp} x tensor={self.tensor} = {fixed} "
                f"devices, but {n_devices} are available; make the product {n_devices} or set "
                "one axis to -1")
        return tuple(dims)


def make_mesh(cfg: MeshConfig = MeshConfig(), devices: Optional[Sequence] = None) -> Mesh:
    """A ('data', 'fsdp', 'tensor') mesh over ``devices`` (default: all devices)."""
    devices = list(devices) if devices is not None else jax.devices()
    shape = cfg.shape(len(devices))
    return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * 3, devices=devices)


def logical_rules(overrides: Optional[dict] = None) -> tuple[tuple[str, object], ...]:
    """DEFAULT_RULES with ``overrides`` ({logical name: mesh axis / tuple / None})."""
    overrides = dict(overrides or {})
    known = {name for name, _ in DEFAULT_RULES}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(f"mesh.rules: unknown logical axes {unknown}; known: {sorted(known)}")
    for name, axes in overrides.items():
        for ax in (axes if isinstance(axes, (tuple, list)) else [axes]):
            if ax is not None and ax not in MESH_AXES:
                raise ConfigError(f"mesh.rules.{name}: {ax!r} is not a mesh axis {MESH_AXES}")
    return tuple((name, tuple(overrides[name]) if isinstance(overrides.get(name), list)
                  else overrides.get(name, axes)) for name, axes in DEFAULT_RULES)


@contextlib.contextmanager
def activate(mesh: Mesh, rules=None) -> Iterator[None]:
    """Makes ``mesh`` and the logical rules current, so activation constraints apply."""
    with jax.set_mesh(mesh), nn.logical_axis_rules(
            rules if rules is not None else logical_rules()):
        yield


def logical_specs(config: ModelConfig):
    """Pytree of logical PartitionSpecs matching the model's params."""
    abstract = jax.eval_shape(
        lambda: Transformer(config).init(jax.random.key(0), jnp.zeros((1, 1), jnp.int32)))
    return nn.get_partition_spec(abstract)["params"]


def param_shardings(config: ModelConfig, mesh: Mesh, rules=None):
    """Pytree of NamedShardings for the model's params under ``rules``."""
    rules = rules if rules is not None else logical_rules()
    return nn.logical_to_mesh_sharding(logical_specs(config), mesh, rules)


def validate_model_mesh(config: ModelConfig, mesh: Mesh, rules=None) -> None:
    """Every sharded parameter dimension must divide evenly over its mesh axes."""
    rules = rules if rules is not None else logical_rules()
    abstract = jax.eval_shape(
        lambda: Transformer(config).init(jax.random.key(0), jnp.zeros((1, 1), jnp.int32)))
    specs = nn.get_partition_spec(abstract)["params"]
    shapes = nn.meta.unbox(abstract)["params"]
    hints = {"heads": "n_heads", "kv_heads": "n_kv_heads", "mlp": "d_ff",
             "vocab": "vocab_size", "embed": "d_model"}
    problems = []
    flat_specs = jax.tree_util.tree_flatten_with_path(
        specs, is_leaf=lambda x: isinstance(x, P))[0]
    flat_shapes = dict(jax.tree_util.tree_flatten_with_path(shapes)[0])
    rule_map = dict(rules)
    for path, spec in flat_specs:
        shape = flat_shapes[path].shape
        for dim, name in zip(shape, spec):
            axes = rule_map.get(name)
            if axes is None:
                continue
            axes = axes if isinstance(axes, tuple) else (axes,)
            n = math.prod(mesh.shape[a] for a in axes)
            if dim % n:
                field = hints.get(name, name)
                msg = (f"{field}={dim} is not divisible by mesh axis {'x'.join(axes)}={n}; "
                       f"use a mesh axis that divides {dim}, or the rule {name}=None")
                if msg not in problems:
                    problems.append(msg)
    if problems:
        raise ConfigError("model does not fit the mesh: " + "; ".join(problems))


def validate_batch(batch_size: int, mesh: Mesh, what: str = "batch_size") -> None:
    n = math.prod(mesh.shape[a] for a in BATCH_AXES)
    if batch_size % n:
        raise ConfigError(
            f"{what}={batch_size} is not divisible by the data axes (data x fsdp = {n}); "
            f"use a multiple of {n}")


def init_params(config: ModelConfig, rng: jax.Array, mesh: Optional[Mesh] = None, rules=None):
    """Freshly initialised params, created directly on their shardings when ``mesh`` given."""
    def init():
        v = Transformer(config).init(rng, jnp.zeros((1, 8), jnp.int32))
        return nn.meta.unbox(v["params"])

    if mesh is None:
        return jax.jit(init)()
    validate_model_mesh(config, mesh, rules)
    return jax.jit(init, out_shardings=param_shardings(config, mesh, rules))()


def shard_params(params, config: ModelConfig, mesh: Mesh, rules=None):
    """Places existing params (host or device arrays) onto their mesh shardings."""
    validate_model_mesh(config, mesh, rules)
    return jax.device_put(params, param_shardings(config, mesh, rules))


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
    """Leading (batch) axis over ('data', 'fsdp'); the rest replicated."""
    return NamedSharding(mesh, P(BATCH_AXES, *([None] * (ndim - 1))))


def shard_batch(batch, mesh: Mesh):
    """Builds global arrays from each process's local rows (leading axis = batch)."""
    def put(x):
        x = np.asarray(x)
        if x.ndim == 0:
            return jax.device_put(x, NamedSharding(mesh, P()))
        validate_batch(x.shape[0] * jax.process_count(), mesh)
        return jax.make_array_from_process_local_data(batch_sharding(mesh, x.ndim), x)
    return jax.tree.map(put, batch)


def to_host(x) -> np.ndarray:
    """A (global) array as numpy on every process: its own shards when it is fully
    addressable, else gathered from every process (multi-host runs)."""
    if not isinstance(x, jax.Array):
        return np.asarray(x)
    if x.is_fully_addressable:
        return np.asarray(jax.device_get(x))
    if x.is_fully_replicated:  # every process holds all of it
        return np.asarray(x.addressable_data(0))
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def local_rows(x, what: str = "batch"):
    """This process's contiguous share of the rows of a host batch that every process
    holds whole (multi-host runs feed ``make_array_from_process_local_data`` their own
    rows); the whole batch in a single process."""
    n, p = jax.process_count(), jax.process_index()
    if n == 1:
        return x
    rows = np.shape(x)[0]
    if rows % n:
        raise ConfigError(f"{what}: {rows} rows do not split over {n} processes; use a "
                          f"multiple of {n}")
    return x[p * rows // n:(p + 1) * rows // n]


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def initialize_distributed(coordinator_address: Optional[str] = None,
                           num_processes: Optional[int] = None,
                           process_id: Optional[int] = None) -> None:
    """``jax.distributed.initialize`` for multi-host runs (TPU pods auto-detect all three
    arguments; elsewhere they come from the arguments or from REASONJAX_COORDINATOR,
    REASONJAX_NUM_PROCESSES and REASONJAX_PROCESS_ID). A no-op unless arguments are given
    or REASONJAX_DISTRIBUTED=1. CPU processes exchange data through gloo collectives."""
    if coordinator_address is None and os.environ.get("REASONJAX_DISTRIBUTED") != "1":
        return
    env = os.environ
    coordinator_address = coordinator_address or env.get("REASONJAX_COORDINATOR")
    if num_processes is None and "REASONJAX_NUM_PROCESSES" in env:
        num_processes = int(env["REASONJAX_NUM_PROCESSES"])
    if process_id is None and "REASONJAX_PROCESS_ID" in env:
        process_id = int(env["REASONJAX_PROCESS_ID"])
    if jax.config.jax_platforms in (None, "", "cpu") and coordinator_address:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id)


def default_compilation_cache() -> str:
    """Where the CLI keeps JAX's persistent compilation cache: ``$REASONJAX_COMPILE_CACHE``,
    else a directory already set (``JAX_COMPILATION_CACHE_DIR``, or by the embedding
    process), else ``$XDG_CACHE_HOME/reasonjax/jax`` (``~/.cache/reasonjax/jax``)."""
    if os.environ.get("REASONJAX_COMPILE_CACHE"):
        return os.environ["REASONJAX_COMPILE_CACHE"]
    if jax.config.jax_compilation_cache_dir:
        return jax.config.jax_compilation_cache_dir
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "reasonjax", "jax")


def compilation_cache(directory: Optional[str]) -> None:
    """Turns on JAX's persistent compilation cache in ``directory`` for every program,
    however fast it compiles (a recipe compiles dozens of small programs, most under JAX's
    1 s default threshold; rerun or resumed, it loads them instead of compiling). Entries
    are keyed on the program, backend, JAX version and flags, so a stale entry is never
    used. ``None``: off. Call it before the first compile: JAX opens its cache once."""
    jax.config.update("jax_enable_compilation_cache", directory is not None)
    if directory is not None:
        jax.config.update("jax_compilation_cache_dir", directory)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def _has_tpu() -> bool:
    """Whether this host has TPU chips (v4 / v5p: /dev/accel*; v5e / v6e: /dev/vfio/N)."""
    import glob

    return bool(glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*"))


def libtpu_offline(force: bool = True) -> None:
    """Lets libtpu load on a host without TPUs (``reasonjax plan`` compiles for a slice
    described by it) without probing the cloud metadata server for one and printing five
    lines of warnings, and lets several processes load it at once. ``force=False``: only
    where the host has no TPU (the CLI calls this first; a TPU VM is left alone)."""
    if not force and _has_tpu():
        return
    for var, value in (("ALLOW_MULTIPLE_LIBTPU_LOAD", "1"), ("TPU_SKIP_MDS_QUERY", "1"),
                       ("TPU_ACCELERATOR_TYPE", "v5litepod-4"),
                       ("TPU_WORKER_HOSTNAMES", "localhost"), ("TPU_WORKER_ID", "0")):
        os.environ.setdefault(var, value)
