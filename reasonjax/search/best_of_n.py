"""Best-of-N (repeated sampling, Large Language Monkeys; Snell et al.'s PRM/ORM baseline).

N independent samples per problem from one prefill, every step scored as it is produced;
the answer is the candidate with the best aggregated step score (``select_by="score"``:
PRM with ``aggregate`` min/product/last, ORM with ``last``) or the best sequence log-prob
(``"logprob"``) or mean token log-prob (``"mean_logprob"``). Finished candidates (EOS) are
preferred over truncated ones.

Adaptive early pruning (Manvi et al., 2024, "Adaptive Inference-Time Compute: LLMs Can
Predict if They Can Do Better, Even Mid-Generation"): with ``prune_after`` = S, once S
steps are generated every sample still generating is scored by the step scorer (the
paper's setting: the model's own self-evaluation, a ``token_prob`` scorer whose template
is read on the policy's cache) and only the top ``prune_keep`` fraction of them continues
(:func:`prune_keep_mask`); the others stop where they are, are emptied (``valid`` False:
no answer, no vote) and generate no more tokens, which ``Compute.tokens_generated``
shows. (Their rows still ride along the lockstep batch as empty slots: the saving is in
tokens, not in forward passes.)
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Literal, Optional

import jax
import jax.numpy as jnp

from reasonjax.config import check_fields
from reasonjax.errors import ConfigError
from reasonjax.models.config import ModelConfig
from reasonjax.search.sampler import SearchError, StopTokens, check_positive
from reasonjax.search.stepping import (SearchConfig, SearchResult, SearchState, check_search,
                                       choose_best, run, to_result)

SELECT_BY = ("score", "logprob", "mean_logprob")


@dataclasses.dataclass(frozen=True)
class BestOfNConfig(SearchConfig):
    """SearchConfig plus how the answer is picked (``select_by``: score / logprob /
    mean_logprob) and early pruning (Manvi et al.): after ``prune_after`` steps (None =
    off, else in [1, max_steps)) only the top ``prune_keep`` fraction (in (0, 1]) of the
    samples still generating continues, ranked by the step scorer."""

    select_by: Literal["score", "logprob", "mean_logprob"] = "score"
    prune_after: Optional[int] = None
    prune_keep: float = 0.5

    def __post_init__(self):
        super().__post_init__()
        if self.select_by not in SELECT_BY:
            raise SearchError(f"select_by must be one of {SELECT_BY}, got {self.select_by!r}")
        check_fields(self, prune_keep="in (0, 1]")
        if self.prune_after is not None:
            check_positive(self.prune_after, "prune_after")
            if self.prune_after >= self.max_steps:
                raise ConfigError(f"prune_after: must be < max_steps ({self.max_steps}), got "
                                  f"{self.prune_after}; no step would follow the pruning")


def kept_counts(n: int, keep: float) -> tuple[int, ...]:
    """How many of u samples still generating continue, for u = 0..n: ceil(keep * u)
    (rounded first, so 0.3 * 10 keeps 3, not 4)."""
    return tuple(math.ceil(round(keep * u, 9)) for u in range(n + 1))


def prune_keep_mask(score_BN: jax.Array, running_BN: jax.Array, keep: float) -> jax.Array:
    """[B, N] bool: the samples that survive early pruning. Of each problem's U running
    samples (``running_BN`` [B, N]: alive and still generating) the ceil(keep * U) with
    the best score (``score_BN`` [B, N], NaN lowest; ties to the lower index) continue;
    samples not running are kept as they are (a finished one costs nothing more)."""
    N = score_BN.shape[1]
    key_BN = jnp.nan_to_num(score_BN, nan=-jnp.inf)
    idx = jnp.arange(N)
    mine_BN1, other_B1N = key_BN[:, :, None], key_BN[:, None, :]
    outranks_BNN = (other_B1N > mine_BN1) | ((other_B1N == mine_BN1) &
                                             (idx[None, None, :] < idx[None, :, None]))
    rank_BN = jnp.sum(outranks_BNN & running_BN[:, None, :], axis=-1)
    quota_B = jnp.asarray(kept_counts(N, keep))[jnp.sum(running_BN, axis=-1)]
    return ~running_BN | (rank_BN < quota_B[:, None])


def prune_rows(state: SearchState, n: int, max_steps: int, keep: float) -> jax.Array:
    """[R] alive after early pruning of a search state's R = B * n rows
    (:func:`prune_keep_mask` on the aggregated step scores)."""
    p = state.paths
    R = p.alive.shape[0]
    running = ~state.finished(max_steps)
    kept = prune_keep_mask(p.score.reshape(R // n, n), running.reshape(R // n, n), keep)
    return p.alive & kept.reshape(R)


def sequence_logprob(result: SearchResult, mean: bool = False) -> jax.Array:
    """[B, N] summed (or mean) token log-prob of each candidate."""
    total = jnp.sum(result.logprobs, axis=-1)
    return total / jnp.maximum(result.lengths, 1) if mean else total


@functools.partial(jax.jit, static_argnames=("config", "cfg", "scorer_config"))
def best_of_n_program(params, prompt_tokens, prompt_mask, rng, stop, scorer_params, *, config,
                      cfg, scorer_config):
    prune = None
    if cfg.prune_after is not None:
        def prune(i, st):
            pruned = prune_rows(st, cfg.n, cfg.max_steps, cfg.prune_keep)
            return jnp.where(i == cfg.prune_after, pruned, st.paths.alive)
    state, compute = run(config, params, prompt_tokens, prompt_mask, rng, cfg, stop,
                         scorer_config, scorer_params, select=None, prune=prune)
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
    index per problem and the compute spent; with ``cfg.prune_after``, pruned samples
    are invalid and hold the steps they had when pruned."""
    check_search(config, cfg, prompt_tokens, prompt_mask, stop, scorer_config)
    return best_of_n_program(params, jnp.asarray(prompt_tokens, jnp.int32),
                             jnp.asarray(prompt_mask), rng, stop, scorer_params,
                             config=config, cfg=cfg, scorer_config=scorer_config)
