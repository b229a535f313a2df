"""Best-of-N (repeated sampling, Large Language Monkeys; Snell et al.'s PRM/ORM baseline).

N independent samples per problem from one prefill, every step scored as it is produced;
the answer is the candidate with the best aggregated step score (``select_by="score"``:
PRM with ``aggregate`` min/product/last, ORM with ``last``) or the best sequence log-prob
(``"logprob"``) or mean token log-prob (``"mean_logprob"``). Finished candidates (EOS) are
preferred over truncated ones.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Literal, Optional

import jax
import jax.numpy as jnp

from reasonjax.models.config import ModelConfig
from reasonjax.search.sampler import SearchError, StopTokens
from reasonjax.search.stepping import (SearchConfig, SearchResult, check_search, choose_best,
                                       run, to_result)

SELECT_BY = ("score", "logprob", "mean_logprob")


@dataclasses.dataclass(frozen=True)
class BestOfNConfig(SearchConfig):
    """SearchConfig plus how the answer is picked (``select_by``: score / logprob /
    mean_logprob)."""

    select_by: Literal["score", "logprob", "mean_logprob"] = "score"

    def __post_init__(self):
        super().__post_init__()
        if self.select_by not in SELECT_BY:
            raise SearchError(f"select_by must be one of {SELECT_BY}, got {self.select_by!r}")


def sequence_logprob(result: SearchResult, mean: bool = False) -> jax.Array:
    """[B, N] summed (or mean) token log-prob of each candidate."""
    total = jnp.sum(result.logprobs, axis=-1)
    return total / jnp.maximum(result.lengths, 1) if mean else total


@functools.partial(jax.jit, static_argnames=("config", "cfg", "scorer_config"))
def best_of_n_program(params, prompt_tokens, prompt_mask, rng, stop, scorer_params, *, config,
                      cfg, scorer_config):
    state, compute = run(config, params, prompt_tokens, prompt_mask, rng, cfg, stop,
                         scorer_config, scorer_params, select=None)
    result = to_result(state, compute, prompt_tokens.shape[0])
    if cfg.select_by != "score":
        key = sequence_logprob(result, mean=cfg.select_by == "mean_logprob")
        result = result.replace(chosen=choose_best(key, result.finished, result.valid))
    return result


def best_of_n(config: ModelConfig, params, prompt_tokens, prompt_mask, rng: jax.Array,
              cfg: BestOfNConfig, stop: StopTokens, scorer_config: Optional[ModelConfig] = None,
              scorer_params=None) -> SearchResult:
    """Best-of-N over B problems (prompts [B, P], mask 1 = real token).

    ``scorer_config`` / ``scorer_params``: a separate scorer model (PRM / ORM); default:
    the policy scores its own steps. Returns every candidate with its scores, the chosen
    index per problem and the compute spent."""
    check_search(config, cfg, prompt_tokens, prompt_mask, stop, scorer_config)
    return best_of_n_program(params, jnp.asarray(prompt_tokens, jnp.int32),
                             jnp.asarray(prompt_mask), rng, stop, scorer_params,
                             config=config, cfg=cfg, scorer_config=scorer_config)
