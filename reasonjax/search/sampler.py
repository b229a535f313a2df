"""Batched, jit-compiled sampling with an explicit KV cache.

The pieces every search method shares:

- :func:`prefill` runs the prompts once and returns a :class:`DecodeState` (cache, the
  next-token logits, the value head at the last token, step-delimiter state, positions);
- :func:`expand` repeats each prompt's state n times (``take_rows`` on the cache), so n
  samples or N beams share one prefill;
- :func:`generate` is the decode loop (``lax.while_loop``): every row samples a token, feeds
  it, and stops at EOS, at the step delimiter (when asked) or at the token budget. Rows
  that stopped are fed as empty cache slots (``attention_mask=0``) so the batch advances in
  lockstep and nothing is recomputed. One call generates one step for step-level searches
  or a whole completion for :func:`sample`.

Step delimiters come as tables (:class:`StopTokens`) built from
``reasonjax.models.tokenizer.delimiter_automaton``, so ``"\\n\\n"`` is detected exactly even
when it is part of a larger BPE token or split across tokens.

Log-probs are those of the model's own distribution (log-softmax of the raw logits), not
of the temperature / top-k / top-p filtered sampling distribution nor of the CyclicReflex
bias (:class:`CyclicReflex`): they are what scoring, perplexity-weighted voting and
preference losses need.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Optional, Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from reasonjax.config import check_fields
from reasonjax.errors import ConfigError
from reasonjax.models.config import ModelConfig
from reasonjax.models.tokenizer import DelimiterAutomaton, Tokenizer, delimiter_automaton
from reasonjax.models.transformer import (KVCache, Transformer, grow_cache, init_cache,
                                          take_rows, unstack_layers)
from reasonjax.search.compute import Compute

# `sample` decodes in at most this many chunks of at least MIN_DECODE_CHUNK tokens, growing
# the KV cache before each (see `generate`). On the 2-core CPU (tiny-3m, 128 tokens) 4
# chunks decode 1.2-1.5x faster than a whole-budget cache, for a few seconds more compile
# (one loop body per chunk); short budgets (tests, single steps) stay in one chunk.
DECODE_CHUNKS = 4
MIN_DECODE_CHUNK = 16

# Stop reasons, per row and call.
STOP_NONE = 0       # still running (only inside the loop)
STOP_EOS = 1        # emitted an end-of-sequence token
STOP_DELIMITER = 2  # completed the step delimiter
STOP_LENGTH = 3     # reached the token budget of the call
STOP_DONE = 4       # had already finished (EOS) before the call: generated nothing
STOP_NAMES = {STOP_NONE: "none", STOP_EOS: "eos", STOP_DELIMITER: "delimiter",
              STOP_LENGTH: "length", STOP_DONE: "done"}


class SearchError(ValueError):
    """Bad search input; the message names the argument and the fix."""


@dataclasses.dataclass(frozen=True)
class CyclicReflex:
    """Cyclical reflection-token scheduling (Fan et al., 2025, "CyclicReflex: Improving
    Large Reasoning Models via Cyclical Reflection Token Scheduling", arXiv 2506.11077).

    Before a token is drawn, ``amplitude * tri(position / period)`` is added to the logit
    of every id in ``token_ids`` ("wait", "but", "alternatively"...), where ``position``
    is the number of tokens the row has generated so far (0 for the first) and ``tri`` is
    the unit triangular wave of period 1 that starts at 0 and rises first: tri(0) = 0,
    tri(1/4) = 1, tri(1/2) = 0, tri(3/4) = -1, tri(1) = 0, linear in between. Reflection
    is thus encouraged and discouraged in turn, which is the paper's bidirectional,
    position-dependent schedule (its code counts positions from the first generated token
    as well; its optional phase shift, position windows and stop at ``</think>`` are not
    modelled here). Off when ``amplitude`` is 0 (the default): nothing is traced then.
    The paper's settings for 7B distilled R1 models are amplitudes 2.5-6.5 and periods
    600-2000 tokens."""

    token_ids: tuple[int, ...] = ()
    amplitude: float = 0.0
    period: float = 600.0

    def __post_init__(self):
        check_fields(self, amplitude=">= 0", period="> 0")
        ids = list(self.token_ids)
        if any(isinstance(i, bool) or not isinstance(i, (int, np.integer)) or i < 0
               for i in ids):
            raise ConfigError(f"token_ids: must be non-negative token ids, got {ids}")
        if len(set(ids)) != len(ids):
            raise ConfigError(f"token_ids: {ids} lists an id twice; give each id once")
        object.__setattr__(self, "token_ids", tuple(int(i) for i in ids))  # hashable: jit key
        if self.amplitude > 0 and not ids:
            raise ConfigError("token_ids: amplitude > 0 needs the reflection token ids; "
                              "give them or set amplitude to 0")

    @property
    def active(self) -> bool:
        return self.amplitude > 0


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """Token sampling. ``temperature=0`` is greedy; 0 / 1.0 / 0.0 switch top-k / top-p /
    min-p off. Filters apply in HF's order: temperature, top-k, top-p, min-p, after the
    ``reflection`` bias (:class:`CyclicReflex`, off by default)."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    reflection: CyclicReflex = CyclicReflex()

    def __post_init__(self):
        problems = []
        if self.temperature < 0:
            problems.append(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            problems.append(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if not 0 < self.top_p <= 1:
            problems.append(f"top_p must be in (0, 1] (1 = off), got {self.top_p}")
        if not 0 <= self.min_p < 1:
            problems.append(f"min_p must be in [0, 1) (0 = off), got {self.min_p}")
        if problems:
            raise SearchError("SamplingConfig: " + "; ".join(problems))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclasses.dataclass(frozen=True)
class SampleConfig:
    """Whole completions: ``n`` per prompt, at most ``max_new_tokens`` each, drawn with
    ``sampling`` (temperature 0: greedy). ``chunk``: samples per prompt per compiled call
    (0 = all ``n`` in one call, sharing one prefill); a smaller chunk bounds the rows a
    call holds (repeated sampling at 10,000 per problem), the calls drawing with
    ``fold_in(rng, chunk index)``. ``decode_chunks``: see :func:`sample` (1: the whole
    budget's cache up front; the tokens do not depend on it)."""

    n: int = 1
    max_new_tokens: int = 64
    sampling: SamplingConfig = SamplingConfig()
    chunk: int = 0
    decode_chunks: int = DECODE_CHUNKS

    def __post_init__(self):
        check_positive(self.n, "n")
        check_positive(self.max_new_tokens, "max_new_tokens")
        check_positive(self.decode_chunks, "decode_chunks")
        if self.chunk < 0 or (self.chunk and self.n % self.chunk):
            raise SearchError(f"chunk={self.chunk} must be 0 or divide n={self.n}")

    @property
    def per_call(self) -> int:
        """Samples per prompt in one compiled call."""
        return self.chunk or self.n


@flax.struct.dataclass
class StopTokens:
    """When a row stops.

    eos_ids:    [E] int32 end-of-sequence ids (E >= 1; -1 entries match nothing).
    next_state: [D, V] int32 delimiter automaton: partial-match state after each token.
    completes:  [D, V] bool whether the token completes the delimiter in that state.
    """

    eos_ids: jax.Array
    next_state: jax.Array
    completes: jax.Array


def stop_tokens(vocab_size: int, eos_ids: Sequence[int] = (),
                delimiter: Optional[DelimiterAutomaton] = None,
                delimiter_ids: Sequence[int] = ()) -> StopTokens:
    """Stop tables for a model with ``vocab_size`` logits.

    ``delimiter``: an automaton from ``delimiter_automaton(tok, "\\n\\n")`` (its tokenizer
    may have fewer ids than the model: the extra ids never complete it). ``delimiter_ids``:
    alternatively, token ids that each end a step (a step tag token)."""
    if delimiter is not None and len(delimiter_ids):
        raise SearchError("give either a delimiter automaton or delimiter_ids, not both")
    for i in list(eos_ids) + list(delimiter_ids):
        if not 0 <= int(i) < vocab_size:
            raise SearchError(f"token id {i} is outside the model's vocabulary "
                              f"[0, {vocab_size})")
    if delimiter is not None:
        D, V = delimiter.next_state.shape
        if V > vocab_size:
            raise SearchError(f"the delimiter automaton covers {V} token ids but the model "
                              f"has only {vocab_size}; use the model's tokenizer")
        next_state = np.zeros((D, vocab_size), np.int32)
        completes = np.zeros((D, vocab_size), bool)
        next_state[:, :V] = delimiter.next_state
        completes[:, :V] = delimiter.completes
    else:
        next_state = np.zeros((1, vocab_size), np.int32)
        completes = np.zeros((1, vocab_size), bool)
        completes[0, np.asarray(list(delimiter_ids), np.int64)] = True
    eos = np.asarray(list(eos_ids) or [-1], np.int32)
    return StopTokens(jnp.asarray(eos), jnp.asarray(next_state), jnp.asarray(completes))


def stop_tokens_for(tok: Tokenizer, vocab_size: int, delimiter: Optional[str] = None,
                    extra_eos: Sequence[int] = ()) -> StopTokens:
    """Stop tables from a tokenizer: its EOS (plus ``extra_eos``) and an optional step
    delimiter string."""
    auto = delimiter_automaton(tok, delimiter) if delimiter else None
    return stop_tokens(vocab_size, [tok.eos_id, *extra_eos], delimiter=auto)


@flax.struct.dataclass
class DecodeState:
    """Rows being decoded (R = batch rows).

    cache:       KVCache of R rows holding every token fed so far.
    logits:      [R, V] float32 next-token logits after the last fed token.
    value:       [R] float32 value head at the last fed token (raw).
    delim_state: [R] int32 partial match of the step delimiter.
    done:        [R] bool the row emitted EOS; it generates nothing more.
    next_pos:    [R] int32 RoPE position of the next token.
    n_tokens:    [R] int32 tokens generated so far (all calls).
    """

    cache: KVCache
    logits: jax.Array
    value: jax.Array
    delim_state: jax.Array
    done: jax.Array
    next_pos: jax.Array
    n_tokens: jax.Array


@flax.struct.dataclass
class Chunk:
    """The tokens one :func:`generate` call generated (T = its token budget).

    tokens:      [R, T] int32, ``pad_id`` after each row's length.
    logprobs:    [R, T] float32 model log-prob of each token (0 after the length).
    values:      [R, T] float32 value head after each token (0 after the length).
    lengths:     [R] int32 tokens generated by each row.
    stop_reason: [R] int32 one of the STOP_* codes.
    """

    tokens: jax.Array
    logprobs: jax.Array
    values: jax.Array
    lengths: jax.Array
    stop_reason: jax.Array


def take(tree, rows: jax.Array):
    """Row ``i`` of the result is row ``rows[i]`` of ``tree`` (any search state: caches
    are gathered with ``take_rows``, other arrays along their first axis)."""
    def gather(x):
        if isinstance(x, KVCache):
            return take_rows(x, rows)
        return x[rows] if jnp.ndim(x) else x
    return jax.tree.map(gather, tree, is_leaf=lambda x: isinstance(x, KVCache))


def num_rows(tree) -> int:
    """Leading (row) size of a search state."""
    return next(x.shape[0] for x in jax.tree.leaves(tree) if jnp.ndim(x))


def check_prompts(config: ModelConfig, prompt_tokens, prompt_mask, budget: int,
                  budget_of: str) -> None:
    """Host-side validation of a prompt batch before any compile; ``budget_of`` names the
    settings the token budget comes from (the error says which to lower)."""
    shape = np.shape(prompt_tokens)
    if len(shape) != 2:
        raise SearchError(f"prompt_tokens must be [B, P], got shape {shape}")
    if np.shape(prompt_mask) != shape:
        raise SearchError(f"prompt_mask has shape {np.shape(prompt_mask)}, but prompt_tokens "
                          f"has {shape}; they must match")
    if shape[0] == 0 or shape[1] == 0:
        raise SearchError(f"prompt_tokens {shape} is empty; give at least one prompt token")
    if budget < 1:
        raise SearchError(f"the token budget must be >= 1, got {budget}")
    total = shape[1] + budget
    if total > config.max_seq_len:
        raise SearchError(
            f"prompt length {shape[1]} + token budget {budget} = {total} exceeds the model's "
            f"max_seq_len {config.max_seq_len}; shorten the prompts or lower {budget_of}")
    if not isinstance(prompt_mask, jax.core.Tracer):
        if isinstance(prompt_mask, jax.Array) and not prompt_mask.is_fully_addressable:
            # a multi-host batch: this process checks the rows it holds
            mask = np.concatenate([np.asarray(s.data) for s in prompt_mask.addressable_shards])
        else:
            mask = np.asarray(prompt_mask)
        empty = np.flatnonzero(mask.sum(-1) == 0)
        if len(empty):
            raise SearchError(f"prompt rows {empty.tolist()[:5]} have no tokens "
                              "(prompt_mask all 0)")


def check_step_prompts(config: ModelConfig, prompt_tokens, prompt_mask, max_steps: int,
                       step_tokens: int, template: int = 0) -> None:
    """:func:`check_prompts` for a step search: a budget of ``max_steps x step_tokens``
    tokens, plus a ``template`` the policy reads after the steps (self-evaluation)."""
    check_prompts(config, prompt_tokens, prompt_mask, max_steps * step_tokens + template,
                  f"max_steps x step_tokens ({max_steps} x {step_tokens})")


def check_sampling(config: ModelConfig, sampling: SamplingConfig) -> None:
    """Host-side check that the reflection token ids are in the model's vocabulary."""
    bad = [i for i in sampling.reflection.token_ids if i >= config.vocab_size]
    if bad:
        raise SearchError(f"reflection token ids {bad} are outside the model's vocabulary "
                          f"[0, {config.vocab_size}); use ids of the model's tokenizer")


def check_positive(n: int, what: str = "n") -> None:
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise SearchError(f"{what} must be a positive integer, got {n!r}")


def prefill(model: Transformer, params, tokens_BP: jax.Array, mask_BP: jax.Array,
            cache_len: int, prefix: Optional[DecodeState] = None) -> DecodeState:
    """Runs the prompts (any padding; ``mask_BP`` 1 = real token) into a fresh cache of
    ``cache_len`` slots. ``params`` may be stacked or ``unstack_layers``-ed.

    With ``prefix`` (a state of the same B rows, e.g. the prompts' own prefill) the tokens
    continue it instead: they take the RoPE positions after the prefix's tokens and the
    slots after its cache's, which grows to ``cache_len`` slots in all; a row with no
    tokens keeps the prefix's logits and value. Same result as prefilling prefix + tokens
    in one call, without recomputing the prefix."""
    B, P = tokens_BP.shape
    mask_BP = mask_BP.astype(bool)
    start = 0 if prefix is None else prefix.next_pos[:, None]
    positions = (start + jnp.maximum(jnp.cumsum(mask_BP, axis=-1) - 1, 0)).astype(jnp.int32)
    last = (P - 1 - jnp.argmax(mask_BP[:, ::-1], axis=-1)).astype(jnp.int32)
    cache = (init_cache(model.config, B, cache_len) if prefix is None
             else grow_cache(prefix.cache, cache_len - prefix.cache.max_len))
    out = model.apply({"params": params}, tokens_BP, positions=positions,
                      attention_mask=mask_BP, cache=cache, select=last[:, None])
    fed = jnp.sum(mask_BP, axis=-1).astype(jnp.int32)
    logits, value = out.logits[:, 0], out.values[:, 0]
    if prefix is not None:
        logits = jnp.where(fed[:, None] > 0, logits, prefix.logits)
        value = jnp.where(fed > 0, value, prefix.value)
    return DecodeState(
        cache=out.cache, logits=logits, value=value,
        delim_state=jnp.zeros((B,), jnp.int32), done=jnp.zeros((B,), bool),
        next_pos=fed if prefix is None else prefix.next_pos + fed,
        n_tokens=jnp.zeros((B,), jnp.int32))


def expand(tree, n: int):
    """Repeats every row n times (row b*n + i is a copy of row b)."""
    return take(tree, jnp.repeat(jnp.arange(num_rows(tree)), n))


def filter_logits(logits_RV: jax.Array, sampling: SamplingConfig) -> jax.Array:
    """Temperature-scaled logits with -inf outside the top-k / top-p / min-p sets."""
    x = logits_RV / sampling.temperature
    neg = jnp.asarray(-jnp.inf, x.dtype)
    if sampling.top_k and sampling.top_k < x.shape[-1]:
        kth = lax.top_k(x, sampling.top_k)[0][:, -1:]
        x = jnp.where(x >= kth, x, neg)
    if sampling.top_p < 1.0:
        probs = jax.nn.softmax(x, axis=-1)
        sorted_desc = -jnp.sort(-probs, axis=-1)
        # Keep the smallest prefix whose mass reaches top_p: a token is kept when the mass
        # strictly before it is still below top_p.
        keep = (jnp.cumsum(sorted_desc, axis=-1) - sorted_desc) < sampling.top_p
        threshold = jnp.min(jnp.where(keep, sorted_desc, jnp.inf), axis=-1, keepdims=True)
        x = jnp.where(probs >= threshold, x, neg)
    if sampling.min_p > 0.0:
        probs = jax.nn.softmax(x, axis=-1)
        x = jnp.where(probs >= sampling.min_p * jnp.max(probs, -1, keepdims=True), x, neg)
    return x


def reflection_bias(position_R: jax.Array, reflection: CyclicReflex) -> jax.Array:
    """[R] float32 the CyclicReflex bias at decode positions ``position_R`` [R] (tokens
    each row generated before this one): amplitude * tri(position / period)."""
    phase = position_R.astype(jnp.float32) / reflection.period
    # 4 * phase + 1 wrapped to [0, 4): 1 at the cycle start, |. - 2| makes the triangle.
    tri = 1.0 - jnp.abs(jnp.mod(4.0 * phase + 1.0, 4.0) - 2.0)
    return reflection.amplitude * tri


def reflect_logits(logits_RV: jax.Array, position_R: jax.Array,
                   reflection: CyclicReflex) -> jax.Array:
    """``logits_RV`` [R, V] with :func:`reflection_bias` added to the reflection tokens'
    columns."""
    ids = jnp.asarray(reflection.token_ids, jnp.int32)
    bias_R = reflection_bias(position_R, reflection).astype(logits_RV.dtype)
    return logits_RV.at[:, ids].add(bias_R[:, None])


def is_row_keys(rng: jax.Array) -> bool:
    """Whether ``rng`` is a [R] array of typed keys, one per row."""
    return jnp.issubdtype(rng.dtype, jax.dtypes.prng_key) and rng.ndim == 1


def fold_in(rng: jax.Array, data) -> jax.Array:
    """``jax.random.fold_in`` of one key or of each of [R] row keys."""
    if is_row_keys(rng):
        return jax.vmap(jax.random.fold_in, in_axes=(0, None))(rng, data)
    return jax.random.fold_in(rng, data)


def sample_tokens(logits_RV: jax.Array, rng: jax.Array, sampling: SamplingConfig,
                  position_R: Optional[jax.Array] = None):
    """One token per row: argmax when greedy, else inverse-CDF sampling of the filtered
    distribution with one uniform number per row (cheaper than Gumbel noise over V).
    With ``sampling.reflection`` on, the reflection tokens' logits are first biased for
    decode positions ``position_R`` [R]. Returns (tokens [R] int32, model log-probs [R]
    of the unbiased logits). ``rng``: one key, or [R] keys, one per row (a row's token
    then depends on its own key only, not on which rows share its batch)."""
    x = logits_RV
    if sampling.reflection.active:
        x = reflect_logits(x, position_R, sampling.reflection)
    if sampling.greedy:
        tokens = jnp.argmax(x, axis=-1).astype(jnp.int32)
    else:
        probs = jax.nn.softmax(filter_logits(x, sampling), axis=-1)
        cdf = jnp.cumsum(probs, axis=-1)
        if is_row_keys(rng):
            u = jax.vmap(lambda key: jax.random.uniform(key, (), jnp.float32))(rng)
        else:
            u = jax.random.uniform(rng, logits_RV.shape[:1], jnp.float32)
        # First index whose cdf exceeds u * total: never a zero-probability token.
        target = u[:, None] * cdf[:, -1:]
        tokens = jnp.minimum(jnp.sum(cdf <= target, axis=-1), logits_RV.shape[-1] - 1)
        tokens = tokens.astype(jnp.int32)
    logp = jax.nn.log_softmax(logits_RV, axis=-1)
    return tokens, jnp.take_along_axis(logp, tokens[:, None], axis=-1)[:, 0]


def generate(model: Transformer, params, state: DecodeState, rng: jax.Array,
           sampling: SamplingConfig, stop: StopTokens, max_tokens: int,
           stop_at_delimiter: bool, pad_id: int = 0,
           grow_by: int = 0) -> tuple[DecodeState, Chunk, jax.Array]:
    """Generates up to ``max_tokens`` tokens per row (one step when ``stop_at_delimiter``).

    Every iteration feeds one token for all rows; rows that stopped feed an empty slot. The
    loop ends when every row stopped. Returns (new state, the chunk, number of batched
    forward passes). ``params`` should be ``unstack_layers``-ed (done once by the caller).
    ``rng``: one key, or [R] keys, one per row (see :func:`sample_tokens`).

    ``grow_by`` 0: the cache must hold ``max_tokens`` free slots already. ``grow_by`` > 0:
    the tokens are decoded in chunks of that many, and before each chunk the cache grows
    by the chunk (:func:`grow_cache`), so each step's attention reads the slots filled so
    far plus at most one chunk instead of the whole budget (a cache given full, e.g. by a
    prompt-sized :func:`prefill`). The tokens are the same either way; the program holds
    one loop body per chunk.
    """
    R = state.done.shape[0]
    T = max_tokens
    active0 = ~state.done
    reason0 = jnp.where(active0, STOP_NONE, STOP_DONE).astype(jnp.int32)
    tokens0 = jnp.full((R, T), pad_id, jnp.int32)
    zeros = jnp.zeros((R, T), jnp.float32)

    def running_until(end):
        def cond(carry):
            t, _, _, _, _, _, reason = carry
            return (t < end) & jnp.any(reason == STOP_NONE)
        return cond

    def body(carry):
        t, st, toks, logps, vals, lengths, reason = carry
        active = reason == STOP_NONE
        tok, logp = sample_tokens(st.logits, fold_in(rng, t), sampling,
                                  st.n_tokens)
        tok = jnp.where(active, tok, pad_id)
        out = model.apply({"params": params}, tok[:, None], positions=st.next_pos[:, None],
                          attention_mask=active[:, None], cache=st.cache)
        is_eos = jnp.any(tok[:, None] == stop.eos_ids[None, :], axis=-1)
        completes = stop.completes[st.delim_state, tok]
        delim_state = jnp.where(active, stop.next_state[st.delim_state, tok], st.delim_state)
        new_reason = jnp.where(is_eos, STOP_EOS, jnp.where(
            completes & stop_at_delimiter, STOP_DELIMITER,
            jnp.where(t + 1 >= T, STOP_LENGTH, STOP_NONE)))
        reason = jnp.where(active, new_reason, reason)
        value = out.values[:, 0]
        st = DecodeState(
            cache=out.cache,
            logits=jnp.where(active[:, None], out.logits[:, 0], st.logits),
            value=jnp.where(active, value, st.value),
            delim_state=delim_state,
            done=st.done | (active & is_eos),
            next_pos=st.next_pos + active,
            n_tokens=st.n_tokens + active)
        toks = lax.dynamic_update_slice(toks, tok[:, None], (0, t))
        logps = lax.dynamic_update_slice(logps, jnp.where(active, logp, 0.0)[:, None], (0, t))
        vals = lax.dynamic_update_slice(vals, jnp.where(active, value, 0.0)[:, None], (0, t))
        return t + 1, st, toks, logps, vals, lengths + active, reason

    carry = (jnp.zeros((), jnp.int32), state, tokens0, zeros, zeros,
             jnp.zeros((R,), jnp.int32), reason0)
    chunk_len = grow_by if grow_by > 0 else T
    for start in range(0, T, chunk_len):
        end = min(start + chunk_len, T)
        if grow_by > 0:
            t, st, *rest = carry
            carry = (t, st.replace(cache=grow_cache(st.cache, end - start)), *rest)
        carry = lax.while_loop(running_until(end), body, carry)
    n_iter, state, toks, logps, vals, lengths, reason = carry
    chunk = Chunk(tokens=toks, logprobs=logps, values=vals, lengths=lengths,
                  stop_reason=reason)
    return state, chunk, n_iter


@flax.struct.dataclass
class SampleOutput:
    """n samples per prompt.

    tokens:       [B, n, T] int32 completions (``pad_id`` after each length).
    logprobs:     [B, n, T] float32 model log-prob of each token.
    values:       [B, n, T] float32 value head after each token (raw).
    lengths:      [B, n] int32.
    stop_reason:  [B, n] int32 STOP_* codes (eos, delimiter or length).
    prompt_value: [B] float32 value head at the last prompt token.
    compute:      Compute.
    """

    tokens: jax.Array
    logprobs: jax.Array
    values: jax.Array
    lengths: jax.Array
    stop_reason: jax.Array
    prompt_value: jax.Array
    compute: Compute


@functools.partial(jax.jit, static_argnames=("config", "sampling", "n", "max_new_tokens",
                                             "stop_at_delimiter", "pad_id", "decode_chunks"))
def sample_program(params, prompt_tokens, prompt_mask, rng, stop, *, config, sampling, n,
                   max_new_tokens, stop_at_delimiter, pad_id, decode_chunks=DECODE_CHUNKS):
    model = Transformer(config)
    params = unstack_layers(params)
    B, P = prompt_tokens.shape
    grow_by = max(-(-max_new_tokens // decode_chunks), MIN_DECODE_CHUNK)
    grow_by = grow_by if decode_chunks > 1 and grow_by < max_new_tokens else 0
    state = prefill(model, params, prompt_tokens, prompt_mask,
                    P if grow_by else P + max_new_tokens)
    prompt_value = state.value
    state = expand(state, n)
    state, chunk, n_iter = generate(model, params, state, rng, sampling, stop, max_new_tokens,
                                    stop_at_delimiter, pad_id, grow_by=grow_by)
    compute = Compute.zero().add(tokens_generated=jnp.sum(chunk.lengths),
                                 tokens_prefilled=jnp.sum(prompt_mask),
                                 forward_passes=1 + n_iter)
    T = max_new_tokens
    return SampleOutput(
        tokens=chunk.tokens.reshape(B, n, T), logprobs=chunk.logprobs.reshape(B, n, T),
        values=chunk.values.reshape(B, n, T), lengths=chunk.lengths.reshape(B, n),
        stop_reason=chunk.stop_reason.reshape(B, n), prompt_value=prompt_value,
        compute=compute)


def sample(config: ModelConfig, params, prompt_tokens, prompt_mask, rng: jax.Array, *,
           max_new_tokens: int, n: int = 1, sampling: SamplingConfig = SamplingConfig(),
           stop: Optional[StopTokens] = None, stop_at_delimiter: bool = False,
           pad_id: int = 0, decode_chunks: int = DECODE_CHUNKS) -> SampleOutput:
    """n samples for each of B prompts from one prefill.

    prompt_tokens / prompt_mask: [B, P] (any padding side; mask 1 = real token). Rows stop
    at an EOS of ``stop``, at its step delimiter when ``stop_at_delimiter``, or after
    ``max_new_tokens``. ``decode_chunks``: the cache starts prompt-sized and grows before
    each of at most this many equal chunks of the budget, none shorter than
    ``MIN_DECODE_CHUNK`` tokens (see :func:`generate`), so attention reads roughly the
    filled slots; 1 allocates the whole budget up front. Same tokens either way; each
    chunk is one more loop body to compile. For a sharded run, pass sharded params and
    prompts (``shard_batch``) inside ``parallel.activate(mesh)``: the B * n rows stay
    split over the data axes.
    """
    check_prompts(config, prompt_tokens, prompt_mask, max_new_tokens,
                  f"max_new_tokens ({max_new_tokens})")
    check_sampling(config, sampling)
    check_positive(n)
    check_positive(decode_chunks, "decode_chunks")
    if stop is None:
        stop = stop_tokens(config.vocab_size)
    if stop.completes.shape[-1] != config.vocab_size:
        raise SearchError(f"stop tables cover {stop.completes.shape[-1]} ids, the model has "
                          f"{config.vocab_size}; build them with stop_tokens(config.vocab_size)")
    return sample_program(params, jnp.asarray(prompt_tokens, jnp.int32),
                          jnp.asarray(prompt_mask), rng, stop, config=config,
                          sampling=sampling, n=int(n), max_new_tokens=int(max_new_tokens),
                          stop_at_delimiter=stop_at_delimiter, pad_id=int(pad_id),
                          decode_chunks=int(decode_chunks))
