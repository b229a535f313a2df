"""Run any search method, or plain sampling, over problems in fixed-shape batches.

The method is picked by the type of its config (the library's own frozen dataclasses):

- :class:`~reasonjax.search.sampler.SampleConfig`: ``n`` whole completions per problem
  (temperature 0: greedy); a candidate's score is its mean token log-prob;
- :class:`~reasonjax.search.best_of_n.BestOfNConfig`: best-of-N by step score or log-prob;
  :class:`~reasonjax.search.voting.VotingConfig`: the same samples, answered by a vote;
- :class:`~reasonjax.search.beam.BeamConfig` / :class:`~reasonjax.search.beam.DVTSConfig`:
  step-level beam search / DVTS;
- :class:`~reasonjax.search.particles.ParticleConfig`: particle filtering;
- :class:`~reasonjax.search.mcts.MCTSConfig`: MCTS on mctx (with ``terminal_reward:
  verifier``, terminal nodes are judged by the env's task through
  :class:`~reasonjax.driver.env.TaskVerifier`).

A separate scorer model (``scorer``) serves the methods that rank by step scores (step
searches, best-of-N by score, PRM-weighted votes, best-of-N and votes that prune early,
MCTS with ``MCTSConfig.scorer``); the others refuse it (:func:`scorer_unused`) rather
than ignore it.

:func:`run_batches` encodes every prompt once, cuts the rows into batches of
``batch_size`` (the last one filled with repeats of a real prompt), places each batch on
the env's mesh, runs the method and yields a :class:`Batch` with the raw output and the
candidates as host arrays. Batch ``start`` draws with ``fold_in(rng, start)``.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Iterator, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from reasonjax import parallel
from reasonjax.data.task import Problem
from reasonjax.driver.env import Env
from reasonjax.driver.prompts import Prompts, batch_rows, encode_prompts
from reasonjax.search.beam import BeamConfig, DVTSConfig, beam_program, beam_search, dvts
from reasonjax.search.best_of_n import BestOfNConfig, best_of_n, best_of_n_program
from reasonjax.search.mcts import (MCTSConfig, mcts, move_program, placement_platform,
                                   root_program, with_rows_per_pass)
from reasonjax.search.particles import ParticleConfig, particle_filter, particle_program
from reasonjax.search.sampler import (STOP_EOS, SampleConfig, SearchError, StopTokens, sample,
                                      sample_program)
from reasonjax.search.voting import VotingConfig

Method = Union[SampleConfig, BestOfNConfig, BeamConfig, ParticleConfig, MCTSConfig]
# A separate scorer model (PRM) for step scores: (model config, params).
Scorer = tuple


@dataclasses.dataclass(frozen=True)
class Candidates:
    """A batch's candidates on the host (B rows, N candidates, L tokens).

    tokens [B, N, L] int32 (read up to ``lengths``); lengths [B, N]; n_steps [B, N] steps
    of each candidate (a plain sample, never split into steps, is one); logprobs [B, N]
    summed token log-probs; scores [B, N] (the method's: step score, node value, or mean
    log-prob for plain samples); finished [B, N] ended with EOS; valid [B, N] a real
    candidate (searches may empty slots); chosen [B] the method's pick."""

    tokens: np.ndarray
    lengths: np.ndarray
    n_steps: np.ndarray
    logprobs: np.ndarray
    scores: np.ndarray
    finished: np.ndarray
    valid: np.ndarray
    chosen: np.ndarray


@dataclasses.dataclass
class Batch:
    """One call of a method: problems ``rows`` [B] of the run (the last real row repeated
    after ``real``), their prompts, the method's raw ``output`` (SampleOutput,
    SearchResult or MCTSResult, device arrays), its candidates and compute (a dict of
    the whole batch's counts, filler rows included: they ran too)."""

    start: int
    rows: np.ndarray
    real: int
    prompts: Prompts
    output: Any
    candidates: Candidates
    compute: dict


def _host(x) -> np.ndarray:
    return parallel.to_host(x)


def _sample_candidates(out) -> Candidates:
    lengths = _host(out.lengths)
    logprobs = _host(out.logprobs).sum(-1)
    return Candidates(tokens=_host(out.tokens), lengths=lengths,
                      n_steps=(lengths > 0).astype(np.int32), logprobs=logprobs,
                      scores=logprobs / np.maximum(lengths, 1),
                      finished=_host(out.stop_reason) == STOP_EOS,
                      valid=np.ones(lengths.shape, bool),
                      chosen=np.zeros(lengths.shape[0], np.int64))


def _search_candidates(out) -> Candidates:
    return Candidates(tokens=_host(out.tokens), lengths=_host(out.lengths),
                      n_steps=_host(out.n_steps), logprobs=_host(out.logprobs).sum(-1),
                      scores=_host(out.scores),
                      finished=_host(out.finished), valid=_host(out.valid),
                      chosen=_host(out.chosen))


def _mcts_candidates(out) -> Candidates:
    B = out.length.shape[0]
    return Candidates(tokens=_host(out.path)[:, None], lengths=_host(out.length)[:, None],
                      n_steps=_host(out.n_steps)[:, None],
                      logprobs=np.zeros((B, 1), np.float32),
                      scores=_host(out.value)[:, None], finished=_host(out.finished)[:, None],
                      valid=np.ones((B, 1), bool), chosen=np.zeros(B, np.int64))


def _concat_samples(outs):
    """SampleOutputs of several chunks of one batch -> one (samples concatenated per
    prompt; compute summed; the prompt value is the first call's)."""
    cat = lambda name: jnp.concatenate([getattr(o, name) for o in outs], axis=1)
    compute = outs[0].compute
    for o in outs[1:]:
        compute = compute + o.compute
    return outs[0].replace(tokens=cat("tokens"), logprobs=cat("logprobs"),
                           values=cat("values"), lengths=cat("lengths"),
                           stop_reason=cat("stop_reason"), compute=compute)


def scorer_unused(method: Method) -> Optional[str]:
    """Why ``method`` would ignore a separate scorer model's step scores (None: it uses
    them): a one-line reason for the caller's error."""
    if isinstance(method, SampleConfig):
        return "plain sampling (greedy / sample) scores no steps"
    if isinstance(method, BestOfNConfig) and method.prune_after is not None:
        return None  # early pruning ranks the samples by step score
    if isinstance(method, VotingConfig):
        return None if method.weighting == "prm" else \
            f"a {method.weighting} vote does not weigh candidates by step scores"
    if isinstance(method, BestOfNConfig) and method.select_by != "score":
        return f"best-of-N picks by {method.select_by}, not by step scores"
    if isinstance(method, MCTSConfig) and method.scorer is None:
        return "MCTSConfig.scorer is None (set it, kind 'value' or 'token_prob', to mix " \
               "the scorer into node values)"
    return None


STEP_SEARCHES = ((DVTSConfig, dvts), (BeamConfig, beam_search),
                 (ParticleConfig, particle_filter), (BestOfNConfig, best_of_n))


def call(env: Env, params, method: Method, tokens, mask, rng: jax.Array,
         scorer: Optional[Scorer] = None, problem_ids=None):
    """The method on one prompt batch [B, P] (already placed): (raw output, Candidates).
    ``scorer``: (model config, params) of a separate scorer model; a method that would
    ignore it raises SearchError."""
    why = scorer_unused(method) if scorer is not None else None
    if why is not None:
        raise SearchError(f"a separate scorer model is given but {why}; drop the scorer")
    scorer_config, scorer_params = scorer or (None, None)
    if isinstance(method, SampleConfig):
        outs = [sample(env.model_config, params, tokens, mask,
                       rng if method.per_call == method.n else jax.random.fold_in(rng, c),
                       max_new_tokens=method.max_new_tokens, n=method.per_call,
                       sampling=method.sampling, stop=env.stop, pad_id=env.tokenizer.pad_id,
                       decode_chunks=method.decode_chunks)
                for c in range(method.n // method.per_call)]
        out = outs[0] if len(outs) == 1 else _concat_samples(outs)
        return out, _sample_candidates(out)
    if isinstance(method, MCTSConfig):
        verify = method.terminal_reward == "verifier"
        out = mcts(env.model_config, params, tokens, mask, rng, method, env.stop,
                   scorer_config, scorer_params, verifier=env.verifier if verify else None,
                   problem_ids=problem_ids if verify else None)
        return out, _mcts_candidates(out)
    for kind, fn in STEP_SEARCHES:
        if isinstance(method, kind):
            out = fn(env.model_config, params, tokens, mask, rng, method, env.stop,
                     scorer_config, scorer_params)
            return out, _search_candidates(out)
    raise SearchError(f"no search method takes a {type(method).__name__}; give one of "
                      + ", ".join(t.__name__ for t in Method.__args__))


def lower(config, params, method: Method, tokens, mask, rng, stop: StopTokens, *,
          pad_id: int = 0, scorer_config=None, scorer_params=None,
          verifier=None) -> dict[str, jax.stages.Lowered]:
    """The jitted programs :func:`call` runs for ``method``, lowered on (possibly abstract:
    ``jax.ShapeDtypeStruct`` with shardings) params, prompts [B, P], rng and stop tables,
    for ahead-of-time compilation (:mod:`reasonjax.recipes.plan`): {name: Lowered}. MCTS lowers
    its root expansion and one move (a search runs the move program once per step)."""
    if isinstance(method, SampleConfig):
        return {"sample": sample_program.lower(
            params, tokens, mask, rng, stop, config=config, sampling=method.sampling,
            n=method.per_call, max_new_tokens=method.max_new_tokens, stop_at_delimiter=False,
            pad_id=pad_id, decode_chunks=method.decode_chunks)}
    if isinstance(method, MCTSConfig):
        mesh = getattr(getattr(mask, "sharding", None), "mesh", None)

        def rows(x):  # a per-row array, split like the prompts (a scalar: replicated)
            split = mesh is not None and x.ndim > 0
            sharding = parallel.batch_sharding(mesh, x.ndim) if split else None
            return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)

        verifier = verifier if method.terminal_reward == "verifier" else None
        method = with_rows_per_pass(method, tokens.shape[0], placement_platform(mask))
        args = (params, tokens, mask, rows(jax.ShapeDtypeStruct(tokens.shape[:1], jnp.int32)))
        statics = dict(config=config, cfg=method, verifier=verifier,
                       scorer_config=scorer_config)
        root = root_program.lower(*args, rng, stop, scorer_params, **statics)
        prompt_state, node, _ = jax.eval_shape(lambda *a: root_program(*a, **statics), *args,
                                               rng, stop, scorer_params)
        prompt_state, node = jax.tree.map(rows, (prompt_state, node))
        return {"mcts root": root,
                "mcts move": move_program.lower(params, prompt_state, *args[1:], node, rng,
                                                stop, scorer_params, **statics)}
    programs = ((DVTSConfig, beam_program, {"dvts": True}),
                (BeamConfig, beam_program, {"dvts": False}),
                (ParticleConfig, particle_program, {}), (BestOfNConfig, best_of_n_program, {}))
    for kind, program, extra in programs:
        if isinstance(method, kind):
            name = type(method).__name__.removesuffix("Config").lower()
            return {name: program.lower(params, tokens, mask, rng, stop, scorer_params,
                                        config=config, cfg=method,
                                        scorer_config=scorer_config, **extra)}
    raise SearchError(f"no search method takes a {type(method).__name__}; give one of "
                      + ", ".join(t.__name__ for t in Method.__args__))


def run_batches(env: Env, params, problems: Sequence[Problem], method: Method,
                rng: jax.Array, *, batch_size: int, scorer: Optional[Scorer] = None,
                texts: Optional[Sequence[str]] = None) -> Iterator[Batch]:
    """``method`` over ``problems``, ``batch_size`` rows a call (see the module docstring).
    ``params`` should already be on ``env.mesh`` (the train step and ``parallel.
    shard_params`` place them); ``batch_size`` must divide over its data axes.
    ``texts``: prompt texts to use instead of the problems' prompts (same count)."""
    if not problems:
        raise SearchError("no problems to run; give at least one")
    if texts is not None and len(texts) != len(problems):
        raise ValueError(f"{len(texts)} prompt texts for {len(problems)} problems")
    if env.mesh is not None:
        parallel.validate_batch(batch_size, env.mesh, what="batch_size")
    prompts = encode_prompts(env, problems, texts)
    verify = isinstance(method, MCTSConfig) and method.terminal_reward == "verifier"
    ids = env.verifier.register(problems) if verify else None
    for start, rows in batch_rows(len(problems), batch_size):
        batch = prompts.rows(rows)
        tokens, mask = batch.tokens, batch.mask
        if env.mesh is not None:  # each process feeds its share of the rows
            tokens, mask = parallel.shard_batch(
                (parallel.local_rows(tokens, "batch_size"), parallel.local_rows(mask)),
                env.mesh)
        with parallel.activate(env.mesh) if env.mesh is not None else \
                contextlib.nullcontext():
            out, cands = call(env, params, method, jnp.asarray(tokens), jnp.asarray(mask),
                              jax.random.fold_in(rng, start), scorer,
                              None if ids is None else ids[rows])
        yield Batch(start=start, rows=rows, real=min(batch_size, len(problems) - start),
                    prompts=batch, output=out, candidates=cands,
                    compute=out.compute.to_dict())
