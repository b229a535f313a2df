"""Test set-up: 8 host CPU devices (sharding tests), CPU only, float32 matmuls.

``REASONJAX_TEST_PLATFORM=gpu`` runs the tests on JAX's default accelerator instead (a
check of the device paths against the same references, by hand on a GPU machine; CI
never sets it): XLA's defaults, float32 matmuls at full precision (no TF32), and the tests
that need 8 devices fail for want of them."""

import os

PLATFORM = os.environ.get("REASONJAX_TEST_PLATFORM", "cpu")

# The tests' programs are tiny: they run in milliseconds and compile in seconds, so XLA:CPU
# compiles them without LLVM's optimisation passes and with the elemental emitters instead
# of the fusion emitters (the cold suite on 2 cores: 24-27 -> 11-14 min; results unchanged).
# Subprocesses (the CLI tests) inherit the flags. Benchmarks and real runs keep XLA's
# defaults.
if PLATFORM == "cpu":
    os.environ.setdefault("XLA_FLAGS", " ".join([
        "--xla_force_host_platform_device_count=8",
        "--xla_backend_optimization_level=0",
        "--xla_llvm_disable_expensive_passes=true",
        "--xla_cpu_use_fusion_emitters=false",
    ]))
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
else:
    os.environ.setdefault("JAX_DEFAULT_MATMUL_PRECISION", "highest")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import jax  # noqa: E402

if PLATFORM == "cpu":
    assert jax.device_count() == 8, \
        "tests need XLA_FLAGS=--xla_force_host_platform_device_count=8"

# Many tests build the same jitted computations anew (a train step per fit, a sampler per
# recipe phase); a persistent compilation cache shared by the xdist workers compiles each
# distinct program once per checkout instead of once per call. Entries are keyed on the
# program, jax version and flags, so a stale entry is never used.
_CACHE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      ".pytest_cache", "jax")
jax.config.update("jax_compilation_cache_dir", os.environ.get("REASONJAX_TEST_JAX_CACHE", _CACHE))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

# CI runs property tests derandomized so a failure reproduces on the next run.
settings.register_profile("ci", derandomize=True, deadline=None)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(scope="session")
def bpe_tokenizer_dir():
    """The function :func:`_bpe_tokenizer_dir` (a fixture, so any test module can use it)."""
    return _bpe_tokenizer_dir


def _bpe_tokenizer_dir(path, texts, vocab_size: int, config: dict):
    """A tiny HF byte-level BPE ``tokenizer.json`` trained on ``texts`` (special tokens
    <|endoftext|>, <|im_start|>, <|im_end|>) with ``config`` as tokenizer_config.json."""
    import json

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(texts, trainer)
    tk.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps(config))
    return path
