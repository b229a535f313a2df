"""Shared tiny model and batch builders for the training tests."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reasonjax import parallel
from reasonjax.models import ModelConfig

# Divisible by every mesh the sharding tests use: heads / kv_heads / d_ff / vocab by
# tensor=4, d_model by fsdp=2.
TINY = ModelConfig(vocab_size=32, d_model=16, n_layers=2, n_heads=4, n_kv_heads=4, d_ff=32,
                   max_seq_len=64)


@pytest.fixture(scope="session")
def tiny_config():
    return TINY


@pytest.fixture(scope="session")
def tiny_params():
    params = parallel.init_params(TINY, jax.random.key(0))
    # A non-zero value head, so value losses and their gradients are not trivial.
    params["value_head"]["kernel"] = jnp.asarray(0.3 * np.random.default_rng(1).standard_normal(
        params["value_head"]["kernel"].shape).astype(np.float32))
    return params


@pytest.fixture(scope="session")
def ref_params(tiny_params):
    """A second set of params near tiny_params (a reference model), without a new init."""
    noise = np.random.default_rng(7)
    return jax.tree.map(lambda x: jnp.asarray(
        np.asarray(x) + 0.05 * noise.standard_normal(x.shape).astype(np.float32)), tiny_params)


@pytest.fixture(scope="session")
def apply_fn():
    """Jitted model forward: apply_fn(config, params, tokens, positions, segment_ids)."""
    from reasonjax.models import Transformer

    return jax.jit(lambda cfg, p, t, pos, seg: Transformer(cfg).apply(
        {"params": p}, t, positions=pos, segment_ids=seg), static_argnums=0)


def sequence_rows(prompts, completions, T, pad_id=0):
    """One sequence per row: prompt + completion, right-padded to T. loss_mask is 1 on the
    completion tokens. Returns the quadruple as numpy arrays."""
    B = len(prompts)
    tokens = np.full((B, T), pad_id, np.int32)
    positions = np.zeros((B, T), np.int32)
    segment_ids = np.zeros((B, T), np.int32)
    loss_mask = np.zeros((B, T), np.float32)
    for i, (p, c) in enumerate(zip(prompts, completions)):
        seq = list(p) + list(c)
        n = len(seq)
        tokens[i, :n] = seq
        positions[i, :n] = np.arange(n)
        segment_ids[i, :n] = 1
        loss_mask[i, len(p):n] = 1
    return {"tokens": tokens, "positions": positions, "segment_ids": segment_ids,
            "loss_mask": loss_mask}


@pytest.fixture(scope="session")
def rows():
    return sequence_rows


def random_rows(rng, B, T, vocab=TINY.vocab_size, min_prompt=2, max_len=None):
    """B random rows with random prompt / completion lengths that fit T."""
    max_len = max_len or T
    prompts, completions = [], []
    for _ in range(B):
        n = int(rng.integers(min_prompt + 2, max_len + 1))
        p = int(rng.integers(min_prompt, n - 1))
        seq = rng.integers(1, vocab, n)
        prompts.append(seq[:p])
        completions.append(seq[p:])
    return sequence_rows(prompts, completions, T)


@pytest.fixture(scope="session")
def random_batch():
    return random_rows
