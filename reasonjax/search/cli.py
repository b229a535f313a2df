"""``reasonjax search``: run a search method over a task or a local file.

    reasonjax search CHECKPOINT --task arithmetic [--difficulty easy] [--count 64]
                     [--task-seed 0] [n_ops=3 ...] --method beam --n 8 --beam-width 2
                     [--max-steps 8 --step-tokens 32 --temperature 0.8 ...]
                     --out results.jsonl
    reasonjax search CHECKPOINT --local test.jsonl --format gsm8k --method majority --n 16

Writes one JSON record per problem to ``--out`` (answers, scores, candidates, compute;
see :func:`reasonjax.search.methods.run_method`) and the summary (accuracy when answers
are known, coverage, compute) to ``<out stem>.summary.json``, and prints the summary.
"""

from __future__ import annotations

import json
from pathlib import Path


def _problems(args):
    from reasonjax.data.local import load_local
    from reasonjax.data.task import task_from_args

    if (args.task is None) == (args.local is None):
        raise ValueError("search: give exactly one of --task NAME or --local FILE")
    if args.local is not None:
        if args.format is None:
            raise ValueError("search --local needs --format gsm8k|math|mc")
        if args.knobs:
            raise ValueError(f"search --local takes no knob=value settings, got {args.knobs}")
        report = load_local(args.local, args.format, on_error=args.on_error)
        problems = report.problems
        return (problems[:args.count] if args.count else problems), None
    task = task_from_args(args.task, args.difficulty, args.knobs)
    return task.generate(args.count or 16, seed=args.task_seed), task


def method_config_from_args(args):
    """A MethodConfig from the parsed command line."""
    from reasonjax.search.methods import MethodConfig
    from reasonjax.search.sampler import SamplingConfig
    from reasonjax.search.scoring import StepScorer

    return MethodConfig(
        n=args.n, beam_width=args.beam_width, max_steps=args.max_steps,
        step_tokens=args.step_tokens, max_new_tokens=args.max_new_tokens,
        sampling=SamplingConfig(temperature=args.temperature, top_k=args.top_k,
                                top_p=args.top_p, min_p=args.min_p),
        scorer=StepScorer(transform=args.transform, aggregate=args.aggregate),
        select_by=args.select_by, particle_temperature=args.particle_temperature,
        resampling=args.resampling, num_actions=args.num_actions,
        num_simulations=args.simulations, mcts_policy=args.mcts_policy,
        batch_size=args.batch_size, prompt_len=args.prompt_len)


def _search(args) -> int:
    import jax
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn)

    from reasonjax.checkpoint import load_checkpoint, load_model_and_tokenizer
    from reasonjax.fileio import atomic_write_text
    from reasonjax.search.methods import method_config, run_method, summarize

    cfg = method_config_from_args(args)
    method_config(args.method, cfg)  # bad settings fail before loading anything
    problems, task = _problems(args)
    config, params, tokenizer = load_model_and_tokenizer(args.checkpoint)
    scorer_config = scorer_params = None
    if args.scorer is not None:
        scorer_config, scorer_params = load_checkpoint(args.scorer)

    console = Console(stderr=True)
    progress = Progress(TextColumn(f"[bold]{args.method}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=console, disable=args.no_progress)
    with progress:
        bar = progress.add_task(args.method, total=len(problems))
        records = run_method(args.method, config, params, tokenizer, problems, cfg,
                             jax.random.key(args.seed), task=task, scorer_config=scorer_config,
                             scorer_params=scorer_params,
                             progress=lambda k: progress.advance(bar, k))
    summary = {"method": args.method, "checkpoint": str(args.checkpoint),
               "data": args.task or str(args.local), **summarize(records)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, "".join(json.dumps(r) + "\n" for r in records))
    summary_path = out.with_name(out.stem + ".summary.json")
    atomic_write_text(summary_path, json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary))
    console.print(f"wrote {len(records)} records to {out} and the summary to {summary_path}")
    return 0


def register(subparsers) -> None:
    """Adds ``reasonjax search`` to the top-level parser's subparsers."""
    from reasonjax.search.best_of_n import SELECT_BY
    from reasonjax.search.methods import METHODS
    from reasonjax.search.particles import RESAMPLING
    from reasonjax.search.scoring import AGGREGATIONS

    p = subparsers.add_parser(
        "search", help="run a search method over a task or local file",
        description="Runs greedy decoding, sampling, best-of-N, voting, step beam search, "
                    "DVTS, particle filtering or MCTS over problems and writes JSONL "
                    "records (answers, scores, compute) plus an accuracy summary.")
    p.add_argument("checkpoint", help="model directory (HF or reasonjax) with its tokenizer")
    data = p.add_argument_group("problems")
    data.add_argument("--task", default=None, help="built-in task (see `reasonjax data tasks`)")
    data.add_argument("--difficulty", default=None, help="task difficulty preset")
    data.add_argument("--task-seed", type=int, default=0, help="problem stream of the task")
    data.add_argument("--local", default=None, help="local JSONL/JSON/Parquet file or folder")
    data.add_argument("--format", default=None, choices=["gsm8k", "math", "mc"],
                      help="format of the local file")
    data.add_argument("--on-error", default="skip", choices=["skip", "fail"],
                      help="bad local records: skip (counted) or fail")
    data.add_argument("--count", type=int, default=None,
                      help="problems (task default 16; local default all)")
    data.add_argument("knobs", nargs="*", metavar="knob=value", help="task knob overrides")
    m = p.add_argument_group("method and budget")
    m.add_argument("--method", required=True, choices=METHODS)
    m.add_argument("--n", type=int, default=4,
                   help="samples / candidates / particles / beam rows per problem")
    m.add_argument("--beam-width", type=int, default=2, help="beam/dvts: M, must divide n")
    m.add_argument("--max-steps", type=int, default=8, help="steps per solution")
    m.add_argument("--step-tokens", type=int, default=32, help="token budget of one step")
    m.add_argument("--max-new-tokens", type=int, default=None,
                   help="greedy/sample: tokens per completion (default steps x step tokens)")
    m.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    m.add_argument("--top-k", type=int, default=0, help="0 = off")
    m.add_argument("--top-p", type=float, default=1.0, help="1 = off")
    m.add_argument("--min-p", type=float, default=0.0, help="0 = off")
    m.add_argument("--transform", default="sigmoid", choices=["sigmoid", "tanh", "identity"],
                   help="value head -> step score (MCTS: node value)")
    m.add_argument("--aggregate", default="last", choices=AGGREGATIONS,
                   help="step scores -> solution score")
    m.add_argument("--select-by", default="score", choices=SELECT_BY, help="best_of_n's pick")
    m.add_argument("--particle-temperature", type=float, default=1.0,
                   help="particles: weights = softmax(score / T)")
    m.add_argument("--resampling", default="multinomial", choices=RESAMPLING)
    m.add_argument("--num-actions", type=int, default=4, help="mcts: candidate steps per node")
    m.add_argument("--simulations", type=int, default=8, help="mcts: simulations per move")
    m.add_argument("--mcts-policy", default="muzero", choices=["muzero", "gumbel_muzero"])
    m.add_argument("--scorer", default=None,
                   help="separate PRM checkpoint for step scores (default: the value head)")
    run = p.add_argument_group("run")
    run.add_argument("--batch-size", type=int, default=8, help="problems per call")
    run.add_argument("--prompt-len", type=int, default=None,
                     help="prompt tokens per row (default: the longest prompt)")
    run.add_argument("--seed", type=int, default=0, help="sampling seed")
    run.add_argument("--out", default="search.jsonl", help="records (JSONL) to write")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_search)
