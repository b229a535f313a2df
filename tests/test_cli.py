"""The `reasonjax` command: --help on every subcommand, smoke main job."""

import pytest

from reasonjax.cli import build_parser, main, parse_args


def _subcommands():
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return sorted(action.choices)


@pytest.mark.parametrize("command", _subcommands())
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: reasonjax {command}")
    assert len(out.splitlines()) > 3


def test_smoke_main_job(tmp_path, capsys):
    assert main(["smoke", "--out", str(tmp_path), "--tokens", "4"]) == 0
    out = capsys.readouterr().out
    assert "cached_decode_matches_full_forward" in out and "true" in out


def test_key_value_words_may_follow_options():
    args = parse_args(build_parser(), ["replicate", "alphamath", "--preset", "paper",
                                       "model.checkpoint=/c", "--run-dir", "d", "seed=1"])
    assert (args.preset, args.run_dir) == ("paper", "d")
    assert args.overrides == ["model.checkpoint=/c", "seed=1"]
    args = parse_args(build_parser(), ["replicate", "coverage", "a=1", "--run-dir", "d", "b=2"])
    assert args.overrides == ["a=1", "b=2"]
    for bad in (["--bogus"], ["word"]):
        with pytest.raises(SystemExit):
            parse_args(build_parser(), ["replicate", "coverage", "--run-dir", "d", *bad])


def test_compile_cache_flags_choose_the_directory(tmp_path):
    import jax

    before = (jax.config.jax_enable_compilation_cache, jax.config.jax_compilation_cache_dir)
    try:
        assert main(["--compile-cache", str(tmp_path), "models"]) == 0
        assert jax.config.jax_enable_compilation_cache
        assert jax.config.jax_compilation_cache_dir == str(tmp_path)
        assert main(["--no-compile-cache", "models"]) == 0
        assert not jax.config.jax_enable_compilation_cache
        with pytest.raises(SystemExit):
            main(["--no-compile-cache", "--compile-cache", str(tmp_path), "models"])
    finally:
        jax.config.update("jax_enable_compilation_cache", before[0])
        jax.config.update("jax_compilation_cache_dir", before[1])


def test_compilation_cache_stores_and_reuses_programs(tmp_path):
    """In a fresh process (JAX opens its cache once): a second process compiling the same
    program loads it from the cache instead of writing a new entry."""
    import subprocess
    import sys

    code = ("import jax, jax.numpy as jnp\n"
            "from reasonjax.parallel import compilation_cache\n"
            "events = []\n"
            "jax.monitoring.register_event_listener(lambda name, **kw: events.append(name))\n"
            f"compilation_cache({str(tmp_path)!r})\n"
            "print(float(jax.jit(lambda x: jnp.sin(x) * 3)(jnp.float32(1.0))))\n"
            "print(events.count('/jax/compilation_cache/cache_hits'))\n")
    env = {"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"}
    first = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                           text=True, check=True)
    entries = sorted(p.name for p in tmp_path.iterdir())
    assert entries, first.stderr
    second = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, check=True)
    assert first.stdout.split()[1] == "0"
    value, hits = second.stdout.split()
    assert value == first.stdout.split()[0] and int(hits) >= 1
    assert sorted(p.name for p in tmp_path.iterdir()) == entries
