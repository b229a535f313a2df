"""GLoRe refinement over the driver (Havrilla et al., 2024, "GLoRe: When, Where, and How
to Improve LLM Reasoning via Global and Local Refinements"): one driver call refines the
drafts of a whole batch of problems, globally (a new solution from the question and the
draft) or locally (a rewrite from each draft's first incorrect step, given as
``first_errors``: from a step scorer at test time,
:func:`reasonjax.data.refinement.first_error_from_scores`; exact labels are for
training). Prompts: :mod:`reasonjax.data.refinement`.

:func:`refine` returns one :class:`Refined` per problem: the refined solution, its answer
and verdict, and the refiner's record (its tokens and compute); a local refinement of a
draft without a marked step leaves the draft as it is and costs nothing (the paper
refines only where the SORM finds an error).

:func:`refine_search` is refinement as a search method (``reasonjax search --method
refine``): the policy's greedy draft, then the refiner's global and / or local
refinement, the local one from the first step a step scorer (the SORM) scores below a
threshold, and in mode ``both`` GLoRe's reranking of draft, global and local refinement
by the scorer's score of each one's last step (the ORM reading).
"""

from __future__ import annotations

import dataclasses
from typing import Literal, Optional, Sequence

import jax
import numpy as np

from reasonjax.config import check_fields
from reasonjax.data.refinement import (RefineFormat, first_error_from_scores, global_prompt,
                                       local_prompt, local_solution)
from reasonjax.data.task import Problem
from reasonjax.driver.batches import Scorer
from reasonjax.driver.env import Env
from reasonjax.driver.records import TOKEN_FIELDS, Candidate, Record, judge, run
from reasonjax.driver.revisions import run_texts
from reasonjax.driver.values import step_values
from reasonjax.errors import ConfigError
from reasonjax.search.sampler import SampleConfig, SamplingConfig
from reasonjax.train.value import TRANSFORMS

MODES = ("global", "local", "both")


@dataclasses.dataclass(frozen=True)
class Refined:
    """One problem's refinement: ``solution`` (local: the kept prefix + the rewrite),
    ``answer``, ``correct`` (None: the task cannot judge), whether it was ``refined``
    (False: the draft kept), and ``record``, the refiner's driver record of the rewrite
    (None when the draft was kept)."""

    solution: str
    answer: Optional[str]
    correct: Optional[bool]
    refined: bool
    record: Optional[Record] = None

    @property
    def tokens_generated(self) -> float:
        return self.record.compute["tokens_generated"] if self.record else 0.0

    @property
    def tokens_prefilled(self) -> float:
        return self.record.compute["tokens_prefilled"] if self.record else 0.0


def refine(env: Env, params, problems: Sequence[Problem], drafts: Sequence[str],
           mode: Literal["global", "local"], sample: SampleConfig, rng: jax.Array, *,
           batch_size: int, fmt: RefineFormat = RefineFormat(),
           first_errors: Optional[Sequence[Optional[int]]] = None,
           bucket: int = 32) -> list[Refined]:
    """Refines each problem's draft with the refiner ``params`` (one sample each,
    ``sample.n`` must be 1); ``first_errors`` (local mode only): each draft's first
    incorrect step, None for a draft to keep."""
    if len(drafts) != len(problems):
        raise ValueError(f"{len(drafts)} drafts for {len(problems)} problems")
    if sample.n != 1:
        raise ValueError(f"sample.n={sample.n}: a refinement draws one sample per draft")
    if mode not in ("global", "local"):
        raise ValueError(f"mode must be global or local, got {mode!r}")
    task = env.task
    if mode == "global":
        rows = list(range(len(problems)))
        texts = [global_prompt(task, p, d, fmt) for p, d in zip(problems, drafts)]
    else:
        if first_errors is None or len(first_errors) != len(problems):
            raise ValueError("local refinement needs first_errors, one per draft")
        steps = [task.split_steps(d) for d in drafts]
        rows = [i for i, e in enumerate(first_errors) if e is not None]
        texts = [local_prompt(task, problems[i], steps[i], first_errors[i], fmt)
                 for i in rows]
    records = run_texts(env, params, [problems[i] for i in rows], texts, sample, rng,
                        batch_size=batch_size, bucket=bucket) if rows else []
    out = [Refined(solution=d, answer=task.extract_answer(d),
                   correct=judge(lambda: task.verify(p, d)), refined=False)
           for p, d in zip(problems, drafts)]
    for i, rec in zip(rows, records):
        solution = rec.completion if mode == "global" else \
            local_solution(task, steps[i], first_errors[i], rec.completion)
        out[i] = Refined(solution=solution, answer=task.extract_answer(solution),
                         correct=judge(lambda: task.verify(problems[i], solution)),
                         refined=True, record=rec)
    return out


@dataclasses.dataclass(frozen=True)
class RefineConfig:
    """``reasonjax search --method refine`` (:func:`refine_search`): ``mode`` global,
    local or both (draft, global and local reranked by the scorer); ``max_new_tokens``
    of the draft and of each refinement (both greedy, as the paper samples); a step
    scoring below ``threshold`` (after ``transform`` of the scorer's value head) is the
    local refiner's first error; ``format``: the refiners' prompts."""

    mode: Literal["global", "local", "both"] = "both"
    max_new_tokens: int = 256
    threshold: float = 0.5
    transform: str = "sigmoid"
    format: RefineFormat = RefineFormat()

    def __post_init__(self):
        if self.mode not in MODES:
            raise ConfigError(f"mode: one of {MODES}, got {self.mode!r}")
        if self.transform not in TRANSFORMS:
            raise ConfigError(f"transform: one of {tuple(TRANSFORMS)}, got {self.transform!r}")
        check_fields(self, max_new_tokens=">= 1")

    @property
    def uses_scorer(self) -> bool:
        return self.mode != "global"


def _candidate(task, problem: Problem, text: str, score: float, source: Optional[Record]
               ) -> Candidate:
    """A candidate of ``text``; log-prob, tokens and EOS from the record that wrote it
    (a local refinement's: its rewrite only)."""
    c = source.candidates[0] if source is not None and source.candidates else None
    return Candidate(completion=text, answer=task.extract_answer(text), score=score,
                     logprob=c.logprob if c else 0.0, tokens=c.tokens if c else 0,
                     steps=len(task.split_steps(text)), finished=c.finished if c else False,
                     correct=judge(lambda: task.verify(problem, text)))


def _passes(records: Sequence[Record]) -> float:
    """Forward passes of the batches behind ``records`` (each batch once)."""
    return float(sum({r.compute["batch"]: r.compute["batch_forward_passes"]
                      for r in records}.values()))


def refine_search(env: Env, policy, refiner, problems: Sequence[Problem], cfg: RefineConfig,
                  rng: jax.Array, *, batch_size: int, scorer: Optional[Scorer] = None
                  ) -> list[Record]:
    """GLoRe at test time (module doc): one :class:`Record` per problem whose candidates
    are the draft then the refinement(s), each scored by the scorer's last step score
    (``scorer``: a separate SORM / ORM's (config, params); default the policy's value
    head; unused in mode global, whose candidates score 0); the answer is the refinement
    (global / local) or the best scored candidate (both; ties: the earlier). Compute: the
    draft's, the refinements' and the scorer's tokens; forward passes shared equally."""
    task = env.task
    greedy = SampleConfig(n=1, max_new_tokens=cfg.max_new_tokens,
                          sampling=SamplingConfig(temperature=0.0))
    k_draft, k_global, k_local = jax.random.split(rng, 3)
    drafts = run(env, policy, problems, greedy, k_draft, batch_size=batch_size)
    texts = [r.completion or "" for r in drafts]
    score_env, score_params = env, policy
    if scorer is not None:
        score_env, score_params = dataclasses.replace(env, model_config=scorer[0]), scorer[1]
    scored = {"tokens": 0, "passes": 0}

    def scores(rows, solutions):
        """Step scores of ``solutions``, one for each problem in ``rows``."""
        if not cfg.uses_scorer or not rows:
            return [np.zeros((0,), np.float32)] * len(rows)
        out, tokens = step_values(score_env, score_params, [problems[i] for i in rows],
                                  solutions, cfg.transform, batch_size)
        scored["tokens"] += tokens
        scored["passes"] += -(-len(solutions) // batch_size)
        return out

    def rescored(done):
        """A refinement's step scores: the draft's where the draft was kept (local mode,
        no step flagged), scored afresh where it was rewritten."""
        changed = [i for i, r in enumerate(done) if r.refined]
        steps = list(draft_steps)
        for i, s in zip(changed, scores(changed, [done[i].solution for i in changed])):
            steps[i] = s
        return steps

    draft_steps = scores(list(range(len(problems))), texts)
    arms = {}
    if cfg.mode in ("global", "both"):
        arms["global"] = refine(env, refiner, problems, texts, "global", greedy, k_global,
                                batch_size=batch_size, fmt=cfg.format)
    if cfg.mode in ("local", "both"):
        marks = [first_error_from_scores(s, cfg.threshold) for s in draft_steps]
        arms["local"] = refine(env, refiner, problems, texts, "local", greedy, k_local,
                               batch_size=batch_size, fmt=cfg.format, first_errors=marks)
    arm_steps = {name: rescored(done) for name, done in arms.items()}
    last = lambda s: float(s[-1]) if len(s) else 0.0  # noqa: E731
    passes = _passes(drafts) + scored["passes"] + sum(
        _passes([r.record for r in done if r.record is not None]) for done in arms.values())
    out = []
    for i, (p, d) in enumerate(zip(problems, drafts)):
        cands = [_candidate(task, p, texts[i], last(draft_steps[i]), d)]
        cands += [_candidate(task, p, done[i].solution, last(arm_steps[name][i]),
                             done[i].record or d) for name, done in arms.items()]
        pick = int(np.argmax([c.score for c in cands])) if cfg.mode == "both" else 1
        compute = {k: d.compute[k] + sum(done[i].record.compute[k] for done in arms.values()
                                         if done[i].record is not None)
                   for k in TOKEN_FIELDS}
        compute["tokens_scored"] += scored["tokens"] / len(problems)
        compute.update(batch=f"refine/{i}", batch_forward_passes=passes / len(problems))
        best = cands[pick]
        out.append(Record(index=i, problem=p, answer=best.answer, correct=best.correct,
                          completion=best.completion, score=best.score,
                          candidates=tuple(cands), compute=compute))
    return out

