"""Multi-step integer arithmetic: an expression evaluated one operation per step.

Format (``n_ops=3``, about 35 characters)::

    12+7*3-5          <- question (prompt = question + "\\n")
    12+21-5           <- step 1: the expression after one operation
    33-5              <- step 2
    answer: 28        <- step 3: the last operation gives the answer

Usual precedence (``*`` and ``/`` before ``+`` and ``-``, each left to right; parentheses
first). The reference solution carries out one operation per step, so a solution has
exactly ``n_ops`` steps: the innermost parenthesised group first, within it (or without
parentheses) the leftmost ``*`` / ``/``, then the leftmost ``+`` / ``-``; a group that
became one number loses its parentheses. Negative numbers are written ``-3`` where an
operand goes (``4*-3``, ``5--2``); intermediate values may be negative. Division is exact:
generated problems only divide by a non-zero divisor, so every state and the answer are
integers.

Step checking (exact): each step is read as the claim "previous expression = this one",
judged against the previous step AS WRITTEN (the question for the first step). A step is
correct when it parses, has fewer operators than the previous expression (progress) and
has the same value (exact rationals; a division by zero is an error). So a valid
reduction in another order, or a jump over several operations, is correct; an arithmetic
slip or a precedence error is not. The answer step is correct when its number equals the
previous expression's value.

Knobs: ``n_ops`` (steps), operands drawn from ``min_operand..max_operand`` (each negated
with probability 1/2 when ``negatives``), ``ops`` (a subset of ``+-*/``), and ``parens``
(random expression trees, parenthesised where the tree needs it, instead of a flat
chain). The defaults (``min_operand=1``, no negatives, no parentheses, ``+-*``) draw
exactly the problems of the earlier, narrower task, so presets keep their meaning;
the ``full`` preset turns every extension on.
"""

from __future__ import annotations

import dataclasses
import random
import re
from fractions import Fraction
from typing import ClassVar, Optional, Sequence, Union

from reasonjax.data import answers
from reasonjax.data.task import ANSWER_PREFIX, Problem, Task, TaskError, register_task

_MAX_CHARS = 400  # an arithmetic state longer than this is not a plausible step
_TOKEN = re.compile(r"\d+|[-+*/()]")
_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}

Expr = Union[int, tuple]  # an integer, or (op, left, right)


class _Malformed(ValueError):
    pass


def parse(text: str) -> Optional[Expr]:
    """The expression tree of ``text`` (integers, ``+ - * /``, parentheses, ``-`` before
    a number for a negative operand; no spaces); None if malformed."""
    text = text.strip()
    if not text or len(text) > _MAX_CHARS or "".join(_TOKEN.findall(text)) != text:
        return None
    tokens = _TOKEN.findall(text)
    try:
        tree, end = _expr(tokens, 0)
    except (_Malformed, IndexError):
        return None
    return tree if end == len(tokens) else None


def _chain(tokens: list[str], i: int, ops: str, part) -> tuple[Expr, int]:
    """``part (op part)*`` for ``op`` in ``ops``, grouped left to right."""
    left, i = part(tokens, i)
    while i < len(tokens) and tokens[i] in ops:
        right, j = part(tokens, i + 1)
        left, i = (tokens[i], left, right), j
    return left, i


def _expr(tokens: list[str], i: int) -> tuple[Expr, int]:
    return _chain(tokens, i, "+-", _term)


def _term(tokens: list[str], i: int) -> tuple[Expr, int]:
    return _chain(tokens, i, "*/", _operand)


def _operand(tokens: list[str], i: int) -> tuple[Expr, int]:
    if tokens[i] == "(":
        inner, i = _expr(tokens, i + 1)
        if i >= len(tokens) or tokens[i] != ")":
            raise _Malformed("unclosed parenthesis")
        return inner, i + 1
    if tokens[i] == "-" and i + 1 < len(tokens) and tokens[i + 1].isdigit():
        return -int(tokens[i + 1]), i + 2
    if tokens[i].isdigit():
        return int(tokens[i]), i + 1
    raise _Malformed(f"unexpected {tokens[i]!r}")


def value(tree: Expr) -> Fraction:
    """Exact value; ZeroDivisionError on a division by zero."""
    if isinstance(tree, int):
        return Fraction(tree)
    op, a, b = tree
    x, y = value(a), value(b)
    return x + y if op == "+" else x - y if op == "-" else x * y if op == "*" else x / y


def n_ops(tree: Expr) -> int:
    return 0 if isinstance(tree, int) else 1 + n_ops(tree[1]) + n_ops(tree[2])


def render(tree: Expr) -> str:
    """Text of a tree with the parentheses its shape needs (none for a flat chain)."""
    if isinstance(tree, int):
        return str(tree)
    op, a, b = tree
    left, right = render(a), render(b)
    if not isinstance(a, int) and _PRECEDENCE[a[0]] < _PRECEDENCE[op]:
        left = f"({left})"
    if not isinstance(b, int) and _PRECEDENCE[b[0]] <= _PRECEDENCE[op]:
        right = f"({right})"
    return f"{left}{op}{right}"


def reduce_once(tree: Expr) -> Expr:
    """One reference step: of the operations whose operands are both numbers, the most
    deeply parenthesised, then ``*`` / ``/`` before ``+`` / ``-``, then the leftmost."""
    candidates: list[tuple[tuple, tuple]] = []

    def walk(node, path, depth, position):
        if isinstance(node, int):
            return position + 1
        op, a, b = node
        a_depth = depth + (not isinstance(a, int) and _PRECEDENCE[a[0]] < _PRECEDENCE[op])
        b_depth = depth + (not isinstance(b, int) and _PRECEDENCE[b[0]] <= _PRECEDENCE[op])
        position = walk(a, path + (1,), a_depth, position)
        here = position
        position = walk(b, path + (2,), b_depth, position)
        if isinstance(a, int) and isinstance(b, int):
            candidates.append(((-depth, -_PRECEDENCE[op], here), path))
        return position

    walk(tree, (), 0, 0)
    _, path = min(candidates)
    return _replace(tree, path)


def _replace(tree: Expr, path: tuple) -> Expr:
    if not path:
        v = value(tree)
        return int(v) if v.denominator == 1 else tree  # exact by construction
    op, a, b = tree
    return (op, _replace(a, path[1:]), b) if path[0] == 1 else (op, a, _replace(b, path[1:]))


def _divisor(rng: random.Random, of: Fraction, lo: int, hi: int, negatives: bool) -> int:
    """A non-zero divisor of integer ``of`` with magnitude in [max(lo, 1), hi] (1 always
    qualifies), negated with probability 1/2 when ``negatives``."""
    n = abs(int(of))
    choices = [d for d in range(max(lo, 1), hi + 1) if n == 0 or n % d == 0] or [1]
    d = rng.choice(choices)
    return -d if negatives and rng.random() < 0.5 else d


@register_task
@dataclasses.dataclass(frozen=True)
class Arithmetic(Task):
    """Integer expressions (+ - * /, negatives, parentheses) with each intermediate
    expression as a step (see module doc)."""

    name: ClassVar[str] = "arithmetic"
    DIFFICULTIES: ClassVar[dict] = {
        "easy": {"n_ops": 2, "max_operand": 9},
        "medium": {"n_ops": 3, "max_operand": 20},
        "hard": {"n_ops": 5, "max_operand": 99},
        "extreme": {"n_ops": 8, "max_operand": 999},
        "full": {"n_ops": 3, "max_operand": 9, "min_operand": 0, "negatives": True,
                 "parens": True, "ops": "+-*/"},
    }

    n_ops: int = 3
    max_operand: int = 20
    ops: str = "+-*"
    min_operand: int = 1
    negatives: bool = False
    parens: bool = False

    def __post_init__(self):
        if self.n_ops < 1:
            raise TaskError(f"n_ops: must be >= 1, got {self.n_ops}")
        if not 0 <= self.min_operand <= self.max_operand or self.max_operand < 1:
            raise TaskError(f"min_operand, max_operand: need 0 <= min_operand <= max_operand "
                            f"and max_operand >= 1, got {self.min_operand}, "
                            f"{self.max_operand}")
        if not self.ops or set(self.ops) - set("+-*/"):
            raise TaskError(f"ops: must be a non-empty subset of '+-*/', got {self.ops!r}")

    @property
    def _narrow(self) -> bool:
        """The earlier task's knobs: problems drawn exactly as it drew them."""
        return (self.min_operand == 1 and not self.negatives and not self.parens
                and "/" not in self.ops)

    def _operand(self, rng: random.Random) -> int:
        n = rng.randint(self.min_operand, self.max_operand)
        return -n if self.negatives and rng.random() < 0.5 else n

    def _flat(self, rng: random.Random) -> Expr:
        """A chain ``a op b op c ...``: each ``/`` divides the product term before it."""
        tree: Expr = self._operand(rng)
        term: Expr = tree  # the * / chain the next * or / extends
        for _ in range(self.n_ops):
            op = rng.choice(self.ops)
            if op in "+-":
                term = self._operand(rng)
                tree = (op, tree, term)
                continue
            b = (_divisor(rng, value(term), self.min_operand, self.max_operand,
                          self.negatives) if op == "/" else self._operand(rng))
            new_term = (op, term, b)
            tree = _swap(tree, term, new_term)
            term = new_term
        return tree

    def _tree(self, rng: random.Random, n: int) -> Expr:
        """A random tree of ``n`` operations; a ``/`` divides by a divisor of its left
        subtree's value."""
        if n == 0:
            return self._operand(rng)
        op = rng.choice(self.ops)
        if op == "/":  # the divisor is one operand: the left subtree takes every operation
            left = self._tree(rng, n - 1)
            return op, left, _divisor(rng, value(left), self.min_operand, self.max_operand,
                                      self.negatives)
        k = rng.randint(0, n - 1)
        return op, self._tree(rng, k), self._tree(rng, n - 1 - k)

    def sample(self, rng: random.Random) -> Problem:
        if self._narrow:
            nums = [rng.randint(1, self.max_operand) for _ in range(self.n_ops + 1)]
            ops = [rng.choice(self.ops) for _ in range(self.n_ops)]
            return self.from_instance(str(nums[0]) + "".join(
                f"{op}{n}" for op, n in zip(ops, nums[1:])))
        tree = self._tree(rng, self.n_ops) if self.parens else self._flat(rng)
        return self.from_instance(render(tree))

    def from_instance(self, expression: str) -> Problem:
        """A problem from an integer expression (``"3+4*2"``, ``"(2-5)*-3/9"``) whose
        reference reduction stays in the integers."""
        tree = parse(expression)
        if tree is None or isinstance(tree, int):
            raise TaskError(f"arithmetic: {expression!r} is not an expression of integers "
                            "joined by + - * / (with parentheses) with at least one operator")
        steps, state = [], tree
        try:
            while not isinstance(state, int):
                nxt = reduce_once(state)
                if nxt == state:
                    raise TaskError(f"arithmetic: {expression!r} leaves the integers (an "
                                    "inexact division)")
                state = nxt
                steps.append(render(state))
        except ZeroDivisionError:
            raise TaskError(f"arithmetic: {expression!r} divides by zero") from None
        steps[-1] = ANSWER_PREFIX + steps[-1]
        return Problem(task=self.name, question=render(tree), steps=tuple(steps),
                       answer=str(state), instance={"expression": render(tree)},
                       meta={"n_steps": len(steps)})

    def answer_correct(self, problem: Problem, answer: str) -> bool:
        return answers.answers_equal(answer, problem.answer)

    def judge_steps(self, problem: Problem, steps: Sequence[str]) -> list[tuple[bool, str]]:
        state = parse(problem.instance["expression"])
        out = []
        for step in steps:
            target = value(state)
            if self.is_final_step(step):
                got = answers.extract_tagged(step)
                if not answers.answers_equal(got, _text(target)):
                    out.append((False, f"answer {got!r} but the previous expression is "
                                       f"{_text(target)}"))
                else:
                    out.append((True, ""))
                continue
            written = parse(step)
            if written is None:
                out.append((False, f"{step!r} is not an expression"))
                continue
            try:
                got = value(written)
            except ZeroDivisionError:
                out.append((False, "division by zero"))
                continue
            if n_ops(written) >= n_ops(state):
                out.append((False, "no operation was carried out"))
            elif got != target:
                out.append((False, f"value {_text(got)} but the previous expression is "
                                   f"{_text(target)}"))
            else:
                out.append((True, ""))
            state = written  # later steps are judged against what was written
        return out


def _text(v: Fraction) -> str:
    return str(v.numerator) if v.denominator == 1 else f"{v.numerator}/{v.denominator}"


def _swap(tree: Expr, old: Expr, new: Expr) -> Expr:
    """``tree`` with the subtree ``old`` (by identity, the rightmost spine) replaced."""
    if tree is old:
        return new
    op, a, b = tree
    return op, a, _swap(b, old, new)
