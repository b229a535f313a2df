"""A small SFT run used by the loop tests, in-process or as a subprocess.

``python train_resume_worker.py RUN_DIR STEPS KILL_AT`` trains and SIGKILLs itself right
after step KILL_AT (0: never). Each step's batch (its example ids) is appended to
RUN_DIR/batches.txt as "step id id ...".
"""

import functools
import os
import signal
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import grain  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402

from reasonjax import parallel  # noqa: E402
from reasonjax.models import ModelConfig, Transformer  # noqa: E402
from reasonjax.train.loop import LoopConfig, train  # noqa: E402
from reasonjax.train.sft import sft_loss  # noqa: E402
from reasonjax.train.state import (OptimConfig, create_train_state, make_optimizer,  # noqa: E402
                                   make_schedule, state_shardings)
from reasonjax.train.step import make_train_step  # noqa: E402

CONFIG = ModelConfig(vocab_size=32, d_model=16, n_layers=2, n_heads=4, n_kv_heads=4, d_ff=32,
                     max_seq_len=64)
OPTIM = OptimConfig(lr=3e-3, warmup_steps=2, decay_steps=6)
T = 12


def example(i: int) -> dict:
    """Example i: token 1 carries the id (2 + i), so a batch's ids can be read back."""
    rng = np.random.default_rng(i)
    n = int(rng.integers(6, T + 1))
    tokens = np.zeros(T, np.int32)
    tokens[0] = 1
    tokens[1] = 2 + i
    tokens[2:n] = rng.integers(2, CONFIG.vocab_size, n - 2)
    seg = (np.arange(T) < n).astype(np.int32)
    mask = ((np.arange(T) >= 3) & (np.arange(T) < n)).astype(np.float32)
    return {"tokens": tokens, "positions": np.arange(T, dtype=np.int32) * seg,
            "segment_ids": seg, "loss_mask": mask}


def dataset(n_examples: int = 24, batch_size: int = 8):
    return (grain.MapDataset.source([example(i) for i in range(n_examples)])
            .shuffle(seed=5).repeat(None).batch(batch_size))


@functools.lru_cache(maxsize=None)
def setup():
    """(mesh, param shardings, params, optimizer, state shardings, step), built once per
    process. Params come from numpy (no init compile)."""
    mesh = parallel.make_mesh(parallel.MeshConfig(2, 2, 2))
    ps = parallel.param_shardings(CONFIG, mesh)
    shapes = jax.eval_shape(lambda: Transformer(CONFIG).init(
        jax.random.key(0), np.zeros((1, 1), np.int32)))["params"]
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: (0.1 * rng.standard_normal(s.value.shape)).astype(np.float32),
                          shapes, is_leaf=lambda x: hasattr(x, "value"))
    params = jax.device_put(params, ps)
    tx = make_optimizer(OPTIM)
    shardings = state_shardings(tx, params, ps, mesh)
    step = make_train_step(sft_loss(CONFIG), tx, mesh, shardings,
                           lr_schedule=make_schedule(OPTIM))
    return mesh, ps, params, tx, shardings, step


def fresh_state():
    mesh, ps, params, tx, _, _ = setup()
    return create_train_state(params, tx, seed=1, mesh=mesh, param_shardings=ps)


class Recorder:
    """Wraps a checkpointable iterator and remembers the ids of the last batch."""

    def __init__(self, it):
        self.it, self.last = it, None

    def __next__(self):
        batch = next(self.it)
        self.last = (batch["tokens"][:, 1] - 2).tolist()
        return batch

    def __iter__(self):
        return self

    def get_state(self):
        return self.it.get_state()

    def set_state(self, state):
        self.it.set_state(state)


def run(run_dir: str, steps: int, kill_at: int = 0, checkpoint_every: int = 3):
    mesh, _, _, _, shardings, step = setup()
    data = Recorder(iter(dataset().to_iter_dataset()))
    os.makedirs(run_dir, exist_ok=True)
    log = open(os.path.join(run_dir, "batches.txt"), "a")

    def record(step, state, metrics):
        log.write(f"{step} {' '.join(map(str, data.last))}\n")
        log.flush()

    def kill(step, state, metrics):
        if step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    final, _ = train(sft_loss(CONFIG), fresh_state(), data,
                     LoopConfig(steps=steps, run_dir=run_dir, checkpoint_every=checkpoint_every,
                                async_checkpoint=False, progress=False),
                     mesh=mesh, shardings=shardings, step_fn=step, hooks=(record, kill))
    log.close()
    return final


def batches_seen(run_dir: str) -> dict[int, list[int]]:
    """step -> ids of the batch trained on at that step (a repeated step keeps the last)."""
    seen = {}
    with open(os.path.join(run_dir, "batches.txt")) as f:
        for line in f:
            step, *ids = map(int, line.split())
            seen[step] = ids
    return seen


if __name__ == "__main__":
    run(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
