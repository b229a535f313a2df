"""``reasonjax replicate`` and ``reasonjax report``: thin wrappers over
:func:`reasonjax.recipes.replicate.replicate` and :func:`~reasonjax.recipes.replicate.report`."""

from __future__ import annotations

import argparse


WIDTH = 100  # terminal columns the summary fits in


def print_result(result, title: str) -> None:
    """The measured figures and every effect (claim, 95% interval, verdict) in a table
    that fits WIDTH columns, headers never truncated (long cells fold)."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=WIDTH)
    console.print(f"[bold]{title}[/bold]: {result.headline}")
    table = Table(show_lines=False, width=WIDTH)
    table.add_column("claim", ratio=5, overflow="fold")
    table.add_column("ours [95% interval]", ratio=3, overflow="fold")
    table.add_column("needs", ratio=1, overflow="fold")
    table.add_column("verdict", ratio=2, overflow="fold")
    for e in result.effects:
        row = e.row()
        table.add_row(row["claim"], row["ours (95% interval)"], row["needs"], row["verdict"])
    console.print(table)
    console.print(f"report (all tables and plots): {result.report}")


def _replicate(args: argparse.Namespace) -> int:
    from reasonjax.recipes.replicate import replicate

    seeds = _seeds(args.seeds) if args.seeds else None
    result = replicate(args.recipe, args.preset, args.overrides, args.run_dir, seeds)
    print_result(result, args.recipe)
    return 0


def _seeds(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--seeds {text!r}: give comma-separated integers, e.g. 0,1,2") \
            from None


def _report(args: argparse.Namespace) -> int:
    from reasonjax.eval.report import markdown_table
    from reasonjax.recipes.replicate import read_run, readme_row, report

    if args.markdown:
        print(markdown_table([readme_row(d) for d in args.run_dirs]))
        machines = sorted({i.get("machine", "?") for d in args.run_dirs
                           for i in read_run(d).infos})
        print(f"\nRun on: {'; '.join(machines)}.")
        return 0
    for d in args.run_dirs:
        print_result(report(d), read_run(d).recipe)
    return 0


def register(sub) -> None:
    from reasonjax.recipes.replicate import PRESETS, RECIPES

    p = sub.add_parser(
        "replicate", help="rerun a paper's pipeline (tiny on CPU, or the paper's setting)",
        description="Run a paper recipe end to end and write a run directory with the "
                    "resolved config, metrics, checkpoints, report.md and plots. Rerunning "
                    "with the same --run-dir resumes from the last completed phase.")
    p.add_argument("recipe", choices=RECIPES, help="the pipeline to run")
    p.add_argument("--preset", choices=PRESETS, default="tiny",
                   help="tiny: built-in task, tiny model trained from scratch, minutes on a "
                        "CPU; paper: the paper's setting (set model.checkpoint and "
                        "task.data_file)")
    p.add_argument("--run-dir", default=None,
                   help="run directory (default runs/<recipe>-<preset>)")
    p.add_argument("--seeds", default=None, metavar="S,S,...",
                   help="run once per seed (each in <run-dir>/seed-<s>, resumable) and pool "
                        "them: figures with 95%% intervals, effect verdicts")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides, e.g. task.difficulty=medium warmup.steps=300")
    p.set_defaults(func=_replicate)
    r = sub.add_parser(
        "report", help="regenerate reports (and the README table) from run directories",
        description="Recompute every table, interval and verdict of finished `reasonjax "
                    "replicate` runs from their run directories (seeds pooled).")
    r.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    r.add_argument("--markdown", action="store_true",
                   help="print the README Replications table (one row per RUN_DIR)")
    r.set_defaults(func=_report)
    register_plan(sub)


def _plan(args: argparse.Namespace) -> int:
    import sys

    from reasonjax.config import ConfigError
    from reasonjax.recipes.plan import format_plan, plan

    recipe = args.recipe
    overrides = list(args.overrides)
    if recipe == "replicate":  # `plan --topology T replicate R ...` reads like the run
        if not overrides or "=" in overrides[0]:
            raise ConfigError("plan: name the recipe after `replicate`, e.g. "
                              "reasonjax plan --topology v5p-8 replicate alphamath")
        recipe = overrides.pop(0)
    only = [s for s in args.programs.split(",") if s] if args.programs else None
    log = (lambda s: print(s, file=sys.stderr, flush=True))
    p = plan(recipe, args.preset, overrides, args.topology, prompt_len=args.prompt_len,
             only=only, log=log)
    print(format_plan(p))
    if not p.fits:
        print(f"reasonjax plan: error: {', '.join(p.advice)} does not fit "
              f"{p.topology.name}; see above", file=sys.stderr)
        return 3
    return 0


def register_plan(sub) -> None:
    from reasonjax.cli import at_least
    from reasonjax.recipes.replicate import PRESETS, RECIPES

    p = sub.add_parser(
        "plan", help="compile a recipe's programs for a TPU slice ahead of time: HBM, "
                     "FLOPs, time, MFU",
        description="Compile every program of a recipe preset (train steps, searches, "
                    "prefill and decode) with the TPU compiler for a named slice, on this "
                    "machine (needs libtpu: pip install 'jax[tpu]'), with abstract params: "
                    "HBM per device vs available, model FLOPs and the roofline time they "
                    "imply, MFU and tokens/s. Exits 3 when a program does not fit, naming "
                    "the first change that fits.")
    p.add_argument("--topology", required=True, metavar="SLICE",
                   help="v5p-8, v4-32, v5e-16, v6e-8, ... (or libtpu's v5e:4x4)")
    p.add_argument("recipe", choices=RECIPES + ("replicate",), help="the recipe to plan")
    p.add_argument("--preset", choices=PRESETS, default="paper")
    p.add_argument("--prompt-len", type=at_least(1), default=512,
                   help="prompt tokens per row (default 512)")
    p.add_argument("--programs", default=None, metavar="NAME,...",
                   help="only the programs whose names contain one of these")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides, e.g. model.preset=qwen2.5-math-7b mesh.fsdp=4")
    p.set_defaults(func=_plan)
