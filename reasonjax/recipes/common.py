"""What every recipe shares: task / model / training settings, the environment they build,
the warm-up phase, training on in-memory examples, sampling and evaluation.

A recipe config is a dataclass whose fields include the ones below (``task``, ``model``,
``warmup``, ``mesh``, ``seed``); presets live in ``reasonjax/configs/<recipe>-<preset>.yaml``
and ``key=value`` overrides apply on top (:mod:`reasonjax.config`).

``tiny`` presets train a tiny model from scratch on a built-in task inside the recipe
(the ``warmup`` phase: SFT on the task's reference solutions); ``paper`` presets load a
local checkpoint (``model.checkpoint``: HF dir or reasonjax model dir) and a local data
file (``task.data_file``), and the warm-up then fine-tunes (or, with ``warmup.steps=0``,
keeps) the checkpoint.
"""

from __future__ import annotations

import dataclasses
import warnings
import zlib
from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import numpy as np

from reasonjax import checkpoint, parallel
from reasonjax.config import ConfigError
from reasonjax.data import formatting
from reasonjax.data.task import Problem, Task, get_task
from reasonjax.models.config import ModelConfig, get_config
from reasonjax.models.tokenizer import CharTokenizer, Tokenizer
from reasonjax.recipes.rundir import Run, run_phase
from reasonjax.search.sampler import SamplingConfig, StopTokens, stop_tokens_for
from reasonjax.driver import rollouts as rollout
from reasonjax.train.fit import FitConfig, make_fit_step
from reasonjax.train.fit import fit as train_fit
from reasonjax.train.loss import Loss
from reasonjax.train.state import OptimConfig


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """The problems. ``name``: a built-in task (arithmetic, countdown, procbench, maze) with
    ``difficulty`` and ``knobs``; or, with ``data_file`` (JSONL / JSON / Parquet), the
    local-file format (gsm8k, math, choice), ``eval_file`` holding the test problems
    (default: the last ``eval_size`` problems of ``data_file``).
    train_size / eval_size: problems generated (built-in) or used (files; 0 = all)."""

    name: str = "arithmetic"
    difficulty: Optional[str] = "easy"
    knobs: dict = dataclasses.field(default_factory=dict)
    train_size: int = 2000
    eval_size: int = 64
    seed: int = 0
    data_file: Optional[str] = None
    eval_file: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """The policy. ``preset``: a ModelConfig preset trained from scratch (with ``overrides``
    such as ``max_seq_len``); ``checkpoint``: a local HF or reasonjax model directory,
    loaded instead, with the tokenizer saved in it."""

    preset: Optional[str] = "tiny-100k"
    overrides: dict = dataclasses.field(default_factory=dict)
    checkpoint: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class FitSpec:
    """One training phase on in-memory examples: ``steps`` optimizer steps of
    ``batch_size`` rows of ``seq_len`` tokens, AdamW at ``lr`` with linear warm-up over
    ``warmup_steps`` and cosine decay to ``lr * min_lr_ratio``."""

    steps: int = 500
    batch_size: int = 16
    seq_len: int = 96
    lr: float = 1e-3
    warmup_steps: int = 20
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    trainable: str = "all"

    def optim(self) -> OptimConfig:
        return OptimConfig(lr=self.lr, warmup_steps=min(self.warmup_steps, self.steps),
                           decay_steps=max(self.steps, 1), min_lr_ratio=self.min_lr_ratio,
                           weight_decay=self.weight_decay, trainable=self.trainable)


@dataclasses.dataclass(frozen=True)
class RecipeConfig:
    """The fields every recipe's ``Config`` starts with (recipes subclass it and add their
    own): the problems, the policy, its warm-up (on the first ``warmup_problems`` training
    problems; see :func:`split_train`), the mesh (``num_devices``: use the first n devices,
    0 = all) and the seed every phase's randomness derives from."""

    task: TaskSpec = TaskSpec()
    model: ModelSpec = ModelSpec()
    warmup: FitSpec = FitSpec()
    warmup_problems: int = 0
    mesh: parallel.MeshConfig = parallel.MeshConfig()
    num_devices: int = 0
    seed: int = 0


@dataclasses.dataclass
class Env:
    """What a recipe runs on. train / eval: problems; stop: EOS + step-delimiter tables;
    mesh: the device mesh params and batches are sharded over."""

    task: Task
    tokenizer: Tokenizer
    model_config: ModelConfig
    train: list[Problem]
    eval: list[Problem]
    mesh: Any
    stop: StopTokens
    init_params: Any = None  # params of model.checkpoint, else None (trained from scratch)

    @property
    def delimiter(self) -> str:
        return self.task.step_delimiter

    @property
    def prompt_len(self) -> int:
        """Longest prompt (tokens, with bos) over train and eval problems."""
        return rollout.prompt_length(self.tokenizer, self.task, self.train + self.eval)


def _local_problems(spec: TaskSpec) -> tuple[Task, list[Problem], list[Problem]]:
    from reasonjax.data.local import FORMATS, load_local

    fmt = spec.name
    if fmt not in FORMATS:
        raise ConfigError(f"task.name={fmt!r}: with task.data_file it names the file format, "
                          f"one of {FORMATS}")
    problems = load_local(spec.data_file, fmt).problems
    if spec.eval_file:
        held = load_local(spec.eval_file, fmt).problems
    else:
        if spec.eval_size <= 0 or spec.eval_size >= len(problems):
            raise ConfigError(
                f"task.eval_size={spec.eval_size}: {spec.data_file} has {len(problems)} "
                "problems; hold out fewer than that, or give task.eval_file")
        problems, held = problems[:-spec.eval_size], problems[-spec.eval_size:]
    train = problems[:spec.train_size] if spec.train_size > 0 else problems
    held = held[:spec.eval_size] if spec.eval_size > 0 else held
    return get_task(fmt), train, held


def env_for(cfg: RecipeConfig) -> "Env":
    """:func:`make_env` from a recipe config."""
    return make_env(cfg.task, cfg.model, cfg.mesh, cfg.num_devices)


def make_env(task: TaskSpec, model: ModelSpec, mesh: parallel.MeshConfig = parallel.MeshConfig(),
             num_devices: int = 0) -> Env:
    """Builds the problems, tokenizer, model config and mesh (nothing is trained).

    Built-in tasks: train and eval problems come from different seeds (``seed`` and
    ``seed + 1``), so no eval problem is a training problem by construction of the
    stream (collisions of short problems are possible and harmless).
    """
    if not model.checkpoint and not model.preset:
        raise ConfigError("model: set model.checkpoint=/path/to/checkpoint (a HF or reasonjax "
                          "model directory) or model.preset=<name> (`reasonjax models`)")
    if task.data_file:
        t, train_problems, eval_problems = _local_problems(task)
    else:
        from reasonjax.data.local import FORMATS

        if task.name in FORMATS:
            raise ConfigError(f"task.name={task.name!r} reads problems from a local file: set "
                              "task.data_file=/path/to/train.jsonl (and optionally "
                              "task.eval_file)")
        t = get_task(task.name, task.difficulty, **task.knobs)
        train_problems = t.generate(task.train_size, seed=task.seed)
        eval_problems = t.generate(task.eval_size, seed=task.seed + 1)
    devices = jax.devices()[:num_devices] if num_devices > 0 else None
    mesh_ = parallel.make_mesh(mesh, devices)
    init = None
    if model.checkpoint:
        model_config, init, tok = checkpoint.load_model_and_tokenizer(model.checkpoint,
                                                                      mesh_)
    else:
        tok = CharTokenizer()
        model_config = get_config(model.preset, vocab_size=tok.vocab_size, **model.overrides)
    parallel.validate_model_mesh(model_config, mesh_)
    stop = stop_tokens_for(tok, model_config.vocab_size, t.step_delimiter)
    return Env(task=t, tokenizer=tok, model_config=model_config, train=train_problems,
               eval=eval_problems, mesh=mesh_, stop=stop, init_params=init)


# ---------------------------------------------------------------------------------------
# Training on in-memory examples


def examples_to_rows(examples: Sequence[Mapping[str, np.ndarray]], kind: str,
                     seq_len: int) -> dict[str, np.ndarray]:
    """``formatting.encode_*`` outputs of ``kind`` padded to ``seq_len`` and stacked into
    rows [N, ...]; longer examples are truncated with a warning that counts them."""
    fitted = [formatting.fit(ex, kind, seq_len, on_overflow="truncate") for ex in examples]
    truncated = sum(t for _, t in fitted)
    if truncated:
        warnings.warn(f"{truncated} of {len(fitted)} {kind} examples are longer than "
                      f"seq_len={seq_len} and were truncated; raise seq_len to keep them whole",
                      stacklevel=3)
    return formatting.stack([ex for ex, _ in fitted])


def fit_step(env: Env, params, loss: Loss, spec: FitSpec) -> Callable:
    """The jitted train step for ``loss`` and ``spec``: pass it as ``fit(..., step=...)``
    to several fits of the same loss, spec and param shapes (e.g. one model per label set)
    so they share one compile."""
    return make_fit_step(loss, env.model_config, params, spec.optim(), mesh=env.mesh)


def fit(env: Env, params, loss: Loss, examples: Sequence[Mapping[str, np.ndarray]], kind: str,
        spec: FitSpec, seed: int = 0, ref_params=None, progress: bool = True,
        step: Optional[Callable] = None):
    """Trains ``params`` with ``loss`` on ``examples`` (``formatting.encode_*`` outputs of
    ``kind``), reshuffled every epoch, for ``spec.steps`` steps (:func:`reasonjax.train.fit.
    fit` on the stacked rows). Returns (params, last metrics). Resumability comes from the
    recipe's phases, so nothing is saved here. ``step``: a :func:`fit_step` to reuse."""
    if spec.steps == 0:
        return params, {}
    if not examples:
        raise ValueError(f"fit: no {kind} examples to train {loss.name} on")
    parallel.validate_batch(spec.batch_size, env.mesh, what="batch_size")
    rows = examples_to_rows(examples, kind, spec.seq_len)
    cfg = FitConfig(steps=spec.steps, batch_size=spec.batch_size, seed=seed,
                    optim=spec.optim(), progress=progress)
    return train_fit(loss, env.model_config, params, rows, cfg, ref_params=ref_params,
                     mesh=env.mesh, step_fn=step)


def sft_examples(env: Env, prompts: Sequence[str], completions: Sequence[str]) -> list[dict]:
    return [formatting.encode_completion(env.tokenizer, p, c)
            for p, c in zip(prompts, completions)]


def warmup(run: Run, env: Env, spec: FitSpec, seed: int = 0, name: str = "warmup") -> Any:
    """Phase ``name``: SFT on the train problems' reference solutions, from scratch (model
    preset) or from ``model.checkpoint``. Returns params."""
    from reasonjax.train.sft import sft_loss

    def compute():
        params = env.init_params
        if params is None:
            params = parallel.init_params(env.model_config, jax.random.key(seed), env.mesh)
        examples = sft_examples(env, [env.task.prompt(p) for p in env.train],
                                [env.task.solution(p) for p in env.train])
        params, metrics = fit(env, params, sft_loss(env.model_config), examples, "sft", spec,
                              seed=seed)
        return {"params": params, "model_config": env.model_config,
                "final_loss": metrics.get("loss")}

    return run_phase(run, name, compute)["params"]


def split_train(env: Env, warmup_problems: int) -> tuple[Env, list[Problem]]:
    """(env whose train problems are the first ``warmup_problems``, for the warm-up; the
    problems the recipe then learns from: samples, searches, labels). A tiny model
    memorises the problems it is warmed up on, so its samples there are almost all
    correct (few wrong paths, negative labels or pairs) and unlike its samples on new
    problems; the tiny presets keep the two apart. 0: one problem set for both (the
    papers' setting, where the warm-up is a short fine-tune of a large model)."""
    if warmup_problems <= 0:
        return env, list(env.train)
    if warmup_problems >= len(env.train):
        raise ValueError(f"warmup_problems={warmup_problems} leaves none of the "
                         f"{len(env.train)} training problems (task.train_size) for the "
                         "recipe; raise task.train_size or lower warmup_problems")
    return dataclasses.replace(env, train=env.train[:warmup_problems]), \
        list(env.train[warmup_problems:])


def warm_start(run: Run, cfg: RecipeConfig, env: Optional[Env] = None
               ) -> tuple[Env, Any, list[Problem]]:
    """A recipe's start: (env (``env_for(cfg)`` unless given), the warmed-up params, the
    training problems the recipe learns from: those after ``cfg.warmup_problems``; see
    :func:`split_train`)."""
    env = env if env is not None else env_for(cfg)
    warm_env, own = split_train(env, cfg.warmup_problems)
    return env, warmup(run, warm_env, cfg.warmup, seed=cfg.seed), own


# ---------------------------------------------------------------------------------------
# Sampling and evaluation


@dataclasses.dataclass
class Samples:
    """n completions for each of B problems: texts [B][n], correct [B][n] (None when the
    problem has no known answer), tokens generated in all."""

    texts: list[list[str]]
    correct: list[list[bool]]
    tokens_generated: int


def prompts_of(env: Env, problems: Sequence[Problem]) -> dict[str, np.ndarray]:
    """A left-padded prompt batch for ``problems`` (length: the longest prompt)."""
    return rollout.task_prompts(env.tokenizer, env.task, problems,
                                rollout.prompt_length(env.tokenizer, env.task, problems))


def on_mesh(env: Env, fn: Callable, params, tokens, mask, rng: jax.Array, *args,
            what: str = "search / sampling batch_size", **kwargs):
    """``fn(env.model_config, params, tokens, mask, rng, *args, **kwargs)`` (a sampler or a
    search from :mod:`reasonjax.search`) with the prompt rows [B, P] split over the data
    axes of ``env.mesh`` and the model's logical rules active, so a multi-device run samples
    and searches data-parallel, like it trains. ``params`` are already on the mesh (the
    warm-up and ``fit`` place them). B must divide over the data axes (one host: the
    recipe's search batch sizes; several hosts would also need each host's share of rows
    and a gather of the results, which the recipes do not do yet). ``what`` names B in the
    error when it does not divide."""
    parallel.validate_batch(np.shape(tokens)[0], env.mesh, what=what)
    tokens, mask = parallel.shard_batch((np.asarray(tokens), np.asarray(mask)), env.mesh)
    with parallel.activate(env.mesh):
        return fn(env.model_config, params, tokens, mask, rng, *args, **kwargs)


def decode(env: Env, ids: np.ndarray, length: int) -> str:
    """The text of a completion's first ``length`` ids, without a final EOS."""
    ids = [int(t) for t in ids[:length]]
    if env.tokenizer.eos_id is not None and ids and ids[-1] == env.tokenizer.eos_id:
        ids = ids[:-1]
    return env.tokenizer.decode(ids)


def sample_completions(env: Env, params, problems: Sequence[Problem], rng: jax.Array, *, n: int,
                       temperature: float, max_new_tokens: int,
                       batch_size: int = 64) -> Samples:
    """n whole completions per problem (temperature 0: greedy), verified by the task
    (:func:`reasonjax.train.rollout.generate_in_chunks`, ``batch_size`` problems a call)."""
    texts, correct, spent = [], [], 0
    for real, ro in rollout.generate_in_chunks(
            env.model_config, params, env.tokenizer, env.task, problems, rng,
            batch_size=min(batch_size, len(problems)), n=n, max_new_tokens=max_new_tokens,
            sampling=SamplingConfig(temperature=temperature), mesh=env.mesh):
        spent += int(np.sum(ro.lengths[:real * n]))
        texts += [ro.completions[b * n:(b + 1) * n] for b in range(real)]
        correct += [[bool(c) for c in ro.correct[b * n:(b + 1) * n]] for b in range(real)]
    return Samples(texts=texts, correct=correct, tokens_generated=spent)


def greedy_accuracy(env: Env, params, problems: Sequence[Problem],
                    max_new_tokens: int) -> float:
    """Fraction of ``problems`` whose greedy completion verifies."""
    return rollout.greedy_accuracy(env.model_config, params, env.tokenizer, env.task, problems,
                                   max_new_tokens=max_new_tokens,
                                   batch_size=min(64, len(problems)), mesh=env.mesh)


def rng_for(seed: int, *names: str) -> jax.Array:
    """A key per (seed, phase name): phases draw independent, reproducible randomness."""
    key = jax.random.key(seed)
    for name in names:
        key = jax.random.fold_in(key, zlib.crc32(name.encode()))
    return key
