"""Step scores: what a search ranks, weights or prunes partial solutions by.

A step is scored at its last token, in one of two ways (:class:`StepScorer`):

- ``kind="value"``: the value head at the step end, mapped by ``transform`` (sigmoid for a
  PRM trained with BCE, tanh for AlphaMath's [-1, 1] value, identity otherwise). With the
  policy's own parameters this is free: the decode loop computes it anyway.
- ``kind="token_prob"``: feed a ``template`` after the step and read the probability of
  ``good_ids`` at its last token, normalised against ``bad_ids`` when given:
  p = P(good) / (P(good) + P(bad)). This is an LM used as PRM at a step tag (Math-Shepherd:
  template = the tag token, good = "+", bad = "-") and MCTS-DPO's self-evaluation (template
  = "... Is this step correct? (A) ... Answer: (", good = "A", bad = "B").

A separate scorer model (a PRM with its own parameters) keeps its own KV cache: it reads
the prompt once and each new step as it is produced. With ``keep_template`` the template
stays in the scorer's context after each step (Math-Shepherd inserts a tag after every
step); otherwise it is fed on a throw-away copy of the cache (:func:`read_template`, which
MCTS also uses to score each node it expands).

Solution scores aggregate the step scores: ``last`` (the ORM convention: score of the final
step), ``min`` or ``product``.
"""

from __future__ import annotations

import dataclasses
from typing import Literal, Optional

import flax
import jax
import jax.numpy as jnp

from reasonjax.models.config import ModelConfig
from reasonjax.models.transformer import KVCache, Transformer
from reasonjax.search.compute import Compute
from reasonjax.search.sampler import Chunk, DecodeState, SearchError, prefill

AGGREGATIONS = ("last", "min", "product")


@dataclasses.dataclass(frozen=True)
class StepScorer:
    """How steps are scored and step scores aggregated (see the module docstring)."""

    kind: Literal["value", "token_prob"] = "value"
    transform: Literal["sigmoid", "tanh", "identity"] = "sigmoid"
    template: tuple[int, ...] = ()
    good_ids: tuple[int, ...] = ()
    bad_ids: tuple[int, ...] = ()
    keep_template: bool = False
    aggregate: Literal["last", "min", "product"] = "last"

    def __post_init__(self):
        problems = []
        if self.kind not in ("value", "token_prob"):
            problems.append(f"kind must be 'value' or 'token_prob', got {self.kind!r}")
        if self.transform not in ("sigmoid", "tanh", "identity"):
            problems.append(f"transform must be sigmoid, tanh or identity, got "
                            f"{self.transform!r}")
        if self.aggregate not in AGGREGATIONS:
            problems.append(f"aggregate must be one of {AGGREGATIONS}, got {self.aggregate!r}")
        if self.kind == "token_prob" and (not self.template or not self.good_ids):
            problems.append("kind='token_prob' needs a non-empty template and good_ids")
        if self.kind == "value" and self.keep_template:
            problems.append("keep_template applies to kind='token_prob' only")
        if problems:
            raise SearchError("StepScorer: " + "; ".join(problems))

    @property
    def template_len(self) -> int:
        """Tokens the scorer feeds after a step to score it: the template of a token_prob
        scorer, none for the value head."""
        return len(self.template) if self.kind == "token_prob" else 0

    def cache_len(self, separate_model: bool, prompt_len: int, max_steps: int,
                  step_tokens: int) -> int:
        """Slots of the scorer's own context, or 0 when it reads the policy's."""
        if not (separate_model or self.keep_template):
            return 0
        kept = self.template_len if self.keep_template else 0
        return prompt_len + max_steps * (step_tokens + kept)


@flax.struct.dataclass
class ScorerState:
    """A scorer's own context (R rows); ``cache`` is None when the scorer reads the policy.

    cache:    KVCache of the scorer model (or of the policy with templates kept).
    next_pos: [R] int32 next RoPE position in that context.
    """

    cache: Optional[KVCache]
    next_pos: jax.Array


def check_token_ids(scorer: StepScorer, vocab_size: int) -> None:
    """Host-side check that the scorer's template, good and bad ids are in the scoring
    model's vocabulary [0, vocab_size)."""
    ids = scorer.template + scorer.good_ids + scorer.bad_ids
    bad = [i for i in ids if not 0 <= i < vocab_size]
    if bad:
        raise SearchError(f"scorer token ids {bad} are outside the scorer's vocabulary "
                          f"[0, {vocab_size})")


def transform_value(value: jax.Array, scorer: StepScorer) -> jax.Array:
    if scorer.transform == "sigmoid":
        return jax.nn.sigmoid(value)
    if scorer.transform == "tanh":
        return jnp.tanh(value)
    return value


def token_prob(logits_RV: jax.Array, scorer: StepScorer) -> jax.Array:
    """P(good) (or P(good) / (P(good) + P(bad))) under the logits: [R]."""
    probs = jax.nn.softmax(logits_RV.astype(jnp.float32), axis=-1)
    good = jnp.sum(probs[:, jnp.asarray(scorer.good_ids)], axis=-1)
    if not scorer.bad_ids:
        return good
    bad = jnp.sum(probs[:, jnp.asarray(scorer.bad_ids)], axis=-1)
    return good / jnp.maximum(good + bad, jnp.finfo(jnp.float32).tiny)


def aggregate_init(R: int, scorer: StepScorer) -> jax.Array:
    """Aggregated score of a solution with no steps yet: [R]."""
    start = {"last": 0.0, "min": jnp.inf, "product": 1.0}[scorer.aggregate]
    return jnp.full((R,), start, jnp.float32)


def aggregate_update(agg: jax.Array, step_score: jax.Array, stepped: jax.Array,
                     scorer: StepScorer) -> jax.Array:
    """Folds this step's score into rows that produced a step (``stepped`` [R] bool)."""
    if scorer.aggregate == "last":
        new = step_score
    elif scorer.aggregate == "min":
        new = jnp.minimum(agg, step_score)
    else:
        new = agg * step_score
    return jnp.where(stepped, new, agg)


def aggregate_scores(step_scores_RM: jax.Array, n_steps_R: jax.Array,
                     aggregate: str) -> jax.Array:
    """Aggregates the first ``n_steps`` entries of each row: [R] (NaN for zero steps)."""
    M = step_scores_RM.shape[-1]
    valid = jnp.arange(M)[None, :] < n_steps_R[:, None]
    if aggregate == "last":
        last = jnp.take_along_axis(step_scores_RM, jnp.maximum(n_steps_R - 1, 0)[:, None], 1)
        out = last[:, 0]
    elif aggregate == "min":
        out = jnp.min(jnp.where(valid, step_scores_RM, jnp.inf), axis=-1)
    elif aggregate == "product":
        out = jnp.prod(jnp.where(valid, step_scores_RM, 1.0), axis=-1)
    else:
        raise SearchError(f"aggregate must be one of {AGGREGATIONS}, got {aggregate!r}")
    return jnp.where(n_steps_R > 0, out, jnp.nan)


def _feed(model: Transformer, params, cache: KVCache, tokens_RT, mask_RT, next_pos_R,
          select_R):
    positions = next_pos_R[:, None] + jnp.cumsum(mask_RT, axis=-1) - mask_RT
    return model.apply({"params": params}, tokens_RT, positions=positions.astype(jnp.int32),
                       attention_mask=mask_RT, cache=cache, select=select_R[:, None])


def read_template(scorer: StepScorer, model: Transformer, params, cache: KVCache,
                  next_pos_R: jax.Array, read_R: jax.Array):
    """Feeds ``scorer.template`` after each row's context (``cache`` of R rows, the next
    RoPE position ``next_pos_R`` [R]) and reads :func:`token_prob` at its last token.
    Rows with ``read_R`` [R] False read nothing (mask 0): their context is unchanged and
    their probability is meaningless. The cache needs ``len(template)`` free slots.

    Returns (probabilities [R] float32, the cache with the template appended); callers
    that score on a throw-away copy drop the cache."""
    R, Tt = read_R.shape[0], len(scorer.template)
    template_RT = jnp.broadcast_to(jnp.asarray(scorer.template, jnp.int32), (R, Tt))
    mask_RT = jnp.broadcast_to(read_R[:, None], (R, Tt)).astype(jnp.int32)
    out = _feed(model, params, cache, template_RT, mask_RT, next_pos_R, jnp.full((R,), Tt - 1))
    return token_prob(out.logits[:, 0], scorer), out.cache


def init_scorer(scorer: StepScorer, model_config: ModelConfig, params, prompt_tokens,
                prompt_mask, cache_len: int, compute: Compute):
    """The scorer's state for B prompts (expanded with the policy's rows by the caller).
    ``model_config`` / ``params``: the scorer model, or the policy when it scores itself."""
    B = prompt_tokens.shape[0]
    if cache_len == 0:
        return ScorerState(cache=None, next_pos=jnp.zeros((B,), jnp.int32)), compute
    state = prefill(Transformer(model_config), params, prompt_tokens, prompt_mask, cache_len)
    compute = compute.add(tokens_scored=jnp.sum(prompt_mask), forward_passes=1)
    return ScorerState(cache=state.cache, next_pos=state.next_pos), compute


def score_step(scorer: StepScorer, model_config: ModelConfig, params, dstate: DecodeState,
               sstate: ScorerState, chunk: Chunk, compute: Compute):
    """Scores the step each row just generated (``chunk``); rows with length 0 produced no
    step and get a score the caller ignores. ``model_config`` / ``params``: the scorer
    model, or the policy when it scores itself; ``sstate.cache`` is None when scoring reads
    the policy's own context (``dstate``).

    Returns (scores [R], new scorer state, compute)."""
    stepped = chunk.lengths > 0
    model = Transformer(model_config)
    own = sstate.cache is not None
    value = dstate.value
    if own:
        # The scorer's own context reads the new step.
        T = chunk.tokens.shape[1]
        mask = (jnp.arange(T)[None, :] < chunk.lengths[:, None]).astype(jnp.int32)
        out = _feed(model, params, sstate.cache, chunk.tokens, mask, sstate.next_pos,
                    jnp.maximum(chunk.lengths - 1, 0))
        value = out.values[:, 0]
        sstate = ScorerState(cache=out.cache, next_pos=sstate.next_pos + chunk.lengths)
        compute = compute.add(tokens_scored=jnp.sum(chunk.lengths), forward_passes=1)
    if scorer.kind == "value":
        return transform_value(value, scorer), sstate, compute

    cache, next_pos = (sstate.cache, sstate.next_pos) if own else (dstate.cache,
                                                                   dstate.next_pos)
    # Rows that produced no step read nothing, so their context is unchanged.
    probs, cache = read_template(scorer, model, params, cache, next_pos, stepped)
    compute = compute.add(tokens_scored=jnp.sum(stepped) * len(scorer.template),
                          forward_passes=1)
    if scorer.keep_template:
        sstate = ScorerState(cache=cache, next_pos=next_pos + stepped * len(scorer.template))
    return probs, sstate, compute
