"""A sharded run (8 host devices, data axis 8) gives the same answers as one device."""

import jax
import numpy as np

from reasonjax.models.tokenizer import pad_batch
from reasonjax.parallel import MeshConfig, activate, make_mesh, shard_batch, shard_params
from reasonjax.search.beam import BeamConfig, beam_search
from reasonjax.search.sampler import sample, stop_tokens

from search_helpers import CFG, TOK

STOP = stop_tokens(CFG.vocab_size, eos_ids=TOK.encode("xyz"), delimiter_ids=TOK.encode(" "))


def test_sharded_equals_single_device(params):
    texts = [f"{a}+{b}=" for a, b in zip(range(3, 11), range(20, 60, 5))]
    tokens, mask = pad_batch([TOK.encode(t, add_bos=True) for t in texts], 8, TOK.pad_id,
                             side="left")
    cfg = BeamConfig(n=4, beam_width=2, max_steps=2, step_tokens=5)

    single = sample(CFG, params, tokens, mask, jax.random.key(0), max_new_tokens=8, n=2,
                    stop=STOP)
    single_beam = beam_search(CFG, params, tokens, mask, jax.random.key(1), cfg, STOP)

    mesh = make_mesh(MeshConfig(data=8))
    p = shard_params(params, CFG, mesh)
    toks, m = shard_batch((np.asarray(tokens), np.asarray(mask)), mesh)
    with activate(mesh):
        sharded = sample(CFG, p, toks, m, jax.random.key(0), max_new_tokens=8, n=2, stop=STOP)
        sharded_beam = beam_search(CFG, p, toks, m, jax.random.key(1), cfg, STOP)
        assert not sharded.tokens.sharding.is_fully_replicated  # rows stay split

    np.testing.assert_array_equal(sharded.tokens, single.tokens)
    np.testing.assert_array_equal(sharded.lengths, single.lengths)
    np.testing.assert_allclose(sharded.logprobs, single.logprobs, atol=1e-5)
    np.testing.assert_array_equal(sharded_beam.tokens, single_beam.tokens)
    np.testing.assert_array_equal(sharded_beam.chosen, single_beam.chosen)
    np.testing.assert_allclose(sharded_beam.scores, single_beam.scores, atol=1e-5)
