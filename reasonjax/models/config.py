"""Model configuration and named presets (tiny CPU models and the real families' shapes)."""

from __future__ import annotations

import dataclasses
from typing import Literal, Optional

import jax.numpy as jnp

from reasonjax.config import ConfigError, from_dict

Family = Literal["llama", "qwen2", "mistral"]


@dataclasses.dataclass(frozen=True)
class RopeScaling:
    """RoPE frequency scaling. ``llama3``: Llama-3.1 piecewise scaling; ``linear``: divide
    positions by ``factor``."""

    type: Literal["llama3", "linear"] = "llama3"
    factor: float = 8.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """A Llama-family decoder. ``family`` picks the HF architecture used on export.

    Shapes: tokens [B,T] -> logits [B,T,vocab_size], values [B,T]; attention has
    ``n_heads`` query heads and ``n_kv_heads`` key/value heads (GQA) of ``head_dim``.
    """

    vocab_size: int = 128
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int = 2
    head_dim: Optional[int] = None  # default d_model // n_heads
    d_ff: int = 384
    rope_theta: float = 10000.0
    rope_scaling: Optional[RopeScaling] = None
    rms_norm_eps: float = 1e-5
    tie_embeddings: bool = False
    qkv_bias: bool = False
    max_seq_len: int = 2048
    sliding_window: Optional[int] = None
    family: Family = "llama"
    # Numerics: parameters are stored in param_dtype, matmuls run in dtype.
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    param_dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    # Rematerialisation of each layer in the backward pass: none, full, or keep matmuls.
    remat: Literal["none", "full", "dots"] = "none"
    # Layers per iteration of the layer scan: 1 keeps a loop (one compiled layer body, best
    # for deep models); >= n_layers unrolls it into straight-line code (faster steps for
    # shallow models, on CPU especially, at some compile time).
    scan_unroll: int = 1
    # Attention kernels: "auto" uses cuDNN's fused kernel without a cache on a GPU in half
    # precision and the C++ decode kernel for one-token steps on the CPU in float32 where
    # they apply (models.transformer); "xla" keeps XLA's grouped formulation everywhere.
    attention: Literal["auto", "xla"] = "auto"

    def __post_init__(self):
        problems = []
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "d_ff",
                     "max_seq_len", "scan_unroll"):
            if getattr(self, name) <= 0:
                problems.append(f"{name} must be positive, got {getattr(self, name)}")
        if self.n_heads > 0 and self.n_kv_heads > 0 and self.n_heads % self.n_kv_heads:
            problems.append(
                f"n_heads ({self.n_heads}) must be a multiple of n_kv_heads ({self.n_kv_heads})")
        if self.head_dim is None and self.n_heads > 0 and self.d_model % self.n_heads:
            problems.append(
                f"d_model ({self.d_model}) is not divisible by n_heads ({self.n_heads}); "
                "set head_dim explicitly")
        if self.dim_per_head % 2:
            problems.append(f"head_dim ({self.dim_per_head}) must be even for RoPE")
        if self.attention not in ("auto", "xla"):
            problems.append(f"attention must be 'auto' or 'xla', got {self.attention!r}")
        if self.sliding_window is not None and self.sliding_window <= 0:
            problems.append(f"sliding_window must be positive or null, got {self.sliding_window}")
        if problems:
            raise ConfigError("ModelConfig: " + "; ".join(problems))

    @property
    def dim_per_head(self) -> int:
        return self.head_dim if self.head_dim is not None else self.d_model // max(self.n_heads, 1)

    @property
    def compute_dtype(self):
        return jnp.dtype(self.dtype)

    @property
    def weights_dtype(self):
        return jnp.dtype(self.param_dtype)

    def num_params(self, include_embeddings: bool = True) -> int:
        """Parameter count (value head included)."""
        d, h, kv, dh, f = self.d_model, self.n_heads, self.n_kv_heads, self.dim_per_head, self.d_ff
        attn = d * h * dh + 2 * d * kv * dh + h * dh * d
        if self.qkv_bias:
            attn += h * dh + 2 * kv * dh
        layer = attn + 3 * d * f + 2 * d
        total = self.n_layers * layer + d + d + 1  # final norm, value head
        if include_embeddings:
            total += self.vocab_size * d * (1 if self.tie_embeddings else 2)
        return total

    def replace(self, **changes) -> "ModelConfig":
        return dataclasses.replace(self, **changes)


_LLAMA3_ROPE_32 = RopeScaling("llama3", 32.0, 1.0, 4.0, 8192)
_LLAMA3_ROPE_8 = RopeScaling("llama3", 8.0, 1.0, 4.0, 8192)

PRESETS: dict[str, ModelConfig] = {
    # Tiny models for CPU runs on the built-in tasks (vocab set from the tokenizer).
    # ~0.1M: the recipes' tiny presets (learns the easy built-in tasks in ~1 CPU minute).
    "tiny-100k": ModelConfig(vocab_size=128, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2,
                             d_ff=192, max_seq_len=256, scan_unroll=2),
    "tiny-1m": ModelConfig(vocab_size=128, d_model=128, n_layers=4, n_heads=4, n_kv_heads=2,
                           d_ff=384, max_seq_len=512, scan_unroll=4),
    "tiny-3m": ModelConfig(vocab_size=128, d_model=256, n_layers=4, n_heads=4, n_kv_heads=2,
                           d_ff=640, max_seq_len=512, scan_unroll=4),
    "tiny-5m": ModelConfig(vocab_size=128, d_model=256, n_layers=6, n_heads=8, n_kv_heads=4,
                           d_ff=768, max_seq_len=1024, scan_unroll=6),
    "tiny-25m": ModelConfig(vocab_size=128, d_model=512, n_layers=8, n_heads=8, n_kv_heads=4,
                            d_ff=1536, max_seq_len=1024, scan_unroll=8),
    # Real families (shapes of the public checkpoints).
    "llama-3.2-1b": ModelConfig(vocab_size=128256, d_model=2048, n_layers=16, n_heads=32,
                                n_kv_heads=8, head_dim=64, d_ff=8192, rope_theta=500000.0,
                                rope_scaling=_LLAMA3_ROPE_32, tie_embeddings=True,
                                max_seq_len=131072, dtype="bfloat16"),
    "llama-3.2-3b": ModelConfig(vocab_size=128256, d_model=3072, n_layers=28, n_heads=24,
                                n_kv_heads=8, head_dim=128, d_ff=8192, rope_theta=500000.0,
                                rope_scaling=_LLAMA3_ROPE_32, tie_embeddings=True,
                                max_seq_len=131072, dtype="bfloat16"),
    "llama-3.1-8b": ModelConfig(vocab_size=128256, d_model=4096, n_layers=32, n_heads=32,
                                n_kv_heads=8, head_dim=128, d_ff=14336, rope_theta=500000.0,
                                rope_scaling=_LLAMA3_ROPE_8, max_seq_len=131072,
                                dtype="bfloat16"),
    "qwen2.5-0.5b": ModelConfig(vocab_size=151936, d_model=896, n_layers=24, n_heads=14,
                                n_kv_heads=2, d_ff=4864, rope_theta=1000000.0, rms_norm_eps=1e-6,
                                tie_embeddings=True, qkv_bias=True, max_seq_len=32768,
                                family="qwen2", dtype="bfloat16"),
    "qwen2.5-1.5b": ModelConfig(vocab_size=151936, d_model=1536, n_layers=28, n_heads=12,
                                n_kv_heads=2, d_ff=8960, rope_theta=1000000.0, rms_norm_eps=1e-6,
                                tie_embeddings=True, qkv_bias=True, max_seq_len=32768,
                                family="qwen2", dtype="bfloat16"),
    "qwen2.5-3b": ModelConfig(vocab_size=151936, d_model=2048, n_layers=36, n_heads=16,
                              n_kv_heads=2, d_ff=11008, rope_theta=1000000.0, rms_norm_eps=1e-6,
                              tie_embeddings=True, qkv_bias=True, max_seq_len=32768,
                              family="qwen2", dtype="bfloat16"),
    "qwen2.5-7b": ModelConfig(vocab_size=152064, d_model=3584, n_layers=28, n_heads=28,
                              n_kv_heads=4, d_ff=18944, rope_theta=1000000.0, rms_norm_eps=1e-6,
                              qkv_bias=True, max_seq_len=32768, family="qwen2",
                              dtype="bfloat16"),
    "qwen2.5-math-1.5b": ModelConfig(vocab_size=151936, d_model=1536, n_layers=28, n_heads=12,
                                     n_kv_heads=2, d_ff=8960, rope_theta=10000.0,
                                     rms_norm_eps=1e-6, tie_embeddings=True, qkv_bias=True,
                                     max_seq_len=4096, family="qwen2", dtype="bfloat16"),
    "qwen2.5-math-7b": ModelConfig(vocab_size=152064, d_model=3584, n_layers=28, n_heads=28,
                                   n_kv_heads=4, d_ff=18944, rope_theta=10000.0,
                                   rms_norm_eps=1e-6, qkv_bias=True, max_seq_len=4096,
                                   family="qwen2", dtype="bfloat16"),
    # DeepSeekMath-7B (AlphaMath's base model): the Llama architecture with full MHA.
    "deepseek-math-7b": ModelConfig(vocab_size=102400, d_model=4096, n_layers=30, n_heads=32,
                                    n_kv_heads=32, d_ff=11008, rope_theta=10000.0,
                                    rms_norm_eps=1e-6, max_seq_len=4096, dtype="bfloat16"),
    # CodeLlama-7B (ReFT's base model): Llama 2 with full MHA and a 1e6 RoPE base.
    "codellama-7b": ModelConfig(vocab_size=32016, d_model=4096, n_layers=32, n_heads=32,
                                n_kv_heads=32, d_ff=11008, rope_theta=1000000.0,
                                max_seq_len=16384, dtype="bfloat16"),
    "mistral-7b-v0.1": ModelConfig(vocab_size=32000, d_model=4096, n_layers=32, n_heads=32,
                                   n_kv_heads=8, d_ff=14336, rope_theta=10000.0,
                                   max_seq_len=32768, sliding_window=4096, family="mistral",
                                   dtype="bfloat16"),
    "mistral-7b-v0.3": ModelConfig(vocab_size=32768, d_model=4096, n_layers=32, n_heads=32,
                                   n_kv_heads=8, d_ff=14336, rope_theta=1000000.0,
                                   max_seq_len=32768, family="mistral", dtype="bfloat16"),
}


def get_config(name: str, **overrides) -> ModelConfig:
    """Preset ``name`` with field overrides, e.g. ``get_config("tiny-1m", vocab_size=100)``."""
    if name not in PRESETS:
        raise ConfigError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}")
    return dataclasses.replace(PRESETS[name], **overrides) if overrides else PRESETS[name]


def config_from_dict(data: dict) -> ModelConfig:
    return from_dict(ModelConfig, data)
