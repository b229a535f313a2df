"""The `reasonjax` command: --help on every subcommand, smoke main job."""

import pytest

from reasonjax.cli import build_parser, main


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
