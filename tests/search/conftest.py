"""Shared tiny model and prompts for the search tests (one compile per shape)."""

import jax
import numpy as np
import pytest

from reasonjax.parallel import init_params
from reasonjax.models.tokenizer import pad_batch
from search_helpers import CFG, TOK


@pytest.fixture(scope="session")
def params():
    """Random weights with a hand-set (random, non-zero) value head, so steps get distinct
    scores."""
    p = init_params(CFG, jax.random.key(0))
    kernel = jax.random.normal(jax.random.key(7), p["value_head"]["kernel"].shape)
    return {**p, "value_head": {**p["value_head"], "kernel": kernel}}


@pytest.fixture(scope="session")
def prompts():
    """Two left-padded prompts of different lengths: tokens, mask [2, 8]."""
    ids = [TOK.encode("12+7=", add_bos=True), TOK.encode("3*4-5=", add_bos=True)]
    tokens, mask = pad_batch(ids, 8, TOK.pad_id, side="left")
    return np.asarray(tokens), np.asarray(mask)
