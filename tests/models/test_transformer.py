"""The model: cached decoding == full forward, masks, heads, logical axes, remat, dtypes."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from reasonjax.config import ConfigError
from reasonjax.models import (ModelConfig, Transformer, get_config, init_cache, init_params,
                              take_rows)

CFG = ModelConfig(vocab_size=61, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=48,
                  max_seq_len=64)


@pytest.fixture(scope="module")
def params():
    return init_params(CFG, jax.random.key(0))


@pytest.fixture(scope="module")
def fwd():
    model = Transformer(CFG)
    return jax.jit(lambda p, t, **kw: model.apply({"params": p}, t, **kw))


def _tokens(shape, seed=1):
    return jax.random.randint(jax.random.key(seed), shape, 0, CFG.vocab_size)


def test_cached_decode_matches_full_forward(params, fwd):
    tokens = _tokens((3, 12))
    full = fwd(params, tokens).logits
    cache = init_cache(CFG, 3, 16)
    pos = jnp.broadcast_to(jnp.arange(12), (3, 12))
    out = fwd(params, tokens[:, :5], positions=pos[:, :5], cache=cache)
    logits = [out.logits]
    cache = out.cache
    for t in range(5, 12):
        out = fwd(params, tokens[:, t:t + 1], positions=pos[:, t:t + 1], cache=cache)
        logits.append(out.logits)
        cache = out.cache
    np.testing.assert_allclose(jnp.concatenate(logits, 1), full, atol=1e-5)
    assert int(cache.index) == 12
    np.testing.assert_array_equal(cache.lengths(), [12, 12, 12])
    np.testing.assert_array_equal(cache.next_positions(), [12, 12, 12])


def test_cache_with_holes_and_ragged_prompts(params, fwd):
    """Rows written in lockstep with masked (empty) slots equal their unpadded forwards."""
    seqs = [list(np.asarray(_tokens((12,), seed=s))) for s in (2, 3)]
    # Row 0: prompt of 4, then 3 tokens, 2 idle steps (masked), then 2 tokens.
    # Row 1: prompt of 2 (right-padded to 4), then 7 tokens straight.
    cache = init_cache(CFG, 2, 16)
    prompt = jnp.asarray([seqs[0][:4], seqs[1][:2] + [0, 0]])
    pmask = jnp.asarray([[1, 1, 1, 1], [1, 1, 0, 0]])
    out = fwd(params, prompt, positions=jnp.asarray([[0, 1, 2, 3], [0, 1, 0, 0]]),
              attention_mask=pmask, cache=cache)
    got = {0: [out.logits[0, 3]], 1: [out.logits[1, 1]]}
    idx = {0: 4, 1: 2}
    schedule = [(1, 1)] * 3 + [(0, 1)] * 2 + [(1, 1)] * 2 + [(0, 1)] * 2
    for active0, active1 in schedule:
        active = (active0, active1)
        toks, poss = [], []
        for r in (0, 1):
            toks.append(seqs[r][idx[r]] if active[r] else 0)
            poss.append(idx[r])
        out = fwd(params, jnp.asarray(toks)[:, None], positions=jnp.asarray(poss)[:, None],
                  attention_mask=jnp.asarray(active)[:, None], cache=out.cache)
        for r in (0, 1):
            if active[r]:
                got[r].append(out.logits[r, 0])
                idx[r] += 1
    for r in (0, 1):
        n = idx[r]
        ref = fwd(params, jnp.asarray([seqs[r][:n]])).logits[0]
        start = 4 if r == 0 else 2
        np.testing.assert_allclose(jnp.stack(got[r]), ref[start - 1:n], atol=1e-5)
    np.testing.assert_array_equal(out.cache.lengths(), [idx[0], idx[1]])


def test_take_rows_reorders_cache(params, fwd):
    tokens = _tokens((3, 6))
    pos = jnp.broadcast_to(jnp.arange(6), (3, 6))
    out = fwd(params, tokens[:, :5], positions=pos[:, :5], cache=init_cache(CFG, 3, 8))
    rows = jnp.asarray([2, 2, 0])
    cache = take_rows(out.cache, rows)
    nxt = fwd(params, tokens[rows, 5:], positions=pos[:, 5:], cache=cache).logits
    np.testing.assert_allclose(nxt[:, 0], fwd(params, tokens[rows]).logits[:, 5], atol=1e-5)


def test_select_and_padding(params, fwd):
    tokens = _tokens((2, 7))
    mask = jnp.asarray([[1] * 7, [1] * 4 + [0] * 3])
    full = fwd(params, tokens, attention_mask=mask)
    sel = jnp.asarray([[6, 2], [3, 0]])
    out = fwd(params, tokens, attention_mask=mask, select=sel)
    np.testing.assert_allclose(out.logits, jnp.take_along_axis(full.logits, sel[..., None], 1),
                               atol=1e-6)
    # Padding after a row's tokens does not change them.
    short = fwd(params, tokens[1:, :4]).logits
    np.testing.assert_allclose(full.logits[1, :4], short[0], atol=1e-5)


def test_packed_segments_equal_separate_sequences(params, fwd):
    a, b = _tokens((1, 5), seed=4), _tokens((1, 3), seed=5)
    packed = jnp.concatenate([a, b, jnp.zeros((1, 2), jnp.int32)], 1)
    seg = jnp.asarray([[1] * 5 + [2] * 3 + [0] * 2])
    pos = jnp.asarray([[0, 1, 2, 3, 4, 0, 1, 2, 0, 0]])
    out = fwd(params, packed, positions=pos, segment_ids=seg).logits[0]
    np.testing.assert_allclose(out[:5], fwd(params, a).logits[0], atol=1e-5)
    np.testing.assert_allclose(out[5:8], fwd(params, b).logits[0], atol=1e-5)


def test_sliding_window_cached_equals_full():
    cfg = CFG.replace(sliding_window=3)
    p = init_params(cfg, jax.random.key(0))
    model = Transformer(cfg)
    apply = jax.jit(lambda t, **kw: model.apply({"params": p}, t, **kw))
    tokens = _tokens((2, 9))
    full = apply(tokens).logits
    no_window = Transformer(CFG).apply({"params": p}, tokens).logits
    assert float(jnp.max(jnp.abs(full[:, 5:] - no_window[:, 5:]))) > 1e-3
    pos = jnp.broadcast_to(jnp.arange(9), (2, 9))
    out = apply(tokens[:, :4], positions=pos[:, :4], cache=init_cache(cfg, 2, 12))
    steps = [out.logits]
    for t in range(4, 9):
        out = apply(tokens[:, t:t + 1], positions=pos[:, t:t + 1], cache=out.cache)
        steps.append(out.logits)
    np.testing.assert_allclose(jnp.concatenate(steps, 1), full, atol=1e-5)


def test_value_head_starts_at_zero_and_is_linear(params, fwd):
    tokens = _tokens((2, 5))
    np.testing.assert_array_equal(fwd(params, tokens).values, 0.0)
    p = dict(params)
    w = jax.random.normal(jax.random.key(3), (CFG.d_model, 1))
    p["value_head"] = {"kernel": w, "bias": jnp.asarray([0.5])}
    out, state = Transformer(CFG).apply({"params": p}, tokens, capture_intermediates=True,
                                        mutable=["intermediates"])
    hidden = state["intermediates"]["final_norm"]["__call__"][0]
    np.testing.assert_allclose(out.values, hidden @ w[:, 0] + 0.5, atol=1e-5)


def test_every_param_has_logical_axes():
    abstract = jax.eval_shape(lambda: Transformer(CFG).init(jax.random.key(0),
                                                            jnp.zeros((1, 4), jnp.int32)))
    specs = nn.get_partition_spec(abstract)["params"]
    shapes = nn.meta.unbox(abstract)["params"]
    leaves = jax.tree_util.tree_leaves_with_path(specs, is_leaf=lambda x: isinstance(x, P))
    shape_of = dict(jax.tree_util.tree_leaves_with_path(shapes))
    assert len(leaves) == len(shape_of)
    for path, spec in leaves:
        assert isinstance(spec, P) and len(spec) == len(shape_of[path].shape), path
        named = [n for n in spec if n is not None]
        assert named, f"{jax.tree_util.keystr(path)} has no logical axis names"
    layer_q = specs["layers"]["attn"]["q"]["kernel"]
    assert tuple(layer_q) == ("layers", "embed", "heads", "head_dim")


@pytest.mark.parametrize("change", [{"remat": "full"}, {"remat": "dots"},
                                    {"scan_unroll": 2}, {"scan_unroll": 2, "remat": "full"}])
def test_remat_and_unrolled_layers_give_same_loss_and_grads(params, change):
    """Rematerialisation and unrolling the layer scan change the schedule, not the math."""
    tokens = _tokens((2, 6))
    params = {**params, "value_head": jax.tree.map(lambda a: a + 0.1, params["value_head"])}

    def loss(cfg, p):
        out = Transformer(cfg).apply({"params": p}, tokens)
        return jnp.mean(jax.nn.log_softmax(out.logits)[..., 0]) + jnp.mean(out.values ** 2)

    ref_l, ref_g = jax.jit(jax.value_and_grad(lambda p: loss(CFG, p)))(params)
    l, g = jax.jit(jax.value_and_grad(lambda p: loss(CFG.replace(**change), p)))(params)
    np.testing.assert_allclose(l, ref_l, rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), g, ref_g)


def test_bf16_compute_with_fp32_params(params):
    tokens = _tokens((2, 6))
    ref = Transformer(CFG).apply({"params": params}, tokens).logits
    out = Transformer(CFG.replace(dtype="bfloat16")).apply({"params": params}, tokens)
    assert out.logits.dtype == jnp.float32 and out.values.dtype == jnp.float32
    assert jax.tree.leaves(params)[0].dtype == jnp.float32
    np.testing.assert_allclose(out.logits, ref, atol=0.05)


@pytest.mark.parametrize("window", [None, 3])
def test_fused_attention_matches_grouped_attention(params, monkeypatch, window):
    """``jax.nn.dot_product_attention`` over a sequence's own keys (cuDNN's kernel on a GPU
    in bf16; XLA's implementation of it on the CPU) gives the grouped formulation's logits,
    values and gradients on packed rows with padding."""
    from reasonjax.models import transformer

    impl = "cudnn" if jax.default_backend() == "gpu" else "xla"
    cfg = CFG.replace(sliding_window=window, dtype="bfloat16" if impl == "cudnn" else "float32")
    tokens = _tokens((2, 12), seed=7)
    seg = jnp.asarray([[1] * 5 + [2] * 5 + [0] * 2, [1] * 9 + [0] * 3])
    pos = jnp.asarray([list(range(5)) * 2 + [0, 0], list(range(9)) + [0] * 3])
    valid = np.asarray(seg) != 0
    w = jax.random.normal(jax.random.key(8), (2, 12, CFG.vocab_size)) * valid[..., None]

    def run(mode):
        monkeypatch.setattr(transformer, "fused_attention", lambda *shape: mode)

        def loss(p):
            out = Transformer(cfg).apply({"params": p}, tokens, positions=pos, segment_ids=seg)
            return jnp.sum(out.logits * w) + jnp.sum(out.values * valid), out

        (_, out), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
        return out, grads

    (ref, ref_g), (out, g) = run(None), run(impl)
    tol = {"atol": 0.05, "rtol": 0.05} if impl == "cudnn" else {"atol": 1e-5, "rtol": 1e-5}
    np.testing.assert_allclose(out.logits[valid], ref.logits[valid], **tol)
    np.testing.assert_allclose(out.values[valid], ref.values[valid], **tol)
    scale = max(float(jnp.max(jnp.abs(x))) for x in jax.tree.leaves(ref_g))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a / scale, b / scale, **tol), g, ref_g)


def test_fused_attention_only_where_cudnn_takes_the_shapes(monkeypatch):
    from reasonjax.models import transformer

    assert transformer.fused_attention(jnp.bfloat16, 12, 8) == (
        "cudnn" if jax.default_backend() == "gpu" else None)
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert transformer.fused_attention(jnp.bfloat16, 1024, 64) == "cudnn"
    assert transformer.fused_attention(jnp.float16, 1024, 128) == "cudnn"
    for args in [(jnp.float32, 1024, 64), (jnp.bfloat16, 1023, 64), (jnp.bfloat16, 1024, 12),
                 (jnp.bfloat16, 1024, 256)]:
        assert transformer.fused_attention(*args) is None, args


def test_bad_inputs():
    with pytest.raises(ValueError, match="positions are required"):
        Transformer(CFG).apply({"params": init_params(CFG, jax.random.key(0))},
                               _tokens((1, 3)), cache=init_cache(CFG, 1, 8))
    with pytest.raises(ValueError, match="exceeds the model's max_seq_len 64"):
        init_cache(CFG, 1, 65)
    with pytest.raises(ConfigError, match="multiple of n_kv_heads"):
        CFG.replace(n_kv_heads=3)
    with pytest.raises(ConfigError, match="scan_unroll must be positive"):
        CFG.replace(scan_unroll=0)
    with pytest.raises(ConfigError, match="unknown model preset"):
        get_config("tiny-7t")
