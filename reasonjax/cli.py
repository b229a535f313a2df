"""The ``reasonjax`` command. Subcommands are thin wrappers over library functions."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional, Sequence


def _smoke(args) -> int:
    from reasonjax.smoke import run_smoke

    result = run_smoke(args.out, preset=args.preset, n_tokens=args.tokens, seed=args.seed)
    _print_table("smoke", result)
    ok = (result["hf_reload_max_abs_logit_diff"] < 1e-5
          and result["hf_orbax_hf_max_abs_param_diff"] == 0.0
          and result["cached_decode_matches_full_forward"])
    return 0 if ok else 1


def _convert(args) -> int:
    from reasonjax.checkpoint import convert

    path = convert(args.src, args.dst, to=args.to, overwrite=args.overwrite)
    print(f"wrote {path}")
    return 0


def _models(args) -> int:
    from reasonjax.models import PRESETS

    rows = {name: f"{cfg.num_params() / 1e6:,.1f}M params, {cfg.family}, d={cfg.d_model}, "
                  f"L={cfg.n_layers}, heads={cfg.n_heads}/{cfg.n_kv_heads}"
            for name, cfg in PRESETS.items()}
    _print_table("model presets", rows)
    return 0


def _print_table(title: str, rows: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("key")
    table.add_column("value")
    for k, v in rows.items():
        table.add_row(str(k), v if isinstance(v, str) else json.dumps(v))
    Console().print(table)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (the usage block would push the error past the
    two lines every failure gets); subcommand parsers inherit it."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="reasonjax", description="JAX stack for research on reasoning with LMs.",
        epilog="Expected failures print one line naming the file / field and the fix, with "
               "the exit code of its kind (see reasonjax.errors); --debug shows tracebacks.")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an error (also REASONJAX_DEBUG=1)")
    cache = parser.add_mutually_exclusive_group()
    cache.add_argument("--compile-cache", metavar="DIR", default=None,
                       help="JAX's persistent compilation cache: a rerun or resumed run loads "
                            "compiled programs instead of recompiling (default: "
                            "$REASONJAX_COMPILE_CACHE, else ~/.cache/reasonjax/jax)")
    cache.add_argument("--no-compile-cache", action="store_true",
                       help="compile every program anew (no persistent cache)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("smoke", help="build a tiny model, round-trip HF/orbax, decode",
                       description="End-to-end smoke test of the model, checkpoints and "
                                   "KV-cache decoding on a tiny random model.")
    p.add_argument("--preset", default="tiny-1m", help="model preset (see `reasonjax models`)")
    p.add_argument("--out", default="runs/smoke", help="output directory")
    p.add_argument("--tokens", type=at_least(1), default=16, help="tokens to decode")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_smoke)

    p = sub.add_parser("convert", help="convert checkpoints between HF and orbax",
                       description="Convert a HF directory (config.json + safetensors) to a "
                                   "reasonjax orbax model directory, or back.")
    p.add_argument("src", help="source directory")
    p.add_argument("dst", help="destination directory (written atomically)")
    p.add_argument("--to", choices=["orbax", "hf"], required=True, help="target format")
    p.add_argument("--overwrite", action="store_true", help="replace an existing destination")
    p.set_defaults(func=_convert)

    p = sub.add_parser("models", help="list model presets",
                       description="List the named model presets with their sizes.")
    p.set_defaults(func=_models)

    from reasonjax.data.cli import register as register_data
    register_data(sub)
    from reasonjax.train.cli import register as register_train
    register_train(sub)
    from reasonjax.search.cli import register as register_search
    register_search(sub)
    from reasonjax.recipes.cli import register as register_recipes
    register_recipes(sub)
    return parser


def at_least(minimum: int):
    """An argparse type: an integer >= ``minimum`` (argparse then names the flag)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


KEY_VALUE_DESTS = ("overrides", "knobs")


def parse_args(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]] = None):
    """Like ``parse_args``, but ``key=value`` words may come anywhere on the line: argparse
    binds a trailing ``nargs='*'`` positional as soon as it sees the first positional, so
    ``replicate alphamath --preset paper a=1`` would otherwise reject ``a=1``. Leftover
    words of that form join the subcommand's ``overrides`` / ``knobs`` list."""
    args, extra = parser.parse_known_args(argv)
    dest = next((d for d in KEY_VALUE_DESTS if isinstance(getattr(args, d, None), list)), None)
    bad = [w for w in extra if dest is None or w.startswith("-") or "=" not in w]
    if bad:
        parser.error(f"unrecognized arguments: {' '.join(bad)}")
    if extra:
        setattr(args, dest, getattr(args, dest) + extra)
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs one subcommand. Expected errors (:mod:`reasonjax.errors`: config, data,
    checkpoint, run directory, file system, non-finite loss, Ctrl-C) print one line on
    stderr and return their exit code; ``--debug`` re-raises them with the traceback."""
    from reasonjax.errors import describe

    from reasonjax.parallel import compilation_cache, default_compilation_cache, libtpu_offline

    libtpu_offline(force=False)
    args = parse_args(build_parser(), argv)
    compilation_cache(None if args.no_compile_cache
                      else args.compile_cache or default_compilation_cache())
    debug = args.debug or os.environ.get("REASONJAX_DEBUG") == "1"
    if not debug:
        _quiet_libraries()
    try:
        if os.environ.get("REASONJAX_DISTRIBUTED") == "1":  # set by tpu_scripts/run.sh
            from reasonjax.parallel import initialize_distributed

            initialize_distributed()
        return args.func(args)
    except BrokenPipeError:  # `reasonjax data list | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as e:  # noqa: BLE001 - sorted by describe(); unknown ones re-raise
        code, message = describe(e)
        if debug or not code:
            raise
    except KeyboardInterrupt as e:
        code, message = describe(e)
        if debug:
            raise
    print(f"reasonjax {args.command}: error: {message}", file=sys.stderr, flush=True)
    return code


def _quiet_libraries() -> None:
    """Library noise would bury the one-line error: orbax's absl log lines and asyncio's
    about a failed async save (the save's error reaches :func:`main` and is reported
    there), and the "Event loop is closed" tracebacks tensorstore's callbacks print
    as unraisable exceptions once orbax's loop has shut down after such a failure."""
    import logging

    for name in ("absl", "asyncio", "orbax", "jax._src.xla_bridge"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    default, default_unraisable = sys.excepthook, sys.unraisablehook

    def closed_loop(value) -> bool:
        return isinstance(value, RuntimeError) and str(value) == "Event loop is closed"

    def hook(kind, value, tb):
        if not closed_loop(value):
            default(kind, value, tb)

    def unraisable(info):
        if not closed_loop(info.exc_value):
            default_unraisable(info)

    sys.excepthook, sys.unraisablehook = hook, unraisable


if __name__ == "__main__":
    sys.exit(main())
