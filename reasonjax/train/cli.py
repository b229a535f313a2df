"""``reasonjax train KIND``: thin wrappers over the library runs (:mod:`.fit`,
:mod:`reasonjax.rl.loop`).

    reasonjax train sft   --task arithmetic --model tiny-1m --run-dir runs/sft --steps 1000
    reasonjax train dpo   --task arithmetic --model runs/sft/model --run-dir runs/dpo [--loss ipo]
    reasonjax train value --task arithmetic --model runs/sft/model --run-dir runs/prm
    reasonjax train tree_plv --task arithmetic --model runs/sft/model --run-dir runs/plv
    reasonjax train grpo  --task arithmetic --model runs/sft/model --run-dir runs/grpo
    (dr_grpo, rloo, ppo, prime likewise; local problems: --data FILE --format gsm8k|math|mc)

- sft: the task's reference solutions;
- dpo (the family by ``--loss``: dpo cdpo robust ipo hinge orpo simpo, or kto): one round
  on the model's own samples (a correct and an incorrect sample of a problem make a pair;
  kto uses every sample, desirable = correct), reference = the starting model;
- value: a PRM / value head on the model's own samples, per-step targets from
  :func:`~reasonjax.driver.rollouts.process_labels` (exact prefix labels, or the outcome);
- tree_plv: a Tree-PLV verifier (He et al., 2024; :mod:`reasonjax.train.tree_plv`): the
  value head ranked on step-level preference pairs: siblings of best-first trees grown
  with the model (:func:`~reasonjax.recipes.process_labels.best_first_trees`, each step
  valued by Monte Carlo rollouts) whose values differ by more than ``samples.margin``.
  Like a ``value`` model, the result scores steps in ``reasonjax search --scorer``;
- the RL kinds (grpo, dr_grpo, rloo, dapo, gspo, cispo, reinforce_pp(_baseline), ppo,
  prime, oreal): :func:`~reasonjax.rl.loop.rl_train` with the kind's
  algorithm config (:mod:`reasonjax.rl.algorithms`) as ``algorithm``; its own knobs are
  ``--set algorithm.KEY=VALUE`` (e.g. ``algorithm.kl_coef=0.04``); ``--prm CHECKPOINT``
  with ``--set prm_shaping=clip|delta|clip_delta`` adds a PRM's shaped step rewards;
  ``--set curriculum.lr=0.5`` (or any ``curriculum.KEY``) picks each iteration's problems
  by the self-evolving curriculum's bandit over problem categories
  (:mod:`reasonjax.rl.curriculum`).

``--lora RANK`` trains LoRA adapters on the frozen model for any kind (the frozen model is
also the reference of dpo and RL); checkpoints and ``<run-dir>/adapters`` hold the
adapters alone, ``<run-dir>/model`` the merged model.

Every run writes ``<run-dir>/metrics.jsonl`` and checkpoints under
``<run-dir>/checkpoints``; rerunning the same command resumes from the latest (a larger
``--steps`` continues a finished run). Samples labelled for dpo / value are kept in
``<run-dir>/samples.jsonl`` (tree_plv: its preference pairs) so a resumed run trains on
the same rows. The final model is
written to ``<run-dir>/model`` with its tokenizer, loadable again with ``--model``.
Anything not covered by a flag is set with ``--set key=value`` on the kind's config
(printed with ``--show-config``).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Optional

from reasonjax.config import check_fields, to_dict
from reasonjax.recipes.process_labels import RolloutSpec, TreeSpec
from reasonjax.rl.algorithms import ALGORITHMS
from reasonjax.rl.config import RLConfig
from reasonjax.search.sampler import SampleConfig
from reasonjax.train.fit import FitConfig, TaskSFTConfig
from reasonjax.train.preference import KTOConfig, PreferenceConfig
from reasonjax.train.value import ValueConfig

PAIRED_LOSSES = ("dpo", "cdpo", "robust", "ipo", "hinge", "orpo", "simpo", "kto")
SAMPLES_FILE = "samples.jsonl"


@dataclasses.dataclass(frozen=True)
class SelfSamples:
    """The model's own samples that dpo / value rows are made from: ``sample`` (``n``
    completions per problem) of each of num_problems training problems, drawn with the
    key ``seed``; rows are seq_len tokens (longer ones truncated)."""

    sample: SampleConfig = SampleConfig(n=8, max_new_tokens=48)
    num_problems: int = 256
    seq_len: int = 96
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class PreferenceRunConfig:
    fit: FitConfig = FitConfig(steps=100, batch_size=32)
    samples: SelfSamples = SelfSamples()
    preference: PreferenceConfig = PreferenceConfig()
    kto: KTOConfig = KTOConfig()


@dataclasses.dataclass(frozen=True)
class ValueRunConfig:
    fit: FitConfig = FitConfig(steps=200, batch_size=32)
    samples: SelfSamples = SelfSamples()
    value: ValueConfig = ValueConfig()


@dataclasses.dataclass(frozen=True)
class TreeSamples:
    """Tree-PLV's pairs: a best-first ``tree`` on each of num_problems training problems,
    every step valued by ``rollouts`` (``n`` completions per prefix, also the sampling of
    the children), drawn with the key ``seed``; siblings whose values differ by more than
    ``margin`` make a pair; rows are seq_len tokens (pairs that do not fit are left out)."""

    tree: TreeSpec = TreeSpec()
    rollouts: RolloutSpec = RolloutSpec()
    margin: float = 0.25
    num_problems: int = 64
    seq_len: int = 96
    seed: int = 0

    def __post_init__(self):
        check_fields(self, margin="in [0, 1)", num_problems=">= 1", seq_len=">= 1")


@dataclasses.dataclass(frozen=True)
class TreePLVRunConfig:
    fit: FitConfig = FitConfig(steps=200, batch_size=32)
    samples: TreeSamples = TreeSamples()


# ---------------------------------------------------------------------------------------
# Inputs: problems, model, tokenizer


def _problems(args):
    """(task, training problems, held-out eval problems)."""
    from reasonjax.data.task import get_task, task_from_args

    if (args.task is None) == (args.data is None):
        raise ValueError(f"train {args.kind}: give exactly one of --task NAME (built-in) or "
                         "--data FILE --format gsm8k|math|mc (local problems)")
    if args.task is not None:
        task = task_from_args(args.task, args.difficulty, args.knobs)
        return task, None, task.generate(args.eval, seed="test") if args.eval else []
    if args.format is None:
        raise ValueError(f"train {args.kind} --data {args.data}: --format gsm8k|math|mc "
                         "is required")
    from reasonjax.data.local import load_local

    problems = load_local(args.data, args.format, args.on_error).problems
    if len(problems) <= args.eval:
        raise ValueError(f"--data {args.data}: {len(problems)} usable problems, but --eval "
                         f"holds out {args.eval}; lower --eval or add problems")
    cut = len(problems) - args.eval
    return get_task(problems[0].task), problems[:cut], problems[cut:]


def _model(args):
    """(model config, params or None for a fresh preset, tokenizer, tokenizer dir or None)."""
    from reasonjax import checkpoint
    from reasonjax.config import override
    from reasonjax.models.config import PRESETS, get_config
    from reasonjax.models.tokenizer import CharTokenizer, load_tokenizer

    tok_dir = args.tokenizer
    if args.model in PRESETS:
        tok = load_tokenizer(tok_dir) if tok_dir else CharTokenizer()
        cfg = override(get_config(args.model), args.model_set)
        return cfg, None, tok, tok_dir
    path = Path(args.model)
    if not path.is_dir():
        raise FileNotFoundError(f"--model {args.model}: neither a preset ({sorted(PRESETS)}) "
                                "nor a checkpoint directory")
    if args.model_set:
        raise ValueError("--model-set changes a preset's shape; it cannot apply to the "
                         f"trained checkpoint {args.model}")
    if tok_dir is None and any((path / n).is_file() for n in
                               ("tokenizer.json", "tokenizer.model", "char_tokenizer.json")):
        tok_dir = str(path)
    tok = load_tokenizer(tok_dir) if tok_dir else CharTokenizer()
    cfg, params = checkpoint.load_checkpoint(path)
    return cfg, params, tok, tok_dir


def _config(args, default, flags: dict):
    """``default`` with the given flags, then ``--set`` overrides, applied."""
    from reasonjax.config import override

    items = [f"{key}={value}" for key, value in flags.items() if value is not None]
    return override(default, items + list(args.set))


# ---------------------------------------------------------------------------------------
# Rows from the model's own samples (dpo family, value)


def _cached(run_dir: Path, settings: dict, draw) -> list:
    """Records [{problem, ...}] cached in run_dir/samples.jsonl, whose first line stamps
    the ``settings`` that drew them; a resumed run reads them back, a file with another
    stamp (or none) is drawn again by ``draw()`` and written."""
    from reasonjax import provenance
    from reasonjax.data.task import decode_problem
    from reasonjax.errors import warn
    from reasonjax.fileio import atomic_write_text, dumps

    path = run_dir / SAMPLES_FILE
    if path.is_file():
        head, *lines = path.read_text().splitlines() or [""]
        if provenance.matches(head, settings):
            try:
                return [{**r, "problem": decode_problem(r["problem"])}
                        for r in map(json.loads, filter(None, lines))]
            except (ValueError, KeyError, TypeError) as e:
                warn(f"{path} is unreadable ({e}); drawing the samples again")
        else:
            warn(f"{path} was drawn with other settings (or by an older version); drawing "
                 "the samples again")
    records = draw()
    atomic_write_text(path, provenance.stamp(settings) + "".join(
        dumps({**r, "problem": r["problem"].to_json()}) + "\n" for r in records))
    return records


def _samples(env, params, problems, spec: SelfSamples, run_dir: Path, made_from: dict
             ) -> list:
    """[{problem, completion, correct}] of ``spec.sample.n`` samples per problem (through
    the driver), cached (:func:`_cached`) under the settings ``spec`` and ``made_from``
    (the run's model and task)."""
    import jax

    from reasonjax.driver import run as run_driver

    def draw():
        chosen = problems[:spec.num_problems]
        out = run_driver(env, params, chosen, spec.sample, jax.random.key(spec.seed),
                         batch_size=len(chosen))
        return [{"problem": r.problem, "completion": c.completion, "correct": bool(c.correct)}
                for r in out for c in r.candidates]

    return _cached(run_dir, {"samples": to_dict(spec), **made_from}, draw)


def _tree_pairs(env, params, problems, spec: TreeSamples, run_dir: Path, made_from: dict
                ) -> list:
    """Tree-PLV's step-level pairs [{problem, prefix, chosen, rejected, chosen_final,
    rejected_final, gap}] from a best-first tree per problem (grown with the model through
    the driver; :mod:`reasonjax.recipes.process_labels`), cached like :func:`_samples`."""
    import jax

    from reasonjax.driver.env import longest_prompt
    from reasonjax.recipes import process_labels as pl
    from reasonjax.recipes.common import RecipeEnv

    def draw():
        chosen = problems[:spec.num_problems]
        renv = RecipeEnv(task=env.task, tokenizer=env.tokenizer, model_config=env.model_config,
                         mesh=env.mesh, prompt_len=longest_prompt(env, chosen))
        return pl.tree_pairs(renv, params, chosen, jax.random.key(spec.seed), spec.tree,
                             spec.rollouts, spec.margin)

    return _cached(run_dir, {"samples": to_dict(spec), **made_from}, draw)


def _preference_rows(tok, task, records, n: int, loss: str, seq_len: int) -> dict:
    import numpy as np

    from reasonjax.data import formatting
    from reasonjax.driver.rollouts import Rollouts, preference_pairs

    if loss == "kto":
        return formatting.unpaired_batch(
            tok, [task.prompt(r["problem"]) for r in records],
            [r["completion"] for r in records], [r["correct"] for r in records], seq_len,
            on_overflow="truncate")
    ro = Rollouts(batch={}, completions=[r["completion"] for r in records],
                  rewards=np.asarray([r["correct"] for r in records], np.float32),
                  correct=np.asarray([r["correct"] for r in records], bool),
                  lengths=np.zeros(len(records), np.int32))
    prompts, chosen, rejected = preference_pairs(task, [r["problem"] for r in records[::n]],
                                                 ro, n)
    if not prompts:
        raise ValueError(f"no preference pairs: no problem had both a correct and an incorrect "
                         f"sample among {n}; raise --set samples.sample.n or "
                         "samples.sample.sampling.temperature, or use --loss kto")
    return formatting.preference_batch(tok, prompts, chosen, rejected, seq_len,
                                       on_overflow="truncate")


def _tree_plv_rows(tok, task, records, seq_len: int) -> dict:
    """``preference`` rows of step-level pairs; a pair longer than seq_len is left out
    (its step end, where the score is read, would be cut off)."""
    from reasonjax.data import formatting
    from reasonjax.data.formats import check_batch
    from reasonjax.errors import warn

    examples = [formatting.encode_step_preference(
        tok, task.prompt(r["problem"]), r["prefix"], r["chosen"], r["rejected"],
        task.step_delimiter, r["chosen_final"], r["rejected_final"]) for r in records]
    fits = [e for e in examples
            if max(len(e["chosen_tokens"]), len(e["rejected_tokens"])) <= seq_len]
    if len(fits) < len(examples):
        warn(f"{len(examples) - len(fits)} of {len(examples)} tree_plv pairs are longer than "
             f"samples.seq_len={seq_len} tokens and were left out")
    if not fits:
        raise ValueError(f"samples.seq_len={seq_len}: none of the {len(examples)} tree_plv "
                         "pairs fits; raise it (--seq-len)")
    rows = formatting.stack([formatting.to_length(e, "preference", seq_len)[0] for e in fits])
    check_batch(rows, "preference")
    return rows


def _value_rows(tok, task, records, seq_len: int) -> dict:
    from reasonjax.data import formatting
    from reasonjax.driver.rollouts import process_labels

    labelled = [process_labels(task, r["problem"], r["completion"]) for r in records]
    return formatting.value_batch(
        tok, [task.prompt(r["problem"]) for r in records], [s for s, _, _ in labelled],
        [t for _, t, _ in labelled], task.step_delimiter, seq_len,
        [c for _, _, c in labelled], on_overflow="truncate")


# ---------------------------------------------------------------------------------------
# The command


def _latest(run_dir: Path) -> Optional[int]:
    from reasonjax import checkpoint
    from reasonjax.train.loop import CHECKPOINTS

    if not (run_dir / CHECKPOINTS).is_dir():
        return None
    manager = checkpoint.make_manager(run_dir / CHECKPOINTS, async_save=False)
    step = manager.latest_step()
    manager.close()
    return step


def _run_config(args):
    """The kind's config from its defaults, the flags and ``--set`` overrides."""
    kind = args.kind
    if kind in ALGORITHMS:
        return _config(args, RLConfig(algorithm=ALGORITHMS[kind]()), {
            "iterations": args.steps, "prompts_per_iteration": args.batch_size,
            "optim.lr": args.lr, "seed": args.seed, "max_new_tokens": args.max_new_tokens,
            "lora.rank": args.lora})
    default = {"sft": TaskSFTConfig(), "dpo": PreferenceRunConfig(),
               "value": ValueRunConfig(), "tree_plv": TreePLVRunConfig()}[kind]
    seq = "seq_len" if kind == "sft" else "samples.seq_len"
    flags = {"fit.steps": args.steps, "fit.batch_size": args.batch_size,
             "fit.optim.lr": args.lr, "fit.seed": args.seed, seq: args.seq_len,
             "fit.lora.rank": args.lora}
    if kind == "dpo" and args.loss != "kto":
        flags["preference.loss"] = args.loss
    if kind == "tree_plv":
        flags["samples.rollouts.max_new_tokens"] = args.max_new_tokens
    elif kind != "sft":
        flags["samples.sample.max_new_tokens"] = args.max_new_tokens
    return _config(args, default, flags)


def _train_on_samples(args, env, params, problems, config, run_dir: Path, progress: bool,
                      made_from: dict):
    """dpo / value: rows from the model's own samples, then one fit. Returns (params,
    metrics, summary entries)."""
    from reasonjax.train.fit import fit
    from reasonjax.train.preference import kto, preference_loss
    from reasonjax.train.value import value_loss

    cfg, tok, task = env.model_config, env.tokenizer, env.task
    train_problems = problems or task.generate(config.samples.num_problems, seed="train")
    records = _samples(env, params, train_problems, config.samples, run_dir, made_from)
    summary = {"sample_accuracy": sum(r["correct"] for r in records) / len(records)}
    fit_cfg = dataclasses.replace(config.fit, progress=progress)
    if args.kind == "dpo":
        rows = _preference_rows(tok, task, records, config.samples.sample.n, args.loss,
                                config.samples.seq_len)
        loss = (kto(cfg, config.kto) if args.loss == "kto"
                else preference_loss(cfg, config.preference))
        params, metrics = fit(loss, cfg, params, rows, fit_cfg, ref_params=params,
                              run_dir=str(run_dir))
    else:
        rows = _value_rows(tok, task, records, config.samples.seq_len)
        params, metrics = fit(value_loss(cfg, config.value), cfg, params, rows, fit_cfg,
                              run_dir=str(run_dir))
    summary["rows"] = len(next(iter(rows.values())))
    return params, metrics, summary


def _train_tree_plv(env, params, problems, config: TreePLVRunConfig, run_dir: Path,
                    progress: bool, made_from: dict):
    """tree_plv: pairs from best-first trees grown with the model, then one fit of the
    ranking loss. Returns (params, metrics, summary entries)."""
    from reasonjax.train.fit import fit
    from reasonjax.train.tree_plv import tree_plv_loss

    cfg, spec = env.model_config, config.samples
    train_problems = problems or env.task.generate(spec.num_problems, seed="train")
    records = _tree_pairs(env, params, train_problems, spec, run_dir, made_from)
    if not records:
        raise ValueError(f"no tree_plv pairs: no siblings of the {spec.num_problems} trees "
                         f"differ in value by more than samples.margin={spec.margin}; lower "
                         "it, or raise samples.tree.children, samples.rollouts.n or "
                         "samples.num_problems")
    rows = _tree_plv_rows(env.tokenizer, env.task, records, spec.seq_len)
    params, metrics = fit(tree_plv_loss(cfg), cfg, params, rows,
                          dataclasses.replace(config.fit, progress=progress),
                          run_dir=str(run_dir))
    return params, metrics, {"pairs": len(records),
                             "mean_gap": sum(r["gap"] for r in records) / len(records),
                             "rows": len(rows["chosen_tokens"])}


RUN_FILE = "run.json"  # what the run directory was made from (checked on resume)


def _made_from(args, task, cfg, tok_dir) -> dict:
    """The inputs a run depends on: model (preset or checkpoint fingerprint), tokenizer,
    task and its knobs, or the data file's fingerprint."""
    from reasonjax.provenance import fingerprint

    model = ({"preset": args.model, "set": list(args.model_set)} if args.model_set
             or not Path(args.model).is_dir() else
             {"checkpoint": str(args.model), "fingerprint": fingerprint(args.model)})
    data = ({"task": task.name, "knobs": task.knobs()} if args.data is None else
            {"file": str(args.data), "format": args.format, "on_error": args.on_error,
             "fingerprint": fingerprint(args.data)})
    return {"model": model, "model_config": to_dict(cfg), "tokenizer": fingerprint(tok_dir),
            "data": data, "eval": args.eval,
            "prm": fingerprint(getattr(args, "prm", None))}


def _step_rewards(args, config, tok, task):
    """RL kinds: the PRM step-reward function of ``--prm`` with ``prm_shaping`` (None
    when neither is given); one without the other is refused before any work."""
    from reasonjax import checkpoint
    from reasonjax.config import ConfigError
    from reasonjax.models.tokenizer import check_vocab
    from reasonjax.rl.shaping import make_step_rewards, value_head_scorer

    prm = getattr(args, "prm", None)
    if config.prm_shaping is None and prm is None:
        return None
    if config.prm_shaping is None:
        raise ConfigError(f"--prm {prm}: PRM step rewards need a shaping: add --set "
                          "prm_shaping=clip (or delta, clip_delta)")
    if prm is None:
        raise ConfigError(f"prm_shaping={config.prm_shaping}: give the PRM that scores the "
                          "steps with --prm CHECKPOINT (a `train value` model)")
    prm_cfg, prm_params = checkpoint.load_checkpoint(prm)
    check_vocab(prm_cfg.vocab_size, tok, where=f"--prm {prm}")
    return make_step_rewards(value_head_scorer(prm_cfg, prm_params, args.prm_transform),
                             tok, task.step_delimiter, config)


def _open_run_dir(args, config, made_from: dict) -> Path:
    """Creates (or reopens) the run directory; once it holds a checkpoint a rerun must
    have the run's settings (the step count aside: a larger ``--steps`` continues a
    finished run)."""
    from reasonjax import provenance
    from reasonjax.errors import RunDirError
    from reasonjax.fileio import check_writable

    run_dir = Path(args.run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"--run-dir {run_dir} is a file; give a directory")
    check_writable(run_dir / RUN_FILE)
    settings = to_dict(config)
    settings.pop("iterations", None)
    settings.get("fit", {}).pop("steps", None)
    settings.get("fit", {}).pop("progress", None)
    provenance.check_or_record(run_dir / RUN_FILE, {"kind": args.kind, **made_from,
                                                    "config": settings},
                               has_results=_latest(run_dir) is not None)
    return run_dir


def _train(args) -> int:
    import jax

    from reasonjax import checkpoint
    from reasonjax.driver import Env
    from reasonjax.driver.records import greedy_accuracy
    from reasonjax.fileio import dumps
    from reasonjax.models import transformer
    from reasonjax.models.tokenizer import check_vocab

    kind, config = args.kind, _run_config(args)
    if args.show_config:
        print(json.dumps(to_dict(config), indent=1))
        return 0
    task, problems, eval_problems = _problems(args)
    cfg, params, tok, tok_dir = _model(args)
    check_vocab(cfg.vocab_size, tok)
    env = Env(task=task, tokenizer=tok, model_config=cfg)
    step_rewards = _step_rewards(args, config, tok, task) if kind in ALGORITHMS else None
    made_from = _made_from(args, task, cfg, tok_dir)
    run_dir = _open_run_dir(args, config, made_from)
    resumed = _latest(run_dir)
    where = f"resuming after step {resumed}" if resumed else "from the start"
    print(f"train {kind}: {task.name}, {where} in {run_dir}", flush=True)
    if params is None and kind != "sft":
        params = transformer.init_params(cfg, jax.random.key(args.seed or 0))
    progress = not args.no_progress
    summary: dict = {"kind": kind, "task": task.name, "resumed_after": resumed}
    if kind == "sft":
        from reasonjax.train.fit import sft_on_task

        config = dataclasses.replace(config, fit=dataclasses.replace(config.fit,
                                                                     progress=progress))
        params, metrics = sft_on_task(cfg, tok, task, config, params=params,
                                      problems=problems, run_dir=str(run_dir))
        max_new = args.max_new_tokens or SelfSamples().sample.max_new_tokens
    elif kind in ("dpo", "value"):
        params, metrics, extra = _train_on_samples(args, env, params, problems, config,
                                                   run_dir, progress, made_from)
        summary.update(extra)
        max_new = config.samples.sample.max_new_tokens
    elif kind == "tree_plv":
        params, metrics, extra = _train_tree_plv(env, params, problems, config, run_dir,
                                                 progress, made_from)
        summary.update(extra)
        max_new = config.samples.rollouts.max_new_tokens
    else:
        from reasonjax.rl.loop import rl_train
        from reasonjax.rl.update import make_learner

        train_problems = problems or task.generate(4096, seed="train")
        learner = make_learner(cfg, params, config, step_rewards=step_rewards)
        params, history = rl_train(learner, env, train_problems, run_dir=str(run_dir),
                                   progress=progress)
        metrics = dict(history[-1]) if history else {}
        max_new = config.max_new_tokens
    summary["metrics"] = {k: round(float(v), 6) for k, v in metrics.items()}
    if eval_problems and kind not in ("value", "tree_plv"):
        summary["greedy_accuracy"] = greedy_accuracy(env, params, eval_problems, max_new)
    if tok_dir is None:
        tok_dir = str(tok.save(run_dir / "tokenizer").parent)
    summary["model"] = str(checkpoint.save_model(run_dir / "model", cfg, params, tok_dir,
                                                 overwrite=True))
    print(dumps(summary), flush=True)
    return 0


def register(subparsers) -> None:
    """Adds ``reasonjax train KIND ...`` to the top-level parser's subparsers."""
    from reasonjax.cli import at_least

    p = subparsers.add_parser("train", help="SFT, the DPO family, value/PRM, RL",
                              description="Train a model on a task: SFT, the DPO family, "
                                          "value / PRM, RL. Reruns resume from the run dir.")
    sub = p.add_subparsers(dest="kind", required=True, metavar="KIND")
    kinds = {
        "sft": "SFT on the task's reference solutions",
        "dpo": "one round of the DPO family (--loss) on the model's own samples",
        "value": "value / PRM head on the model's own samples, per-step labels",
        "tree_plv": "Tree-PLV verifier: value head ranked on step preferences from "
                    "best-first trees valued by rollouts",
        **{a: f"RL: {a} on the task's verifier rewards" for a in ALGORITHMS},
    }
    for kind, help_text in kinds.items():
        q = sub.add_parser(kind, help=help_text, description=help_text + ". " + (
            "Reruns resume from <run-dir>/checkpoints; the final model goes to "
            "<run-dir>/model."))
        data = q.add_argument_group("data")
        data.add_argument("--task", default=None,
                          help="task: built-in or gym:<dataset> (`reasonjax data list`)")
        data.add_argument("--difficulty", default=None, help="the task's difficulty preset")
        data.add_argument("knobs", nargs="*", metavar="knob=value", help="task knob overrides")
        data.add_argument("--data", default=None,
                          help="local problems instead of --task: JSONL / JSON / Parquet / "
                               "Arrow file or folder (or a HF datasets directory)")
        data.add_argument("--format", default=None, choices=["gsm8k", "math", "mc"],
                          help="format of --data")
        data.add_argument("--on-error", default="skip", choices=["skip", "fail"],
                          help="bad records in --data: skip or fail")
        data.add_argument("--eval", type=at_least(0), default=0, metavar="N",
                          help="greedy accuracy on N held-out problems at the end (--data: "
                               "its last N records, not trained on)")
        model = q.add_argument_group("model")
        model.add_argument("--model", required=True,
                           help="preset (`reasonjax models`) or checkpoint dir (HF / reasonjax)")
        model.add_argument("--model-set", action="append", default=[], metavar="KEY=VALUE",
                           help="preset field override, e.g. n_layers=2 (repeatable)")
        model.add_argument("--tokenizer", default=None,
                           help="tokenizer file or dir (default: the checkpoint's, else the "
                                "character tokenizer)")
        run = q.add_argument_group("run")
        run.add_argument("--run-dir", required=True, help="checkpoints, metrics, final model")
        run.add_argument("--steps", type=int, default=None,
                         help="RL: iterations; else optimizer steps")
        run.add_argument("--batch-size", type=int, default=None,
                         help="RL: prompts per iteration; else rows per step")
        run.add_argument("--lr", type=float, default=None, help="peak learning rate")
        run.add_argument("--seed", type=int, default=None)
        run.add_argument("--lora", type=at_least(1), default=None, metavar="RANK",
                         help="train LoRA adapters of this rank on the frozen model (its "
                              "other settings: --set [fit.]lora.KEY=VALUE); the adapters "
                              "go to <run-dir>/adapters, the merged model to <run-dir>/model")
        if kind not in ALGORITHMS:
            run.add_argument("--seq-len", type=int, default=None, help="row length in tokens")
        run.add_argument("--max-new-tokens", type=int, default=None,
                         help="sampling length (dpo / value / tree_plv / RL)")
        if kind in ALGORITHMS:
            run.add_argument("--prm", default=None, metavar="CHECKPOINT",
                             help="PRM (a `train value` model) whose shaped step scores join "
                                  "the reward; with --set prm_shaping=clip|delta|clip_delta")
            run.add_argument("--prm-transform", default="sigmoid",
                             choices=["sigmoid", "tanh", "identity"],
                             help="PRM value head -> step score")
        if kind == "dpo":
            run.add_argument("--loss", default="dpo", choices=PAIRED_LOSSES,
                             help="member of the DPO family (kto: unpaired samples)")
        run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                         help="override any field of the kind's config (repeatable)")
        run.add_argument("--show-config", action="store_true",
                         help="print the resolved config and exit")
        run.add_argument("--no-progress", action="store_true", help="no progress bar")
        q.set_defaults(func=_train, kind=kind)
        if kind in ALGORITHMS:
            q.set_defaults(seq_len=None)
        if kind != "dpo":
            q.set_defaults(loss=None)
