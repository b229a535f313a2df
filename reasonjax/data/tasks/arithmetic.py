"""Multi-step arithmetic: a chain of +, -, * evaluated one operation per step.

Format (``n_ops=3``, about 35 characters)::

    12+7*3-5          <- question (prompt = question + "\\n")
    12+21-5           <- step 1: the expression after one operation
    33-5              <- step 2
    answer: 28        <- step 3: the last operation gives the answer

Usual precedence (``*`` before ``+``/``-``, then left to right). The reference solution
reduces the leftmost ``*`` first, then the leftmost ``+``/``-``, so a solution has exactly
``n_ops`` steps. Intermediate values may be negative (``-12+3``).

Step checking (exact): each step is read as the claim "previous expression = this one",
judged against the previous step AS WRITTEN (the question for the first step). A step is
correct when it parses, has fewer operators than the previous expression (progress) and
has the same value. So a valid reduction in another order, or a jump over several
operations, is correct; an arithmetic slip or a precedence error is not. The answer step
is correct when its number equals the previous expression's value.

Knobs: ``n_ops`` (steps), ``max_operand`` (operands drawn from 1..max_operand), ``ops``.
"""

from __future__ import annotations

import dataclasses
import random
import re
from typing import ClassVar, Optional, Sequence

from reasonjax.data import answers
from reasonjax.data.task import ANSWER_PREFIX, Problem, Task, TaskError, register_task

_EXPR = re.compile(r"(-?\d+)((?:[-+*]-?\d+)*)")
_PAIR = re.compile(r"([-+*])(-?\d+)")
_MAX_DIGITS = 400  # an arithmetic state longer than this is not a plausible step


def parse(expr: str) -> Optional[tuple[list[int], list[str]]]:
    """(operands, operators) of an expression like ``12+-3*4``; None if malformed."""
    expr = expr.strip()
    m = _EXPR.fullmatch(expr)
    if not m or len(expr) > _MAX_DIGITS:
        return None
    nums = [int(m.group(1))]
    ops = []
    for op, num in _PAIR.findall(m.group(2)):
        ops.append(op)
        nums.append(int(num))
    return nums, ops


def evaluate(nums: Sequence[int], ops: Sequence[str]) -> int:
    """Value with ``*`` before ``+``/``-``, left to right."""
    terms, signs = [nums[0]], []
    for op, n in zip(ops, nums[1:]):
        if op == "*":
            terms[-1] *= n
        else:
            signs.append(op)
            terms.append(n)
    value = terms[0]
    for op, t in zip(signs, terms[1:]):
        value = value + t if op == "+" else value - t
    return value


def render(nums: Sequence[int], ops: Sequence[str]) -> str:
    return str(nums[0]) + "".join(f"{op}{n}" for op, n in zip(ops, nums[1:]))


def reduce_once(nums: list[int], ops: list[str]) -> tuple[list[int], list[str]]:
    """One reference step: the leftmost ``*``, else the leftmost ``+``/``-``."""
    k = ops.index("*") if "*" in ops else 0
    a, b, op = nums[k], nums[k + 1], ops[k]
    value = a * b if op == "*" else (a + b if op == "+" else a - b)
    return nums[:k] + [value] + nums[k + 2:], ops[:k] + ops[k + 1:]


@register_task
@dataclasses.dataclass(frozen=True)
class Arithmetic(Task):
    """Chains of +, -, * with each intermediate expression as a step (see module doc)."""

    name: ClassVar[str] = "arithmetic"
    DIFFICULTIES: ClassVar[dict] = {
        "easy": {"n_ops": 2, "max_operand": 9},
        "medium": {"n_ops": 3, "max_operand": 20},
        "hard": {"n_ops": 5, "max_operand": 99},
        "extreme": {"n_ops": 8, "max_operand": 999},
    }

    n_ops: int = 3
    max_operand: int = 20
    ops: str = "+-*"

    def __post_init__(self):
        if self.n_ops < 1:
            raise TaskError(f"arithmetic: n_ops must be >= 1, got {self.n_ops}")
        if self.max_operand < 1:
            raise TaskError(f"arithmetic: max_operand must be >= 1, got {self.max_operand}")
        if not self.ops or set(self.ops) - set("+-*"):
            raise TaskError(f"arithmetic: ops must be a non-empty subset of '+-*', "
                            f"got {self.ops!r}")

    def sample(self, rng: random.Random) -> Problem:
        nums = [rng.randint(1, self.max_operand) for _ in range(self.n_ops + 1)]
        ops = [rng.choice(self.ops) for _ in range(self.n_ops)]
        return self.from_instance(render(nums, ops))

    def from_instance(self, expression: str) -> Problem:
        """A problem from an expression of non-negative integers and + - * (``"3+4*2"``)."""
        parsed = parse(expression)
        if parsed is None or any(n < 0 for n in parsed[0]) or not parsed[1]:
            raise TaskError(f"arithmetic: {expression!r} is not an expression of "
                            "non-negative integers joined by + - * with at least one operator")
        nums, ops = parsed
        steps = []
        while ops:
            nums, ops = reduce_once(nums, ops)
            steps.append(render(nums, ops))
        steps[-1] = ANSWER_PREFIX + steps[-1]
        answer = str(nums[0])
        return Problem(task=self.name, question=render(*parsed), steps=tuple(steps),
                       answer=answer, instance={"expression": render(*parsed)},
                       meta={"n_steps": len(steps)})

    def answer_correct(self, problem: Problem, answer: str) -> bool:
        return answers.answers_equal(answer, problem.answer)

    def judge_steps(self, problem: Problem, steps: Sequence[str]) -> list[tuple[bool, str]]:
        state = parse(problem.instance["expression"])
        out = []
        for step in steps:
            value = evaluate(*state)
            if self.is_final_step(step):
                got = answers.extract_tagged(step)
                if not answers.answers_equal(got, str(value)):
                    out.append((False, f"answer {got!r} but the previous expression is "
                                       f"{value}"))
                else:
                    out.append((True, ""))
                continue
            written = parse(step)
            if written is None:
                out.append((False, f"{step!r} is not an expression"))
                continue
            if len(written[1]) >= len(state[1]):
                out.append((False, "no operation was carried out"))
            elif evaluate(*written) != value:
                out.append((False, f"value {evaluate(*written)} but the previous "
                                   f"expression is {value}"))
            else:
                out.append((True, ""))
            state = written  # later steps are judged against what was written
        return out
