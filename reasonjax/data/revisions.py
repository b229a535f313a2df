"""Sequential revisions (Snell et al., 2024, "Scaling LLM Test-Time Compute Optimally can
be More Effective than Scaling Model Parameters", Sec. 6): the revision prompt and the
revision model's training examples.

A revision prompt is the problem's own prompt (``task.prompt``) followed by the last
``window`` previous attempts, each rendered with ``RevisionFormat.attempt``, and the
revision ``marker``; the model's completion is the next attempt. With no previous
attempt the prompt is ``task.prompt(problem)`` unchanged, so a chain's first attempt is a
plain sample. Text the attempts hold after their answer stays in context (the task reads
the answer of the completion only, never of the prompt).

Training examples follow the paper: for a problem with both wrong and right samples of
the policy, a right one is the target and 0 .. ``window`` wrong ones are the context,
the wrong one closest to the target in character edit distance placed last (next to the
marker). Labels come from the task's verifier, exactly.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Optional, Sequence

from reasonjax.config import check_fields
from reasonjax.data.answers import normalize
from reasonjax.data.task import Problem, Task
from reasonjax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class RevisionFormat:
    """How previous attempts enter the prompt: each as ``attempt`` with ``{attempt}``
    replaced by its text, the last ``window`` of them, then ``marker``."""

    window: int = 4
    attempt: str = "attempt:\n{attempt}\n"
    marker: str = "revision:\n"

    def __post_init__(self):
        check_fields(self, window=">= 1")
        if "{attempt}" not in self.attempt:
            raise ConfigError(f"attempt={self.attempt!r} must contain {{attempt}}")
        if not self.marker:
            raise ConfigError("marker: must be a non-empty string (it tells the model to "
                              "revise)")


def revision_prompt(task: Task, problem: Problem, attempts: Sequence[str],
                    fmt: RevisionFormat) -> str:
    """The prompt of the next attempt given the ``attempts`` so far (oldest first; only
    the last ``fmt.window`` are shown). No attempts: ``task.prompt(problem)``."""
    shown = list(attempts)[-fmt.window:]
    if not shown:
        return task.prompt(problem)
    return task.prompt(problem) + "".join(fmt.attempt.replace("{attempt}", a)
                                          for a in shown) + fmt.marker


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance between two strings (insertions, deletions, substitutions)."""
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def revision_examples(task: Task, problem: Problem, attempts: Sequence[str],
                      correct: Sequence[bool], fmt: RevisionFormat, rng: random.Random,
                      per_problem: int = 1, reference: bool = False
                      ) -> list[tuple[str, str]]:
    """(prompt, completion) revision-training pairs of one problem from its sampled
    ``attempts`` and their verifier labels ``correct``.

    Each pair's target is a right attempt (drawn with ``rng``; ``reference``: the task's
    reference solution when no attempt is right), its context k wrong attempts (distinct
    texts), k uniform in 0 .. min(window, wrong ones), drawn at random and ordered so the
    one nearest the target in edit distance comes last. ``per_problem`` pairs, none when
    there is no target or no wrong attempt (Snell et al. train on wrong -> right only)."""
    if len(attempts) != len(correct):
        raise ValueError(f"{len(attempts)} attempts but {len(correct)} labels")
    right = [a for a, ok in zip(attempts, correct) if ok]
    wrong = list(dict.fromkeys(a for a, ok in zip(attempts, correct) if not ok))
    if not right and reference:
        right = [task.solution(problem)]
    if not right or not wrong:
        return []
    out = []
    for _ in range(per_problem):
        target = rng.choice(right)
        k = rng.randint(0, min(fmt.window, len(wrong)))
        context = rng.sample(wrong, k)
        context.sort(key=lambda a: -edit_distance(a, target))  # nearest last
        out.append((revision_prompt(task, problem, context, fmt), target))
    return out


def chain_vote(answers: Sequence[Optional[str]]) -> Optional[int]:
    """Index of the attempt that answers a majority vote over a chain's ``answers``
    (compared after :func:`reasonjax.data.answers.normalize`; ties go to the answer whose
    latest attempt is latest, the chain's most revised one); None when none answered."""
    counts: dict[str, int] = {}
    last: dict[str, int] = {}
    for i, a in enumerate(answers):
        if a is not None:
            key = normalize(a)
            counts[key] = counts.get(key, 0) + 1
            last[key] = i
    if not counts:
        return None
    return last[max(counts, key=lambda k: (counts[k], last[k]))]
