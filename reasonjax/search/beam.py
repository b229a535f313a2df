"""Step-level beam search and DVTS: one grouped-beam selection.

Step-level beam search (Snell et al.): N candidates per step; keep the top N/M by the step
score (value head / PRM), expand each M ways by sampling its next step. AlphaMath's step
beam search (SBS) is the same thing with B1 = N/M beams and B2 = M samples per beam.

DVTS (diverse verifier tree search): split the N rows into N/M independent subtrees of M
rows; each keeps its single best candidate and expands it M ways. Subtrees never exchange
rows, so they explore independently.

Both are :func:`select_groups` with G groups of C = N/G rows, keeping k = C/M per group:
beam search is G = 1, k = N/M; DVTS is G = N/M, k = 1.

Lookahead search (Snell et al., 2024, "Scaling LLM Test-Time Compute Optimally can be More
Effective than Scaling Model Parameters", Sec. 5) is beam search (or DVTS) with
``lookahead`` = k > 0: each candidate step is scored by the PRM at the end of a greedy
k-step rollout from it, and the rollout is discarded (``stepping.look_ahead``); the rollout
tokens count as generated, so equal-compute comparisons stay honest.

Finished candidates (EOS) compete for the k places by score like the others; a kept
finished candidate occupies one row unchanged, and the remaining rows of its group are
shared (round-robin) by the kept unfinished ones. When every kept candidate of a group has
finished, its other rows are emptied (``valid`` False) and the group stops generating. So a
DVTS subtree ends with one answer, as in the public reproductions.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from reasonjax.models.config import ModelConfig
from reasonjax.search.sampler import SearchError, StopTokens, check_positive
from reasonjax.search.stepping import (SearchConfig, SearchResult, SearchState, check_search,
                                       run, to_result)


@dataclasses.dataclass(frozen=True)
class BeamConfig(SearchConfig):
    """SearchConfig plus ``beam_width`` M: each kept candidate is expanded M ways (N/M
    beams for beam search, N/M subtrees for DVTS). M must divide n. ``lookahead`` k:
    score each step after a greedy rollout of k more steps (Snell et al.'s lookahead
    search; 0 = plain beam search, < max_steps)."""

    beam_width: int = 4
    lookahead: int = 0

    def __post_init__(self):
        super().__post_init__()
        check_positive(self.beam_width, "beam_width")
        k = self.lookahead
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or \
                not 0 <= k < self.max_steps:
            raise SearchError(f"lookahead must be an integer in [0, max_steps={self.max_steps}) "
                              f"(a rollout never passes max_steps steps), got "
                              f"{self.lookahead!r}")
        if self.n % self.beam_width:
            raise SearchError(f"beam_width {self.beam_width} does not divide n {self.n}; "
                              f"pick n a multiple of beam_width (e.g. n="
                              f"{self.n - self.n % self.beam_width or self.beam_width})")


@dataclasses.dataclass(frozen=True)
class DVTSConfig(BeamConfig):
    """BeamConfig for DVTS: n / beam_width independent subtrees of beam_width rows."""


def select_groups(state: SearchState, group_size: int, keep: int, max_steps: int):
    """Grouped beam selection over R rows in consecutive groups of ``group_size`` rows.

    In each group the ``keep`` valid candidates with the best aggregated score are kept;
    kept finished ones get one row each (first), kept unfinished ones share the remaining
    rows round-robin (M rows each when none has finished). Returns (rows [R]: the parent of
    each new row, alive [R])."""
    p = state.paths
    C = group_size
    G = p.score.shape[0] // C
    alive = p.alive.reshape(G, C)
    finished = state.finished(max_steps).reshape(G, C)
    key = jnp.where(alive, jnp.nan_to_num(p.score.reshape(G, C), nan=-jnp.inf), -jnp.inf)
    _, sel = lax.top_k(key, keep)                                     # [G, k]
    sel_alive = jnp.take_along_axis(alive, sel, 1)
    sel_fin = jnp.take_along_axis(finished, sel, 1) & sel_alive
    sel_unf = ~jnp.take_along_axis(finished, sel, 1) & sel_alive
    # Kept finished candidates first, then kept unfinished ones (stable within each).
    fin_list = jnp.take_along_axis(sel, jnp.argsort(~sel_fin, axis=1, stable=True), 1)
    unf_list = jnp.take_along_axis(sel, jnp.argsort(~sel_unf, axis=1, stable=True), 1)
    n_fin = jnp.sum(sel_fin, axis=1, keepdims=True)
    n_unf = jnp.sum(sel_unf, axis=1, keepdims=True)
    slot = jnp.arange(C)[None, :]
    fin_parent = jnp.take_along_axis(fin_list, jnp.minimum(slot, keep - 1), 1)
    unf_parent = jnp.take_along_axis(
        unf_list, jnp.maximum(slot - n_fin, 0) % jnp.maximum(n_unf, 1), 1)
    is_fin_slot = slot < n_fin
    parent = jnp.where(is_fin_slot, fin_parent, unf_parent)
    new_alive = is_fin_slot | (n_unf > 0)
    rows = parent + (jnp.arange(G) * C)[:, None]
    return rows.reshape(-1), new_alive.reshape(-1)


@functools.partial(jax.jit, static_argnames=("config", "cfg", "scorer_config", "dvts"))
def beam_program(params, prompt_tokens, prompt_mask, rng, stop, scorer_params, *, config, cfg,
                 scorer_config, dvts):
    N, M = cfg.n, cfg.beam_width
    group_size, keep = (M, 1) if dvts else (N, N // M)
    select = lambda key, st: select_groups(st, group_size, keep, cfg.max_steps)
    state, compute = run(config, params, prompt_tokens, prompt_mask, rng, cfg, stop,
                         scorer_config, scorer_params, select=select, lookahead=cfg.lookahead)
    return to_result(state, compute, prompt_tokens.shape[0])


def beam_search(config: ModelConfig, params, prompt_tokens, prompt_mask, rng: jax.Array,
                cfg: BeamConfig, stop: StopTokens, scorer_config: Optional[ModelConfig] = None,
                scorer_params=None) -> SearchResult:
    """Step-level beam search over B problems: N = ``cfg.n`` rows, keep N/M by step score,
    expand each M = ``cfg.beam_width`` ways (lookahead search with ``cfg.lookahead`` > 0).
    Returns the final candidates (the kept beams expanded by their last step), their
    scores, the best one and the compute spent."""
    check_search(config, cfg, prompt_tokens, prompt_mask, stop, scorer_config)
    return beam_program(params, jnp.asarray(prompt_tokens, jnp.int32),
                        jnp.asarray(prompt_mask), rng, stop, scorer_params, config=config,
                        cfg=cfg, scorer_config=scorer_config, dvts=False)


def dvts(config: ModelConfig, params, prompt_tokens, prompt_mask, rng: jax.Array,
         cfg: BeamConfig, stop: StopTokens, scorer_config: Optional[ModelConfig] = None,
         scorer_params=None) -> SearchResult:
    """DVTS over B problems: N/M independent subtrees of M = ``cfg.beam_width`` rows, each
    keeping its best candidate and expanding it M ways. Candidate i belongs to subtree
    i // M; the best answer over all subtrees is chosen."""
    check_search(config, cfg, prompt_tokens, prompt_mask, stop, scorer_config)
    return beam_program(params, jnp.asarray(prompt_tokens, jnp.int32),
                        jnp.asarray(prompt_mask), rng, stop, scorer_params, config=config,
                        cfg=cfg, scorer_config=scorer_config, dvts=True)
