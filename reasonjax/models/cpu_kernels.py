"""Decode attention on the CPU as a C++ kernel called through XLA's FFI.

One decode step (a single query token per row) attends over the filled slots of a layer's
KV cache. :func:`decode_attention` computes what :func:`~reasonjax.models.transformer.
grouped_attention` computes for that case (to float rounding), but reads each row's keys and
values once, in memory order and only up to the row's last valid slot, with the (row, KV
head) pairs shared across XLA's intra-op threads (measured in the README's benchmarks
section).

Build cost: the source (``decode_attention.cc``, next to this module) is compiled on first
use with the machine's C++ compiler (``$CXX``, else ``c++`` / ``g++`` / ``clang++``) against
the FFI headers shipped in jaxlib, about 2 s once per machine, jaxlib version and source,
into ``$REASONJAX_KERNEL_CACHE`` (default ``~/.cache/reasonjax/kernels``). Without a
compiler, or when the build fails, a one-line warning says why and the model keeps XLA's
formulation; ``REASONJAX_CPU_KERNELS=0`` turns the kernel off.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import math
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

SOURCE = Path(__file__).with_name("decode_attention.cc")
TARGET = "reasonjax_decode_attention"
FLAGS = ("-O3", "-march=native", "-fno-math-errno", "-std=c++17", "-shared", "-fPIC")


def kernel_cache_dir() -> Path:
    """Where built kernels are kept: ``$REASONJAX_KERNEL_CACHE`` or
    ``~/.cache/reasonjax/kernels``."""
    env = os.environ.get("REASONJAX_KERNEL_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "reasonjax" / "kernels"


def _compiler() -> str:
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        path = shutil.which(name) if name else None
        if path:
            return path
    raise OSError("no C++ compiler found (install g++ or set CXX)")


def _cpu_identity() -> str:
    """The CPU's model and feature flags (``-march=native`` code runs only where they
    match)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        keep = [ln for ln in lines if ln.startswith(("model name", "flags", "Features"))]
        return "\n".join(sorted(set(keep)))
    except OSError:
        return platform.processor() or platform.machine()


def build(cache_dir: Path | None = None) -> Path:
    """The kernel's shared library, compiled into ``cache_dir`` unless a build of the same
    source, flags, compiler, jaxlib and CPU is there. Written to a temporary name and
    renamed, so concurrent builds never load a half-written file."""
    import jaxlib

    cxx = _compiler()
    source = SOURCE.read_bytes()
    key = hashlib.sha256(b"\0".join([
        source, " ".join(FLAGS).encode(), cxx.encode(), jaxlib.__version__.encode(),
        _cpu_identity().encode()])).hexdigest()[:16]
    cache_dir = Path(cache_dir) if cache_dir is not None else kernel_cache_dir()
    out = cache_dir / f"decode_attention-{key}.so"
    if out.exists():
        return out
    cache_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=out.stem, suffix=".tmp")
    os.close(fd)
    try:
        proc = subprocess.run(
            [cxx, *FLAGS, f"-I{jax.ffi.include_dir()}", str(SOURCE), "-o", tmp],
            capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            errors = [ln for ln in proc.stderr.splitlines() if "error" in ln]
            raise OSError(f"{cxx} failed on {SOURCE.name}: "
                          f"{(errors or proc.stderr.splitlines() or ['no output'])[0]}")
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


@functools.cache
def available() -> bool:
    """Whether the kernel is built, loaded and registered with XLA (once per process)."""
    if os.environ.get("REASONJAX_CPU_KERNELS", "1") == "0":
        return False
    try:
        lib = ctypes.cdll.LoadLibrary(str(build()))
        jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(lib.DecodeAttention),
                                    platform="cpu")
    except (OSError, subprocess.SubprocessError) as e:
        warnings.warn(f"reasonjax: the CPU decode-attention kernel is not available ({e}); "
                      "decoding uses XLA's attention instead (same results, slower). "
                      "REASONJAX_CPU_KERNELS=0 skips the attempt.", stacklevel=2)
        return False
    return True


def applies(q_BTHD: jax.Array, k_BKDS: jax.Array, v_BKSD: jax.Array) -> bool:
    """Whether :func:`decode_attention` can serve this call when it is lowered for a CPU
    (the caller stages it with ``lax.platform_dependent``): one query token per row,
    float32 throughout, JAX's default backend the CPU (no build on accelerator hosts), no
    multi-device mesh in context (the kernel has no partitioning rule), and the kernel
    available."""
    if q_BTHD.shape[1] != 1 or jax.default_backend() != "cpu":
        return False
    if any(x.dtype != jnp.float32 for x in (q_BTHD, k_BKDS, v_BKSD)):
        return False
    if jax.sharding.get_abstract_mesh().size > 1:
        return False
    return available()


def decode_attention(q_BTHD: jax.Array, k_BKDS: jax.Array, v_BKSD: jax.Array,
                     mask_B1TS: jax.Array) -> jax.Array:
    """Attention of one query token per row over a layer's cache: q [B, 1, H, Dh], keys
    [B, K, Dh, S], values [B, K, S, Dh], mask [B, 1, 1, S] -> [B, 1, H, Dh], as
    ``grouped_attention`` (a row with no valid slot averages all values, as its softmax
    does)."""
    B, T, H, D = q_BTHD.shape
    K = k_BKDS.shape[1]
    q = q_BTHD.reshape(B, K, H // K, D)
    out = jax.ffi.ffi_call(TARGET, jax.ShapeDtypeStruct(q.shape, jnp.float32),
                           vmap_method="sequential")(
        q, k_BKDS, v_BKSD, mask_B1TS[:, 0, 0], scale=np.float32(1 / math.sqrt(D)))
    return out.reshape(B, T, H, D)
