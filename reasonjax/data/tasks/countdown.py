"""Countdown / Game of 24: combine all the numbers with + - * / to reach the target.

Format (4 numbers, about 80 characters)::

    3 4 6 8 -> 24            <- question
    8-6=2 left 3 4 2         <- a step: two numbers combined, then the numbers left
    3*2=6 left 4 6
    4*6=24 left 24
    answer: 4*(3*(8-6))      <- an expression using every number once

Rules (Countdown's, also used for 24): every number is used exactly once and every
intermediate result is a positive integer (``a-b`` needs ``a > b``, ``a/b`` needs
``b | a``). Under these rules Game-of-24 instances whose only solutions go through
fractions (``3 3 8 8``) are unsolvable. An unsolvable instance (only from
``from_instance``) has answer ``none`` and the one step ``answer: none``.

The exact solver (:func:`reachable`, :func:`solve`) decides solvability and writes the
reference steps; with an rng it picks among the solving moves at random, so generated
solutions vary.

Step checking (exact): a step is correct when both operands are among the numbers left by
the previous step as written, the arithmetic follows the rules, the ``left`` list is the
previous one with the operands replaced by the result (any order), AND the target can
still be reached from it, so the first incorrect step is where the solution went wrong.
The answer step is correct when its expression solves the problem.

Knobs: ``n_numbers`` (steps = n_numbers - 1, plus the answer step), ``max_number``
(numbers drawn from 1..max_number), ``target`` (0: a random reachable target up to
``max_target``; e.g. 24 for the Game of 24).
"""

from __future__ import annotations

import dataclasses
import functools
import random
import re
from collections import Counter
from typing import ClassVar, Optional, Sequence

from reasonjax.data import answers
from reasonjax.data.task import ANSWER_PREFIX, Problem, Task, TaskError, register_task

OPS = "+-*/"


def combine(a: int, op: str, b: int) -> Optional[int]:
    """``a op b`` under the rules (positive integer results), else None."""
    if op == "+":
        return a + b
    if op == "-":
        return a - b if a > b else None
    if op == "*":
        return a * b
    if op == "/":
        return a // b if b > 0 and a % b == 0 else None
    return None


def _moves(nums: Sequence[int]):
    """Every legal (i, j, op, result) on ``nums`` (larger operand first for - and /)."""
    for i in range(len(nums)):
        for j in range(i + 1, len(nums)):
            a, b = max(nums[i], nums[j]), min(nums[i], nums[j])
            for op in OPS:
                c = combine(a, op, b)
                if c is not None:
                    yield (i, j, a, op, b, c)


@functools.lru_cache(maxsize=1 << 18)
def reachable(numbers: tuple[int, ...], target: int) -> bool:
    """Whether the sorted multiset ``numbers`` can make ``target`` using all of them."""
    if len(numbers) == 1:
        return numbers[0] == target
    for i, j, _, _, _, c in _moves(numbers):
        rest = [n for k, n in enumerate(numbers) if k not in (i, j)] + [c]
        if reachable(tuple(sorted(rest)), target):
            return True
    return False


Move = tuple[int, str, int, int, list]  # (a, op, b, result, numbers left)


def solve(numbers: Sequence[int], target: int,
          rng: Optional[random.Random] = None) -> Optional[list[Move]]:
    """A solution as moves (a, op, b, result, numbers left), or None if unsolvable.

    Deterministic without ``rng`` (first solving move in a fixed order)."""
    nums = list(numbers)
    if not reachable(tuple(sorted(nums)), target):
        return None
    steps = []
    while len(nums) > 1:
        moves = list(_moves(nums))
        if rng is not None:
            rng.shuffle(moves)
        for i, j, a, op, b, c in moves:
            rest = [n for k, n in enumerate(nums) if k not in (i, j)] + [c]
            if reachable(tuple(sorted(rest)), target):
                steps.append((a, op, b, c, rest))
                nums = rest
                break
    return steps


# ---- answer expressions ---------------------------------------------------------------

_PREC = {"+": 1, "-": 1, "*": 2, "/": 2}


def _wrap(expr: str, prec: int, need: int, strict: bool) -> str:
    return f"({expr})" if prec < need or (strict and prec == need) else expr


def expression_from_steps(numbers: Sequence[int], steps: Sequence[Move]) -> str:
    """One expression (minimal parentheses) equivalent to the steps."""
    pool: list[tuple[int, str, int]] = [(n, str(n), 3) for n in numbers]
    for a, op, b, c, _ in steps:
        ia = next(k for k, item in enumerate(pool) if item[0] == a)
        ea, pa = pool.pop(ia)[1:]
        ib = next(k for k, item in enumerate(pool) if item[0] == b)
        eb, pb = pool.pop(ib)[1:]
        p = _PREC[op]
        text = _wrap(ea, pa, p, False) + op + _wrap(eb, pb, p, op in "-/")
        pool.append((c, text, p))
    return pool[0][1]


class _ExprParser:
    """Parses + - * / expressions of positive integers into (value, leaves) under the
    rules; raises ValueError when malformed or a rule is broken."""

    def __init__(self, text: str):
        self.toks = re.findall(r"\d+|[-+*/()]|\S", text)
        self.i = 0
        self.leaves: list[int] = []

    def peek(self):
        return self.toks[self.i] if self.i < len(self.toks) else None

    def parse(self) -> int:
        value = self.expr()
        if self.peek() is not None:
            raise ValueError(f"unexpected {self.peek()!r}")
        return value

    def expr(self) -> int:
        value = self.term()
        while self.peek() in ("+", "-"):
            value = self.apply(value, self.toks[self.i], self._advance(self.term))
        return value

    def term(self) -> int:
        value = self.atom()
        while self.peek() in ("*", "/"):
            value = self.apply(value, self.toks[self.i], self._advance(self.atom))
        return value

    def _advance(self, fn):
        self.i += 1
        return fn()

    @staticmethod
    def apply(a: int, op: str, b: int) -> int:
        c = combine(a, op, b)
        if c is None:
            raise ValueError(f"{a}{op}{b} is not a positive integer")
        return c

    def atom(self) -> int:
        tok = self.peek()
        if tok is None:
            raise ValueError("expression ends early")
        self.i += 1
        if tok == "(":
            value = self.expr()
            if self.peek() != ")":
                raise ValueError("missing ')'")
            self.i += 1
            return value
        if tok.isdigit() and len(tok) < 12:
            self.leaves.append(int(tok))
            return int(tok)
        raise ValueError(f"unexpected {tok!r}")


def check_expression(expression: str, numbers: Sequence[int], target: int) -> str:
    """'' when ``expression`` uses every number once and makes ``target`` under the
    rules, else the reason it does not."""
    parser = _ExprParser(expression)
    try:
        value = parser.parse()
    except ValueError as e:
        return str(e)
    if Counter(parser.leaves) != Counter(numbers):
        return f"uses {sorted(parser.leaves)}, not the numbers {sorted(numbers)}"
    return "" if value == target else f"makes {value}, not {target}"


_STEP = re.compile(r"(\d+)([-+*/])(\d+)=(\d+) left((?: \d+)+)")


@register_task
@dataclasses.dataclass(frozen=True)
class Countdown(Task):
    """Countdown / Game of 24 with an exact solver (see module doc)."""

    name: ClassVar[str] = "countdown"
    DIFFICULTIES: ClassVar[dict] = {
        "easy": {"n_numbers": 3, "max_number": 10},
        "medium": {"n_numbers": 4, "max_number": 10},
        "hard": {"n_numbers": 5, "max_number": 25, "max_target": 500},
        "game24": {"n_numbers": 4, "max_number": 13, "target": 24},
    }

    n_numbers: int = 4
    max_number: int = 10
    target: int = 0
    max_target: int = 100

    def __post_init__(self):
        if not 2 <= self.n_numbers <= 6:
            raise TaskError(f"countdown: n_numbers must be in 2..6 (the solver's range), got "
                            f"{self.n_numbers}")
        if self.max_number < 1 or self.target < 0 or self.max_target < 1:
            raise TaskError("countdown: max_number and max_target must be >= 1 and target "
                            f">= 0; got {self.max_number}, {self.max_target}, {self.target}")

    def sample(self, rng: random.Random) -> Problem:
        for _ in range(10_000):
            nums = [rng.randint(1, self.max_number) for _ in range(self.n_numbers)]
            if self.target:
                target = self.target
            else:
                # a random target reached by a random sequence of legal moves
                pool = list(nums)
                while len(pool) > 1:
                    i, j, _, _, _, c = rng.choice(list(_moves(pool)))
                    pool = [n for k, n in enumerate(pool) if k not in (i, j)] + [c]
                target = pool[0]
                if target > self.max_target:
                    continue
            steps = solve(nums, target, rng)
            if steps is not None:
                return self._problem(nums, target, steps)
        raise TaskError(f"countdown: no solvable instance found in 10000 draws with "
                        f"{self.knobs()}; raise max_number or change the target")

    def from_instance(self, numbers: Sequence[int], target: int) -> Problem:
        """A problem from numbers and a target; unsolvable ones have answer ``none``."""
        nums = [int(n) for n in numbers]
        if not 2 <= len(nums) <= 6 or min(nums) < 1 or int(target) < 1:
            raise TaskError(f"countdown: needs 2..6 positive integers and a positive target, "
                            f"got numbers={list(numbers)} target={target}")
        return self._problem(nums, int(target), solve(nums, int(target)))

    def _problem(self, nums: list[int], target: int, steps) -> Problem:
        question = " ".join(map(str, nums)) + f" -> {target}"
        instance = {"numbers": nums, "target": target}
        if steps is None:
            return Problem(task=self.name, question=question, steps=(ANSWER_PREFIX + "none",),
                           answer="none", instance=instance, meta={"n_steps": 1})
        lines = [f"{a}{op}{b}={c} left " + " ".join(map(str, rest))
                 for a, op, b, c, rest in steps]
        expression = expression_from_steps(nums, steps)
        lines.append(ANSWER_PREFIX + expression)
        return Problem(task=self.name, question=question, steps=tuple(lines),
                       answer=expression, instance=instance, meta={"n_steps": len(lines)})

    def answer_correct(self, problem: Problem, answer: str) -> bool:
        nums, target = problem.instance["numbers"], problem.instance["target"]
        if answer.strip() == "none":
            return not reachable(tuple(sorted(nums)), target)
        return check_expression(answer, nums, target) == ""

    def judge_steps(self, problem: Problem, steps: Sequence[str]) -> list[tuple[bool, str]]:
        target = problem.instance["target"]
        left = Counter(problem.instance["numbers"])
        out = []
        for step in steps:
            if self.is_final_step(step):
                got = answers.extract_tagged(step) or ""
                ok = self.answer_correct(problem, got)
                out.append((ok, "" if ok else f"answer {got!r} does not solve the problem"))
                continue
            m = _STEP.fullmatch(step.strip())
            if not m:
                out.append((False, f"{step!r} is not 'a op b=c left ...'"))
                continue
            a, op, b, c = int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4))
            written = Counter(int(n) for n in m.group(5).split())
            need = Counter([a, b])
            if need - left:
                why = f"{a} and {b} are not both among the numbers left {sorted(left.elements())}"
            elif combine(a, op, b) != c:
                why = f"{a}{op}{b}={c} is wrong or breaks the rules"
            elif written != left - need + Counter([c]):
                why = "the numbers left are not the previous ones with the result"
            elif not reachable(tuple(sorted(written.elements())), target):
                why = f"{target} can no longer be reached"
            else:
                why = ""
            out.append((not why, why))
            left = written  # later steps are judged against what was written
        return out
