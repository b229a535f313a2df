"""``reasonjax search``: run a search method over a task or a local file.

    reasonjax search CHECKPOINT --task arithmetic [--difficulty easy] [--count 64]
                     [--task-seed 0] [n_ops=3 ...] --method beam --n 8 --beam-width 2
                     [--max-steps 8 --step-tokens 32 --temperature 0.8 ...]
                     --out results.jsonl
    reasonjax search CHECKPOINT --local test.jsonl --format gsm8k --method majority --n 16
    reasonjax search CHECKPOINT --task arithmetic --method mcts --value-weight 0.5 \
                     --score-template " Is this step correct? (A) yes (B) no. Answer: (" \
                     --good-tokens A --bad-tokens B --scorer-weight 0.5
    reasonjax search CHECKPOINT --task arithmetic --method beam --n 8 --lookahead 2
    reasonjax search CHECKPOINT --task arithmetic --method majority --n 16 \
                     --prune-after 2 --prune-keep 0.25 \
                     --score-template " Is this correct so far? (A) yes (B) no. Answer: (" \
                     --good-tokens A --bad-tokens B
    reasonjax search CHECKPOINT --task arithmetic --method refine --refiner REFINER \
                     --scorer SORM [--refine-mode both --flag-threshold 0.5]

A step scorer is the policy's value head, a separate model's (``--scorer CKPT``), or,
with ``--score-template``, the probability of ``--good-tokens`` after the template
(MCTS-DPO's self-evaluation; read by ``--scorer`` when given). A method that would not
use it refuses these flags.

``--lookahead K`` makes beam / DVTS a lookahead search (Snell et al., 2024: each step
scored after a greedy K-step rollout). ``--prune-after S --prune-keep F`` prunes best-of-N
and the votes early (Manvi et al., 2024): after S steps only the top fraction F of the
samples still generating continues, ranked by the step scorer (the model's own
self-evaluation with ``--score-template``); the summary's ``tokens_generated`` shows what
was saved.

``--method refine`` is GLoRe (Havrilla et al., 2024; :func:`reasonjax.driver.refinement.
refine_search`): the policy's greedy draft, the ``--refiner`` model's global refinement
and / or its local one from the first step the scorer (a SORM: ``--scorer``'s value head,
default the policy's) scores below ``--flag-threshold``; ``--refine-mode both`` answers
with the best of draft, global and local refinement by the scorer's last-step score.

Writes one JSON record per problem to ``--out`` (answers, scores, candidates, compute;
see :func:`reasonjax.driver.run`) and the summary (accuracy when answers
are known, coverage, compute) to ``<out stem>.summary.json``, and prints the summary.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

# Steps per solution when --max-steps is not given (fewer when they do not fit the model).
DEFAULT_MAX_STEPS = 8

# Each vote method and the VotingConfig weighting it runs.
VOTES = {"majority": "majority", "prm_vote": "prm", "perplexity_vote": "perplexity"}
METHOD_NAMES = ("greedy", "sample", "best_of_n", *VOTES, "beam", "dvts", "particles", "mcts",
                "refine")


def _problems(args):
    from reasonjax.data import prompting
    from reasonjax.data.local import load_local
    from reasonjax.data.prompting import PromptSpec
    from reasonjax.data.task import get_task, task_from_args

    if (args.task is None) == (args.local is None):
        raise ValueError("search: give exactly one of --task NAME or --local FILE")
    if args.local is not None:
        if args.format is None:
            raise ValueError("search --local needs --format gsm8k|math|mc")
        if args.knobs:
            raise ValueError(f"search --local takes no knob=value settings, got {args.knobs}")
        report = load_local(args.local, args.format, on_error=args.on_error)
        problems = report.problems[:args.count] if args.count else report.problems
        if not problems:
            raise ValueError(f"search: {args.local} holds no problems")
        spec = PromptSpec(answer_fallback=args.answer_fallback)
        return problems, prompting.configure(get_task(problems[0].task), spec)
    task = task_from_args(args.task, args.difficulty, args.knobs)
    return task.generate(args.count or 16, seed=args.task_seed), task


def _reflection(args, tokenizer):
    """The CyclicReflex schedule of ``--reflection-*`` (ids from ``--reflection-ids`` and
    the tokenizer's ids of ``--reflection-tokens``, duplicates dropped)."""
    from reasonjax.driver.env import single_token_ids
    from reasonjax.search.sampler import CyclicReflex, SearchError

    texts = args.reflection_tokens or ()
    if texts and tokenizer is None:
        raise SearchError("--reflection-tokens needs the checkpoint's tokenizer; give "
                          "--reflection-ids instead")
    ids = [*(args.reflection_ids or ()), *single_token_ids(tokenizer, texts)]
    return CyclicReflex(token_ids=tuple(dict.fromkeys(ids)),
                        amplitude=args.reflection_amplitude, period=args.reflection_period)


def _step_scorer(args, tokenizer):
    """The StepScorer of ``--transform`` / ``--aggregate`` and, with ``--score-template``,
    kind token_prob: template ids from the tokenizer (no BOS), ``--good-tokens`` /
    ``--bad-tokens`` one token each. The ids are the policy's: a separate scorer model
    reads the policy's token ids, so it shares its vocabulary."""
    from reasonjax.driver.env import single_token_ids
    from reasonjax.search.sampler import SearchError
    from reasonjax.search.scoring import StepScorer

    if args.score_template is None:
        return StepScorer(transform=args.transform, aggregate=args.aggregate)
    if tokenizer is None:
        raise SearchError("--score-template needs the checkpoint's tokenizer")
    if not args.good_tokens:
        raise SearchError("--score-template needs --good-tokens (the 'correct' answer)")
    return StepScorer(kind="token_prob", aggregate=args.aggregate,
                      template=tuple(tokenizer.encode(args.score_template)),
                      good_ids=single_token_ids(tokenizer, args.good_tokens),
                      bad_ids=single_token_ids(tokenizer, args.bad_tokens or ()))


def _mcts_config(args, sampling, scorer):
    """MCTSConfig from the command line: ``scorer`` (a StepScorer, or None when neither
    ``--scorer`` nor ``--score-template`` is given) mixed into node values with
    ``--scorer-weight``; ``--value-weight`` defaults to 1 without a scorer and 0 with one
    (the scorer replaces the value head, as in the step methods)."""
    from reasonjax.search.mcts import MCTSConfig
    from reasonjax.search.sampler import SearchError

    if args.aggregate != "last":
        raise SearchError(f"--aggregate {args.aggregate} applies to the step methods; MCTS "
                          "backs node values up the tree, drop it")
    if scorer is None and args.scorer_weight is not None:
        raise SearchError("--scorer-weight needs a scorer: give --scorer CKPT or "
                          "--score-template TEXT, or drop --scorer-weight")
    value_weight = args.value_weight
    if value_weight is None:
        value_weight = 1.0 if scorer is None else 0.0
    weight = {} if scorer is None else {"scorer": scorer, "scorer_weight": 1.0 if
                                        args.scorer_weight is None else args.scorer_weight}
    return MCTSConfig(num_actions=args.num_actions, num_simulations=args.simulations,
                      max_steps=args.max_steps, step_tokens=args.step_tokens,
                      sampling=sampling, policy=args.mcts_policy,
                      value_transform=args.transform, value_weight=value_weight, **weight)


def method_from_args(args, tokenizer=None):
    """The method's own config (SampleConfig, BestOfNConfig, VotingConfig, BeamConfig,
    DVTSConfig, ParticleConfig or MCTSConfig) from the command line; bad settings raise
    SearchError / ConfigError here, before the model is loaded. ``tokenizer`` maps
    ``--reflection-tokens`` and the ``--score-template`` flags to ids. A scorer flag
    (``--scorer``, ``--score-template``) that the method would ignore is refused."""
    from reasonjax.driver.batches import scorer_unused
    from reasonjax.search.sampler import SearchError

    config = _method(args, tokenizer)
    given = [flag for flag, value in (("--scorer", args.scorer),
                                      ("--score-template", args.score_template))
             if value is not None]
    from reasonjax.driver.refinement import RefineConfig

    why = None
    if given and isinstance(config, RefineConfig):
        why = None if config.uses_scorer else \
            "--refine-mode global flags no step and reranks nothing"
    elif given:
        why = scorer_unused(config)
    if why is not None:
        raise SearchError(f"{' / '.join(given)}: {args.method} would ignore the step "
                          f"scorer ({why}); drop {' and '.join(given)}")
    return config


def _check_lookahead_and_pruning(args) -> None:
    """Refuses ``--lookahead`` outside beam / dvts and the ``--prune-*`` flags outside
    best_of_n and the votes, ``--prune-keep`` without ``--prune-after``, and pruning with
    no scorer flag (it ranks samples by step score: the self-evaluation of
    ``--score-template``, or ``--scorer``'s)."""
    from reasonjax.search.sampler import SearchError

    if args.lookahead is not None and args.method not in ("beam", "dvts"):
        raise SearchError(f"--lookahead applies to --method beam / dvts, not {args.method}; "
                          f"drop it")
    prunes = ("best_of_n", *VOTES)
    for flag, value in (("--prune-after", args.prune_after), ("--prune-keep", args.prune_keep)):
        if value is not None and args.method not in prunes:
            raise SearchError(f"{flag} applies to {', '.join(prunes)}, not {args.method}; "
                              f"drop it")
    if args.prune_keep is not None and args.prune_after is None:
        raise SearchError("--prune-keep applies with --prune-after; give the step to prune "
                          "after or drop --prune-keep")
    if args.prune_after is not None and args.score_template is None and args.scorer is None:
        raise SearchError("--prune-after ranks the samples by a step scorer; give "
                          "--score-template TEXT --good-tokens TOK (the model's "
                          "self-evaluation) or --scorer CKPT")


def _refine_config(args):
    """RefineConfig for --method refine (None for the other methods); the refine flags
    elsewhere, and the flags refine has no use for, are refused."""
    from reasonjax.driver.refinement import RefineConfig
    from reasonjax.search.sampler import SearchError

    flags = (("--refiner", args.refiner), ("--refine-mode", args.refine_mode),
             ("--flag-threshold", args.flag_threshold))
    if args.method != "refine":
        for flag, value in flags:
            if value is not None:
                raise SearchError(f"{flag} applies to --method refine, not {args.method}; "
                                  f"drop it")
        return None
    if args.refiner is None:
        raise SearchError("--method refine needs --refiner CKPT (a model trained on GLoRe "
                          "refinement pairs, e.g. by `reasonjax replicate revisions "
                          "refine.enabled=true`)")
    for flag, value in (("--score-template", args.score_template),
                        ("--reflection-amplitude", args.reflection_amplitude or None),
                        ("--scorer-weight", args.scorer_weight),
                        ("--value-weight", args.value_weight)):
        if value is not None:
            raise SearchError(f"{flag} does not apply to --method refine (greedy draft and "
                              f"refinements, scored by a value head); drop it")
    return RefineConfig(mode=args.refine_mode or "both",
                        max_new_tokens=args.max_new_tokens or args.max_steps * args.step_tokens,
                        threshold=0.5 if args.flag_threshold is None else args.flag_threshold,
                        transform=args.transform)


def _max_steps(args) -> int:
    return DEFAULT_MAX_STEPS if args.max_steps is None else args.max_steps


def fit_budget(method, args, longest_prompt: int, max_seq_len: int):
    """``method`` with its token budget lowered to fit ``max_seq_len`` after the longest
    prompt (and a self-evaluation template), when the budget is the default one (neither
    ``--max-steps`` nor ``--max-new-tokens`` given): whole steps of ``--step-tokens``.
    Returns (method, a note saying what changed, or None). A budget given on the command
    line, or a prompt leaving no room for one step, is left to the search's own check."""
    from reasonjax.search.sampler import SampleConfig

    if args.max_steps is not None or getattr(args, "max_new_tokens", None) is not None:
        return method, None
    scorer = getattr(method, "scorer", None)
    template = 0 if scorer is None else scorer.template_len
    room = max_seq_len - longest_prompt - template
    steps = room // args.step_tokens
    if isinstance(method, SampleConfig):
        if method.max_new_tokens <= room or steps < 1:
            return method, None
        fitted = dataclasses.replace(method, max_new_tokens=steps * args.step_tokens)
        what = f"--max-new-tokens {fitted.max_new_tokens}"
    elif hasattr(method, "max_steps"):
        if method.max_steps * method.step_tokens <= room or steps < 1:
            return method, None
        fitted = dataclasses.replace(method, max_steps=steps)
        what = f"--max-steps {steps}"
    else:
        return method, None
    return fitted, (f"{what} (not {DEFAULT_MAX_STEPS} x {args.step_tokens}): the longest "
                    f"prompt ({longest_prompt} tokens"
                    + (f", plus a {template}-token template" if template else "")
                    + f") leaves {room} of the model's max_seq_len {max_seq_len}")


def _method(args, tokenizer):
    from reasonjax.search.beam import BeamConfig, DVTSConfig
    from reasonjax.search.best_of_n import BestOfNConfig
    from reasonjax.search.particles import ParticleConfig
    from reasonjax.search.sampler import SampleConfig, SamplingConfig, SearchError
    from reasonjax.search.voting import VotingConfig

    if args.method not in METHOD_NAMES:
        raise SearchError(f"unknown method {args.method!r}; choose one of "
                          f"{', '.join(METHOD_NAMES)}")
    top_k_votes = args.complexity_top_k
    if top_k_votes is not None and args.method not in VOTES:
        raise SearchError(f"--complexity-top-k applies to the vote methods "
                          f"({', '.join(VOTES)}), not {args.method}; drop it")
    _check_lookahead_and_pruning(args)
    args = argparse.Namespace(**{**vars(args), "max_steps": _max_steps(args)})
    refine = _refine_config(args)
    if refine is not None:
        return refine
    if args.method != "mcts":
        for flag, value in (("--scorer-weight", args.scorer_weight),
                            ("--value-weight", args.value_weight)):
            if value is not None:
                raise SearchError(f"{flag} applies to --method mcts, not {args.method}; "
                                  f"drop it")
    if args.score_template is None:
        for flag, value in (("--good-tokens", args.good_tokens),
                            ("--bad-tokens", args.bad_tokens)):
            if value:
                raise SearchError(f"{flag} applies with --score-template; give the template "
                                  f"or drop {flag}")
    sampling = SamplingConfig(temperature=0.0 if args.method == "greedy" else args.temperature,
                              top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
                              reflection=_reflection(args, tokenizer))
    if args.method in ("greedy", "sample"):
        return SampleConfig(n=1 if args.method == "greedy" else args.n,
                            max_new_tokens=args.max_new_tokens or
                            args.max_steps * args.step_tokens, sampling=sampling)
    scorer = _step_scorer(args, tokenizer)
    if args.method == "mcts":
        scored = args.scorer is not None or args.score_template is not None
        return _mcts_config(args, sampling, scorer if scored else None)
    step = dict(n=args.n, max_steps=args.max_steps, step_tokens=args.step_tokens,
                sampling=sampling, scorer=scorer)
    prune = {k: v for k, v in (("prune_after", args.prune_after),
                               ("prune_keep", args.prune_keep)) if v is not None}
    if args.method in VOTES:
        return VotingConfig(**step, weighting=VOTES[args.method],
                            complexity_top_k=top_k_votes, **prune)
    if args.method == "best_of_n":
        return BestOfNConfig(**step, select_by=args.select_by, **prune)
    if args.method in ("beam", "dvts"):
        kind = BeamConfig if args.method == "beam" else DVTSConfig
        return kind(**step, beam_width=args.beam_width, lookahead=args.lookahead or 0)
    return ParticleConfig(**step, temperature=args.particle_temperature,
                          resampling=args.resampling)


def _made_from(args, method, task) -> dict:
    """What the output was made from: the method's resolved config, the seed, and the
    fingerprints of the checkpoint, scorer and data file (or the task and its knobs)."""
    from reasonjax.config import to_dict
    from reasonjax.provenance import fingerprint

    return {"config": to_dict(method), "seed": args.seed,
            "checkpoint": fingerprint(args.checkpoint), "scorer": fingerprint(args.scorer),
            "refiner": fingerprint(args.refiner),
            "data": {"file": fingerprint(args.local)} if args.local else
            {"task": task.name, "knobs": task.knobs(), "seed": args.task_seed}}


def _load_refiner(path, policy_config):
    """The refiner's params (a model directory, tokenizer not needed: e.g. a recipe's
    ``phases/refine-train/model``); its vocabulary must be the policy's (it reads the
    policy's token ids)."""
    from reasonjax.checkpoint import load_checkpoint
    from reasonjax.search.sampler import SearchError

    config, params = load_checkpoint(path)
    if config.vocab_size != policy_config.vocab_size:
        raise SearchError(f"--refiner {path}: vocabulary of {config.vocab_size} ids, the "
                          f"policy's has {policy_config.vocab_size}; the refiner must share "
                          "the policy's tokenizer")
    return params


def _search(args) -> int:
    import jax
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn)

    from reasonjax.checkpoint import load_checkpoint, load_model_and_tokenizer
    from reasonjax.driver import Env, run, summarize
    from reasonjax.driver.prompts import encode_prompts
    from reasonjax.driver.refinement import RefineConfig, refine_search
    from reasonjax.fileio import atomic_write_text, check_writable, dumps, refuse_existing
    from reasonjax.models.tokenizer import load_tokenizer

    method = method_from_args(args, load_tokenizer(args.checkpoint)
                              if args.reflection_tokens or args.score_template is not None
                              else None)
    out = Path(args.out)
    summary_path = out.with_name(out.stem + ".summary.json")
    for path in (out, summary_path):  # before the search, so its results are never lost
        refuse_existing(path, args.overwrite, "--out")
        check_writable(path)
    problems, task = _problems(args)
    config, params, tokenizer = load_model_and_tokenizer(args.checkpoint)
    scorer = load_checkpoint(args.scorer) if args.scorer is not None else None
    env = Env(task=task, tokenizer=tokenizer,
              model_config=config, prompt_len=args.prompt_len)

    console = Console(stderr=True)
    if problems:
        method, note = fit_budget(method, args, encode_prompts(env, problems).tokens.shape[1],
                                  config.max_seq_len)
        if note:
            console.print(f"[yellow]{note}[/yellow]")
    progress = Progress(TextColumn(f"[bold]{args.method}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=console, disable=args.no_progress)
    with progress:
        bar = progress.add_task(args.method, total=len(problems))
        if isinstance(method, RefineConfig):
            refiner = _load_refiner(args.refiner, config)
            records = refine_search(env, params, refiner, problems, method,
                                    jax.random.key(args.seed), batch_size=args.batch_size,
                                    scorer=scorer)
            progress.advance(bar, len(problems))
        else:
            records = run(env, params, problems, method, jax.random.key(args.seed),
                          batch_size=args.batch_size, scorer=scorer,
                          progress=lambda k: progress.advance(bar, k))
    summary = {"method": args.method, "checkpoint": str(args.checkpoint),
               "data": args.task or str(args.local), **summarize(records),
               "made_from": _made_from(args, method, task)}
    lines = (dumps({"method": args.method, **r.to_json()}) + "\n" for r in records)
    atomic_write_text(out, "".join(lines))
    atomic_write_text(summary_path, dumps(summary, indent=2) + "\n")
    print(dumps(summary))
    console.print(f"wrote {len(records)} records to {out} and the summary to {summary_path}")
    return 0


def register(subparsers) -> None:
    """Adds ``reasonjax search`` to the top-level parser's subparsers."""
    from reasonjax.cli import at_least

    from reasonjax.search.best_of_n import SELECT_BY
    from reasonjax.search.particles import RESAMPLING
    from reasonjax.search.scoring import AGGREGATIONS

    p = subparsers.add_parser(
        "search", help="run a search method over a task or local file",
        description="Runs greedy decoding, sampling, best-of-N, voting (majority, "
                    "PRM-weighted, perplexity-weighted; optionally among the most complex "
                    "candidates; optionally pruned early by self-evaluation), step beam "
                    "search and DVTS (optionally with lookahead), particle filtering, MCTS "
                    "or GLoRe refinement over problems and writes JSONL "
                    "records (answers, scores, compute) plus an accuracy summary.")
    p.add_argument("checkpoint", help="model directory (HF or reasonjax) with its tokenizer")
    data = p.add_argument_group("problems")
    data.add_argument("--task", default=None, help="task (see `reasonjax data list`)")
    data.add_argument("--difficulty", default=None, help="task difficulty preset")
    data.add_argument("--task-seed", type=int, default=0, help="problem stream of the task")
    data.add_argument("--local", default=None,
                      help="local JSONL / JSON / Parquet / Arrow file or folder (also a "
                           "Hugging Face save_to_disk split or datasets cache directory)")
    data.add_argument("--format", default=None, choices=["gsm8k", "math", "mc"],
                      help="format of the local file")
    data.add_argument("--answer-fallback", action="store_true",
                      help="--local: a completion without an answer mark (####, \\boxed, "
                           "'the answer is') answers with its last number")
    data.add_argument("--on-error", default="skip", choices=["skip", "fail"],
                      help="bad local records: skip (counted) or fail")
    data.add_argument("--count", type=at_least(1), default=None,
                      help="problems (task default 16; local default all)")
    data.add_argument("knobs", nargs="*", metavar="knob=value", help="task knob overrides")
    m = p.add_argument_group("method and budget")
    m.add_argument("--method", required=True, choices=METHOD_NAMES)
    m.add_argument("--n", type=int, default=4,
                   help="samples / candidates / particles / beam rows per problem")
    m.add_argument("--beam-width", type=int, default=2, help="beam/dvts: M, must divide n")
    m.add_argument("--max-steps", type=int, default=None,
                   help=f"steps per solution (default {DEFAULT_MAX_STEPS}, or as many as fit "
                        "the model's max_seq_len after the longest prompt)")
    m.add_argument("--step-tokens", type=int, default=32, help="token budget of one step")
    m.add_argument("--max-new-tokens", type=int, default=None,
                   help="greedy/sample/refine: tokens per completion (default steps x step "
                        "tokens)")
    m.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    m.add_argument("--top-k", type=int, default=0, help="0 = off")
    m.add_argument("--top-p", type=float, default=1.0, help="1 = off")
    m.add_argument("--min-p", type=float, default=0.0, help="0 = off")
    m.add_argument("--transform", default="sigmoid", choices=["sigmoid", "tanh", "identity"],
                   help="value head -> step score (mcts: the policy's value head in node values, "
                        "and --scorer's)")
    m.add_argument("--aggregate", default="last", choices=AGGREGATIONS,
                   help="step scores -> solution score")
    m.add_argument("--select-by", default="score", choices=SELECT_BY, help="best_of_n's pick")
    m.add_argument("--particle-temperature", type=float, default=1.0,
                   help="particles: weights = softmax(score / T)")
    m.add_argument("--resampling", default="multinomial", choices=RESAMPLING)
    m.add_argument("--num-actions", type=int, default=4, help="mcts: candidate steps per node")
    m.add_argument("--simulations", type=int, default=8, help="mcts: simulations per move")
    m.add_argument("--mcts-policy", default="muzero", choices=["muzero", "gumbel_muzero"])
    m.add_argument("--scorer", default=None, metavar="CKPT",
                   help="separate scorer model (PRM) for step scores: its value head "
                        "(--transform), or its --score-template probability (default: the "
                        "policy scores itself). mcts: mixed into node values")
    m.add_argument("--score-template", default=None, metavar="TEXT",
                   help="token_prob scorer: text fed after each step; the step's score is "
                        "P(good) / (P(good) + P(bad)) at its end (MCTS-DPO's "
                        "self-evaluation, or a PRM's step tag)")
    m.add_argument("--good-tokens", nargs="+", default=None, metavar="TEXT",
                   help="--score-template: the 'correct' answer tokens (one token each)")
    m.add_argument("--bad-tokens", nargs="+", default=None, metavar="TEXT",
                   help="--score-template: the 'incorrect' answer tokens (default: none, "
                        "the score is P(good))")
    m.add_argument("--value-weight", type=float, default=None,
                   help="mcts: weight of the policy's value head in node values (default 1 "
                        "without a scorer, 0 with --scorer or --score-template)")
    m.add_argument("--scorer-weight", type=float, default=None,
                   help="mcts: weight (MCTS-DPO's lambda) of the step scorer in node values "
                        "(default 1)")
    m.add_argument("--lookahead", type=at_least(0), default=None, metavar="K",
                   help="beam/dvts: lookahead search (Snell et al. 2024): score each step "
                        "after a greedy K-step rollout, then drop the rollout (its tokens "
                        "count as generated; K < --max-steps)")
    m.add_argument("--prune-after", type=at_least(1), default=None, metavar="S",
                   help="best_of_n/majority/prm_vote/perplexity_vote: early pruning (Manvi "
                        "et al. 2024): after S steps only the top --prune-keep fraction of "
                        "the samples still generating continues, ranked by the step scorer "
                        "(--score-template: the model's self-evaluation); S < --max-steps")
    m.add_argument("--prune-keep", type=float, default=None, metavar="F",
                   help="--prune-after: fraction of the running samples kept, in (0, 1] "
                        "(default 0.5)")
    m.add_argument("--complexity-top-k", type=at_least(1), default=None, metavar="K",
                   help="majority/prm_vote/perplexity_vote: only the K candidates with the "
                        "most steps vote (complexity-based consistency, Fu et al. 2023; "
                        "ties to the earlier sample)")
    g = p.add_argument_group("GLoRe refinement (--method refine)")
    g.add_argument("--refiner", default=None, metavar="CKPT",
                   help="the refiner model (global and local refinement prompts), same "
                        "tokenizer as the policy")
    g.add_argument("--refine-mode", default=None, choices=["global", "local", "both"],
                   help="global: rewrite the draft; local: rewrite from the first step the "
                        "scorer flags; both (default): best of draft, global and local by "
                        "the scorer's last-step score")
    g.add_argument("--flag-threshold", type=float, default=None, metavar="S",
                   help="local: the first step scoring below S (after --transform) is the "
                        "error (default 0.5)")
    r = p.add_argument_group("CyclicReflex", "Fan et al. 2025: a triangular-wave bias "
                             "A*tri(t/T) on the reflection tokens' logits at decode position t "
                             "(any method)")
    r.add_argument("--reflection-amplitude", type=float, default=0.0, metavar="A",
                   help="A, the bias's peak (0 = off)")
    r.add_argument("--reflection-period", type=float, default=600.0, metavar="T",
                   help="T, tokens per cycle (+A at T/4, -A at 3T/4)")
    r.add_argument("--reflection-ids", type=int, nargs="+", default=None, metavar="ID",
                   help="reflection token ids")
    r.add_argument("--reflection-tokens", nargs="+", default=None, metavar="TEXT",
                   help="reflection tokens as text, each one token of the checkpoint's "
                        "tokenizer (e.g. ' Wait' ' But')")
    run = p.add_argument_group("run")
    run.add_argument("--batch-size", type=at_least(1), default=8, help="problems per call")
    run.add_argument("--prompt-len", type=at_least(1), default=None,
                     help="prompt tokens per row (default: the longest prompt)")
    run.add_argument("--seed", type=int, default=0, help="sampling seed")
    run.add_argument("--out", default="search.jsonl", help="records (JSONL) to write")
    run.add_argument("--overwrite", action="store_true",
                     help="replace --out (and its summary) when they exist")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_search)
