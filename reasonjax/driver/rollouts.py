"""Rollouts on a task: sample completions with the search sampler, judge them with the
task's verifier, and lay them out as training rows.

- :func:`task_prompts`: a ``prompt`` batch (left-padded) for a list of problems;
- :func:`generate`: n completions per problem (one prefill per prompt, batched and jitted
  by :func:`reasonjax.search.sampler.sample`), their text, rewards and a ``rollout``-style
  sequence quadruple (prompt + completion, right-padded, ``loss_mask`` 1 on the sampled
  tokens including the EOS);
- :func:`generate_in_chunks`: :func:`generate` over many problems, a fixed number per call;
- :func:`greedy_accuracy`: the fraction of problems whose greedy completion verifies.

Rewards follow ReFT (Luong et al., 2024): 1 for a correct final answer, ``partial`` for an
extractable but wrong answer (the paper uses 0.1), 0 when no answer can be read.
Rows of a group (the n samples of one problem) are consecutive: row ``i * n + j`` is
sample j of problem i, the layout :mod:`reasonjax.train.rl` expects.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator, Optional, Sequence

import jax
import numpy as np
from jax.sharding import Mesh

from reasonjax import parallel
from reasonjax.data import formatting
from reasonjax.data.task import Problem, Task
from reasonjax.models.config import ModelConfig
from reasonjax.models.tokenizer import Tokenizer
from reasonjax.search import sampler
from reasonjax.search.sampler import STOP_EOS, SamplingConfig


@dataclasses.dataclass(frozen=True)
class Rollouts:
    """n completions of each of B problems, flattened to R = B * n rows (groups
    consecutive). Host (numpy) arrays.

    batch:       the quadruple ``tokens``, ``positions``, ``segment_ids``, ``loss_mask``
                 [R, P + max_new_tokens]: each row is the prompt's real tokens then the
                 completion, right-padded.
    completions: R completion texts (EOS removed).
    rewards:     [R] float32 outcome rewards.
    correct:     [R] bool the final answer verifies.
    lengths:     [R] int32 completion tokens (EOS included).
    """

    batch: dict
    completions: list
    rewards: np.ndarray
    correct: np.ndarray
    lengths: np.ndarray


def prompt_length(tok: Tokenizer, task: Task, problems: Sequence[Problem]) -> int:
    """Tokens of the longest prompt (bos included)."""
    return max(len(formatting.encode_prompt(tok, task.prompt(p))["prompt_tokens"])
               for p in problems)


def task_prompts(tok: Tokenizer, task: Task, problems: Sequence[Problem], length: int) -> dict:
    """``prompt`` batch [B, length] of the task's prompts (error if one is longer)."""
    return formatting.prompt_batch(tok, [task.prompt(p) for p in problems], length)


def outcome_rewards(task: Task, problems: Sequence[Problem], completions: Sequence[str],
                    partial: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(rewards [R] float32, correct [R] bool) for completions of ``problems`` (same
    length; repeat each problem n times for n samples)."""
    correct = np.asarray([task.verify(p, c) for p, c in zip(problems, completions)], bool)
    readable = np.asarray([task.extract_answer(c) is not None for c in completions], bool)
    rewards = np.where(correct, 1.0, np.where(readable, partial, 0.0)).astype(np.float32)
    return rewards, correct


def completion_texts(tok: Tokenizer, tokens_RT: np.ndarray, lengths_R: np.ndarray,
                     stop_reason_R: np.ndarray) -> list[str]:
    """Decoded completions without their EOS."""
    out = []
    for toks, n, reason in zip(tokens_RT, lengths_R, stop_reason_R):
        n = int(n) - (1 if reason == STOP_EOS else 0)
        out.append(tok.decode([int(t) for t in toks[:n]]))
    return out


def sequence_rows(prompt_tokens_BP: np.ndarray, prompt_mask_BP: np.ndarray,
                  completion_tokens_RT: np.ndarray, lengths_R: np.ndarray, n: int,
                  pad_id: int = 0) -> dict:
    """The quadruple [R, P + T] of prompt b // n (real tokens only) + completion r."""
    B, P = prompt_tokens_BP.shape
    R, T = completion_tokens_RT.shape
    if R != B * n:
        raise ValueError(f"{R} completions for {B} prompts x n={n}; expected {B * n}")
    L = P + T
    tokens = np.full((R, L), pad_id, np.int32)
    positions = np.zeros((R, L), np.int32)
    segment_ids = np.zeros((R, L), np.int32)
    loss_mask = np.zeros((R, L), np.float32)
    for r in range(R):
        prompt = prompt_tokens_BP[r // n][prompt_mask_BP[r // n] > 0]
        m, c = len(prompt), int(lengths_R[r])
        tokens[r, :m] = prompt
        tokens[r, m:m + c] = completion_tokens_RT[r, :c]
        positions[r, :m + c] = np.arange(m + c)
        segment_ids[r, :m + c] = 1
        loss_mask[r, m:m + c] = 1.0
    return {"tokens": tokens, "positions": positions, "segment_ids": segment_ids,
            "loss_mask": loss_mask}


def generate(model_config: ModelConfig, params, tok: Tokenizer, task: Task,
             problems: Sequence[Problem], rng: jax.Array, *, n: int, max_new_tokens: int,
             sampling: SamplingConfig = SamplingConfig(), prompt_len: Optional[int] = None,
             partial_reward: float = 0.0, mesh: Optional[Mesh] = None, rules=None
             ) -> Rollouts:
    """n sampled completions per problem, judged by ``task`` (see :class:`Rollouts`).

    prompt_len: fixed prompt padding (keeps shapes, hence compiles, the same across
    calls); default: the longest prompt. With ``mesh``, ``params`` should be sharded on
    it and the B prompts are split over the data axes (B must divide)."""
    prompt_len = prompt_len or prompt_length(tok, task, problems)
    prompts = task_prompts(tok, task, problems, prompt_len)
    stop = sampler.stop_tokens_for(tok, model_config.vocab_size)
    kwargs = dict(max_new_tokens=max_new_tokens, n=n, sampling=sampling, stop=stop,
                  pad_id=tok.pad_id)
    if mesh is None:
        out = sampler.sample(model_config, params, prompts["prompt_tokens"],
                             prompts["prompt_mask"], rng, **kwargs)
    else:
        placed = parallel.shard_batch(prompts, mesh)
        with parallel.activate(mesh, rules):
            out = sampler.sample(model_config, params, placed["prompt_tokens"],
                                 placed["prompt_mask"], rng, **kwargs)
    out = jax.device_get(out)
    R = len(problems) * n
    tokens = np.asarray(out.tokens).reshape(R, max_new_tokens)
    lengths = np.asarray(out.lengths).reshape(R)
    texts = completion_texts(tok, tokens, lengths, np.asarray(out.stop_reason).reshape(R))
    rewards, correct = outcome_rewards(task, [p for p in problems for _ in range(n)], texts,
                                       partial_reward)
    batch = sequence_rows(prompts["prompt_tokens"], prompts["prompt_mask"], tokens, lengths,
                          n, tok.pad_id)
    return Rollouts(batch=batch, completions=texts, rewards=rewards, correct=correct,
                    lengths=lengths)


def generate_in_chunks(model_config: ModelConfig, params, tok: Tokenizer, task: Task,
                       problems: Sequence[Problem], rng: jax.Array, *, batch_size: int,
                       **kwargs) -> Iterator[tuple[int, Rollouts]]:
    """:func:`generate` (``kwargs``: its keyword arguments) over ``problems``,
    ``batch_size`` per call, chunk ``start`` drawing with ``fold_in(rng, start)``. The last
    chunk is filled up with repeats of its last problem, so every call has one shape (one
    compile, divisible by the mesh's data axes). Yields (real problems in the chunk, its
    Rollouts); rows from ``real * n`` on are the filling."""
    for start in range(0, len(problems), batch_size):
        chunk = list(problems[start:start + batch_size])
        real = len(chunk)
        chunk += [chunk[-1]] * (batch_size - real)
        yield real, generate(model_config, params, tok, task, chunk,
                             jax.random.fold_in(rng, start), **kwargs)


def greedy_accuracy(model_config: ModelConfig, params, tok: Tokenizer, task: Task,
                    problems: Sequence[Problem], *, max_new_tokens: int,
                    batch_size: int = 64, prompt_len: Optional[int] = None,
                    mesh: Optional[Mesh] = None) -> float:
    """Fraction of ``problems`` whose greedy (temperature 0) completion verifies.

    Problems run in batches of ``batch_size`` (the last one padded by repeating problems,
    so every call has one shape); with ``mesh`` the batch size must divide its data axes."""
    if not problems:
        raise ValueError("greedy_accuracy: no problems")
    prompt_len = prompt_len or prompt_length(tok, task, problems)
    chunks = generate_in_chunks(model_config, params, tok, task, problems, jax.random.key(0),
                                batch_size=batch_size, n=1, max_new_tokens=max_new_tokens,
                                sampling=SamplingConfig(temperature=0.0),
                                prompt_len=prompt_len, mesh=mesh)
    return sum(int(out.correct[:real].sum()) for real, out in chunks) / len(problems)


def preference_pairs(task: Task, problems: Sequence[Problem], ro: Rollouts, n: int
                     ) -> tuple[list[str], list[str], list[str]]:
    """(prompts, chosen, rejected) from n samples per problem: each problem's correct
    samples paired in order with its incorrect ones (as many pairs as the smaller count);
    problems with all samples right or all wrong give none."""
    prompts, chosen, rejected = [], [], []
    for i, p in enumerate(problems):
        rows = range(i * n, (i + 1) * n)
        good = [ro.completions[r] for r in rows if ro.correct[r]]
        bad = [ro.completions[r] for r in rows if not ro.correct[r]]
        for c, r in zip(good, bad):
            prompts.append(task.prompt(p))
            chosen.append(c)
            rejected.append(r)
    return prompts, chosen, rejected


def process_labels(task: Task, problem: Problem, completion: str
                   ) -> tuple[list[str], list[float], bool]:
    """(steps, one target per step, complete) for a completion: the exact prefix-correct
    labels where the task checks steps, else the outcome for every step (OVM)."""
    steps = task.split_steps(completion) or [completion]
    if task.exact_steps:
        check = task.check_steps(problem, steps)
        return steps, [float(c) for c in check.prefix_correct], check.complete
    outcome = float(task.verify(problem, completion))
    return steps, [outcome] * len(steps), task.extract_answer(completion) is not None
