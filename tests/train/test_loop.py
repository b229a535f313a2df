"""The loop: kill -9 and resume == uninterrupted (params and batches), the non-finite
guard keeps the last good checkpoint (also when the bad step is caught one step late),
eval and metrics, and metrics pulled one step late without changing the run."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import train_resume_worker as worker
from reasonjax import parallel
from reasonjax.train.loop import (LoopConfig, NonFiniteLossError, make_loss_eval, read_metrics,
                                  restore_latest, train)
from reasonjax.train.sft import sft_loss
from reasonjax.train.state import OptimConfig, make_optimizer

STEPS, KILL_AT = 6, 4


def test_killed_and_resumed_run_equals_the_uninterrupted_run(tmp_path):
    straight = worker.run(str(tmp_path / "straight"), STEPS)
    killed_dir = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).parents[2]), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, worker.__file__, str(killed_dir), str(STEPS),
                           str(KILL_AT)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    before = worker.batches_seen(str(killed_dir))
    assert max(before) == KILL_AT
    # checkpoint_every=3 (synchronous saves): the kill lands after step 4, so the run
    # resumes from step 3 and redoes step 4.
    assert sorted(p.name for p in (killed_dir / "checkpoints").iterdir()) == ["3"]
    resumed = worker.run(str(killed_dir), STEPS)
    after = worker.batches_seen(str(killed_dir))
    assert after == worker.batches_seen(str(tmp_path / "straight"))
    assert after[KILL_AT] == before[KILL_AT]          # the redone step saw the same batch
    assert int(resumed.step) == STEPS
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
                 resumed.params, straight.params)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
                 resumed.opt_state, straight.opt_state)
    # The metrics log has each step once, and the same losses as the straight run.
    got = [m["loss"] for m in read_metrics(killed_dir)]
    assert [m["step"] for m in read_metrics(killed_dir)] == list(range(1, STEPS + 1))
    np.testing.assert_array_equal(got, [m["loss"] for m in read_metrics(tmp_path / "straight")])


class _Poisoned:
    """Batches of the worker's dataset; the batch of step ``bad_step`` has a NaN weight."""

    def __init__(self, bad_step):
        self.it, self.n, self.bad_step = iter(worker.dataset().to_iter_dataset()), 0, bad_step

    def __next__(self):
        self.n += 1
        batch = next(self.it)
        if self.n == self.bad_step:
            batch = {**batch, "loss_mask": batch["loss_mask"] * np.float32("nan")}
        return batch

    def get_state(self):
        return {"n": self.n, **self.it.get_state()}

    def set_state(self, state):
        self.n = state["n"]
        self.it.set_state({k: v for k, v in state.items() if k != "n"})


def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    mesh, ps, params, tx, shardings, step = worker.setup()
    eval_fn = make_loss_eval(sft_loss(worker.CONFIG), mesh, ps, [worker.dataset(8, 8)[0]])
    with pytest.raises(NonFiniteLossError, match="at step 4.*last good checkpoint is step 3"):
        train(sft_loss(worker.CONFIG), worker.fresh_state(), _Poisoned(bad_step=4),
              LoopConfig(steps=6, run_dir=str(tmp_path), checkpoint_every=1, eval_every=2,
                         progress=False),
              mesh=mesh, shardings=shardings, step_fn=step, eval_fn=eval_fn)
    metrics = read_metrics(tmp_path)
    assert [m["step"] for m in metrics] == [1, 2, 3]
    assert "eval/loss" in metrics[1] and "eval/loss" not in metrics[0]
    restored, data_state, at = restore_latest(tmp_path, worker.fresh_state(), shardings)
    assert at == 3 and data_state["n"] == 3
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(restored.params))
    json.dumps(data_state)


def test_plain_iterators_cannot_be_checkpointed(tmp_path):
    mesh = parallel.make_mesh(parallel.MeshConfig(8, 1, 1))
    with pytest.raises(TypeError, match="get_state"):
        train(sft_loss(worker.CONFIG), None, iter([]), LoopConfig(steps=1, run_dir=str(tmp_path)),
              mesh=mesh, shardings=None, optimizer=make_optimizer(OptimConfig(decay_steps=1000)))


def test_a_non_finite_step_caught_one_step_late_is_never_saved(tmp_path):
    """Step 3 is not a checkpoint step, so its metrics are pulled only after step 4 (a
    checkpoint step, computed from step 3's NaN state) was dispatched: the error names step
    3 and neither state is saved."""
    mesh, ps, params, tx, shardings, step = worker.setup()
    with pytest.raises(NonFiniteLossError, match="at step 3.*last good checkpoint is step 2"):
        train(sft_loss(worker.CONFIG), worker.fresh_state(), _Poisoned(bad_step=3),
              LoopConfig(steps=6, run_dir=str(tmp_path), checkpoint_every=2, progress=False),
              mesh=mesh, shardings=shardings, step_fn=step)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["2"]
    assert [m["step"] for m in read_metrics(tmp_path)] == [1, 2]
    restored, data_state, at = restore_latest(tmp_path, worker.fresh_state(), shardings)
    assert at == 2 and data_state["n"] == 2
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(restored.params))


def test_metrics_come_one_step_late_and_change_nothing(tmp_path, monkeypatch):
    """Step k + 1 is dispatched before step k's metrics are pulled, except where the host
    needs step k's state (checkpoints at 3 and 6); a run whose hook makes every step finish
    first gives the same params and losses."""
    from reasonjax.train import loop

    mesh, _, _, _, shardings, step = worker.setup()
    events = []
    pull = loop._host_metrics
    monkeypatch.setattr(loop, "_host_metrics", lambda m: (events.append("pull"), pull(m))[1])

    def dispatch(state, batch, ref_params=None):
        events.append("dispatch")
        return step(state, batch, ref_params)

    ahead, _ = train(sft_loss(worker.CONFIG), worker.fresh_state(),
                     iter(worker.dataset().to_iter_dataset()),
                     LoopConfig(steps=6, run_dir=str(tmp_path), checkpoint_every=3,
                                async_checkpoint=False, progress=False),
                     mesh=mesh, shardings=shardings, step_fn=dispatch)
    d, p = "dispatch", "pull"
    assert events == [d, d, p, d, p, p, d, d, p, d, p, p]
    assert sorted(x.name for x in (tmp_path / "checkpoints").iterdir()) == ["3", "6"]
    events.clear()
    losses = []
    in_step, _ = train(sft_loss(worker.CONFIG), worker.fresh_state(),
                       iter(worker.dataset().to_iter_dataset()),
                       LoopConfig(steps=6, progress=False), mesh=mesh, shardings=shardings,
                       step_fn=dispatch, hooks=(lambda s, _, m: losses.append(m["loss"]),))
    assert events == [d, p] * 6
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
                 ahead.params, in_step.params)
    assert [m["loss"] for m in read_metrics(tmp_path)] == losses


def test_a_truncated_newest_checkpoint_is_skipped_and_the_run_resumes_from_the_one_before(
        tmp_path, capfd):
    straight = worker.run(str(tmp_path / "straight"), STEPS)
    run_dir = tmp_path / "cut"
    worker.run(str(run_dir), 3, checkpoint_every=1)        # checkpoints 1, 2, 3
    newest = run_dir / "checkpoints" / "3"
    for f in (newest / "state").rglob("*"):
        if f.is_file() and f.stat().st_size > 1000:
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    resumed = worker.run(str(run_dir), STEPS)
    err = capfd.readouterr().err
    assert "checkpoint step 3" in err and "trying the one before" in err
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["2", "3", "6"]
    assert [p.name.split("-")[0] for p in (run_dir / "corrupt").iterdir()] == ["3"]
    assert worker.batches_seen(str(run_dir)) == worker.batches_seen(str(tmp_path / "straight"))
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
                 resumed.params, straight.params)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
                 resumed.opt_state, straight.opt_state)


def test_metrics_with_a_torn_last_line_are_read_without_it(tmp_path, capsys):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "lo')
    assert read_metrics(tmp_path) == [{"step": 1, "loss": 2.0}]
    assert "metrics.jsonl:2: dropped a torn last line" in capsys.readouterr().err
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "lo\n{"step": 2, "loss": 1.0}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl:1: not a JSON object"):
        read_metrics(tmp_path)
