"""Voting over final answers: majority (self-consistency, Wang et al., 2023), PRM-weighted,
and perplexity-weighted, optionally among the most complex candidates only.

- ``perplexity``: a candidate's vote is its inverse perplexity, exp(mean token log-prob),
  the length-normalised probability of its path, so an answer's total is the summed
  internal probability of the paths reaching it: the Perplexity Consistency of RPC
  (Zhou et al., 2025, "Bridging Internal Probability and Self-Consistency for Effective
  and Efficient LLM Reasoning", arXiv 2502.00511). RPC's Reasoning Pruning (dropping
  low-probability paths first) is not applied, and duplicate paths each vote.
- ``complexity_top_k``: complexity-based consistency (Fu et al., 2023, "Complexity-Based
  Prompting for Multi-Step Reasoning"): only the K candidates with the most reasoning
  steps vote (:func:`most_steps`).

Answers are strings found on the host (an extractor over each candidate's tokens), turned
into per-problem integer ids (:func:`answer_ids`); the vote itself is a jit-able array
function (:func:`vote`). :func:`voting` runs best-of-N sampling and votes.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Literal, Optional, Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np

from reasonjax.config import check_fields
from reasonjax.errors import ConfigError
from reasonjax.models.config import ModelConfig
from reasonjax.search.best_of_n import BestOfNConfig, best_of_n, sequence_logprob
from reasonjax.search.sampler import SearchError, StopTokens
from reasonjax.search.stepping import SearchResult

WEIGHTINGS = ("majority", "prm", "perplexity")


def answer_ids(answers: Sequence[Sequence[Optional[str]]]) -> np.ndarray:
    """[B, N] int32: equal answers of a problem share an id; None (no answer) is -1."""
    out = np.full((len(answers), max((len(a) for a in answers), default=0)), -1, np.int32)
    for b, row in enumerate(answers):
        seen: dict[str, int] = {}
        for i, a in enumerate(row):
            if a is not None:
                out[b, i] = seen.setdefault(a, len(seen))
    return out


@jax.jit
def vote(ids_BN: jax.Array, weights_BN: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Weighted vote. ids [B, N] (-1 = no answer, never counted), weights [B, N] >= 0.

    Returns (winner [B]: index of the first candidate holding the answer with the largest
    total weight, or -1 when no candidate has an answer; totals [B, N]: the total weight of
    each candidate's answer)."""
    has = ids_BN >= 0
    same = (ids_BN[:, :, None] == ids_BN[:, None, :]) & has[:, None, :]
    totals = jnp.sum(jnp.where(same, weights_BN[:, None, :], 0.0), axis=-1)
    totals = jnp.where(has, totals, -jnp.inf)
    winner = jnp.argmax(totals, axis=-1).astype(jnp.int32)
    return jnp.where(jnp.any(has, axis=-1), winner, -1), totals


@functools.partial(jax.jit, static_argnames="k")
def most_steps(n_steps_BN: jax.Array, valid_BN: jax.Array, k: int) -> jax.Array:
    """[B, N] bool: the ``k`` valid candidates of each problem with the most steps
    (``n_steps_BN`` [B, N]; all valid ones when fewer than ``k``). Ties go to the lower
    index: j outranks i when it has more steps, or as many and j < i; a valid candidate
    is kept when fewer than ``k`` valid candidates outrank it."""
    N = n_steps_BN.shape[1]
    idx = jnp.arange(N)
    mine_BN1 = n_steps_BN[:, :, None]
    other_B1N = n_steps_BN[:, None, :]
    outranks_BNN = (other_B1N > mine_BN1) | ((other_B1N == mine_BN1) &
                                             (idx[None, None, :] < idx[None, :, None]))
    rank_BN = jnp.sum(outranks_BNN & valid_BN[:, None, :], axis=-1)
    return valid_BN & (rank_BN < k)


def candidate_weights(weighting: str, scores, mean_logprobs) -> jax.Array:
    """Each candidate's vote weight, shaped as the inputs: 1 (``majority``), its score
    (``prm``; NaN counts 0, and every score must be >= 0) or exp(its mean token log-prob)
    (``perplexity``, RPC's perplexity weight)."""
    if weighting == "majority":
        return jnp.ones(jnp.shape(scores))
    if weighting == "prm":
        w = jnp.nan_to_num(jnp.asarray(scores, jnp.float32))
        if bool(jnp.any(w < 0)):
            raise SearchError("PRM-weighted voting needs non-negative scores; use a sigmoid "
                              "or token_prob scorer")
        return w
    if weighting == "perplexity":
        return jnp.exp(jnp.asarray(mean_logprobs, jnp.float32))
    raise SearchError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")


def vote_weights(result: SearchResult, weighting: str) -> jax.Array:
    """[B, N] each candidate's vote weight (:func:`candidate_weights`; 0 for emptied
    slots)."""
    mean_logprobs = (sequence_logprob(result, mean=True) if weighting == "perplexity"
                     else None)
    w = candidate_weights(weighting, result.scores, mean_logprobs)
    return jnp.where(result.valid, w, 0.0)


@flax.struct.dataclass
class VoteResult:
    """Voting output: ``search`` (every candidate, ``chosen`` = the winning candidate),
    ``answers`` [B][N] the extracted answers, ``winners`` [B] the winning answer or None,
    ``totals`` [B, N] the total weight of each candidate's answer."""

    search: SearchResult
    answers: list = flax.struct.field(pytree_node=False)
    winners: list = flax.struct.field(pytree_node=False)
    totals: jax.Array


def tally(result: SearchResult, answers: Sequence[Sequence[Optional[str]]],
          weighting: str = "majority", complexity_top_k: Optional[int] = None) -> VoteResult:
    """Votes over a search's candidates given their extracted answers; with
    ``complexity_top_k``, only the candidates :func:`most_steps` keeps vote."""
    ids = answer_ids(answers)
    if ids.shape != result.scores.shape:
        raise SearchError(f"answers have shape {ids.shape}, the candidates "
                          f"{tuple(result.scores.shape)}; give one answer (or None) each")
    ids = jnp.asarray(ids)
    if complexity_top_k is not None:
        keep = most_steps(result.n_steps, result.valid, complexity_top_k)
        ids = jnp.where(keep, ids, -1)
    winner, totals = vote(ids, vote_weights(result, weighting))
    winner = np.asarray(winner)
    winners = [answers[b][w] if w >= 0 else None for b, w in enumerate(winner)]
    chosen = jnp.asarray(np.maximum(winner, 0), jnp.int32)
    return VoteResult(search=result.replace(chosen=chosen), answers=[list(a) for a in answers],
                      winners=winners, totals=totals)


def extract_answers(result: SearchResult,
                    extract: Callable[[np.ndarray], Optional[str]]) -> list[list[Optional[str]]]:
    """Applies ``extract`` (token ids of one candidate -> answer or None) to every valid
    candidate."""
    tokens = np.asarray(result.tokens)
    lengths = np.asarray(result.lengths)
    valid = np.asarray(result.valid)
    return [[extract(tokens[b, i, :lengths[b, i]]) if valid[b, i] else None
             for i in range(tokens.shape[1])] for b in range(tokens.shape[0])]


@dataclasses.dataclass(frozen=True)
class VotingConfig(BestOfNConfig):
    """BestOfNConfig plus the vote ``weighting`` (majority / prm / perplexity) and
    ``complexity_top_k``: only the K candidates with the most steps vote (Fu et al.,
    2023; ties to the lower index, see :func:`most_steps`); None = every candidate."""

    weighting: Literal["majority", "prm", "perplexity"] = "majority"
    complexity_top_k: Optional[int] = None

    def __post_init__(self):
        super().__post_init__()
        check_fields(self, complexity_top_k=">= 1")
        if self.complexity_top_k is not None and self.complexity_top_k > self.n:
            raise ConfigError(f"complexity_top_k: must be <= n ({self.n}), got "
                              f"{self.complexity_top_k}; lower it or raise n")
        if self.weighting not in WEIGHTINGS:
            raise SearchError(f"weighting must be one of {WEIGHTINGS}, got {self.weighting!r}")
        if self.weighting == "prm" and self.scorer.kind == "value" and \
                self.scorer.transform != "sigmoid":
            raise SearchError("weighting 'prm' (prm_vote) weights votes by solution scores, "
                              "which must be >= 0: use scorer transform 'sigmoid' or a "
                              "token_prob scorer")


def voting(config: ModelConfig, params, prompt_tokens, prompt_mask, rng: jax.Array,
           cfg: VotingConfig, stop: StopTokens,
           extract: Callable[[np.ndarray], Optional[str]],
           scorer_config: Optional[ModelConfig] = None, scorer_params=None) -> VoteResult:
    """Self-consistency / weighted voting over N samples per problem: samples with
    :func:`best_of_n` (steps scored when the weighting needs them), extracts each
    candidate's answer with ``extract`` and votes (among the ``cfg.complexity_top_k``
    candidates with the most steps when set)."""
    result = best_of_n(config, params, prompt_tokens, prompt_mask, rng, cfg, stop,
                       scorer_config, scorer_params)
    return tally(result, extract_answers(result, extract), cfg.weighting,
                 cfg.complexity_top_k)
