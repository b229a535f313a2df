"""``reasonjax data``: list tasks, preview samples, build TFDS datasets, validate files.

    reasonjax data list [-v]
    reasonjax data preview --task gym:chain_sum --n 3 [max_terms=4 ...]
    reasonjax data preview --task arithmetic --n 5 [--difficulty hard] [n_ops=4 ...]
    reasonjax data build-tfds --task maze --data-dir DIR [--difficulty hard]
                              [--name my_maze --train 1000 --test 100 --seed 1 height=6]
    reasonjax data build-tfds --local FOLDER --format gsm8k --data-dir DIR
    reasonjax data validate FILE --format gsm8k|math|mc [--on-error skip|fail]
"""

from __future__ import annotations

import json


def _list(args) -> int:
    from reasonjax.data.task import get_task, task_names
    from reasonjax.data.tasks import gym

    for name in task_names():
        if name == gym.GymTask.name:
            continue  # listed per dataset below
        task = get_task(name)
        kind = "exact steps" if task.exact_steps else "final answer only"
        doc = (type(task).__doc__ or "").strip().splitlines()[0]
        print(f"{name:22s} {kind:18s} {doc}")
        if args.verbose:
            print(f"{'':22s} knobs {task.knobs()}")
            for preset, knobs in task.DIFFICULTIES.items():
                print(f"{'':22s} {preset:18s} {knobs}")
    names = gym.dataset_names()
    if not names:
        print("gym:<dataset>          (reasoning-gym's 100+ datasets: pip install "
              "'reasonjax[gym]')")
    for name in names:
        print(f"{gym.PREFIX + name:22s} {'final answer only':18s} {gym.describe(name)}")
    return 0


def _preview(args) -> int:
    from reasonjax.data.task import task_from_args

    task = task_from_args(args.task, args.difficulty, args.knobs)
    print(f"# {task.name} {task.knobs()}")
    for p in task.generate(args.n, seed=args.seed):
        text = task.prompt(p) + task.solution(p)
        ok = task.verify(p, task.solution(p)) if p.steps else None
        if ok and task.exact_steps:
            ok = task.check_steps(p, list(p.steps)).solved
        checks = {True: "pass", False: "FAIL", None: "no reference solution"}[ok]
        print(f"--- {len(p.steps)} steps, {len(text)} chars, checks {checks}")
        print(text)
    return 0


def _build(args) -> int:
    from reasonjax.data import tfds_builders
    from reasonjax.data.task import task_from_args

    if (args.task is None) == (args.local is None):
        raise ValueError("build-tfds: give exactly one of --task NAME or --local FOLDER")
    if args.local is not None:
        if args.format is None:
            raise ValueError("build-tfds --local needs --format gsm8k|math|mc")
        name = tfds_builders.build_local_dataset(args.local, args.data_dir, args.format,
                                                 name=args.name, on_error=args.on_error)
    else:
        difficulty = args.difficulty or tfds_builders.BUILDERS[args.task].DEFAULT_CONFIG_NAME \
            if args.task in tfds_builders.BUILDERS else args.difficulty
        task = task_from_args(args.task, difficulty, args.knobs)
        preset = task_from_args(args.task, difficulty)
        knobs = {k: v for k, v in task.knobs().items() if v != preset.knobs()[k]}
        sizes = None
        if args.train is not None or args.test is not None:
            sizes = dict(tfds_builders.DEFAULT_SIZES)
            sizes.update({k: v for k, v in (("train", args.train), ("test", args.test))
                          if v is not None})
        name = tfds_builders.build_task_dataset(
            args.task, args.data_dir, difficulty=args.difficulty, name=args.name,
            sizes=sizes, seed=args.seed, **knobs)
    print(f"built {name} in {args.data_dir}; read it with "
          f"tfds.data_source({name!r}, data_dir={args.data_dir!r})")
    return 0


def _validate(args) -> int:
    from reasonjax.data.local import load_local

    report = load_local(args.file, args.format, on_error=args.on_error)
    for message in report.errors:
        print(message)
    steps = [len(p.steps) for p in report.problems]
    summary = {"records": report.n_records, "usable": len(report.problems),
               "skipped": report.n_skipped,
               "mean_steps": round(sum(steps) / len(steps), 2)}
    print(json.dumps(summary))
    return 1 if report.n_skipped else 0


def register(subparsers) -> None:
    """Adds ``reasonjax data ...`` to the top-level parser's subparsers."""
    from reasonjax.cli import at_least

    p = subparsers.add_parser("data", help="tasks, previews, TFDS datasets, file checks",
                              description="Built-in reasoning tasks and local datasets.")
    sub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")

    q = sub.add_parser("list", aliases=["tasks"],
                       help="list every task (built-in and reasoning-gym's) in one line each")
    q.add_argument("--verbose", "-v", action="store_true",
                   help="built-in tasks' knobs and difficulty presets too")
    q.set_defaults(func=_list)

    q = sub.add_parser("preview", help="print generated problems with their solutions")
    q.add_argument("--task", required=True, help="task name (see `reasonjax data list`)")
    q.add_argument("--difficulty", default=None, help="difficulty preset")
    q.add_argument("--n", type=at_least(1), default=5, help="number of problems")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("knobs", nargs="*", metavar="knob=value", help="knob overrides")
    q.set_defaults(func=_preview)

    q = sub.add_parser("build-tfds", help="write a task or local files as a TFDS dataset",
                       description="Writes ArrayRecord TFDS data readable with "
                                   "tfds.data_source(name, data_dir=...).")
    q.add_argument("--task", default=None, help="built-in task to generate")
    q.add_argument("--local", default=None,
                   help="folder with <split>.jsonl/.json/.parquet files")
    q.add_argument("--format", default=None, choices=["gsm8k", "math", "mc"],
                   help="format of the local files")
    q.add_argument("--on-error", default="skip", choices=["skip", "fail"],
                   help="bad local records: skip (counted) or fail")
    q.add_argument("--data-dir", required=True, help="TFDS data directory to write")
    q.add_argument("--difficulty", default=None, help="difficulty preset (default medium)")
    q.add_argument("--name", default=None, help="config name (needed for custom settings)")
    q.add_argument("--train", type=at_least(1), default=None, help="train examples")
    q.add_argument("--test", type=at_least(1), default=None, help="test examples")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("knobs", nargs="*", metavar="knob=value", help="knob overrides")
    q.set_defaults(func=_build)

    q = sub.add_parser("validate", help="check a local JSONL/JSON/Parquet file",
                       description="Reports every unusable record as file:line: reason; "
                                   "exits 1 if any were found.")
    q.add_argument("file", help="file or directory")
    q.add_argument("--format", required=True, choices=["gsm8k", "math", "mc"])
    q.add_argument("--on-error", default="skip", choices=["skip", "fail"],
                   help="skip: report all bad records; fail: stop at the first")
    q.set_defaults(func=_validate)

