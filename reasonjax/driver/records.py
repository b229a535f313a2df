"""Judged per-problem records: :func:`run` is the driver's entry point.

``run(env, params, problems, method, rng, batch_size=...)`` runs the method
(:mod:`reasonjax.driver.batches`), decodes every valid candidate, extracts and verifies
its answer with the env's task, and returns one :class:`Record` per problem. Votes
(:class:`~reasonjax.search.voting.VotingConfig`) answer with the winning answer
(:func:`vote`); every other method with its chosen candidate.

Compute: a record holds its share of its batch's token counts (the batch total divided by
the batch's rows, filler rows included, since they ran too) and the batch's
``forward_passes`` (sequential model calls, not divisible); :func:`summarize` adds them up.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Sequence

import jax
import numpy as np

from reasonjax.data import answers
from reasonjax.data.task import Problem, Task
from reasonjax.driver.batches import Batch, Method, Scorer, run_batches
from reasonjax.driver.env import Env
from reasonjax.driver.prompts import completion_text
from reasonjax.search import voting
from reasonjax.search.sampler import SampleConfig, SamplingConfig
from reasonjax.search.voting import VotingConfig

TOKEN_FIELDS = ("tokens_generated", "tokens_prefilled", "tokens_scored")


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One candidate solution: its text (no EOS), extracted answer (None: none), score
    (the method's), summed token log-prob, token and step counts (a plain sample is one
    step), whether it ended with EOS, and whether it verifies (None when the task cannot
    judge the problem)."""

    completion: str
    answer: Optional[str]
    score: float
    logprob: float
    tokens: int
    steps: int
    finished: bool
    correct: Optional[bool]


@dataclasses.dataclass(frozen=True)
class Record:
    """One problem's result: the answer (chosen candidate's, or the vote's winner),
    whether it is correct (None: cannot judge), its completion and score, every valid
    candidate, and compute (see the module docstring)."""

    index: int
    problem: Problem
    answer: Optional[str]
    correct: Optional[bool]
    completion: Optional[str]
    score: float
    candidates: tuple[Candidate, ...]
    compute: dict

    @property
    def any_correct(self) -> Optional[bool]:
        """Some candidate verifies (coverage); None when none could be judged."""
        judged = [c.correct for c in self.candidates if c.correct is not None]
        return any(judged) if judged else None

    def to_json(self) -> dict:
        p = self.problem
        return {"index": self.index, "task": p.task, "question": p.question,
                "reference": p.answer, "answer": self.answer, "correct": self.correct,
                "completion": self.completion, "score": self.score,
                "any_correct": self.any_correct,
                "candidates": [dataclasses.asdict(c) for c in self.candidates],
                "compute": self.compute, "meta": dict(p.meta)}


def judge(fn: Callable[[], bool]) -> Optional[bool]:
    try:
        return bool(fn())
    except NotImplementedError:
        return None


def vote(task: Task, record: Record, weighting: str, complexity_top_k: Optional[int] = None
         ) -> tuple[Optional[str], Optional[bool], float]:
    """(answer, correct, total weight) of a vote over ``record``'s candidates: answers
    compared after :func:`reasonjax.data.answers.normalize`; weights 1 (``majority``),
    the candidate's score (``prm``, must be >= 0) or exp(mean token log-prob)
    (``perplexity``); with ``complexity_top_k``, only the K candidates with the most steps
    vote (:func:`reasonjax.search.voting.most_steps`). No answer at all: (None, False, 0)."""
    cands = record.candidates
    keys = [[None if c.answer is None else answers.normalize(c.answer) for c in cands]]
    if complexity_top_k is not None and cands:
        steps = np.asarray([[c.steps for c in cands]], np.int32)
        keep = np.asarray(voting.most_steps(steps, np.ones(steps.shape, bool),
                                            complexity_top_k))[0]
        keys = [[k if kept else None for k, kept in zip(keys[0], keep)]]
    w = voting.candidate_weights(
        weighting, np.asarray([c.score for c in cands], np.float32),
        np.asarray([c.logprob / max(c.tokens, 1) for c in cands], np.float32))
    if not cands:
        return None, False, 0.0
    winner, totals = voting.vote(voting.answer_ids(keys), np.asarray([w], np.float32))
    winner = int(winner[0])
    if winner < 0:
        return None, False, 0.0
    answer = cands[winner].answer
    return answer, judge(lambda: task.answer_correct(record.problem, answer)), \
        float(totals[0, winner])


def records_of(env: Env, batch: Batch, problems: Sequence[Problem],
               method: Method) -> list[Record]:
    """The judged records of one batch's real rows."""
    c, task = batch.candidates, env.task
    B = len(batch.rows)
    share = {k: batch.compute[k] / B for k in TOKEN_FIELDS}
    share.update(batch=batch.start, batch_forward_passes=batch.compute["forward_passes"])
    out = []
    for b in range(batch.real):
        i = int(batch.rows[b])
        problem, cands, pick = problems[i], [], None
        for k in np.flatnonzero(c.valid[b]):
            text = completion_text(env.tokenizer, c.tokens[b, k], int(c.lengths[b, k]))
            if k == c.chosen[b]:
                pick = len(cands)
            cands.append(Candidate(
                completion=text, answer=task.extract_answer(text),
                score=float(c.scores[b, k]), logprob=float(c.logprobs[b, k]),
                tokens=int(c.lengths[b, k]), steps=int(c.n_steps[b, k]),
                finished=bool(c.finished[b, k]),
                correct=judge(lambda: task.verify(problem, text))))
        best = cands[pick if pick is not None else 0]
        record = Record(index=i, problem=problem, answer=best.answer, correct=best.correct,
                        completion=best.completion, score=best.score,
                        candidates=tuple(cands), compute=dict(share))
        if isinstance(method, VotingConfig):
            answer, correct, total = vote(task, record, method.weighting,
                                          method.complexity_top_k)
            winner = next((x for x in cands if x.answer == answer), None)
            record = dataclasses.replace(record, answer=answer, correct=correct, score=total,
                                         completion=winner and winner.completion)
        out.append(record)
    return out


def run(env: Env, params, problems: Sequence[Problem], method: Method, rng: jax.Array, *,
        batch_size: int = 64, scorer: Optional[Scorer] = None,
        progress: Optional[Callable[[int], None]] = None,
        texts: Optional[Sequence[str]] = None) -> list[Record]:
    """``method`` over ``problems``: one judged :class:`Record` per problem, in order.
    ``scorer``: (model config, params) of a separate PRM for step scores (default: the
    policy's value head). ``progress(k)`` is called after each batch with its real rows.
    ``texts``: prompt texts to use instead of the problems' prompts (same count)."""
    out: list[Record] = []
    for batch in run_batches(env, params, problems, method, rng, batch_size=batch_size,
                             scorer=scorer, texts=texts):
        out += records_of(env, batch, problems, method)
        if progress is not None:
            progress(batch.real)
    return out


def greedy_correct(env: Env, params, problems: Sequence[Problem], max_new_tokens: int,
                   batch_size: int = 64) -> list[Optional[bool]]:
    """Whether each problem's greedy completion verifies (None: the task cannot judge)."""
    greedy = SampleConfig(n=1, max_new_tokens=max_new_tokens,
                          sampling=SamplingConfig(temperature=0.0))
    return [r.correct for r in run(env, params, problems, greedy, jax.random.key(0),
                                   batch_size=min(batch_size, len(problems)))]


def greedy_accuracy(env: Env, params, problems: Sequence[Problem], max_new_tokens: int,
                    batch_size: int = 64) -> float:
    """Fraction of ``problems`` whose greedy completion verifies."""
    judged = [c for c in greedy_correct(env, params, problems, max_new_tokens, batch_size)
              if c is not None]
    return float(np.mean(judged)) if judged else float("nan")


def accuracy(records: Sequence[Record]) -> float:
    """Fraction of judged records that are correct (NaN when none could be judged)."""
    judged = [r.correct for r in records if r.correct is not None]
    return float(np.mean(judged)) if judged else float("nan")


def summarize(records: Sequence[Record]) -> dict:
    """Accuracy (over problems the task could judge), coverage (any candidate correct),
    the share answered, and the compute the run spent (token counts summed, forward
    passes summed over batches)."""
    judged = [r.correct for r in records if r.correct is not None]
    covered = [r.any_correct for r in records if r.any_correct is not None]
    out = {"problems": len(records), "judged": len(judged),
           "accuracy": sum(judged) / len(judged) if judged else None,
           "coverage": sum(covered) / len(covered) if covered else None,
           "answered": sum(r.answer is not None for r in records) / max(len(records), 1)}
    for k in TOKEN_FIELDS:
        out[k] = round(sum(r.compute[k] for r in records), 3)
    batches = {r.compute["batch"]: r.compute["batch_forward_passes"] for r in records}
    out["forward_passes"] = sum(batches.values())
    return out
