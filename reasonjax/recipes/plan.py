"""Ahead-of-time plans for TPU slices, on a machine without a TPU.

``reasonjax plan --topology v5p-8 alphamath --preset paper [key=value ...]`` builds the
recipe's model config and mesh over the TPU devices of a named topology (libtpu's
topology descriptions: ``jax.experimental.topologies``), lowers every program the recipe
runs with abstract params (``jax.ShapeDtypeStruct``s on their shardings; no weights are
read) and compiles each with the real TPU compiler, as MaxText's ``train_compile`` does.
Per program it reports, per device (chip, or TensorCore on v4):

- HBM: arguments + outputs - donated aliases + temporaries + code, from the compiled
  program's ``memory_analysis()``, against the chip's HBM;
- model FLOPs per device (:func:`forward_flops`: the matmuls, x3 for a train step, plus
  attention over the filled context) and the roofline time of one call: max(FLOPs / peak
  bf16 FLOP/s, bytes / HBM bandwidth), with the bytes every call must move: its
  arguments read once and its outputs written once (``memory_analysis()``; for a decode
  step that is the params and the whole KV cache). A lower bound: no communication,
  perfect overlap. The compiler's ``cost_analysis()`` is not used for time: XLA counts a
  loop body once, and the TPU compiler turns sharded matmuls into loops over shards
  (a 1B model's prefill over 16 chips: 5.8 TFLOP counted per device against 20 done), so
  its FLOPs and ``optimal_seconds`` undercount. Programs whose loops run a
  data-dependent number of times (sampling, step search, MCTS) get memory only; their
  per-token cost is the ``decode step`` row (a token for every row, the cache at full
  length);
- MFU at that time (an upper bound on what the program can reach) and tokens/s: train
  (tokens per step), prefill (prompt tokens), decode (rows per step).

A program that does not fit fails the plan with the bytes needed vs available and the
first of a few changes (full rematerialisation, params sharded over every chip, half the
micro-batch with twice the gradient accumulation, half the rows per search call) that
compiles within HBM.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp

from reasonjax import parallel
from reasonjax.config import ConfigError
from reasonjax.errors import first_line
from reasonjax.data.formats import batch_layout
from reasonjax.models.config import ModelConfig
from reasonjax.train.loss import Loss

GIB = 1024 ** 3


@dataclasses.dataclass(frozen=True)
class Chip:
    """One TPU chip (Cloud TPU system-architecture pages): HBM, peak dense bf16 FLOP/s,
    HBM bandwidth; ``cores_in_name``: TensorCores counted per chip in slice names (v4-32
    and v5p-8 count cores, v5e-16 and v6e-8 count chips)."""

    kind: str
    hbm_bytes: float
    peak_flops: float
    hbm_bytes_per_s: float
    cores_in_name: int


CHIPS = {
    "v4": Chip("v4", 32 * GIB, 275e12, 1.2e12, 2),
    "v5e": Chip("v5e", 16 * GIB, 197e12, 0.819e12, 1),
    "v5p": Chip("v5p", 95 * GIB, 459e12, 2.765e12, 2),
    "v6e": Chip("v6e", 32 * GIB, 918e12, 1.64e12, 1),
}
# Chips of a slice -> its physical shape (3-D tori for v4 / v5p, 2-D for v5e / v6e).
SHAPES_3D = {4: "2x2x1", 8: "2x2x2", 16: "2x2x4", 32: "2x4x4", 64: "4x4x4", 128: "4x4x8",
             256: "4x8x8", 512: "8x8x8"}
SHAPES_2D = {4: "2x2", 8: "2x4", 16: "4x4", 32: "4x8", 64: "8x8", 128: "8x16", 256: "16x16"}


@dataclasses.dataclass(frozen=True)
class Topology:
    """A TPU slice: its name as given, chip, libtpu topology name and device descriptions
    (one per chip; two per v4 chip, whose TensorCores libtpu lists separately)."""

    name: str
    chip: Chip
    layout: str
    devices: tuple

    @property
    def chips(self) -> int:
        return math.prod(int(d) for d in self.layout.split("x"))

    @property
    def hosts(self) -> int:
        return len({d.process_index for d in self.devices})

    @property
    def hbm_per_device(self) -> float:
        return self.chip.hbm_bytes * self.chips / len(self.devices)

    @property
    def peak_per_device(self) -> float:
        return self.chip.peak_flops * self.chips / len(self.devices)

    @property
    def hbm_bandwidth_per_device(self) -> float:
        return self.chip.hbm_bytes_per_s * self.chips / len(self.devices)


def topology(name: str) -> Topology:
    """``v5p-8`` / ``v4-32`` / ``v5e-16`` / ``v6e-8`` (Cloud TPU slice names) or libtpu's
    ``v5e:4x4`` form -> a :class:`Topology` (needs libtpu: ``pip install 'jax[tpu]'``)."""
    m = re.fullmatch(r"(v4|v5e|v5p|v6e)(?:-(\d+)|:(\d+(?:x\d+)+))", name.strip())
    if not m:
        raise ConfigError(f"--topology {name!r}: give a slice like v5p-8, v4-32, v5e-16, "
                          f"v6e-8 (or v5e:4x4); chips: {', '.join(CHIPS)}")
    chip = CHIPS[m.group(1)]
    shapes = SHAPES_3D if chip.kind in ("v4", "v5p") else SHAPES_2D
    if m.group(2):
        size = int(m.group(2))
        chips = size // chip.cores_in_name
        if size % chip.cores_in_name or chips not in shapes:
            sizes = ", ".join(f"{chip.kind}-{c * chip.cores_in_name}" for c in shapes)
            raise ConfigError(f"--topology {name}: no such slice; known: {sizes}")
        layout = shapes[chips]
    else:
        layout = m.group(3)
    # Describing a slice needs libtpu but no TPU.
    parallel.libtpu_offline()
    try:
        from jax.experimental import topologies
        desc = topologies.get_topology_desc(platform="tpu",
                                            topology_name=f"{chip.kind}:{layout}")
    except (ImportError, RuntimeError, ValueError) as e:
        raise ConfigError(f"--topology {name}: libtpu could not describe {chip.kind}:{layout} "
                          f"({first_line(e)}); install it with pip install 'jax[tpu]=="
                          f"{jax.__version__}'") from None
    return Topology(name=name, chip=chip, layout=layout, devices=tuple(desc.devices))


# ---------------------------------------------------------------------------------------
# Programs


@dataclasses.dataclass(frozen=True)
class Program:
    """One compiled program of a run.

    name: what it is (``train: joint (train)``, ``decode step``...). kind: ``train``,
    ``prefill``, ``decode`` or ``search``. build(model_config, mesh, rows) -> {part:
    jax.stages.Lowered} (two parts for MCTS: root and move). rows / seq_len: its batch
    (train: rows x tokens; prefill: rows x prompt tokens; decode: rows x cache slots);
    per_prompt: rows per prompt (search / decode: samples, beams or actions per problem).
    ref: a train step that also reads a frozen reference (DPO family); sequences: token
    sequences per row (2 for preference pairs). path: the config field it comes from;
    batch_key: the config key that sets its batch (train: rows; else: prompts per call);
    chunk_key: the key that sets its rows per prompt, when it can change (a sampling
    call's ``chunk``); method: the search / sampling config a search program runs."""

    name: str
    kind: str
    build: Callable[[ModelConfig, Any, int], dict]
    rows: int
    seq_len: int
    per_prompt: int = 1
    ref: bool = False
    sequences: int = 1
    accum_steps: int = 1
    path: str = ""
    batch_key: str = "batch_size"
    chunk_key: str = ""
    method: Any = None

    def lower(self, model_config: ModelConfig, mesh) -> dict:
        return self.build(model_config, mesh, self.rows)

    @property
    def batch(self) -> int:
        """What ``batch_key`` sets: rows of a train step, prompts of any other call."""
        return self.rows if self.kind == "train" else self.rows // self.per_prompt


def abstract(shapes, shardings):
    """``jax.ShapeDtypeStruct``s with shardings, from a tree of shapes and one of
    shardings."""
    return jax.tree.map(lambda s, h: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=h),
                        shapes, shardings)


def abstract_params(model_config: ModelConfig, mesh):
    from reasonjax.train.fit import param_shapes

    return abstract(param_shapes(model_config), parallel.param_shardings(model_config, mesh))


def _rows_struct(shape, dtype, mesh):
    """An abstract array split over the data axes by its leading (row) axis; scalars
    replicated."""
    sharding = (parallel.batch_sharding(mesh, len(shape)) if len(shape)
                else parallel.replicated(mesh))
    return jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)


def train_program(name: str, loss_for: Callable[[ModelConfig], Loss], rows: int, seq_len: int,
                  optim, extra_keys: Sequence[str] = (), path: str = "") -> Program:
    """The train step of ``loss_for(model_config)`` on ``rows`` x ``seq_len`` batches with
    ``optim`` (an OptimConfig), as :func:`reasonjax.train.fit.fit` builds it."""
    from reasonjax.train.fit import param_shapes
    from reasonjax.train.state import create_train_state, make_optimizer, state_shardings
    from reasonjax.train.step import step_program

    optim = optim.for_steps(max(optim.decay_steps or 1000, 1))

    def build(model_config: ModelConfig, mesh, rows: int) -> dict:
        loss = loss_for(model_config)
        shapes = param_shapes(model_config)
        pshard = parallel.param_shardings(model_config, mesh)
        optimizer = make_optimizer(optim, shapes)
        shardings = state_shardings(optimizer, shapes, pshard, mesh)
        state = jax.eval_shape(lambda p: create_train_state(p, optimizer), shapes)
        batch = {k: _rows_struct(shape, dtype, mesh) for k, (shape, dtype) in batch_layout(
            loss.kind, rows, seq_len, tuple(extra_keys) + loss.extra_keys).items()}
        ref = abstract(shapes, pshard) if loss.needs_reference else None
        program = step_program(loss, optimizer, mesh, shardings, with_ref=ref is not None)
        with parallel.activate(mesh):
            return {name: program.lower(abstract(state, shardings), batch, ref)}

    return Program(name=name, kind="train", build=build, rows=rows, seq_len=seq_len,
                   accum_steps=optim.accum_steps, path=path, batch_key=f"{path}.batch_size")


def _stop(model_config: ModelConfig, mesh):
    """Abstract stop tables (replicated) over the model's vocabulary with one EOS and a
    one-token step delimiter (a real tokenizer's differ only in a few automaton states)."""
    from reasonjax.search.sampler import stop_tokens

    shapes = jax.eval_shape(lambda: stop_tokens(model_config.vocab_size, [0],
                                                delimiter_ids=[1]))
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(
        x.shape, x.dtype, sharding=parallel.replicated(mesh)), shapes)


def search_program(name: str, method, rows: int, prompt_len: int, per_prompt: int = 1,
                   path: str = "", batch_key: str = "batch_size", chunk_key: str = ""
                   ) -> Program:
    """The driver's program(s) for ``method`` over ``rows`` prompts of ``prompt_len``
    tokens (:func:`reasonjax.driver.batches.lower`); the MCTS verifier is a host callback
    that never runs here. With ``chunk_key`` (a sampling method) a build with other rows
    keeps the prompts and changes the samples per call."""
    from reasonjax.driver.batches import lower as lower_method

    prompts0 = rows

    def build(model_config: ModelConfig, mesh, rows: int) -> dict:
        m, prompts = method, rows // per_prompt
        if chunk_key and rows != prompts0 * per_prompt:
            m, prompts = dataclasses.replace(method, chunk=rows // prompts0), prompts0
        tokens = _rows_struct((prompts, prompt_len), jnp.int32, mesh)
        mask = _rows_struct((prompts, prompt_len), jnp.int32, mesh)
        rng = jax.ShapeDtypeStruct((), jax.random.key(0).dtype,
                                   sharding=parallel.replicated(mesh))
        params = abstract_params(model_config, mesh)
        stop = _stop(model_config, mesh)
        with parallel.activate(mesh):
            parts = lower_method(model_config, params, m, tokens, mask, rng, stop,
                                 verifier=_never_called)
        return {f"{name} ({part})" if len(parts) > 1 else name: low
                for part, low in parts.items()}

    return Program(name=name, kind="search", build=build, rows=rows * per_prompt,
                   seq_len=prompt_len, per_prompt=per_prompt, path=path,
                   batch_key=batch_key, chunk_key=chunk_key, method=method)


def _never_called(ids, paths, lengths):  # pragma: no cover - compiled, never executed
    raise RuntimeError("the plan's MCTS verifier is compiled, never run")


def decode_programs(rows: int, prompt_len: int, new_tokens: int, per_prompt: int = 1,
                    batch_key: str = "batch_size", chunk_key: str = "") -> list[Program]:
    """Prefill of ``rows`` prompts into a cache of prompt + ``new_tokens`` slots, and one
    decode step (a token for every row, the cache at that length): what every sampler and
    search spends its time in."""
    from reasonjax.models.transformer import Transformer, unstack_layers
    from reasonjax.search.sampler import SamplingConfig, generate, prefill

    slots = prompt_len + new_tokens

    def lower_prefill(model_config: ModelConfig, mesh, rows: int) -> dict:
        fn = jax.jit(lambda p, t, m: prefill(Transformer(model_config), unstack_layers(p),
                                             t, m, slots))
        args = (abstract_params(model_config, mesh),
                _rows_struct((rows, prompt_len), jnp.int32, mesh),
                _rows_struct((rows, prompt_len), jnp.int32, mesh))
        with parallel.activate(mesh):
            return {"prefill": fn.lower(*args)}

    def lower_decode(model_config: ModelConfig, mesh, rows: int) -> dict:
        model = Transformer(model_config)

        def step(p, state, rng, stop):
            return generate(model, unstack_layers(p), state, rng, SamplingConfig(), stop, 1,
                            False)

        params = abstract_params(model_config, mesh)
        toks = jax.ShapeDtypeStruct((rows, prompt_len), jnp.int32)
        state = jax.eval_shape(lambda p, t: prefill(model, unstack_layers(p), t, t, slots),
                               params, toks)
        state = jax.tree.map(lambda x: _rows_struct(x.shape, x.dtype, mesh), state)
        rng = jax.ShapeDtypeStruct((), jax.random.key(0).dtype,
                                   sharding=parallel.replicated(mesh))
        stop = _stop(model_config, mesh)
        with parallel.activate(mesh):
            return {"decode step": jax.jit(step, donate_argnums=(1,)).lower(
                params, state, rng, stop)}

    return [Program("prefill", "prefill", lower_prefill, rows, prompt_len, per_prompt,
                    batch_key=batch_key, chunk_key=chunk_key),
            Program("decode step", "decode", lower_decode, rows, slots, per_prompt,
                    batch_key=batch_key, chunk_key=chunk_key)]


# ---------------------------------------------------------------------------------------
# Compiling and measuring


@dataclasses.dataclass(frozen=True)
class Measured:
    """One compiled part of a program, per device: HBM bytes it needs, bytes a call must
    move (arguments read + outputs written), compile time."""

    name: str
    hbm: float
    io_bytes: float
    compile_seconds: float


def hbm_bytes(compiled) -> float:
    """Device memory a compiled program needs: arguments + outputs - donated aliases +
    temporaries + generated code."""
    m = compiled.memory_analysis()
    return float(m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
                 + m.temp_size_in_bytes + m.generated_code_size_in_bytes)


class DoesNotFit(Exception):
    """The TPU compiler refused a program for want of memory."""


def _compile(lowered):
    """The TPU compile of ``lowered``, bypassing JAX's persistent compilation cache (a
    compile-only TPU client can neither read nor safely write its entries)."""
    cached = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)
    try:
        return lowered.compile()
    except Exception as e:  # the TPU compiler reports OOM as an XlaRuntimeError
        if "RESOURCE_EXHAUSTED" in str(e) or "exceeds" in str(e).lower():
            raise DoesNotFit(str(e).strip().splitlines()[0]) from None
        raise
    finally:
        jax.config.update("jax_enable_compilation_cache", cached)


def io_bytes(compiled) -> float:
    """Bytes a call must move at least: its arguments read and its outputs written."""
    m = compiled.memory_analysis()
    return float(m.argument_size_in_bytes + m.output_size_in_bytes)


def measure(program: Program, model_config: ModelConfig, mesh) -> list[Measured]:
    """Compiles every part of ``program`` for ``mesh``: its memory per device."""
    start = time.time()
    compiled = {k: _compile(v) for k, v in program.lower(model_config, mesh).items()}
    seconds = time.time() - start
    return [Measured(name, hbm_bytes(c), io_bytes(c), seconds)
            for name, c in compiled.items()]


def forward_flops(cfg: ModelConfig, tokens: float, context: float) -> float:
    """Model FLOPs of a forward over ``tokens`` tokens that each attend to ``context``
    keys: 2 x (matmul params, LM head included) per token + 4 x layers x heads x
    head_dim x context per token (scores and weighted values)."""
    d, h, kv, dh, f = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.dim_per_head, cfg.d_ff
    matmul = cfg.n_layers * (d * h * dh * 2 + 2 * d * kv * dh + 3 * d * f) + cfg.vocab_size * d
    return 2 * matmul * tokens + 4 * cfg.n_layers * h * dh * tokens * context


def model_flops(program: Program, cfg: ModelConfig) -> Optional[float]:
    """Model FLOPs of one call of ``program`` over the whole slice (None for searches)."""
    if program.kind == "train":
        tokens = program.rows * program.seq_len * program.sequences
        fwd = forward_flops(cfg, tokens, program.seq_len / 2)
        return fwd * (4 if program.ref else 3)
    if program.kind == "prefill":  # logits of the last prompt token only
        head = 2 * cfg.vocab_size * cfg.d_model * program.rows * (program.seq_len - 1)
        return forward_flops(cfg, program.rows * program.seq_len, program.seq_len / 2) - head
    if program.kind == "decode":
        return forward_flops(cfg, program.rows, program.seq_len)
    return None


@dataclasses.dataclass(frozen=True)
class Row:
    """A plan's line: program part, HBM per device used / available, model FLOPs per
    device, roofline seconds per call, MFU at that time, tokens/s (whole slice), and
    whether it fits."""

    program: str
    hbm: float
    hbm_available: float
    flops: Optional[float]
    seconds: Optional[float]
    mfu: Optional[float]
    tokens_per_s: Optional[float]
    compile_seconds: float

    @property
    def fits(self) -> bool:
        return self.hbm <= self.hbm_available


def roofline_seconds(flops: float, io: float, topo: Topology) -> float:
    """max(FLOPs / peak, bytes / HBM bandwidth) on one of ``topo``'s devices."""
    return max(flops / topo.peak_per_device, io / topo.hbm_bandwidth_per_device)


def rows_for(program: Program, model_config: ModelConfig, topo: Topology, mesh) -> list[Row]:
    out = []
    mf = model_flops(program, model_config)
    per_device = mf / len(topo.devices) if mf else None
    for m in measure(program, model_config, mesh):
        seconds = mfu = tps = None
        if per_device:
            seconds = roofline_seconds(per_device, m.io_bytes, topo)
            mfu = per_device / (seconds * topo.peak_per_device)
            tokens = program.rows * (program.seq_len if program.kind != "decode" else 1)
            tps = tokens / seconds
        out.append(Row(m.name, m.hbm, topo.hbm_per_device, per_device, seconds, mfu, tps,
                       m.compile_seconds))
    return out


# ---------------------------------------------------------------------------------------
# A recipe's programs, and the plan


def _methods(cfg, path: str = "") -> list[tuple[str, Any]]:
    """(dotted path, config) of every search / sampling method config inside ``cfg``."""
    from reasonjax.driver.batches import Method

    out = []
    for f in dataclasses.fields(cfg):
        value, where = getattr(cfg, f.name), f"{path}{f.name}"
        if isinstance(value, Method.__args__):
            out.append((where, value))
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            out.extend(_methods(value, where + "."))
    return out


def _rows_per_prompt(method) -> int:
    from reasonjax.search.mcts import MCTSConfig
    from reasonjax.search.sampler import SampleConfig

    if isinstance(method, MCTSConfig):
        return method.num_actions
    return method.per_call if isinstance(method, SampleConfig) else method.n


def _new_tokens(method) -> int:
    from reasonjax.search.sampler import SampleConfig

    if isinstance(method, SampleConfig):
        return method.max_new_tokens
    return method.max_steps * method.step_tokens


def rl_train_program(path: str, rl, prompt_len: int) -> Program:
    """The policy update of an RL run (:class:`reasonjax.rl.config.RLConfig` ``rl`` at
    ``path``): the algorithm's policy-gradient loss on ``rl.minibatch`` rollout rows of
    prompt + ``max_new_tokens`` tokens, with the reference's log-probs in the batch and
    the reference params held beside the state when the algorithm needs one (they are
    resident during the update). A LoRA run is planned as full fine-tuning (its state is
    smaller)."""
    from reasonjax.train.rl import policy_gradient_loss

    loss_config = rl.algorithm.loss_config(rl.max_new_tokens)
    extra = (("old_logps",) if rl.rollout_forward else ()) + (
        ("ref_logps",) if loss_config.kl_coef > 0 else ())
    program = train_program(f"train: rollout ({path}, {rl.algorithm.name})",
                            lambda mc: policy_gradient_loss(mc, loss_config),
                            rl.minibatch, prompt_len + rl.max_new_tokens, rl.optim,
                            extra_keys=extra, path=path)
    return dataclasses.replace(program, ref=rl.algorithm.needs_reference,
                               batch_key=f"{path}.minibatch_size")


def recipe_programs(module, cfg, model_config: ModelConfig, prompt_len: int) -> list[Program]:
    """Every program a recipe run compiles: its train steps (the warm-up SFT when it has
    steps, then ``module.losses(cfg)``: {FitSpec path: loss factory}, then the policy
    update of each distinct RL run in ``module.rl_runs(cfg)``: [(path, RLConfig)]), each
    distinct search / sampling method at ``cfg.batch_size`` prompts, and the prefill and
    decode step of its largest sampling call (RL rollouts included)."""
    from reasonjax.train.sft import sft_loss

    fits = {}
    if cfg.warmup.steps > 0:
        fits["warmup"] = sft_loss
    fits.update(module.losses(cfg))
    programs = []
    for path, loss_for in fits.items():
        spec = cfg
        for part in path.split("."):
            spec = getattr(spec, part)
        loss = loss_for(model_config)
        program = train_program(f"train: {loss.kind} ({path})", loss_for, spec.batch_size,
                                spec.seq_len, spec.optim, path=path)
        programs.append(dataclasses.replace(program, ref=loss.needs_reference,
                                            sequences=2 if loss.kind == "preference" else 1))
    rl_runs, seen_losses = [], set()
    for path, rl in getattr(module, "rl_runs", lambda c: [])(cfg):
        key = (rl.algorithm.loss_config(rl.max_new_tokens), rl.minibatch, rl.max_new_tokens,
               rl.optim)
        if key not in seen_losses:
            seen_losses.add(key)
            programs.append(rl_train_program(path, rl, prompt_len))
        rl_runs.append((path, rl))
    seen, methods = set(), []
    for path, method in _methods(cfg):
        if method not in seen:
            seen.add(method)
            methods.append((path, method))
    calls = []  # rollout specs carry their own batch size
    for path, method in methods:
        key = f"{path}.batch_size" if hasattr(method, "batch_size") else "batch_size"
        chunk = f"{path}.chunk" if getattr(method, "chunk", 0) else ""
        calls.append((path, method, getattr(method, "batch_size", cfg.batch_size), key, chunk))
    for path, method, batch, key, chunk in calls:
        name = f"{type(method).__name__.removesuffix('Config').lower()} ({path})"
        programs.append(search_program(name, method, batch, prompt_len,
                                       _rows_per_prompt(method), path, key, chunk))
    # (rows, new tokens, rows per prompt, batch key, chunk key) of every sampling call
    sampling = [(_rows_per_prompt(method) * batch, max(_new_tokens(m) for _, m in methods),
                 _rows_per_prompt(method), key, chunk)
                for path, method, batch, key, chunk in calls]
    sampling += [(rl.rows, rl.max_new_tokens, rl.samples_per_prompt,
                  f"{path}.prompts_per_iteration", "") for path, rl in rl_runs]
    if sampling:
        rows, new_tokens, per_prompt, key, chunk = max(sampling, key=lambda c: c[0] * c[1])
        programs += decode_programs(rows, prompt_len, new_tokens, per_prompt, key, chunk)
    return programs


def plan_model_config(cfg) -> ModelConfig:
    """The recipe's model: ``model.checkpoint``'s config (read, no weights) or
    ``model.preset``, with ``model.overrides``."""
    from reasonjax.models.config import get_config

    if cfg.model.checkpoint:
        from reasonjax import checkpoint
        from reasonjax.models import hf

        path = cfg.model.checkpoint
        base = (hf.config_from_hf(hf.read_hf_config(path), path) if hf.is_hf_checkpoint(path)
                else checkpoint.read_model_config(path))
        return base.replace(**cfg.model.overrides)
    if not cfg.model.preset:
        raise ConfigError("plan: set model.preset=<name> (`reasonjax models`) or "
                          "model.checkpoint=/path (its config.json is read, no weights)")
    return get_config(cfg.model.preset, **cfg.model.overrides)


@dataclasses.dataclass(frozen=True)
class Plan:
    """A recipe preset on a topology: model, mesh shape, and one :class:`Row` per compiled
    program part; ``advice``: for each program that does not fit, the first change that
    does (or why none did)."""

    recipe: str
    topology: Topology
    model: str
    mesh: dict
    rows: list
    advice: dict

    @property
    def fits(self) -> bool:
        return all(r.fits for r in self.rows)


def _variants(program: Program, model_config: ModelConfig, mesh_cfg):
    """(what to change, model config, mesh config, program) to try when ``program`` does
    not fit, in order: full remat (train steps), the whole budget's KV cache up front
    (a sampling call that grows it in chunks, whose copies need more memory), params over
    every chip, then halving the rows (train: the micro-batch, with the gradient
    accumulation that keeps the global batch)."""
    out, changes = [], []
    if getattr(program.method, "decode_chunks", 1) > 1:
        program = search_program(program.name, dataclasses.replace(program.method,
                                                                   decode_chunks=1),
                                 program.rows // program.per_prompt, program.seq_len,
                                 program.per_prompt, program.path, program.batch_key,
                                 program.chunk_key)
        changes.append(f"{program.path}.decode_chunks=1")
        out.append((" ".join(changes), model_config, mesh_cfg, program))
    if program.kind == "train" and model_config.remat != "full":  # remat: backward only
        model_config = model_config.replace(remat="full")
        changes.append("model.overrides.remat=full")
        out.append((" ".join(changes), model_config, mesh_cfg, program))
    if (mesh_cfg.data, mesh_cfg.fsdp, mesh_cfg.tensor) != (1, -1, 1):
        mesh_cfg = dataclasses.replace(mesh_cfg, data=1, fsdp=-1, tensor=1)
        changes.append("mesh.data=1 mesh.fsdp=-1 mesh.tensor=1")
        out.append((" ".join(changes), model_config, mesh_cfg, program))
    if program.chunk_key:  # fewer samples per call, the same prompts
        per = program.per_prompt
        prompts = program.rows // per
        for _ in range(4):  # down to 1/16 of the samples per call, as the rows below
            if per <= 1:
                break
            per //= 2
            out.append((" ".join(changes + [f"{program.chunk_key}={per}"]), model_config,
                        mesh_cfg, dataclasses.replace(program, rows=prompts * per,
                                                      per_prompt=per)))
        return out
    rows = program.rows
    for _ in range(4):
        rows //= 2
        if rows < program.per_prompt:
            break
        if program.kind == "train":
            accum = program.accum_steps * program.rows // rows
            what = (f"{program.batch_key}={rows} "
                    f"{program.path}.optim.accum_steps={accum}")
        else:
            what = f"{program.batch_key}={rows // program.per_prompt}"
        out.append((" ".join(changes + [what]), model_config, mesh_cfg,
                    dataclasses.replace(program, rows=rows)))
    return out


def _fits(program: Program, model_config: ModelConfig, topo: Topology, mesh_cfg) -> bool:
    try:
        mesh = parallel.make_mesh(mesh_cfg, topo.devices)
        parallel.validate_model_mesh(model_config, mesh)
        parallel.validate_batch(program.batch, mesh)
        return all(m.hbm <= topo.hbm_per_device
                   for m in measure(program, model_config, mesh))
    except (DoesNotFit, ConfigError):
        return False


def advise(program: Program, model_config: ModelConfig, topo: Topology, mesh_cfg) -> str:
    """The first change of :func:`_variants` under which ``program`` fits, or why none."""
    for what, mc, mesh_cfg_, prog in _variants(program, model_config, mesh_cfg):
        if _fits(prog, mc, topo, mesh_cfg_):
            return f"fits with {what}"
    return ("nothing tried fits (full remat, the whole KV cache up front, params over every "
            "chip, 1/16 of the rows); "
            "use a larger slice or a smaller model")


def plan(recipe: str, preset: str, overrides: Sequence[str], topology_name: str, *,
         prompt_len: int = 512, only: Optional[Sequence[str]] = None,
         log: Callable[[str], None] = lambda s: None) -> Plan:
    """Compiles every program of ``recipe`` at ``preset`` (+ ``overrides``) for the TPU
    slice ``topology_name`` (see the module doc). ``prompt_len``: prompt tokens per row
    (the real run measures its longest prompt). ``only``: programs whose name contains
    one of these strings."""
    from reasonjax.recipes.replicate import load_config, recipe_module

    topo = topology(topology_name)
    cfg = load_config(recipe, preset, overrides)
    model_config = plan_model_config(cfg)
    mesh = parallel.make_mesh(cfg.mesh, topo.devices)
    parallel.validate_model_mesh(model_config, mesh)
    programs = recipe_programs(recipe_module(recipe), cfg, model_config, prompt_len)
    if only:
        programs = [p for p in programs if any(o in p.name for o in only)]
    rows, advice = [], {}
    for program in programs:
        log(f"compiling {program.name} ...")
        parallel.validate_batch(program.batch, mesh,
                                what=f"{program.batch_key} ({program.name})")
        try:
            got = rows_for(program, model_config, topo, mesh)
        except DoesNotFit:
            got = [Row(program.name, math.inf, topo.hbm_per_device, None, None, None, None,
                       0.0)]
        rows += got
        if not all(r.fits for r in got):
            log(f"{program.name} does not fit; trying smaller settings ...")
            advice[program.name] = advise(program, model_config, topo, cfg.mesh)
    mesh_shape = dict(zip(parallel.MESH_AXES, parallel.MeshConfig.shape(
        cfg.mesh, len(topo.devices))))
    mc = model_config
    model = (f"{cfg.model.checkpoint or cfg.model.preset} ({mc.num_params() / 1e9:.2f}B "
             f"params, {mc.dtype} compute, {mc.param_dtype} params, remat {mc.remat})")
    return Plan(recipe=recipe, topology=topo, model=model, mesh=mesh_shape, rows=rows,
                advice=advice)


def _gib(x: float) -> str:
    return "OOM" if math.isinf(x) else f"{x / GIB:.1f}"


def format_plan(p: Plan) -> str:
    """The plan as a fixed-width table with a header and the advice."""
    t = p.topology
    lines = [f"{p.recipe} on {t.name} ({t.chip.kind}:{t.layout}, {t.chips} chips, "
             f"{len(t.devices)} devices, {t.hosts} hosts; {t.hbm_per_device / GIB:.0f} GiB "
             f"HBM and {t.peak_per_device / 1e12:.0f} bf16 TFLOP/s per device)",
             f"model: {p.model}",
             "mesh: " + " x ".join(f"{k}={v}" for k, v in p.mesh.items()),
             "",
             f"{'program':<44} {'HBM GiB':>9} {'TFLOP':>8} {'est. s':>8} {'MFU':>6} "
             f"{'tokens/s':>10} {'fits':>5}"]
    for r in p.rows:
        flops = f"{r.flops / 1e12:.1f}" if r.flops else "-"
        sec = f"{r.seconds:.3g}" if r.seconds else "-"
        mfu = f"{r.mfu:.0%}" if r.mfu else "-"
        tps = f"{r.tokens_per_s:,.0f}" if r.tokens_per_s else "-"
        lines.append(f"{r.program[:44]:<44} {_gib(r.hbm):>9} {flops:>8} {sec:>8} {mfu:>6} "
                     f"{tps:>10} {'yes' if r.fits else 'NO':>5}")
    lines.append("")
    lines.append("Per device and per call: HBM needed; TFLOP: model FLOPs; est. s: max(TFLOP "
                 "/ peak, bytes in + out / HBM bandwidth), a lower bound; MFU at that time. "
                 "Searches loop a data-dependent number of times: their cost per token is "
                 "the decode step's.")
    for name, text in p.advice.items():
        lines.append(f"{name} needs more than {p.topology.hbm_per_device / GIB:.0f} GiB: "
                     f"{text}")
    return "\n".join(lines)

