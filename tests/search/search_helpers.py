"""Tiny model config, tokenizer and hand-built search states shared by the search tests."""

import jax.numpy as jnp

from reasonjax.models import CharTokenizer, ModelConfig
from reasonjax.search.stepping import Paths, SearchState

TOK = CharTokenizer()
CFG = ModelConfig(vocab_size=TOK.vocab_size, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
                  d_ff=64, max_seq_len=96)


def search_state(scores, finished, alive) -> SearchState:
    """A SearchState of R = len(scores) one-token rows with the given aggregated scores,
    finished (EOS) flags and alive flags: what the selection rules read."""
    R = len(scores)
    paths = Paths(tokens=jnp.zeros((R, 1), jnp.int32), logprobs=jnp.zeros((R, 1)),
                  length=jnp.ones(R, jnp.int32), step_scores=jnp.zeros((R, 1)),
                  step_ends=jnp.zeros((R, 1), jnp.int32), n_steps=jnp.ones(R, jnp.int32),
                  score=jnp.asarray(scores, jnp.float32), alive=jnp.asarray(alive))

    class Decode:
        done = jnp.asarray(finished)
    return SearchState(decode=Decode(), scorer=None, paths=paths)
