"""Test set-up: 8 host CPU devices (sharding tests), CPU only, float32 matmuls."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import jax  # noqa: E402

assert jax.device_count() == 8, "tests need XLA_FLAGS=--xla_force_host_platform_device_count=8"

from hypothesis import settings  # noqa: E402

# CI runs property tests derandomized so a failure reproduces on the next run.
settings.register_profile("ci", derandomize=True, deadline=None)
if os.environ.get("CI"):
    settings.load_profile("ci")
