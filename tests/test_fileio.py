"""The write discipline (reasonjax.fileio): temporaries of dead processes are removed,
existing destinations are refused without overwrite, failed writes leave nothing, JSON
never holds NaN, a torn JSONL tail is dropped; duplicate YAML keys are refused."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from reasonjax import fileio
from reasonjax.config import ConfigError, read_yaml
from reasonjax.errors import RunDirError
from reasonjax.parallel import MeshConfig


def test_temporaries_of_dead_processes_are_removed_on_the_next_write(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    host = fileio._HOST
    stale_dir = tmp_path / f".model.tmp-{host}-{dead}-abcd"
    stale_dir.mkdir()
    (stale_dir / "half.bin").write_bytes(b"x")
    stale_old = tmp_path / f".model.old-{host}-{dead}-ef01"
    stale_old.write_text("old")
    live = tmp_path / f".model.tmp-{host}-{os.getpid()}-live"     # our own: kept
    live.mkdir()
    other_host = tmp_path / f".model.tmp-otherhost-{dead}-abcd"   # another host's: kept
    other_host.mkdir()
    with fileio.atomic_dir(tmp_path / "model") as tmp:
        (tmp / "f.txt").write_text("whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["model", live.name, other_host.name])
    assert (tmp_path / "model" / "f.txt").read_text() == "whole"


def test_existing_destinations_are_refused_unless_overwrite(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "mine.txt").write_text("keep")
    with pytest.raises(RunDirError, match="--overwrite"):
        with fileio.atomic_dir(tmp_path / "d"):
            pass
    with pytest.raises(RunDirError):
        fileio.atomic_write_text(tmp_path / "d" / "mine.txt", "new", overwrite=False)
    assert (tmp_path / "d" / "mine.txt").read_text() == "keep"
    (tmp_path / "f").write_text("a file")                     # a dir replaces a file whole
    with fileio.atomic_dir(tmp_path / "f", overwrite=True) as tmp:
        (tmp / "x").write_text("1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "f"]
    assert (tmp_path / "f" / "x").read_text() == "1"


def test_a_failed_write_leaves_the_old_content_and_no_temporary(tmp_path, monkeypatch):
    fileio.atomic_write_text(tmp_path / "a.json", "old")

    def full(fd):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(fileio.os, "fsync", full)
    with pytest.raises(OSError) as e:
        fileio.atomic_write_text(tmp_path / "a.json", "new")
    assert e.value.filename == str(tmp_path / "a.json")
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
    assert (tmp_path / "a.json").read_text() == "old"


def test_json_never_holds_nan_it_holds_null_and_names_the_field():
    record = {"score": np.float32("nan"), "xs": [1.0, -math.inf], "ok": 2}
    text = fileio.dumps(record)
    assert json.loads(text) == {"score": None, "xs": [1.0, None], "ok": 2, "nonfinite": [
        {"path": ["score"], "value": "NaN"}, {"path": ["xs", 1], "value": "-Infinity"}]}
    json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c} in {text}"))
    back = fileio.loads(text)
    assert math.isnan(back["score"]) and back["xs"] == [1.0, -math.inf] and back["ok"] == 2
    assert set(back) == {"score", "xs", "ok"}
    assert fileio.dumps({"a": 1.5}) == '{"a": 1.5}'


def test_read_jsonl_drops_only_a_torn_last_line(tmp_path):
    warned = []
    (tmp_path / "m.jsonl").write_text('{"a": 1}\n\n{"a": 2}\n{"a": ')
    assert fileio.read_jsonl(tmp_path / "m.jsonl", warn=warned.append) == [{"a": 1}, {"a": 2}]
    assert "m.jsonl:4: dropped a torn last line" in warned[0]


def test_duplicate_yaml_keys_are_refused_with_the_line(tmp_path):
    (tmp_path / "c.yaml").write_text("warmup:\n  steps: 3\nseed: 1\nwarmup:\n  lr: 1\n")
    with pytest.raises(ConfigError, match=r"c.yaml:4: .*duplicate key 'warmup' \(first on "
                                          r"line 1\)"):
        read_yaml(tmp_path / "c.yaml")
    (tmp_path / "ok.yaml").write_text("a:\n  b: 1\nc:\n  b: 2\n")  # same key, other maps
    assert read_yaml(tmp_path / "ok.yaml") == {"a": {"b": 1}, "c": {"b": 2}}


@pytest.mark.parametrize("value", ["2", 0, -2, 1.5, True])
def test_mesh_axes_must_be_integers(value):
    with pytest.raises(ConfigError, match=r"data: must be an integer >= 1 or -1"):
        MeshConfig(data=value)
