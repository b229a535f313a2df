"""A recipe on two processes (jax.distributed with a local coordinator, one CPU device
each, gloo collectives) gives the run of one process over the same two-device mesh: the
same outcomes and report, one run directory written once."""

import json
import os
import socket
import subprocess
import sys

OVERRIDES = ["task.train_size=64", "task.eval_size=16", "warmup.steps=20",
             "warmup.batch_size=8", "batch_size=8", "sampling.n=4", "vote_trials=2",
             "mesh.data=2"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XLA_", "REASONJAX_"))}
    env.update(JAX_PLATFORMS="cpu", **extra)
    return env


def _replicate(run_dir) -> list[str]:
    return [sys.executable, "-m", "reasonjax.cli", "replicate", "coverage", "--run-dir",
            str(run_dir), *OVERRIDES]


def test_two_processes_give_the_single_process_run(tmp_path):
    one = tmp_path / "one"
    subprocess.run(_replicate(one), check=True, capture_output=True, timeout=600,
                   env=_env(XLA_FLAGS="--xla_force_host_platform_device_count=2"))
    two = tmp_path / "two"
    port = _free_port()
    procs = [subprocess.Popen(_replicate(two), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env=_env(REASONJAX_DISTRIBUTED="1",
                                       REASONJAX_COORDINATOR=f"localhost:{port}",
                                       REASONJAX_NUM_PROCESSES="2",
                                       REASONJAX_PROCESS_ID=str(i)))
             for i in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err.decode()[-3000:]
    assert json.loads((two / "outcomes.json").read_text()) == \
        json.loads((one / "outcomes.json").read_text())
    assert (two / "report.md").read_text() == (one / "report.md").read_text()
    metrics = (two / "metrics.jsonl").read_text().splitlines()
    assert len(metrics) == len((one / "metrics.jsonl").read_text().splitlines())
    leftovers = [p.name for p in two.rglob(".*tmp*")]
    assert leftovers == []
