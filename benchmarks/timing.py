"""Timing shared by the benchmarks: wall time of a call, interleaved medians, the
machine's matmul peak (JAX and PyTorch, same run, same device), and the load average."""

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


def torch_device() -> str:
    """"cuda" when JAX's default backend is a GPU and PyTorch sees one, else "cpu": both
    sides of a comparison run on the same kind of device."""
    import jax
    import torch

    return "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"


def torch_sync(device: str) -> None:
    """Wait for PyTorch's queued GPU work (a no-op on the CPU)."""
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def matmul_peak(n: int | None = None, repeats: int = 5, dtype: str = "float32") -> dict:
    """Best GFLOP/s of an n x n matmul in ``dtype`` in JAX and in PyTorch (all cores, or
    the GPU both use), and ``peak``, the better of the two: the machine's roofline for both
    sides. ``n`` defaults to 2048 on the CPU and 8192 on a GPU."""
    import jax
    import jax.numpy as jnp
    import torch

    device = torch_device()
    n = n or (8192 if device == "cuda" else 2048)
    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    ja = jnp.asarray(a, dtype)
    ta = torch.from_numpy(a).to(device=device, dtype=getattr(torch, dtype))
    f = jax.jit(lambda x, y: x @ y)

    def theirs():
        out = ta @ ta
        torch_sync(device)
        return out

    sides = {"jax": lambda: f(ja, ja).block_until_ready(), "torch": theirs}
    out = {}
    for name, fn in sides.items():
        fn()
        out[name] = 2 * n ** 3 / min(timed(fn)[1] for _ in range(repeats)) / 1e9
    out["peak"] = max(out["jax"], out["torch"])
    out["dtype"], out["device"] = dtype, device
    return out


def copy_bandwidth(repeats: int = 5) -> float:
    """Best GB/s (bytes read + written) of a jitted elementwise pass over a buffer far
    larger than the caches (256 MiB on the CPU, 4 GiB on a GPU): the memory roofline."""
    import jax
    import jax.numpy as jnp

    n = (1 << 30 if jax.default_backend() == "gpu" else 1 << 26)
    x = jnp.ones((n,), jnp.float32)
    f = jax.jit(lambda v: v * 2.0)
    f(x).block_until_ready()
    best = min(timed(lambda: f(x).block_until_ready())[1] for _ in range(repeats))
    return 2 * 4 * n / best / 1e9


def load_average() -> float:
    """The 1-minute load average (what else the machine was running)."""
    return os.getloadavg()[0]
