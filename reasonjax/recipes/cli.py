"""``reasonjax replicate``: thin wrapper over :func:`reasonjax.recipes.replicate.replicate`."""

from __future__ import annotations

import argparse


def _replicate(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markdown import Markdown

    from reasonjax.recipes.replicate import replicate

    result = replicate(args.recipe, args.preset, args.overrides, args.run_dir)
    console = Console()
    console.print(Markdown(result.report.read_text()))
    console.print(f"report: {result.report}")
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
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides, e.g. task.difficulty=medium warmup.steps=300")
    p.set_defaults(func=_replicate)
