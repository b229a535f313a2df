"""What every recipe shares: task / model / training settings, the environment they build,
the warm-up phase and training on in-memory examples. Sampling, search and evaluation go
through the driver (:func:`reasonjax.driver.run`) on the recipe's :class:`RecipeEnv`.

A recipe config is a dataclass whose fields include the ones below (``task``, ``model``,
``warmup``, ``mesh``, ``seed``, ``batch_size``) and the library's own configs for each of
its steps (``SampleConfig``, ``BeamConfig``, ``MCTSConfig``, ``OptimConfig``, loss
configs); presets live in ``reasonjax/configs/<recipe>-<preset>.yaml`` and
``key=value`` overrides apply on top (:mod:`reasonjax.config`).

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
from reasonjax.config import ConfigError, check_fields
from reasonjax.data import formatting, prompting
from reasonjax.data.prompting import PromptSpec
from reasonjax.data.task import Problem, Task, get_task
from reasonjax.driver import Env, longest_prompt
from reasonjax.models.config import get_config
from reasonjax.models.tokenizer import CharTokenizer
from reasonjax.recipes.rundir import Run, keep_tokenizer, log_metrics, run_phase
from reasonjax.train.fit import FitConfig, make_fit_step
from reasonjax.train.fit import fit as train_fit
from reasonjax.train.lora import LoRAConfig
from reasonjax.train.loss import Loss
from reasonjax.train.state import OptimConfig, check_steps


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """The problems. ``name``: a built-in task (arithmetic, countdown, procbench, maze) with
    ``difficulty`` and ``knobs``; or, with ``data_file`` (JSONL / JSON / Parquet), the
    local-file format (gsm8k, math, choice), ``eval_file`` holding the test problems
    (default: the last ``eval_size`` problems of ``data_file``).
    train_size / eval_size: problems generated (built-in) or used (files; 0 = all).
    ``disjoint``: no training problem has the question of an eval problem (built-in tasks
    draw further problems of the training stream until ``train_size`` are kept; files drop
    them). Off by default so that earlier runs reproduce: the streams are independent, but
    small problem spaces collide (easy arithmetic: 467 of 1,024 eval questions are among
    4,000 training draws; 3x3 mazes of min_distance 2: 204 of 256)."""

    name: str = "arithmetic"
    difficulty: Optional[str] = "easy"
    knobs: dict = dataclasses.field(default_factory=dict)
    train_size: int = 2000
    eval_size: int = 64
    seed: int = 0
    data_file: Optional[str] = None
    eval_file: Optional[str] = None
    disjoint: bool = False

    def __post_init__(self):
        check_fields(self, train_size=">= 0", eval_size=">= 0")


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
    ``batch_size`` rows of ``seq_len`` tokens with ``optim`` (its decay spans the phase
    unless ``optim.decay_steps`` is set)."""

    steps: int = 500
    batch_size: int = 16
    seq_len: int = 96
    optim: OptimConfig = OptimConfig(lr=1e-3, warmup_steps=20)

    def __post_init__(self):
        check_fields(self, steps=">= 0", batch_size=">= 1", seq_len=">= 2")
        check_steps(self.steps, self.optim)


@dataclasses.dataclass(frozen=True)
class RecipeConfig:
    """The fields every recipe's ``Config`` starts with (recipes subclass it and add their
    own): the problems, the policy, its warm-up (on the first ``warmup_problems`` training
    problems; see :func:`split_train`), the mesh (``num_devices``: use the first n devices,
    0 = all), the seed every phase's randomness derives from, ``batch_size``: problems
    per driver call (sampling, search, evaluation; must divide over the data axes), and
    ``prompt``: how data-file problems are prompted (template, few-shot, chat template)."""

    task: TaskSpec = TaskSpec()
    model: ModelSpec = ModelSpec()
    warmup: FitSpec = FitSpec()
    warmup_problems: int = 0
    mesh: parallel.MeshConfig = parallel.MeshConfig()
    num_devices: int = 0
    seed: int = 0
    batch_size: int = 64
    prompt: PromptSpec = PromptSpec()

    def __post_init__(self):
        check_fields(self, warmup_problems=">= 0", num_devices=">= 0", batch_size=">= 1")


@dataclasses.dataclass(frozen=True)
class Trained:
    """A training phase's result: params (on the mesh), their model config, and the
    phase's metrics (JSON numbers)."""

    params: Any
    model_config: Any
    metrics: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True, eq=False)
class RecipeEnv(Env):
    """A driver :class:`~reasonjax.driver.Env` plus the recipe's problems: ``train`` /
    ``eval`` lists, and ``init_params``: the params of ``model.checkpoint`` (None: the
    model is trained from scratch). ``prompt_len`` is the longest prompt over both lists,
    so every driver call of the run has one prompt shape."""

    train: list = dataclasses.field(default_factory=list)
    eval: list = dataclasses.field(default_factory=list)
    init_params: Any = None

    @property
    def delimiter(self) -> str:
        return self.task.step_delimiter


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
    held = held[:spec.eval_size] if spec.eval_size > 0 else held
    if spec.disjoint:
        asked = {p.question for p in held}
        problems = [p for p in problems if p.question not in asked]
    train = problems[:spec.train_size] if spec.train_size > 0 else problems
    return get_task(fmt), train, held


def disjoint_problems(task: Task, n: int, seed: int, held: Sequence[Problem]) -> list[Problem]:
    """The first ``n`` problems of ``task``'s stream ``seed`` whose question is not one of
    ``held``'s (draws continue past index ``n`` as needed, up to ``64 n + 1024``)."""
    asked = {p.question for p in held}
    kept, start, limit = [], 0, 64 * n + 1024
    while len(kept) < n and start < limit:
        chunk = min(max(n, 256), limit - start)
        kept += [p for p in task.generate(chunk, seed=seed, start=start)
                 if p.question not in asked]
        start += chunk
    if len(kept) < n:
        raise ConfigError(f"task.disjoint: only {len(kept)} of the first {limit} problems of "
                          f"stream {seed} are not eval problems, fewer than task.train_size="
                          f"{n}; lower task.train_size or task.eval_size, or widen the task")
    return kept[:n]


def title(name: str, cfg: RecipeConfig) -> str:
    """A report's title: the recipe and what it ran on. A run on a checkpoint is a paper
    preset run and names the checkpoint and data file; else the tiny model and task."""
    if cfg.model.checkpoint:
        data = cfg.task.data_file + (f" (eval: {cfg.task.eval_file})" if cfg.task.eval_file
                                     else "")
        return f"{name}, paper preset: {cfg.model.checkpoint} on {data}"
    task = cfg.task.name + (f" ({cfg.task.difficulty})" if cfg.task.difficulty else "")
    return f"{name}, tiny preset: {cfg.model.preset} trained from scratch on {task}"


def env_for(cfg: RecipeConfig) -> RecipeEnv:
    """:func:`make_env` from a recipe config."""
    return make_env(cfg.task, cfg.model, cfg.mesh, cfg.num_devices, cfg.prompt)


def make_env(task: TaskSpec, model: ModelSpec, mesh: parallel.MeshConfig = parallel.MeshConfig(),
             num_devices: int = 0, prompt: PromptSpec = PromptSpec()) -> RecipeEnv:
    """Builds the problems, tokenizer, model config and mesh (nothing is trained).

    Built-in tasks: train and eval problems come from different seeds (``seed`` and
    ``seed + 1``), so no eval problem is a training problem by construction of the
    stream; small problem spaces collide unless ``task.disjoint`` (see :class:`TaskSpec`).
    """
    if not model.checkpoint and not model.preset:
        raise ConfigError("model: set model.checkpoint=/path/to/checkpoint (a HF or reasonjax "
                          "model directory) or model.preset=<name> (`reasonjax models`)")
    if model.preset and not model.checkpoint and not model.preset.startswith("tiny"):
        raise ConfigError(f"model.checkpoint: model.preset={model.preset} is the shape of a "
                          "released model; set model.checkpoint=/path/to/its/weights (a HF "
                          "or reasonjax model directory), or use a tiny-* preset to train "
                          "from scratch")
    if task.data_file:
        t, train_problems, eval_problems = _local_problems(task)
    else:
        from reasonjax.data.local import FORMATS

        if task.name in FORMATS:
            raise ConfigError(f"task.name={task.name!r} reads problems from a local file: set "
                              "task.data_file=/path/to/train.jsonl (and optionally "
                              "task.eval_file)")
        t = get_task(task.name, task.difficulty, **task.knobs)
        eval_problems = t.generate(task.eval_size, seed=task.seed + 1)
        train_problems = (disjoint_problems(t, task.train_size, task.seed, eval_problems)
                          if task.disjoint else t.generate(task.train_size, seed=task.seed))
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
    t = prompting.configure(t, prompt, tok)
    env = RecipeEnv(task=t, tokenizer=tok, model_config=model_config, mesh=mesh_,
                    train=train_problems, eval=eval_problems, init_params=init)
    return dataclasses.replace(env, prompt_len=longest_prompt(env, train_problems +
                                                                eval_problems))


# ---------------------------------------------------------------------------------------
# Training on in-memory examples


def examples_to_rows(examples: Sequence[Mapping[str, np.ndarray]], kind: str,
                     seq_len: int) -> dict[str, np.ndarray]:
    """``formatting.encode_*`` outputs of ``kind`` padded to ``seq_len`` and stacked into
    rows [N, ...]; longer examples are truncated with a warning that counts them."""
    fitted = [formatting.to_length(ex, kind, seq_len, on_overflow="truncate") for ex in examples]
    truncated = sum(t for _, t in fitted)
    if truncated:
        warnings.warn(f"{truncated} of {len(fitted)} {kind} examples are longer than "
                      f"seq_len={seq_len} and were truncated; raise seq_len to keep them whole",
                      stacklevel=3)
    return formatting.stack([ex for ex, _ in fitted])


def fit_step(env: RecipeEnv, params, loss: Loss, spec: FitSpec) -> Callable:
    """The jitted train step for ``loss`` and ``spec``: pass it as ``fit_examples(..., step=...)``
    to several trainings of the same loss, spec and param shapes (e.g. one model per label
    set) so they share one compile."""
    return make_fit_step(loss, env.model_config, params, spec.optim.for_steps(spec.steps),
                         mesh=env.mesh)


def fit_examples(env: RecipeEnv, params, loss: Loss, examples: Sequence[Mapping[str, np.ndarray]],
                 spec: FitSpec, seed: int = 0, ref_params=None, step: Optional[Callable] = None,
                 lora: Optional[LoRAConfig] = None):
    """Trains ``params`` with ``loss`` on ``examples`` (``formatting.encode_*`` outputs of
    the loss's batch kind), reshuffled every epoch, for ``spec.steps`` steps
    (:func:`reasonjax.train.fit.fit` on the stacked rows). Returns (params, last metrics).
    Resumability comes from the recipe's phases, so nothing is saved here. ``step``: a
    :func:`fit_step` to reuse. ``lora``: train LoRA adapters on the frozen ``params`` (the
    returned params are merged)."""
    if spec.steps == 0:
        return params, {}
    if not examples:
        raise ValueError(f"fit_examples: no {loss.kind} examples to train {loss.name} on")
    parallel.validate_batch(spec.batch_size, env.mesh, what="batch_size")
    rows = examples_to_rows(examples, loss.kind, spec.seq_len)
    cfg = FitConfig(steps=spec.steps, batch_size=spec.batch_size, seed=seed, optim=spec.optim,
                    lora=lora)
    return train_fit(loss, env.model_config, params, rows, cfg, ref_params=ref_params,
                     mesh=env.mesh, step_fn=step)


def sft_examples(env: RecipeEnv, prompts: Sequence[str], completions: Sequence[str]) -> list[dict]:
    return [formatting.encode_completion(env.tokenizer, p, c)
            for p, c in zip(prompts, completions)]


def warmup(run: Run, env: RecipeEnv, spec: FitSpec, seed: int = 0,
           name: str = "warmup") -> Any:
    """Phase ``name``: SFT on the train problems' reference solutions, from scratch (model
    preset) or from ``model.checkpoint``. Returns params."""
    from reasonjax.train.sft import sft_loss

    keep_tokenizer(run, env.tokenizer)

    def compute():
        params = env.init_params
        if params is None:
            params = parallel.init_params(env.model_config, jax.random.key(seed), env.mesh)
        examples = sft_examples(env, [env.task.prompt(p) for p in env.train],
                                [env.task.solution(p) for p in env.train])
        params, metrics = fit_examples(env, params, sft_loss(env.model_config), examples,
                                       spec, seed=seed)
        loss = metrics.get("loss")
        return Trained(params, env.model_config,
                       {"final_loss": None if loss is None else float(loss)})

    return run_phase(run, name, compute, Trained, mesh=env.mesh).params


def eval_phase(run: Run, env: RecipeEnv, params, name: str, max_new_tokens: int,
               batch_size: int) -> list:
    """Phase ``name``: each eval problem's greedy correctness under ``params`` (up to
    ``max_new_tokens``, ``batch_size`` problems per driver call), logged with its accuracy
    to metrics.jsonl. Returns the list."""
    from reasonjax.driver.records import greedy_correct

    done = run_phase(run, name, lambda: {"correct": greedy_correct(
        env, params, env.eval, max_new_tokens, batch_size)})
    log_metrics(run, {"phase": name, "accuracy": float(np.mean(done["correct"]))})
    return done["correct"]


def split_train(env: RecipeEnv, warmup_problems: int) -> tuple[RecipeEnv, list[Problem]]:
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


def warm_start(run: Run, cfg: RecipeConfig, env: Optional[RecipeEnv] = None
               ) -> tuple[RecipeEnv, Any, list[Problem]]:
    """A recipe's start: (env (``env_for(cfg)`` unless given), the warmed-up params, the
    training problems the recipe learns from: those after ``cfg.warmup_problems``; see
    :func:`split_train`)."""
    env = env if env is not None else env_for(cfg)
    warm_env, own = split_train(env, cfg.warmup_problems)
    return env, warmup(run, warm_env, cfg.warmup, seed=cfg.seed), own


def rng_for(seed: int, *names: str) -> jax.Array:
    """A key per (seed, phase name): phases draw independent, reproducible randomness."""
    key = jax.random.key(seed)
    for name in names:
        key = jax.random.fold_in(key, zlib.crc32(name.encode()))
    return key
