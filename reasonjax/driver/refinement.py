"""GLoRe refinement over the driver (Havrilla et al., 2024): one driver call refines the
drafts of a whole batch of problems, globally (a new solution from the question and the
draft) or locally (a rewrite from each draft's first incorrect step, given as
``first_errors``: from a step scorer at test time,
:func:`reasonjax.data.refinement.first_error_from_scores`; exact labels are for
training). Prompts: :mod:`reasonjax.data.refinement`.

:func:`refine` returns one :class:`Refined` per problem: the refined solution, its answer
and verdict, and the tokens it cost; a local refinement of a draft without a marked step
leaves the draft as it is and costs nothing (the paper refines only where the SORM finds
an error).
"""

from __future__ import annotations

import dataclasses
from typing import Literal, Optional, Sequence

import jax

from reasonjax.data.refinement import (RefineFormat, global_prompt, local_prompt,
                                       local_solution)
from reasonjax.data.task import Problem
from reasonjax.driver.env import Env
from reasonjax.driver.records import judge
from reasonjax.driver.revisions import run_texts
from reasonjax.search.sampler import SampleConfig


@dataclasses.dataclass(frozen=True)
class Refined:
    """One problem's refinement: ``solution`` (local: the kept prefix + the rewrite),
    ``answer``, ``correct`` (None: the task cannot judge), whether it was ``refined``
    (False: the draft kept), and the tokens the call spent on it."""

    solution: str
    answer: Optional[str]
    correct: Optional[bool]
    refined: bool
    tokens_generated: float
    tokens_prefilled: float


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
                   correct=judge(lambda: task.verify(p, d)), refined=False,
                   tokens_generated=0.0, tokens_prefilled=0.0)
           for p, d in zip(problems, drafts)]
    for i, rec in zip(rows, records):
        solution = rec.completion if mode == "global" else \
            local_solution(task, steps[i], first_errors[i], rec.completion)
        out[i] = Refined(solution=solution, answer=task.extract_answer(solution),
                         correct=judge(lambda: task.verify(problems[i], solution)),
                         refined=True,
                         tokens_generated=rec.compute["tokens_generated"],
                         tokens_prefilled=rec.compute["tokens_prefilled"])
    return out

