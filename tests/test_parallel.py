"""Sharding: sharded forward/gradients equal one device; params really split; clear errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from reasonjax import parallel
from reasonjax.config import ConfigError
from reasonjax.models import ModelConfig, Transformer, init_params

# Every sharded dimension divides 8, so all meshes below fit.
CFG = ModelConfig(vocab_size=128, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=128,
                  max_seq_len=64)


def _loss(params, tokens):
    out = Transformer(CFG).apply({"params": params}, tokens)
    logp = jax.nn.log_softmax(out.logits)
    nll = -jnp.take_along_axis(logp[:, :-1], tokens[:, 1:, None], -1)
    return jnp.mean(nll) + jnp.mean(out.values ** 2), out.logits


@pytest.fixture(scope="module")
def reference():
    params = init_params(CFG, jax.random.key(0))
    params["value_head"]["kernel"] = jnp.full_like(params["value_head"]["kernel"], 0.01)
    tokens = jax.random.randint(jax.random.key(1), (8, 16), 0, CFG.vocab_size)
    (loss, logits), grads = jax.jit(jax.value_and_grad(_loss, has_aux=True))(params, tokens)
    return params, tokens, loss, logits, grads


@pytest.mark.parametrize("shape", [(8, 1, 1), (2, 2, 2), (1, 4, 2)])
def test_sharded_forward_and_grad_equal_single_device(reference, shape):
    params, tokens, ref_loss, ref_logits, ref_grads = reference
    mesh = parallel.make_mesh(parallel.MeshConfig(*shape))
    sharded = parallel.shard_params(params, CFG, mesh)
    batch = parallel.shard_batch(np.asarray(tokens), mesh)
    with parallel.activate(mesh):
        (loss, logits), grads = jax.jit(jax.value_and_grad(_loss, has_aux=True))(sharded, batch)
    np.testing.assert_allclose(loss, ref_loss, atol=1e-5)
    np.testing.assert_allclose(logits, ref_logits, atol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), grads, ref_grads)

    # Params are really split: per-device shards are smaller than the whole.
    data, fsdp, tensor = shape
    q = sharded["layers"]["attn"]["q"]["kernel"]          # [L, D, H, Dh]
    assert q.sharding.spec == P(None, "fsdp", "tensor", None)
    assert q.addressable_shards[0].data.shape == (2, 64 // fsdp, 4 // tensor, 16)
    up = sharded["layers"]["mlp"]["up"]["kernel"]         # [L, D, F]
    assert up.addressable_shards[0].data.shape == (2, 64 // fsdp, 128 // tensor)
    emb = sharded["embed"]["embedding"]                   # [V, D]
    assert emb.addressable_shards[0].data.shape == (128 // tensor, 64 // fsdp)
    assert batch.addressable_shards[0].data.shape == (8 // (data * fsdp), 16)


def test_init_params_sharded_equals_unsharded():
    mesh = parallel.make_mesh(parallel.MeshConfig(2, 2, 2))
    a = parallel.init_params(CFG, jax.random.key(3), mesh)
    b = init_params(CFG, jax.random.key(3))
    # Same random draws; the partitioned computation may differ in the last bit.
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7), a, b)
    assert a["layers"]["mlp"]["down"]["kernel"].sharding.spec == P(None, "tensor", "fsdp")


def test_mesh_shape_resolution_and_errors():
    assert parallel.MeshConfig(-1, 2, 2).shape(8) == (2, 2, 2)
    assert parallel.MeshConfig(1, -1, 1).shape(8) == (1, 8, 1)
    with pytest.raises(ConfigError, match=r"data=2 x fsdp=2 x tensor=1 = 4 devices, but 8 are"):
        parallel.make_mesh(parallel.MeshConfig(2, 2, 1))
    with pytest.raises(ConfigError, match="at most one axis may be -1"):
        parallel.MeshConfig(-1, -1, 1).shape(8)
    with pytest.raises(ConfigError, match="does not divide the 8 available"):
        parallel.MeshConfig(-1, 3, 1).shape(8)


def test_model_that_does_not_fit_the_mesh():
    mesh = parallel.make_mesh(parallel.MeshConfig(1, 1, 8))
    with pytest.raises(ConfigError, match=r"n_heads=4 is not divisible by mesh axis tensor=8"):
        parallel.validate_model_mesh(CFG, mesh)
    # Replicating heads/kv heads by rule override makes it fit except the MLP/vocab dims.
    rules = parallel.logical_rules({"heads": None, "kv_heads": None})
    parallel.validate_model_mesh(CFG, mesh, rules)
    with pytest.raises(ConfigError, match="unknown logical axes"):
        parallel.logical_rules({"hedas": None})


def test_batch_must_divide_data_axes():
    mesh = parallel.make_mesh(parallel.MeshConfig(4, 2, 1))
    with pytest.raises(ConfigError, match=r"batch_size=6 is not divisible .* multiple of 8"):
        parallel.shard_batch(np.zeros((6, 4), np.int32), mesh)
