"""The CPU decode-attention kernel (XLA FFI): == grouped_attention, used where it applies,
and a build that caches, fails cleanly and leaves no half-written file."""

import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reasonjax import parallel
from reasonjax.models import Transformer, cpu_kernels, get_config, init_cache, init_params
from reasonjax.models.transformer import grouped_attention, unstack_layers

pytestmark = [
    pytest.mark.skipif(jax.default_backend() != "cpu", reason="a CPU kernel"),
    pytest.mark.skipif(not any(shutil.which(c) for c in ("c++", "g++", "clang++")),
                       reason="no C++ compiler to build the kernel"),
]


def _inputs(B, K, G, D, S, seed):
    r = np.random.default_rng(seed)
    q = jnp.asarray(r.normal(size=(B, 1, K * G, D)), jnp.float32)
    k = jnp.asarray(r.normal(size=(B, K, D, S)), jnp.float32)
    v = jnp.asarray(r.normal(size=(B, K, S, D)), jnp.float32)
    valid = r.random((B, S)) < 0.6        # holes anywhere
    valid[0] = False                      # a row with no valid slot
    valid[1] = np.arange(S) < S // 3      # filled slots, then empty ones
    valid[2] = True                       # a full cache
    return q, k, v, jnp.asarray(valid)[:, None, None, :]


@pytest.mark.parametrize("G,D,S", [(2, 64, 37), (4, 64, 16), (1, 128, 9), (3, 8, 50),
                                   (2, 128, 130), (2, 24, 1)])
def test_kernel_matches_grouped_attention(G, D, S):
    assert cpu_kernels.available()
    q, k, v, mask = _inputs(5, 2, G, D, S, seed=G * 1000 + S)
    ref = jax.jit(grouped_attention)(q, k, v, mask)
    out = jax.jit(cpu_kernels.decode_attention)(q, k, v, mask)
    np.testing.assert_allclose(out, ref, atol=2e-6, rtol=2e-5)


def _decode_steps(cfg, params):
    """Logits and cache after a 6-token prefill and three one-token steps, and whether the
    program calls the kernel."""
    model = Transformer(cfg)
    B = 3
    tokens = jax.random.randint(jax.random.key(3), (B, 6), 0, cfg.vocab_size)
    mask = jnp.asarray([[1] * 6, [0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])

    def run(params):
        pos = jnp.maximum(jnp.cumsum(mask, -1) - 1, 0)
        out = model.apply({"params": params}, tokens, positions=pos, attention_mask=mask,
                          cache=init_cache(cfg, B, 12))
        logits = [out.logits[:, -1]]
        for t in range(3):
            tok = jnp.argmax(logits[-1], -1)[:, None]
            active = jnp.asarray([[True], [t != 1], [True]])  # a row that skips a step
            pos = out.cache.next_positions()[:, None]
            out = model.apply({"params": params}, tok, positions=pos, attention_mask=active,
                              cache=out.cache)
            logits.append(out.logits[:, 0])
        return jnp.stack(logits, 1), out.cache

    lowered = jax.jit(run).lower(unstack_layers(params))
    used = cpu_kernels.TARGET in lowered.as_text()
    return lowered.compile()(unstack_layers(params)), used


def test_decode_steps_use_the_kernel_and_match_xla():
    cfg = get_config("tiny-1m", sliding_window=5)
    params = init_params(cfg, jax.random.key(0))
    (ref, ref_cache), ref_used = _decode_steps(cfg.replace(attention="xla"), params)
    (out, cache), used = _decode_steps(cfg, params)
    assert used and not ref_used
    np.testing.assert_allclose(out, ref, atol=2e-5, rtol=2e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-5), cache, ref_cache)


def test_kernel_not_used_under_a_multi_device_mesh():
    cfg = get_config("tiny-1m")
    params = init_params(cfg, jax.random.key(0))
    mesh = parallel.make_mesh(parallel.MeshConfig(data=jax.device_count()))
    cache = init_cache(cfg, 8, 4)

    def step(params, cache):
        return Transformer(cfg).apply({"params": params}, jnp.zeros((8, 1), jnp.int32),
                                      positions=jnp.zeros((8, 1), jnp.int32), cache=cache)

    with parallel.activate(mesh):
        text = jax.jit(step).lower(unstack_layers(params), cache).as_text()
    assert "dot_general" in text and cpu_kernels.TARGET not in text


def test_decode_step_lowered_for_a_tpu_uses_xla_attention():
    """``reasonjax plan`` lowers decode programs for TPUs on a CPU host: the kernel must
    stay out of them."""
    cfg = get_config("tiny-1m")
    params = unstack_layers(init_params(cfg, jax.random.key(0)))
    cache = init_cache(cfg, 2, 4)

    def step(params, cache):
        return Transformer(cfg).apply({"params": params}, jnp.zeros((2, 1), jnp.int32),
                                      positions=jnp.zeros((2, 1), jnp.int32), cache=cache)

    traced = jax.jit(step).trace(params, cache)
    assert cpu_kernels.TARGET in traced.lower(lowering_platforms=("cpu",)).as_text()
    assert cpu_kernels.TARGET not in traced.lower(lowering_platforms=("tpu",)).as_text()


def test_loading_the_kernel_keeps_ieee_subnormals():
    """The library is built without -ffast-math, whose startup code would switch the whole
    process to flush-to-zero (hypothesis and numpy would then see no subnormals)."""
    assert cpu_kernels.available()
    tiny = np.float32(1e-30)
    assert tiny * np.float32(1e-10) > 0                   # not flushed to zero
    assert np.float32(1e-40) * np.float32(1.0) > 0        # not read as zero


def test_build_is_cached_and_atomic(tmp_path, monkeypatch):
    first = cpu_kernels.build(tmp_path)
    mtime = first.stat().st_mtime_ns
    assert cpu_kernels.build(tmp_path) == first and first.stat().st_mtime_ns == mtime
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.name]
    # A compiler that fails: one line naming it, nothing left behind.
    monkeypatch.setenv("CXX", shutil.which("false"))
    monkeypatch.setattr(cpu_kernels, "SOURCE", tmp_path / "src" / "decode_attention.cc")
    (tmp_path / "src").mkdir()
    cpu_kernels.SOURCE.write_text("// a different source\n")
    with pytest.raises(OSError, match=r"false failed on decode_attention.cc"):
        cpu_kernels.build(tmp_path / "out")
    assert os.listdir(tmp_path / "out") == []
