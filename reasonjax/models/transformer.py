"""THE model definition: a Llama-family decoder with an LM head and a scalar value head.

One pure-functional Flax Linen module serves as policy (``logits``) and as value / process
reward model (``values``)::

    model = Transformer(config)
    params = model.init(rng, tokens)["params"]
    out = model.apply({"params": params}, tokens, positions=..., attention_mask=...)
    out.logits  # [B, T, V] float32
    out.values  # [B, T] float32, a linear map of the final hidden state (zero-initialised)

Incremental decoding passes an explicit :class:`KVCache` in and gets the updated one back
(``out.cache``); there are no mutable Flax collections, so search code can gather, copy and
reorder caches freely (``take_rows(cache, idx)``).

Decoding layout. With a cache the layers run as an unrolled Python loop over one buffer per
layer, keys stored slot-minor ([B, K, Dh, S]) and values slot-major ([B, K, S, Dh]), so
attention reads each row's keys and values as plain matrices: on CPU a stacked
[L, B, S, K, Dh] cache cost a copy and a transpose of every layer's cache per token, which
dominated decoding. Decode loops also pass ``unstack_layers(params)`` so the per-layer weight
slices are taken once, outside the loop (XLA does not hoist them).

Cache layout. The cache is a buffer of ``S`` slots per row, written in lockstep: a call with
``T`` new tokens writes slots ``[index, index + T)`` for every row. Each slot records the
RoPE position of its token, or -1 when it holds no token (padding, or a row that had already
stopped). A query attends to every filled slot at or before its own slot, so rows can have
holes and still be exact; this lets batched search advance all rows together whatever their
individual lengths.

Attention. Over a cache, and over a sequence's own keys on the CPU and TPUs,
:func:`grouped_attention` (the query heads sharing a KV head as the rows of one product);
without a cache on a GPU in bf16 / fp16, cuDNN's fused kernel (:func:`fused_attention`);
a float32 decode step (one token per row) on the CPU, a C++ kernel through XLA's FFI
(:mod:`reasonjax.models.cpu_kernels`) that reads only each row's filled slots.
``ModelConfig.attention="xla"`` keeps the grouped formulation everywhere.

Blocks: RMSNorm, RoPE (incl. Llama-3 scaling) in HF's half-rotation layout, GQA, SwiGLU,
optional QKV bias (Qwen2), tied or untied embeddings, optional sliding window (Mistral).
Layers are scanned with stacked parameters (leading ``layers`` axis), optionally
rematerialised and unrolled (``scan_unroll``: the tiny presets unroll fully, which on CPU
removes the loop's per-layer slicing and gradient stacking, about 20% of a train step).
Every parameter and main activation carries logical axis names, mapped to mesh axes by
:mod:`reasonjax.parallel`.
"""

from __future__ import annotations

import math
from typing import Optional

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from reasonjax.models import cpu_kernels
from reasonjax.models.config import ModelConfig

_INIT_STD = 0.02


@flax.struct.dataclass
class KVCache:
    """Explicit key/value cache.

    k:     L-tuple of [B, K, Dh, S] keys (RoPE applied) per layer, KV head and slot.
    v:     L-tuple of [B, K, S, Dh] values per layer, KV head and slot.
    pos:   [B, S] int32 RoPE position of the token in each slot; -1 marks an empty slot.
    index: [] int32, the next slot to write (shared by all rows).
    """

    k: jax.Array
    v: jax.Array
    pos: jax.Array
    index: jax.Array

    @property
    def batch_size(self) -> int:
        return self.pos.shape[0]

    @property
    def max_len(self) -> int:
        return self.pos.shape[1]

    def lengths(self) -> jax.Array:
        """[B] number of filled slots per row."""
        return jnp.sum(self.pos >= 0, axis=-1)

    def next_positions(self) -> jax.Array:
        """[B] the RoPE position the next token of each row should take."""
        return jnp.max(self.pos, axis=-1) + 1


@flax.struct.dataclass
class ModelOutput:
    """logits [B, T, V] float32; values [B, T] float32; cache: the updated KVCache or None.

    With ``select`` [B, K] the heads are evaluated only at those positions: [B, K, V], [B, K].
    """

    logits: jax.Array
    values: jax.Array
    cache: Optional[KVCache] = None


def init_cache(config: ModelConfig, batch_size: int, max_len: int, dtype=None) -> KVCache:
    """An empty cache for ``batch_size`` rows of ``max_len`` slots."""
    if max_len > config.max_seq_len:
        raise ValueError(
            f"cache length {max_len} exceeds the model's max_seq_len {config.max_seq_len}; "
            "shorten the prompt or the token budget")
    dtype = dtype or config.compute_dtype
    kv, dh = config.n_kv_heads, config.dim_per_head
    return KVCache(
        k=tuple(jnp.zeros((batch_size, kv, dh, max_len), dtype) for _ in range(config.n_layers)),
        v=tuple(jnp.zeros((batch_size, kv, max_len, dh), dtype) for _ in range(config.n_layers)),
        pos=jnp.full((batch_size, max_len), -1, jnp.int32), index=jnp.zeros((), jnp.int32))


def take_rows(cache: KVCache, rows: jax.Array) -> KVCache:
    """Cache whose row ``i`` is row ``rows[i]`` of ``cache`` (beam reorder, resampling,
    repeating a prompt's cache for n samples)."""
    return KVCache(k=tuple(k[rows] for k in cache.k), v=tuple(v[rows] for v in cache.v),
                   pos=cache.pos[rows], index=cache.index)


def grow_cache(cache: KVCache, slots: int) -> KVCache:
    """``cache`` with ``slots`` empty slots appended to every row (filled slots unchanged):
    a sampler that decodes in chunks grows the cache chunk by chunk, so attention reads only
    the slots filled so far plus the chunk's own."""
    if slots <= 0:
        return cache
    def pad(x, axis):
        widths = [(0, 0)] * x.ndim
        widths[axis] = (0, slots)
        return jnp.pad(x, widths)
    return KVCache(k=tuple(pad(k, 3) for k in cache.k), v=tuple(pad(v, 2) for v in cache.v),
                   pos=jnp.pad(cache.pos, ((0, 0), (0, slots)), constant_values=-1),
                   index=cache.index)


def unstack_layers(params):
    """``params`` with the stacked ``layers`` tree split into an L-tuple of per-layer trees.

    Only for calls with a cache (decoding); the weight slices are then taken once instead
    of on every decode step."""
    layers = params["layers"]
    if isinstance(layers, tuple):
        return params
    n = jax.tree.leaves(layers)[0].shape[0]
    return {**params, "layers": tuple(jax.tree.map(lambda a: a[i], layers) for i in range(n))}


def _dense_init(names):
    return nn.with_logical_partitioning(nn.initializers.normal(_INIT_STD), names)


class Linear(nn.Module):
    """y = x . W (+ b), W of shape in_shape + out_shape, contracting x's last ``n_in`` axes.

    ``names`` are the logical axis names of W (in axes then out axes). The kernel is
    declared in its final shape so its logical partitioning holds at init and apply.
    """

    out_shape: tuple
    names: tuple
    n_in: int = 1
    use_bias: bool = False
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    kernel_init: object = nn.initializers.normal(_INIT_STD)

    @nn.compact
    def __call__(self, x):
        in_shape = tuple(x.shape[-self.n_in:])
        kernel = self.param("kernel", nn.with_logical_partitioning(self.kernel_init, self.names),
                            in_shape + tuple(self.out_shape), self.param_dtype)
        # One 2-D matmul over the flattened leading axes: on CPU, XLA lowers a dot that
        # contracts several axes (the weight gradient of a [B, T, D] input contracts B and
        # T) through a transposed copy of the activation gradient, which cost more than
        # the matmul itself.
        lead = x.shape[:-self.n_in]
        x2 = x.reshape((math.prod(lead), math.prod(in_shape))).astype(self.dtype)
        w2 = kernel.reshape((math.prod(in_shape), -1)).astype(self.dtype)
        y = (x2 @ w2).reshape(lead + tuple(self.out_shape))
        if self.use_bias:
            bias = self.param(
                "bias", nn.with_logical_partitioning(nn.initializers.zeros,
                                                     self.names[self.n_in:]),
                tuple(self.out_shape), self.param_dtype)
            y = y + bias.astype(self.dtype)
        return y


class Embed(nn.Module):
    """Token embedding table [V, D]; ``attend`` gives tied-embedding logits."""

    vocab_size: int
    d_model: int
    dtype: jnp.dtype
    param_dtype: jnp.dtype

    def setup(self):
        self.embedding = self.param("embedding", _dense_init(("vocab", "embed")),
                                    (self.vocab_size, self.d_model), self.param_dtype)

    def __call__(self, tokens_BT):
        # Gather from a table whose embed dim is whole (only vocab stays split): a
        # vocab-split lookup is a masked gather plus one all-reduce, while gathering from
        # an fsdp-split table forces XLA to rematerialise the whole table per device.
        table = nn.with_logical_constraint(self.embedding, ("vocab", None))
        return jnp.take(table, tokens_BT, axis=0).astype(self.dtype)

    def attend(self, x_BTD):
        x_ND = x_BTD.reshape(-1, x_BTD.shape[-1]).astype(self.dtype)  # 2-D: see Linear
        logits = x_ND @ self.embedding.astype(self.dtype).T
        return logits.reshape(x_BTD.shape[:-1] + (self.vocab_size,))


class RMSNorm(nn.Module):
    eps: float
    dtype: jnp.dtype
    param_dtype: jnp.dtype

    @nn.compact
    def __call__(self, x):
        scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, ("norm",)),
                           (x.shape[-1],), self.param_dtype)
        x32 = x.astype(jnp.float32)
        x32 = x32 * lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return x32.astype(self.dtype) * scale.astype(self.dtype)


def rope_frequencies(config: ModelConfig) -> jax.Array:
    """[Dh/2] inverse frequencies, with Llama-3 or linear scaling when configured."""
    dh = config.dim_per_head
    inv_freq = 1.0 / (config.rope_theta ** (jnp.arange(0, dh, 2, dtype=jnp.float32) / dh))
    s = config.rope_scaling
    if s is None:
        return inv_freq
    if s.type == "linear":
        return inv_freq / s.factor
    # Llama-3.1: keep high frequencies, divide low ones by `factor`, interpolate between.
    low_wavelen = s.original_max_position_embeddings / s.low_freq_factor
    high_wavelen = s.original_max_position_embeddings / s.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = jnp.where(wavelen > low_wavelen, inv_freq / s.factor, inv_freq)
    smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor) / (
        s.high_freq_factor - s.low_freq_factor)
    smoothed = (1 - smooth) * scaled / s.factor + smooth * scaled
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return jnp.where(medium, smoothed, scaled)


def apply_rope(x_BTHD: jax.Array, positions_BT: jax.Array, inv_freq: jax.Array) -> jax.Array:
    """Rotates pairs (i, i + Dh/2) of each head by position * frequency (HF layout)."""
    angles_BTF = positions_BT.astype(jnp.float32)[..., None] * inv_freq
    cos = jnp.cos(angles_BTF)[:, :, None, :]
    sin = jnp.sin(angles_BTF)[:, :, None, :]
    x1, x2 = jnp.split(x_BTHD.astype(jnp.float32), 2, axis=-1)
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x_BTHD.dtype)


def make_attention_mask(q_slot_T, k_slot_S, q_pos_BT, k_pos_BS, k_valid_BS,
                   q_seg_BT=None, k_seg_BS=None, window: Optional[int] = None) -> jax.Array:
    """[B, 1, T, S] bool: key valid, not after the query, same segment, inside the window."""
    mask = k_valid_BS[:, None, :] & (k_slot_S[None, None, :] <= q_slot_T[None, :, None])
    if q_seg_BT is not None:
        mask &= q_seg_BT[:, :, None] == k_seg_BS[:, None, :]
    if window is not None:
        mask &= (q_pos_BT[:, :, None] - k_pos_BS[:, None, :]) < window
    return mask[:, None]


class Attention(nn.Module):
    config: ModelConfig

    @nn.compact
    def __call__(self, x_BTD, positions_BT, mask_B1TS, kv_cache):
        """Self-attention; with ``kv_cache`` = (k [B,K,Dh,S], v [B,K,S,Dh], index) of this
        layer writes the new keys and values at slot ``index`` and attends over the whole
        cache. Returns (output [B,T,D], updated (k, v) or None)."""
        cfg = self.config
        dt, pdt = cfg.compute_dtype, cfg.weights_dtype
        h, kv, dh = cfg.n_heads, cfg.n_kv_heads, cfg.dim_per_head

        def proj(name, heads, head_names):
            return Linear((heads, dh), ("embed",) + head_names, use_bias=cfg.qkv_bias,
                          dtype=dt, param_dtype=pdt, name=name)(x_BTD)

        q = proj("q", h, ("heads", "head_dim"))
        k = proj("k", kv, ("kv_heads", "head_dim"))
        v = proj("v", kv, ("kv_heads", "head_dim"))
        inv_freq = rope_frequencies(cfg)
        q = apply_rope(q, positions_BT, inv_freq)
        k = apply_rope(k, positions_BT, inv_freq)
        q = nn.with_logical_constraint(q, ("act_batch", "act_length", "act_heads", None))
        k = nn.with_logical_constraint(k, ("act_batch", "act_length", "act_kv_heads", None))

        auto = cfg.attention == "auto"
        fused = fused_attention(dt, x_BTD.shape[1], dh) if kv_cache is None and auto else None
        if fused is not None:
            # A sequence's own keys (training, scoring): the slots are the positions in the
            # row, so the mask is causal as well as the row's (padding, segments, window).
            out = jax.nn.dot_product_attention(q, k, v, mask=mask_B1TS, is_causal=True,
                                               implementation=fused)
            return self._output(out), None
        k_BKDS, v_BKSD = jnp.transpose(k, (0, 2, 3, 1)), jnp.transpose(v, (0, 2, 1, 3))
        if kv_cache is not None:
            cache_k, cache_v, index = kv_cache
            k_BKDS = lax.dynamic_update_slice(cache_k, k_BKDS.astype(cache_k.dtype),
                                              (0, 0, 0, index))
            v_BKSD = lax.dynamic_update_slice(cache_v, v_BKSD.astype(cache_v.dtype),
                                              (0, 0, index, 0))
        k_BKDS = nn.with_logical_constraint(k_BKDS, ("act_batch", "act_kv_heads", None, None))
        v_BKSD = nn.with_logical_constraint(v_BKSD, ("act_batch", "act_kv_heads", None, None))
        new_cache = None if kv_cache is None else (k_BKDS, v_BKSD)
        k_BKDS, v_BKSD = k_BKDS.astype(dt), v_BKSD.astype(dt)
        if kv_cache is not None and auto and cpu_kernels.applies(q, k_BKDS, v_BKSD):
            # Chosen when the program is lowered: the kernel on a CPU, XLA's elsewhere (a
            # plan lowers for TPUs on a CPU host).
            out = lax.platform_dependent(q, k_BKDS, v_BKSD, mask_B1TS,
                                         cpu=cpu_kernels.decode_attention,
                                         default=grouped_attention)
        else:
            out = grouped_attention(q, k_BKDS, v_BKSD, mask_B1TS)
        return self._output(out), new_cache

    def _output(self, out_BTHD):
        """The output projection of the heads' mixed values: [B, T, D]."""
        cfg = self.config
        out = nn.with_logical_constraint(out_BTHD, ("act_batch", "act_length", "act_heads", None))
        return Linear((cfg.d_model,), ("heads", "head_dim", "embed"), n_in=2,
                      dtype=cfg.compute_dtype, param_dtype=cfg.weights_dtype, name="o")(out)


def fused_attention(dtype, seq_len: int, head_dim: int) -> Optional[str]:
    """The ``jax.nn.dot_product_attention`` implementation that attends over a sequence's
    own ``seq_len`` keys in one fused kernel, or None for :func:`grouped_attention`:
    cuDNN's flash attention on a GPU in bf16 / fp16, whose scores never reach HBM, within
    the shapes it takes on every GPU generation (head_dim a multiple of 8 up to 128; an
    even length, which its backward with a mask needs). Elsewhere (the CPU, where it was
    measured fastest; TPUs, where XLA's formulation is the same) and on the KV-cache path,
    :func:`grouped_attention`."""
    if (jax.default_backend() == "gpu" and jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16)
            and head_dim % 8 == 0 and head_dim <= 128 and seq_len % 2 == 0):
        return "cudnn"
    return None


def grouped_attention(q_BTHD, k_BKDS, v_BKSD, mask_B1TS):
    """Grouped-query attention of T queries over S key slots (a sequence's own keys, or a
    layer's cache): [B, T, H, Dh].

    The G = H / K query heads sharing a KV head and the T queries form the rows of one
    matrix product per (row, KV head), so keys and values are read once, untransposed, and
    their gradients need no transposed copies of a head-repeated layout."""
    B, T, H, D = q_BTHD.shape
    K = k_BKDS.shape[1]
    G = H // K
    q_BKMD = jnp.transpose(q_BTHD.reshape(B, T, K, G, D), (0, 2, 3, 1, 4)).reshape(B, K, G * T, D)
    scores = jnp.einsum("bkmd,bkds->bkms", q_BKMD, k_BKDS,
                        preferred_element_type=jnp.float32) / math.sqrt(D)
    scores = scores.reshape(B, K, G, T, -1)
    scores = jnp.where(mask_B1TS[:, :, None], scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(v_BKSD.dtype).reshape(B, K, G * T, -1)
    out_BKMD = jnp.einsum("bkms,bksd->bkmd", probs, v_BKSD)
    return jnp.transpose(out_BKMD.reshape(B, K, G, T, D), (0, 3, 1, 2, 4)).reshape(B, T, H, D)


class MLP(nn.Module):
    config: ModelConfig

    @nn.compact
    def __call__(self, x_BTD):
        cfg = self.config
        dt, pdt = cfg.compute_dtype, cfg.weights_dtype

        def dense(name, features, names):
            return Linear((features,), names, dtype=dt, param_dtype=pdt, name=name)

        gate = dense("gate", cfg.d_ff, ("embed", "mlp"))(x_BTD)
        up = dense("up", cfg.d_ff, ("embed", "mlp"))(x_BTD)
        hidden_BTF = nn.with_logical_constraint(
            nn.silu(gate) * up, ("act_batch", "act_length", "act_mlp"))
        return dense("down", cfg.d_model, ("mlp", "embed"))(hidden_BTF)


class Layer(nn.Module):
    """One pre-norm decoder layer: the body of the layer scan (no cache) or of the unrolled
    layer loop (with a cache).

    carry = (x [B,T,D], kv) with kv = this layer's (k, v) cache buffers or None.
    """

    config: ModelConfig

    @nn.compact
    def __call__(self, carry, positions_BT, mask_B1TS, cache_index):
        cfg = self.config
        x, kv = carry
        norm = lambda name: RMSNorm(cfg.rms_norm_eps, cfg.compute_dtype, cfg.weights_dtype,
                                    name=name)
        kv_cache = None if kv is None else (kv[0], kv[1], cache_index)
        attn_out, kv = Attention(cfg, name="attn")(
            norm("attn_norm")(x), positions_BT, mask_B1TS, kv_cache)
        x = x + attn_out
        x = x + MLP(cfg, name="mlp")(norm("mlp_norm")(x))
        x = nn.with_logical_constraint(x, ("act_batch", "act_length", "act_embed"))
        return (x, kv), None


_REMAT_POLICIES = {
    "full": None,
    "dots": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


class Transformer(nn.Module):
    """Decoder-only LM with LM head and value head. See the module docstring."""

    config: ModelConfig

    @nn.compact
    def __call__(self, tokens: jax.Array, positions: Optional[jax.Array] = None,
                 attention_mask: Optional[jax.Array] = None,
                 segment_ids: Optional[jax.Array] = None,
                 cache: Optional[KVCache] = None,
                 select: Optional[jax.Array] = None) -> ModelOutput:
        """Forward pass.

        tokens [B,T] int; positions [B,T] (default: running count of unmasked tokens);
        attention_mask [B,T] (1 = real token, 0 = padding); segment_ids [B,T] (packed
        sequences: tokens attend within their segment, 0 = padding); cache: a KVCache to
        extend with these T tokens (positions then required); select [B,K] int: evaluate
        the heads only at these positions.
        """
        cfg = self.config
        dt, pdt = cfg.compute_dtype, cfg.weights_dtype
        B, T = tokens.shape
        if segment_ids is not None:
            valid_BT = segment_ids != 0
        elif attention_mask is not None:
            valid_BT = attention_mask.astype(bool)
        else:
            valid_BT = jnp.ones((B, T), bool)
        if positions is None:
            if cache is not None:
                raise ValueError("positions are required when decoding with a cache "
                                 "(use cache.next_positions())")
            if segment_ids is not None:
                raise ValueError("positions are required with segment_ids (packed sequences)")
            positions = jnp.maximum(jnp.cumsum(valid_BT, axis=-1) - 1, 0)
        positions = positions.astype(jnp.int32)
        q_slot = jnp.arange(T, dtype=jnp.int32)
        window = cfg.sliding_window

        if cache is None:
            mask = make_attention_mask(q_slot, q_slot, positions, positions, valid_BT,
                                       segment_ids, segment_ids, window)
            kv = None
            cache_index = jnp.zeros((), jnp.int32)
            new_pos = None
        else:
            if T > cache.max_len:
                raise ValueError(f"{T} tokens do not fit a cache of {cache.max_len} slots")
            cache_index = cache.index
            new_pos = lax.dynamic_update_slice(
                cache.pos, jnp.where(valid_BT, positions, -1), (0, cache_index))
            k_slot = jnp.arange(cache.max_len, dtype=jnp.int32)
            mask = make_attention_mask(q_slot + cache_index, k_slot, positions, new_pos,
                                       new_pos >= 0, window=window)

        embed = Embed(cfg.vocab_size, cfg.d_model, dt, pdt, name="embed")
        x = embed(tokens)
        x = nn.with_logical_constraint(x, ("act_batch", "act_length", "act_embed"))

        if cache is None or self.is_initializing():
            layer_cls = Layer
            if cfg.remat != "none":
                layer_cls = nn.remat(Layer, prevent_cse=False, policy=_REMAT_POLICIES[cfg.remat])
            layers = nn.scan(
                layer_cls, variable_axes={"params": 0}, split_rngs={"params": True},
                in_axes=(nn.broadcast, nn.broadcast, nn.broadcast), length=cfg.n_layers,
                unroll=min(cfg.scan_unroll, cfg.n_layers),
                metadata_params={nn.PARTITION_NAME: "layers"})(cfg, name="layers")
            (x, _), _ = layers((x, None), positions, mask, cache_index)
            kv = None if cache is None else (cache.k, cache.v)
        else:
            x, kv = self._cached_layers(x, positions, mask, cache)

        x = RMSNorm(cfg.rms_norm_eps, dt, pdt, name="final_norm")(x)
        if select is not None:
            x = jnp.take_along_axis(x, select[..., None].astype(jnp.int32), axis=1)
        if cfg.tie_embeddings:
            logits = embed.attend(x)
        else:
            logits = Linear((cfg.vocab_size,), ("embed", "vocab"), dtype=dt, param_dtype=pdt,
                            name="lm_head")(x)
        logits = nn.with_logical_constraint(
            logits.astype(jnp.float32), ("act_batch", "act_length", "act_vocab"))
        values = Linear((1,), ("embed", "value_out"), use_bias=True, dtype=jnp.float32,
                        param_dtype=pdt, kernel_init=nn.initializers.zeros,
                        name="value_head")(x)[..., 0]

        new_cache = None
        if cache is not None:
            new_cache = KVCache(k=kv[0], v=kv[1], pos=new_pos, index=cache_index + T)
        return ModelOutput(logits=logits, values=values, cache=new_cache)

    def _cached_layers(self, x, positions, mask, cache):
        """The layers as an unrolled loop over per-layer cache buffers (see module doc).
        Returns (x, (k tuple, v tuple))."""
        cfg = self.config
        layers = nn.meta.unbox(self.variables["params"]["layers"])
        if not isinstance(layers, tuple):
            layers = unstack_layers({"layers": layers})["layers"]
        if len(layers) != cfg.n_layers or len(cache.k) != cfg.n_layers:
            raise ValueError(f"expected {cfg.n_layers} layers in params and cache, got "
                             f"{len(layers)} and {len(cache.k)}")
        ks, vs = [], []
        for layer_params, k, v in zip(layers, cache.k, cache.v):
            (x, (k, v)), _ = Layer(cfg, parent=None).apply(
                {"params": layer_params}, (x, (k, v)), positions, mask, cache.index)
            ks.append(k)
            vs.append(v)
        return x, (tuple(ks), tuple(vs))


def init_params(config: ModelConfig, rng: jax.Array, seq_len: int = 8):
    """Unsharded parameters (plain arrays). For sharded init use ``parallel.init_params``."""
    tokens = jnp.zeros((1, seq_len), jnp.int32)
    variables = Transformer(config).init(rng, tokens)
    return nn.meta.unbox(variables["params"])
