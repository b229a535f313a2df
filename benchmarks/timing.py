"""Timing shared by the benchmarks: wall time of a call, interleaved medians, the
machine's fp32 matmul peak (JAX and PyTorch, same run), and the load average."""

from __future__ import annotations

import os
import time

import numpy as np


def timed(fn):
    """(fn(), seconds)."""
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def median_times(fns: dict, repeats: int, warmup: bool = True) -> dict:
    """Median seconds of each function over ``repeats`` interleaved rounds, after one
    untimed call of each (compile / allocator) unless ``warmup`` is False."""
    if warmup:
        for fn in fns.values():
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(timed(fn)[1])
    return {name: float(np.median(t)) for name, t in times.items()}


def median_step(run, steps: int, warmup: int = 2) -> float:
    """Median seconds of ``float(run())`` (one training step) over ``steps`` calls, after
    ``warmup`` untimed ones."""
    for _ in range(warmup):
        run()
    return float(np.median([timed(lambda: float(run()))[1] for _ in range(steps)]))


def matmul_peak(n: int = 2048, repeats: int = 5) -> dict:
    """Best fp32 GFLOP/s of an n x n matmul in JAX and in PyTorch (all cores), and
    ``peak``, the better of the two: the machine's roofline for both sides."""
    import jax
    import jax.numpy as jnp
    import torch

    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    ja, ta = jnp.asarray(a), torch.from_numpy(a)
    f = jax.jit(lambda x, y: x @ y)
    sides = {"jax": lambda: f(ja, ja).block_until_ready(), "torch": lambda: ta @ ta}
    out = {}
    for name, fn in sides.items():
        fn()
        out[name] = 2 * n ** 3 / min(timed(fn)[1] for _ in range(repeats)) / 1e9
    out["peak"] = max(out["jax"], out["torch"])
    return out


def load_average() -> float:
    """The 1-minute load average (what else the machine was running)."""
    return os.getloadavg()[0]
