"""The step loop every step-level search shares.

N rows per problem grow partial solutions one step at a time. Each round:

1. (from the second round) the method's ``select`` picks which rows continue and from
   which parents: beam search keeps the best and copies them, particle filtering
   resamples, best-of-N keeps every row. The copy is a gather on the whole state, KV
   cache included (``take``), so a problem's prompt is prefilled once, not once per step;
2. every unfinished row generates one step (``sampler.decode`` up to the step delimiter,
   EOS or ``step_tokens``);
3. the step is scored (``scoring.score_step``) and appended to the row's :class:`Paths`.
   With a lookahead (beam search's ``lookahead``), the score is read instead at the end of
   a short greedy rollout from the step (:func:`look_ahead`), which is then discarded.

A method may also empty rows without moving them (``prune``, best-of-N's early pruning):
they stop generating and are no answer.

The loop stops when every live row has finished (EOS or ``max_steps`` steps). It runs as
one ``lax.while_loop`` inside the method's jit, so the decode body compiles once.

Cache budget: rows advance in lockstep, so a round uses as many cache slots as its
longest step; the cache holds ``prompt + max_steps * step_tokens`` slots.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import flax
import jax
import jax.numpy as jnp
from jax import lax

from reasonjax.models.config import ModelConfig
from reasonjax.models.transformer import Transformer, unstack_layers
from reasonjax.search.compute import Compute
from reasonjax.search.sampler import (STOP_EOS, Chunk, DecodeState, SamplingConfig,
                                      SearchError, StopTokens, check_positive, check_step_prompts,
                                      check_sampling, expand, generate, prefill, take)
from reasonjax.search.scoring import (ScorerState, StepScorer, aggregate_init, check_token_ids,
                                      aggregate_update, init_scorer, score_step)


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """Settings every step-level search shares.

    n: candidates (rows) per problem; max_steps: steps per solution; step_tokens: token
    budget of one step; sampling: how tokens are drawn; scorer: how steps are scored;
    token ids after a candidate's length are 0 (filler: read candidates up to their
    length).
    """

    n: int = 4
    max_steps: int = 8
    step_tokens: int = 64
    sampling: SamplingConfig = SamplingConfig()
    scorer: StepScorer = StepScorer()

    def __post_init__(self):
        check_positive(self.n, "n")
        check_positive(self.max_steps, "max_steps")
        check_positive(self.step_tokens, "step_tokens")


@flax.struct.dataclass
class Paths:
    """The partial solutions (R rows, L = max_steps * step_tokens, M = max_steps).

    tokens:      [R, L] int32 generated tokens, 0 after ``length``.
    logprobs:    [R, L] float32 model log-prob of each token.
    length:      [R] int32.
    step_scores: [R, M] float32 score of each step (see scoring.py).
    step_ends:   [R, M] int32 token offset where each step ends.
    n_steps:     [R] int32.
    score:       [R] float32 aggregated step scores.
    alive:       [R] bool False for slots a search emptied (never an answer).
    """

    tokens: jax.Array
    logprobs: jax.Array
    length: jax.Array
    step_scores: jax.Array
    step_ends: jax.Array
    n_steps: jax.Array
    score: jax.Array
    alive: jax.Array


@flax.struct.dataclass
class SearchState:
    """Everything a round reads and a selection gathers (all with R rows)."""

    decode: DecodeState
    scorer: ScorerState
    paths: Paths

    def finished(self, max_steps: int) -> jax.Array:
        """[R] the row generates no more steps: EOS, step limit, or emptied."""
        return self.decode.done | (self.paths.n_steps >= max_steps) | ~self.paths.alive


@flax.struct.dataclass
class SearchResult:
    """A search over B problems with N candidates each (L, M as in :class:`Paths`).

    tokens, logprobs: [B, N, L]; lengths, n_steps: [B, N]; step_scores, step_ends:
    [B, N, M]; scores: [B, N] aggregated; finished: [B, N] ended with EOS; valid: [B, N]
    a real candidate (search methods may empty slots); chosen: [B] index of the answer
    among the N; compute: what the search spent.
    """

    tokens: jax.Array
    logprobs: jax.Array
    lengths: jax.Array
    n_steps: jax.Array
    step_scores: jax.Array
    step_ends: jax.Array
    scores: jax.Array
    finished: jax.Array
    valid: jax.Array
    chosen: jax.Array
    compute: Compute

    def chosen_tokens(self) -> jax.Array:
        """[B, L] the chosen candidate of each problem."""
        return jnp.take_along_axis(self.tokens, self.chosen[:, None, None], axis=1)[:, 0]


def check_search(config: ModelConfig, cfg: SearchConfig, prompt_tokens, prompt_mask,
                 stop: StopTokens, scorer_config: Optional[ModelConfig]) -> None:
    """Host-side validation before any compile."""
    check_step_prompts(config, prompt_tokens, prompt_mask, cfg.max_steps, cfg.step_tokens,
                       cfg.scorer.template_len)
    check_sampling(config, cfg.sampling)
    if stop.completes.shape[-1] != config.vocab_size:
        raise SearchError(f"stop tables cover {stop.completes.shape[-1]} ids, the model has "
                          f"{config.vocab_size}; build them with stop_tokens(vocab_size)")
    check_token_ids(cfg.scorer, (scorer_config or config).vocab_size)
    if scorer_config is not None:
        need = cfg.scorer.cache_len(True, prompt_tokens.shape[1], cfg.max_steps,
                                    cfg.step_tokens)
        if need > scorer_config.max_seq_len:
            raise SearchError(f"the scorer model needs {need} positions (prompt + steps) but "
                              f"its max_seq_len is {scorer_config.max_seq_len}")


def init_state(config: ModelConfig, params, prompt_tokens, prompt_mask, cfg: SearchConfig,
               scorer_config: Optional[ModelConfig], scorer_params):
    """Prefills the prompts (policy and, when it has one, the scorer's own context) and
    expands them to N rows per problem. Returns (SearchState, Compute)."""
    B, P = prompt_tokens.shape
    model = Transformer(config)
    L = cfg.max_steps * cfg.step_tokens
    # A template scorer reading the policy's own context needs room for its template.
    reads_policy = not cfg.scorer.cache_len(scorer_config is not None, P, cfg.max_steps,
                                            cfg.step_tokens)
    extra = cfg.scorer.template_len if reads_policy else 0
    dstate = prefill(model, params, prompt_tokens, prompt_mask, P + L + extra)
    compute = Compute.zero().add(tokens_prefilled=jnp.sum(prompt_mask), forward_passes=1)
    separate = scorer_config is not None
    s_len = cfg.scorer.cache_len(separate, P, cfg.max_steps, cfg.step_tokens)
    sstate, compute = init_scorer(cfg.scorer, scorer_config if separate else config,
                                  scorer_params if separate else params, prompt_tokens,
                                  prompt_mask, s_len, compute)
    M = cfg.max_steps
    paths = Paths(
        tokens=jnp.zeros((B, L), jnp.int32), logprobs=jnp.zeros((B, L)),
        length=jnp.zeros((B,), jnp.int32), step_scores=jnp.zeros((B, M)),
        step_ends=jnp.zeros((B, M), jnp.int32), n_steps=jnp.zeros((B,), jnp.int32),
        score=aggregate_init(B, cfg.scorer), alive=jnp.ones((B,), bool))
    return expand(SearchState(dstate, sstate, paths), cfg.n), compute


def append_step(paths: Paths, chunk: Chunk, scores: jax.Array, scorer: StepScorer) -> Paths:
    """Appends each row's new step (rows with an empty chunk are unchanged)."""
    L = paths.tokens.shape[1]
    T = chunk.tokens.shape[1]
    M = paths.step_scores.shape[1]
    stepped = chunk.lengths > 0
    src = jnp.arange(L)[None, :] - paths.length[:, None]
    inside = (src >= 0) & (src < chunk.lengths[:, None])
    src = jnp.clip(src, 0, T - 1)
    tokens = jnp.where(inside, jnp.take_along_axis(chunk.tokens, src, 1), paths.tokens)
    logprobs = jnp.where(inside, jnp.take_along_axis(chunk.logprobs, src, 1), paths.logprobs)
    length = paths.length + chunk.lengths
    at = stepped[:, None] & (jnp.arange(M)[None, :] == paths.n_steps[:, None])
    return Paths(
        tokens=tokens, logprobs=logprobs, length=length,
        step_scores=jnp.where(at, scores[:, None], paths.step_scores),
        step_ends=jnp.where(at, length[:, None], paths.step_ends),
        n_steps=paths.n_steps + stepped,
        score=aggregate_update(paths.score, scores, stepped, scorer),
        alive=paths.alive)


def look_ahead(config: ModelConfig, params, dstate: DecodeState, sstate: ScorerState,
               scores: jax.Array, n_steps: jax.Array, stepped: jax.Array, rng: jax.Array,
               k: int, cfg: SearchConfig, stop: StopTokens,
               scorer_config: Optional[ModelConfig], scorer_params, compute: Compute):
    """Lookahead scores (Snell et al., 2024, "Scaling LLM Test-Time Compute Optimally can
    be More Effective than Scaling Model Parameters", Sec. 5).

    Every row that just produced a step (``stepped`` [R]) is rolled out up to ``k`` more
    steps greedily (temperature 0; the policy's other sampling settings, such as a
    reflection bias, kept) on copies of its policy and scorer contexts (``dstate``,
    ``sstate``: R rows after the step), each rollout step read by the scorer as a real
    step would be. The step's score becomes the scorer's score at the rollout's last
    step; the rollout is then dropped. A rollout stops at EOS and never takes a row past
    ``cfg.max_steps`` steps (``n_steps`` [R]: the row's steps, this one included; the
    caches hold no more), so rows near the limit look less far ahead; a row that rolls
    nothing keeps its own score (``scores`` [R]). Rollout tokens count as generated,
    the compute a lookahead costs. ``params`` / ``scorer_params`` ``unstack_layers``-ed.

    Returns (scores [R], compute)."""
    model = Transformer(config)
    greedy = dataclasses.replace(cfg.sampling, temperature=0.0)
    separate = scorer_config is not None

    def roll(j, carry):
        dst, sst, scores, comp = carry
        # Rollout step j + 1 takes the row to n_steps + j + 1 steps.
        dst = dst.replace(done=dst.done | ~stepped | (n_steps + j >= cfg.max_steps))
        dst, chunk, n_iter = generate(model, params, dst, rng, greedy, stop, cfg.step_tokens,
                                      True)
        comp = comp.add(tokens_generated=jnp.sum(chunk.lengths), forward_passes=n_iter)
        new, sst, comp = score_step(cfg.scorer, scorer_config if separate else config,
                                    scorer_params if separate else params, dst, sst, chunk,
                                    comp)
        return dst, sst, jnp.where(chunk.lengths > 0, new, scores), comp

    _, _, scores, compute = lax.fori_loop(0, k, roll, (dstate, sstate, scores, compute))
    return scores, compute


def grow(config: ModelConfig, params, state: SearchState, rng: jax.Array, cfg: SearchConfig,
         stop: StopTokens, scorer_config: Optional[ModelConfig], scorer_params,
         compute: Compute, lookahead: int = 0):
    """One step for every unfinished row: generate, score (at the end of a ``lookahead``-step
    greedy rollout when > 0, :func:`look_ahead`), append. ``params`` (and
    ``scorer_params``) already ``unstack_layers``-ed."""
    model = Transformer(config)
    dstate = state.decode.replace(done=state.finished(cfg.max_steps))
    dstate, chunk, n_iter = generate(model, params, dstate, rng, cfg.sampling, stop,
                                   cfg.step_tokens, True)
    # `done` marks EOS only; the step limit and emptied slots are read from the paths.
    dstate = dstate.replace(done=state.decode.done | (chunk.stop_reason == STOP_EOS))
    compute = compute.add(tokens_generated=jnp.sum(chunk.lengths), forward_passes=n_iter)
    separate = scorer_config is not None
    scores, sstate, compute = score_step(
        cfg.scorer, scorer_config if separate else config,
        scorer_params if separate else params, dstate, state.scorer, chunk, compute)
    if lookahead:
        stepped = chunk.lengths > 0
        scores, compute = look_ahead(config, params, dstate, sstate, scores,
                                     state.paths.n_steps + stepped, stepped, rng, lookahead,
                                     cfg, stop, scorer_config, scorer_params, compute)
    paths = append_step(state.paths, chunk, scores, cfg.scorer)
    return SearchState(dstate, sstate, paths), compute


SelectFn = Callable[[jax.Array, SearchState], tuple[jax.Array, jax.Array]]
PruneFn = Callable[[jax.Array, SearchState], jax.Array]


def run(config: ModelConfig, params, prompt_tokens, prompt_mask, rng: jax.Array,
        cfg: SearchConfig, stop: StopTokens, scorer_config: Optional[ModelConfig],
        scorer_params, select: Optional[SelectFn], lookahead: int = 0,
        prune: Optional[PruneFn] = None):
    """The step loop (call inside jit). ``select(rng, state) -> (rows [R], alive [R])``
    gathers the state before each round after the first (None: keep every row).
    ``lookahead``: steps of greedy rollout behind each step score (:func:`look_ahead`;
    0: none, nothing traced). ``prune(round, state) -> alive [R]`` may empty rows in place
    before each round (``round`` [] int32: rounds done), after ``select``.

    Returns (final SearchState with B * N rows, Compute)."""
    params = unstack_layers(params)
    if scorer_params is not None:
        scorer_params = unstack_layers(scorer_params)
    state, compute = init_state(config, params, prompt_tokens, prompt_mask, cfg,
                                scorer_config, scorer_params)

    def cond(carry):
        i, st, _ = carry
        return (i < cfg.max_steps) & jnp.any(~st.finished(cfg.max_steps))

    def body(carry):
        i, st, comp = carry
        key_select, key_grow = jax.random.split(jax.random.fold_in(rng, i))
        if select is not None:
            def reselect(st):
                rows, alive = select(key_select, st)
                st = take(st, rows)
                return st.replace(paths=st.paths.replace(alive=alive))
            st = lax.cond(i > 0, reselect, lambda st: st, st)
        if prune is not None:
            st = st.replace(paths=st.paths.replace(alive=prune(i, st)))
        st, comp = grow(config, params, st, key_grow, cfg, stop, scorer_config,
                        scorer_params, comp, lookahead)
        return i + 1, st, comp

    _, state, compute = lax.while_loop(cond, body, (jnp.zeros((), jnp.int32), state, compute))
    return state, compute


def choose_best(scores_BN: jax.Array, finished_BN: jax.Array, valid_BN: jax.Array):
    """[B] the highest-scoring valid candidate, preferring finished ones."""
    rank = jnp.where(valid_BN, jnp.where(finished_BN, 2.0, 1.0), 0.0)
    s = jnp.nan_to_num(scores_BN, nan=-jnp.inf)
    key = jnp.where(valid_BN, s, -jnp.inf)
    best_rank = jnp.max(rank, axis=1, keepdims=True)
    key = jnp.where(rank == best_rank, key, -jnp.inf)
    return jnp.argmax(key, axis=1).astype(jnp.int32)


def to_result(state: SearchState, compute: Compute, B: int, chosen=None) -> SearchResult:
    """Reshapes the final rows to [B, N, ...] and picks the best candidate (unless
    ``chosen`` [B] is given)."""
    p = state.paths
    N = p.length.shape[0] // B

    def bn(x):
        return x.reshape((B, N) + x.shape[1:])

    finished = bn(state.decode.done)
    valid = bn(p.alive)
    scores = bn(p.score)
    if chosen is None:
        chosen = choose_best(scores, finished, valid)
    return SearchResult(
        tokens=bn(p.tokens), logprobs=bn(p.logprobs), lengths=bn(p.length),
        n_steps=bn(p.n_steps), step_scores=bn(p.step_scores), step_ends=bn(p.step_ends),
        scores=scores, finished=finished, valid=valid, chosen=chosen, compute=compute)
