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
