"""Run a search method over problems: text in, judged answers and compute out.

:func:`run_method` is what the ``reasonjax search`` command and the recipes call. It
encodes each problem's prompt (``task.prompt`` -> ``formatting.prompt_batch``: bos +
prompt, left-padded to one length for the whole run so every batch reuses one compile),
runs the method batch by batch, decodes every candidate, extracts and verifies answers
with the problem's task, and returns one JSON-able record per problem.

Methods (``METHODS``):

- ``greedy``: one argmax completion (``sampler.sample``, temperature 0);
- ``sample``: ``n`` samples; the answer is the first, ``any_correct`` is coverage@n;
- ``best_of_n``: ``n`` samples, the best by step score (or log-prob, ``select_by``);
- ``majority`` / ``prm_vote``: ``n`` samples, vote over normalised answers, unweighted /
  weighted by the solution score (``scorer``, non-negative: sigmoid or token_prob);
- ``beam`` / ``dvts``: step-level beam search / DVTS with ``n`` rows and ``beam_width``;
- ``particles``: particle filtering with ``n`` particles;
- ``mcts``: MCTS on mctx, ``num_actions`` candidate steps per node and
  ``num_simulations`` per move; node values from the value head through
  ``scorer.transform``.

Steps end at the task's ``step_delimiter``; a completion ends at the tokenizer's EOS.

Compute: methods count what a whole batch spent (:class:`~reasonjax.search.compute.Compute`).
A record's ``compute`` holds its share of its batch's token counts (the batch total
divided by the batch's rows, padding rows included, since they ran too) and the batch's
``forward_passes`` (sequential model calls, not divisible). :func:`summarize` adds the
shares up.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from reasonjax import parallel
from reasonjax.data import answers
from reasonjax.data.formatting import encode_prompt, prompt_batch
from reasonjax.data.task import Problem, Task, get_task
from reasonjax.models.config import ModelConfig
from reasonjax.models.tokenizer import Tokenizer
from reasonjax.search.beam import BeamConfig, beam_search, dvts
from reasonjax.search.best_of_n import BestOfNConfig, best_of_n
from reasonjax.search.mcts import MCTSConfig, mcts
from reasonjax.search.particles import ParticleConfig, particle_filter
from reasonjax.search.sampler import (STOP_EOS, SamplingConfig, SearchError, check_positive, sample,
                                      stop_tokens_for)
from reasonjax.search.scoring import StepScorer
from reasonjax.search.voting import answer_ids, vote, vote_weights

METHODS = ("greedy", "sample", "best_of_n", "majority", "prm_vote", "beam", "dvts",
           "particles", "mcts")
TOKEN_FIELDS = ("tokens_generated", "tokens_prefilled", "tokens_scored")


@dataclasses.dataclass(frozen=True)
class MethodConfig:
    """Budget and settings of :func:`run_method` (each method reads the fields it needs).

    n: candidates / samples / particles / beam rows per problem (greedy: ignored, 1).
    beam_width: M for beam / dvts (must divide n).
    max_steps, step_tokens: steps per solution and tokens per step; greedy / sample
      generate ``max_new_tokens`` (default ``max_steps * step_tokens``) in one go.
    sampling: token sampling (greedy forces temperature 0).
    scorer: step scoring and aggregation; MCTS uses ``scorer.transform`` on node values.
    select_by: best_of_n's pick (score / logprob / mean_logprob).
    particle_temperature, resampling: particle filtering's weights and scheme.
    num_actions, num_simulations, mcts_policy: MCTS.
    batch_size: problems per call (the last batch is padded by repeating its last
      problem, so one compile serves all batches).
    prompt_len: prompt tokens per row (None: the longest prompt of the run).
    """

    n: int = 4
    beam_width: int = 2
    max_steps: int = 8
    step_tokens: int = 32
    max_new_tokens: Optional[int] = None
    sampling: SamplingConfig = SamplingConfig()
    scorer: StepScorer = StepScorer()
    select_by: str = "score"
    particle_temperature: float = 1.0
    resampling: str = "multinomial"
    num_actions: int = 4
    num_simulations: int = 8
    mcts_policy: str = "muzero"
    batch_size: int = 8
    prompt_len: Optional[int] = None

    def __post_init__(self):
        check_positive(self.batch_size, "batch_size")
        if self.max_new_tokens is not None:
            check_positive(self.max_new_tokens, "max_new_tokens")
        if self.prompt_len is not None:
            check_positive(self.prompt_len, "prompt_len")


def method_config(method: str, cfg: MethodConfig, pad_id: int = 0):
    """The method's own config built (and validated) from ``cfg``: n=0, a beam width not
    dividing n, unknown policies... raise SearchError here, before any compile."""
    if method not in METHODS:
        raise SearchError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    step = dict(n=cfg.n, max_steps=cfg.max_steps, step_tokens=cfg.step_tokens,
                sampling=cfg.sampling, scorer=cfg.scorer, pad_id=pad_id)
    if method == "greedy":
        return dataclasses.replace(cfg, n=1, sampling=SamplingConfig(temperature=0.0))
    if method == "sample":
        check_positive(cfg.n, "n")
        return cfg
    if method == "best_of_n":
        return BestOfNConfig(**step, select_by=cfg.select_by)
    if method == "prm_vote" and cfg.scorer.kind == "value" and \
            cfg.scorer.transform != "sigmoid":
        raise SearchError("prm_vote weights votes by solution scores, which must be >= 0: "
                          "use scorer transform 'sigmoid' or a token_prob scorer")
    if method in ("majority", "prm_vote"):
        return BestOfNConfig(**step)
    if method in ("beam", "dvts"):
        return BeamConfig(**step, beam_width=cfg.beam_width)
    if method == "particles":
        return ParticleConfig(**step, temperature=cfg.particle_temperature,
                              resampling=cfg.resampling)
    return MCTSConfig(num_actions=cfg.num_actions, num_simulations=cfg.num_simulations,
                      max_steps=cfg.max_steps, step_tokens=cfg.step_tokens,
                      sampling=cfg.sampling, policy=cfg.mcts_policy,
                      value_transform=cfg.scorer.transform, pad_id=pad_id)


def _host(x) -> np.ndarray:
    return np.asarray(jax.device_get(x))


def _run_batch(method: str, mcfg, config: ModelConfig, params, tokens, mask, rng, stop,
               scorer_config, scorer_params):
    """One batch: (candidate tokens [B, N, L], lengths [B, N], scores [B, N], finished
    [B, N], valid [B, N], chosen [B], Compute, the SearchResult or None) on the host."""
    B = tokens.shape[0]
    if method in ("greedy", "sample"):
        out = sample(config, params, tokens, mask, rng,
                     max_new_tokens=mcfg.max_new_tokens or mcfg.max_steps * mcfg.step_tokens,
                     n=mcfg.n, sampling=mcfg.sampling, stop=stop)
        lengths = _host(out.lengths)
        mean_logprob = _host(out.logprobs).sum(-1) / np.maximum(lengths, 1)
        return (_host(out.tokens), lengths, mean_logprob, _host(out.stop_reason) == STOP_EOS,
                np.ones(lengths.shape, bool), np.zeros(B, np.int64), out.compute, None)
    if method == "mcts":
        out = mcts(config, params, tokens, mask, rng, mcfg, stop)
        return (_host(out.path)[:, None], _host(out.length)[:, None],
                _host(out.value)[:, None], _host(out.finished)[:, None],
                np.ones((B, 1), bool), np.zeros(B, np.int64), out.compute, None)
    fn = {"beam": beam_search, "dvts": dvts, "particles": particle_filter}.get(method,
                                                                             best_of_n)
    out = fn(config, params, tokens, mask, rng, mcfg, stop, scorer_config, scorer_params)
    return (_host(out.tokens), _host(out.lengths), _host(out.scores), _host(out.finished),
            _host(out.valid), _host(out.chosen), out.compute, out)


def _verify(task: Task, problem: Problem, text: str) -> Optional[bool]:
    try:
        return bool(task.verify(problem, text))
    except NotImplementedError:
        return None


def _vote_key(answer: Optional[str]) -> Optional[str]:
    return None if answer is None else answers.normalize(answer)


def run_method(method: str, config: ModelConfig, params, tokenizer: Tokenizer,
               problems: Sequence[Problem], cfg: MethodConfig, rng: jax.Array, *,
               task: Optional[Task] = None, scorer_config: Optional[ModelConfig] = None,
               scorer_params=None, mesh=None,
               progress: Optional[Callable[[int], None]] = None) -> list[dict]:
    """Runs ``method`` (one of ``METHODS``) over ``problems``; one record per problem.

    ``task``: judges every problem (default: ``get_task(problem.task)`` per problem).
    ``scorer_config`` / ``scorer_params``: a separate PRM for step scores (default: the
    policy's value head). ``mesh``: shard each batch's rows over the data axes (params
    should already be placed on it; ``batch_size`` must divide over the data axes).
    ``progress(k)`` is called after each batch with the number of problems it finished.

    A record: index, task, question, reference (the known answer), method, answer (the
    chosen candidate's extracted answer; for votes the winning answer), correct (None when
    the task cannot judge), completion, score, any_correct (some valid candidate is
    correct), candidates [{completion, answer, score, finished, correct}], compute (see
    the module docstring), meta (the problem's).
    """
    mcfg = method_config(method, cfg, tokenizer.pad_id)
    if not problems:
        raise SearchError("no problems to search; give at least one")
    tasks = [task or get_task(p.task) for p in problems]
    stops = {t.step_delimiter for t in tasks}
    if len(stops) > 1:
        raise SearchError(f"problems use different step delimiters {sorted(stops)}; run "
                          "each task separately")
    stop = stop_tokens_for(tokenizer, config.vocab_size, delimiter=stops.pop())
    texts = [t.prompt(p) for t, p in zip(tasks, problems)]
    length = cfg.prompt_len or max(len(encode_prompt(tokenizer, s)["prompt_tokens"])
                                   for s in texts)
    batch = prompt_batch(tokenizer, texts, length)
    if mesh is not None:
        parallel.validate_batch(cfg.batch_size, mesh, "batch_size")

    records: list[dict] = []
    B = cfg.batch_size
    for start in range(0, len(problems), B):
        real = min(B, len(problems) - start)
        rows = np.minimum(np.arange(start, start + B), len(problems) - 1)
        tokens, mask = batch["prompt_tokens"][rows], batch["prompt_mask"][rows]
        if mesh is not None:
            tokens, mask = parallel.shard_batch((tokens, mask), mesh)
        with parallel.activate(mesh) if mesh is not None else contextlib.nullcontext():
            out = _run_batch(method, mcfg, config, params, jnp.asarray(tokens),
                             jnp.asarray(mask), jax.random.fold_in(rng, start), stop,
                             scorer_config, scorer_params)
        cand_tokens, lengths, scores, finished, valid, chosen, compute, result = out
        compute = compute.to_dict()
        share = {k: compute[k] / B for k in TOKEN_FIELDS}
        share["batch"] = start // B
        share["batch_forward_passes"] = compute["forward_passes"]
        for b in range(real):
            i = start + b
            problem, t = problems[i], tasks[i]
            cands = []
            for c in range(cand_tokens.shape[1]):
                if not valid[b, c]:
                    continue
                text = tokenizer.decode(cand_tokens[b, c, :lengths[b, c]].tolist())
                cands.append({"completion": text, "answer": t.extract_answer(text),
                              "score": float(scores[b, c]), "finished": bool(finished[b, c]),
                              "correct": _verify(t, problem, text), "slot": c})
            pick = next((k for k, cand in enumerate(cands) if cand["slot"] == chosen[b]), 0)
            record = {"index": i, "task": problem.task, "question": problem.question,
                      "reference": problem.answer, "method": method}
            if method in ("majority", "prm_vote"):
                record.update(_tally(method, cands, result, b, t, problem))
            else:
                best = cands[pick]
                record.update(answer=best["answer"], correct=best["correct"],
                              completion=best["completion"], score=best["score"])
            judged = [c["correct"] for c in cands if c["correct"] is not None]
            record["any_correct"] = any(judged) if judged else None
            record["candidates"] = [{k: v for k, v in c.items() if k != "slot"}
                                    for c in cands]
            record["compute"] = share
            record["meta"] = dict(problem.meta)
            records.append(record)
        if progress is not None:
            progress(real)
    return records


def _tally(method: str, cands: list[dict], result, b: int, task: Task,
           problem: Problem) -> dict:
    """The vote over one problem's candidates: the winning answer and how it is judged."""
    keys = [[_vote_key(c["answer"]) for c in cands]]
    weights = vote_weights(result, "majority" if method == "majority" else "prm")
    slots = np.asarray([c["slot"] for c in cands])
    w = _host(weights)[b][slots][None]
    winner, totals = vote(jnp.asarray(answer_ids(keys)), jnp.asarray(w))
    winner = int(winner[0])
    if winner < 0:
        return {"answer": None, "correct": False, "completion": None, "score": 0.0}
    answer = cands[winner]["answer"]
    correct = None
    try:
        correct = bool(task.answer_correct(problem, answer))
    except NotImplementedError:
        pass
    return {"answer": answer, "correct": correct, "completion": cands[winner]["completion"],
            "score": float(totals[0, winner])}


def summarize(records: Sequence[dict]) -> dict:
    """Accuracy (over problems the task could judge), coverage (any candidate correct) and
    the compute the run spent (token counts summed, forward passes summed over batches)."""
    judged = [r["correct"] for r in records if r["correct"] is not None]
    covered = [r["any_correct"] for r in records if r["any_correct"] is not None]
    out = {"problems": len(records), "judged": len(judged),
           "accuracy": sum(judged) / len(judged) if judged else None,
           "coverage": sum(covered) / len(covered) if covered else None,
           "answered": sum(r["answer"] is not None for r in records) / max(len(records), 1)}
    for k in TOKEN_FIELDS:
        out[k] = round(sum(r["compute"][k] for r in records), 3)
    batches = {r["compute"]["batch"]: r["compute"]["batch_forward_passes"] for r in records}
    out["forward_passes"] = sum(batches.values())
    return out
