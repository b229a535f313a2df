"""Particle filtering for inference-time scaling (Puri et al.).

Generation is a state-space model with the PRM as approximate likelihood. N particles
(partial solutions) per problem; each round every unfinished particle is extended by one
sampled step and scored, then N particles are resampled with probabilities
softmax(score / temperature) over the problem's particles (``score`` is the aggregated
step score, ``last`` by default as in the paper's main setting). Finished particles stay in
the population with their final score and, when resampled, are carried over unchanged
(they generate nothing more). Resampling is multinomial or systematic (lower variance).

The answer is the particle with the highest score among finished ones; the final
population (with duplicates) is returned for weighted voting.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Literal, Optional

import jax
import jax.numpy as jnp

from reasonjax.models.config import ModelConfig
from reasonjax.search.sampler import SearchError, StopTokens
from reasonjax.search.stepping import (SearchConfig, SearchResult, SearchState, check_search,
                                       run, to_result)

RESAMPLING = ("multinomial", "systematic")


@dataclasses.dataclass(frozen=True)
class ParticleConfig(SearchConfig):
    """SearchConfig plus the weight ``temperature`` (weights = softmax(score / T)) and the
    ``resampling`` scheme (multinomial / systematic)."""

    temperature: float = 1.0
    resampling: Literal["multinomial", "systematic"] = "multinomial"

    def __post_init__(self):
        super().__post_init__()
        if not self.temperature > 0:
            raise SearchError(f"temperature must be > 0, got {self.temperature}")
        if self.resampling not in RESAMPLING:
            raise SearchError(f"resampling must be one of {RESAMPLING}, got "
                              f"{self.resampling!r}")


def resample(rng: jax.Array, logits_BN: jax.Array, method: str) -> jax.Array:
    """N ancestor indices per problem drawn with probabilities softmax(logits): [B, N]."""
    B, N = logits_BN.shape
    if method == "multinomial":
        return jax.random.categorical(rng, logits_BN[:, None, :], axis=-1,
                                      shape=(B, N)).astype(jnp.int32)
    if method == "systematic":
        # One uniform offset per problem, then N evenly spaced points through the CDF.
        cdf = jnp.cumsum(jax.nn.softmax(logits_BN, axis=-1), axis=-1)
        u = (jax.random.uniform(rng, (B, 1)) + jnp.arange(N)[None, :]) / N
        idx = jax.vmap(lambda c, x: jnp.searchsorted(c, x, side="right"))(cdf, u * cdf[:, -1:])
        return jnp.minimum(idx, N - 1).astype(jnp.int32)
    raise SearchError(f"resampling must be one of {RESAMPLING}, got {method!r}")


def select_particles(rng: jax.Array, state: SearchState, n: int, temperature: float,
                     method: str):
    """Resamples each problem's n particles by their weights. Returns (rows, alive)."""
    p = state.paths
    R = p.score.shape[0]
    logits = jnp.where(p.alive, p.score / temperature, -jnp.inf).reshape(R // n, n)
    idx = resample(rng, logits, method)
    rows = (idx + (jnp.arange(R // n) * n)[:, None]).reshape(-1)
    return rows, p.alive[rows]


@functools.partial(jax.jit, static_argnames=("config", "cfg", "scorer_config"))
def particle_program(params, prompt_tokens, prompt_mask, rng, stop, scorer_params, *, config,
                     cfg, scorer_config):
    select = lambda key, st: select_particles(key, st, cfg.n, cfg.temperature, cfg.resampling)
    state, compute = run(config, params, prompt_tokens, prompt_mask, rng, cfg, stop,
                         scorer_config, scorer_params, select=select)
    return to_result(state, compute, prompt_tokens.shape[0])


def particle_filter(config: ModelConfig, params, prompt_tokens, prompt_mask, rng: jax.Array,
                    cfg: ParticleConfig, stop: StopTokens,
                    scorer_config: Optional[ModelConfig] = None,
                    scorer_params=None) -> SearchResult:
    """Particle filtering over B problems with N = ``cfg.n`` particles each. Returns the
    final particles, their scores, the best one and the compute spent."""
    check_search(config, cfg, prompt_tokens, prompt_mask, stop, scorer_config)
    return particle_program(params, jnp.asarray(prompt_tokens, jnp.int32),
                            jnp.asarray(prompt_mask), rng, stop, scorer_params, config=config,
                            cfg=cfg, scorer_config=scorer_config)
