"""RL rollouts: sampled completions, judged by the task, laid out as training rows.

- :func:`collect`: ``cfg.n`` completions per problem through the driver
  (:func:`reasonjax.driver.batches.run_batches`: one prefill per prompt, batched, jitted,
  on the env's mesh), their text, rewards and a ``rollout``-style sequence quadruple
  (prompt + completion, right-padded, ``loss_mask`` 1 on the sampled tokens including the
  EOS);
- :func:`preference_pairs` / :func:`process_labels`: DPO pairs and per-step targets from
  judged samples;
- :func:`concat` / :func:`take`: rows of several draws joined, or some rows kept.

Rewards follow ReFT (Luong et al., 2024): 1 for a correct final answer, ``partial`` for an
extractable but wrong answer (the paper uses 0.1), 0 when no answer can be read.
Rows of a group (the n samples of one problem) are consecutive: row ``i * n + j`` is
sample j of problem i, the layout :mod:`reasonjax.train.rl` expects.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import numpy as np

from reasonjax.data.task import Problem, Task
from reasonjax.driver.batches import run_batches
from reasonjax.driver.env import Env
from reasonjax.driver.prompts import completion_text
from reasonjax.search.sampler import SampleConfig


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


def concat(parts: Sequence[Rollouts]) -> Rollouts:
    """The rows of ``parts`` one after another (same row width)."""
    return Rollouts(batch={k: np.concatenate([r.batch[k] for r in parts])
                           for k in parts[0].batch},
                    completions=[c for r in parts for c in r.completions],
                    rewards=np.concatenate([r.rewards for r in parts]),
                    correct=np.concatenate([r.correct for r in parts]),
                    lengths=np.concatenate([r.lengths for r in parts]))


def take(ro: Rollouts, rows: Sequence[int]) -> Rollouts:
    """The rollouts ``rows`` of ``ro``, in that order."""
    idx = np.asarray(rows, np.int64)
    return Rollouts(batch={k: v[idx] for k, v in ro.batch.items()},
                    completions=[ro.completions[i] for i in idx], rewards=ro.rewards[idx],
                    correct=ro.correct[idx], lengths=ro.lengths[idx])


def outcome_rewards(task: Task, problems: Sequence[Problem], completions: Sequence[str],
                    partial: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(rewards [R] float32, correct [R] bool) for completions of ``problems`` (same
    length; repeat each problem n times for n samples). A reward is the task's score
    (1 when correct; a task's partial credit, e.g. reasoning-gym's, is kept), at least
    ``partial`` for a completion with a readable answer."""
    scores = np.asarray([task.score(p, c) for p, c in zip(problems, completions)], np.float32)
    correct = scores >= 1.0
    readable = np.asarray([task.extract_answer(c) is not None for c in completions], bool)
    rewards = np.where(correct, 1.0, np.maximum(scores, np.where(readable, partial, 0.0)))
    return rewards.astype(np.float32), correct


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


def collect(env: Env, params, problems: Sequence[Problem], cfg: SampleConfig,
            rng: jax.Array, partial_reward: float = 0.0) -> Rollouts:
    """``cfg.n`` sampled completions of each problem in ONE call (the B problems must
    divide over the mesh's data axes), judged by ``env.task`` (see :class:`Rollouts`)."""
    batch = next(run_batches(env, params, problems, cfg, rng, batch_size=len(problems)))
    c, n = batch.candidates, cfg.n
    R, T = len(problems) * n, c.tokens.shape[-1]
    tokens, lengths = c.tokens.reshape(R, T), c.lengths.reshape(R)
    texts = [completion_text(env.tokenizer, t, int(k)) for t, k in zip(tokens, lengths)]
    rewards, correct = outcome_rewards(env.task, [p for p in problems for _ in range(n)],
                                       texts, partial_reward)
    rows = sequence_rows(batch.prompts.tokens, batch.prompts.mask, tokens, lengths, n,
                         env.tokenizer.pad_id)
    return Rollouts(batch=rows, completions=texts, rewards=rewards, correct=correct,
                    lengths=lengths)


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
