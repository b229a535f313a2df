"""GLoRe refiners (Havrilla et al., 2024, "GLoRe: When, Where, and How to Improve LLM
Reasoning via Global and Local Refinements"): prompts and training examples.

- Global refinement: given the question and a draft solution, write a whole new
  solution. Prompt: ``task.prompt(problem)`` + the draft (``RefineFormat.draft``) +
  ``global_marker``; completion: the new solution.
- Local refinement: given the draft with its first incorrect step marked, rewrite from
  that step. Prompt: ``task.prompt(problem)`` + the draft with ``mark`` before step e
  (its first error) + ``local_marker`` + the draft's steps before e, each followed by the
  task's step delimiter; completion: steps e, e+1, ... to the answer, so the refined
  solution is the kept prefix followed by the completion (:func:`local_solution`).

Training data (the paper's, with exact labels in place of its SORM): global pairs are a
wrong sample -> a right sample of the same problem; local pairs are a wrong sample with
its exact first error e (``task.check_steps``) -> the rest of a right solution whose first
e steps are the draft's (the paper rolls out from that prefix; a solution of the pool
that shares the prefix is such a rollout's result). At test time the first error comes
from a step scorer (:func:`first_error_from_scores`), since exact labels need the answer.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Optional, Sequence

from reasonjax.data.task import Problem, Task
from reasonjax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class RefineFormat:
    """Refinement prompt pieces: ``draft`` with ``{draft}`` replaced by the draft's text,
    the markers that ask for a global / local refinement, and ``mark``: the text put in
    front of the first incorrect step (GLoRe's [BAD] token)."""

    draft: str = "draft:\n{draft}\n"
    global_marker: str = "refine:\n"
    local_marker: str = "fix:\n"
    mark: str = "[bad] "

    def __post_init__(self):
        if "{draft}" not in self.draft:
            raise ConfigError(f"draft={self.draft!r} must contain {{draft}}")
        for name in ("global_marker", "local_marker", "mark"):
            if not getattr(self, name):
                raise ConfigError(f"{name}: must be a non-empty string")
        if self.global_marker == self.local_marker:
            raise ConfigError(f"local_marker={self.local_marker!r} must differ from "
                              "global_marker (one model can learn both refiners)")


def global_prompt(task: Task, problem: Problem, draft: str, fmt: RefineFormat) -> str:
    """The prompt asking for a whole new solution to ``problem`` given ``draft``."""
    return task.prompt(problem) + fmt.draft.replace("{draft}", draft) + fmt.global_marker


def local_prompt(task: Task, problem: Problem, steps: Sequence[str], first_error: int,
                 fmt: RefineFormat) -> str:
    """The prompt asking to rewrite ``steps`` (the draft, split by the task) from step
    ``first_error`` on: the draft with ``fmt.mark`` before that step, the local marker,
    then the kept steps (those before it), each ending with the step delimiter."""
    if not 0 <= first_error < len(steps):
        raise ValueError(f"first_error={first_error} is not a step of a {len(steps)}-step "
                         "draft")
    d = task.step_delimiter
    marked = d.join(fmt.mark + s if i == first_error else s for i, s in enumerate(steps))
    kept = "".join(s + d for s in steps[:first_error])
    return task.prompt(problem) + fmt.draft.replace("{draft}", marked) + \
        fmt.local_marker + kept


def local_solution(task: Task, steps: Sequence[str], first_error: int,
                   completion: str) -> str:
    """The refined solution: the draft's steps before ``first_error``, then the local
    refiner's ``completion``."""
    return "".join(s + task.step_delimiter for s in steps[:first_error]) + completion


def first_error_from_scores(scores: Sequence[float], threshold: float = 0.5
                            ) -> Optional[int]:
    """The first step whose score (a PRM's / SORM's estimate that the prefix ending there
    is right) is below ``threshold``; None when none is (GLoRe's test-time locating)."""
    return next((i for i, s in enumerate(scores) if s < threshold), None)


def global_examples(task: Task, problem: Problem, attempts: Sequence[str],
                    correct: Sequence[bool], fmt: RefineFormat, rng: random.Random,
                    per_draft: int = 1, reference: bool = False) -> list[tuple[str, str]]:
    """(prompt, completion) global-refinement pairs of one problem: every distinct wrong
    attempt as the draft, ``per_draft`` right attempts (drawn with ``rng``; ``reference``:
    the reference solution when none is right) as targets."""
    if len(attempts) != len(correct):
        raise ValueError(f"{len(attempts)} attempts but {len(correct)} labels")
    right = [a for a, ok in zip(attempts, correct) if ok]
    if not right and reference:
        right = [task.solution(problem)]
    if not right:
        return []
    wrong = dict.fromkeys(a for a, ok in zip(attempts, correct) if not ok)
    return [(global_prompt(task, problem, draft, fmt), rng.choice(right))
            for draft in wrong for _ in range(per_draft)]


def local_examples(task: Task, problem: Problem, attempts: Sequence[str],
                   correct: Sequence[bool], fmt: RefineFormat, rng: random.Random,
                   reference: bool = False) -> list[tuple[str, str]]:
    """(prompt, completion) local-refinement pairs of one problem: for every distinct
    wrong attempt with a first incorrect step e (exact, ``task.check_steps``), the steps
    from e on of a right solution (a right attempt, or the reference with ``reference``,
    drawn with ``rng``) whose first e steps equal the draft's; none when no right
    solution shares that prefix."""
    if len(attempts) != len(correct):
        raise ValueError(f"{len(attempts)} attempts but {len(correct)} labels")
    pool = [task.split_steps(a) for a, ok in zip(attempts, correct) if ok]
    if reference:
        pool.append(list(problem.steps))
    out = []
    for draft in dict.fromkeys(a for a, ok in zip(attempts, correct) if not ok):
        steps = task.split_steps(draft)
        e = task.check_steps(problem, steps).first_error if steps else None
        if e is None:  # no wrong step: the draft is incomplete or unanswered, not wrong
            continue
        fits = [s for s in pool if len(s) > e and s[:e] == steps[:e]]
        if fits:
            target = task.step_delimiter.join(rng.choice(fits)[e:])
            out.append((local_prompt(task, problem, steps, e, fmt), target))
    return out
