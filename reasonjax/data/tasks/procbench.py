"""ProcBench-style procedures: apply a list of string or list operations, one per step.

After ProcBench (Fujisawa et al., 2024, "ProcBench: Benchmark for Multi-Step Reasoning and
Following Procedure"): the procedure is given, the difficulty is following it exactly for
2..25 steps, and the state after every step is the step. Format (``n_steps=4``)::

    dbca; rev; swap 0 2; del 1; ins 0 x     <- question: start state; operations
    acbd                                    <- state after "rev"
    bcad
    bad
    answer: xbad                            <- the last state is the answer

States: ``kind="str"``: lowercase letters (``dbca``); ``kind="list"``: integers separated
by spaces (``3 1 4``); ``kind="mixed"``: either, drawn per problem. Operations:
``rev``; ``rot k`` (rotate left by k); ``swap i j``; ``del i``; ``ins i x`` (insert x
before index i); ``sort``; ``rep a b`` (strings: replace every a by b); ``add k`` (lists:
add k to every item). Indices are 0-based; states never become empty.

Step checking (exact): step i is correct when it equals operation i applied to the state
written at step i-1 (the start state for step 0). An answer step at position i is
correct when it equals the remaining operations applied to that state.

Knobs: ``n_steps`` (= number of operations = number of steps), ``length`` (start state
length), ``kind``.
"""

from __future__ import annotations

import dataclasses
import random
import re
import string
from typing import ClassVar, Optional, Sequence, Union

from reasonjax.data import answers
from reasonjax.data.task import ANSWER_PREFIX, Problem, Task, TaskError, register_task

State = Union[str, list]
KINDS = ("str", "list", "mixed")
_COMMON = ("rev", "rot", "swap", "del", "ins", "sort")
OPS = {"str": _COMMON + ("rep",), "list": _COMMON + ("add",)}
_ARITY = {"rev": 0, "sort": 0, "rot": 1, "del": 1, "add": 1, "swap": 2, "ins": 2, "rep": 2}


def render_state(state: State) -> str:
    return state if isinstance(state, str) else " ".join(map(str, state))


def parse_state(text: str, kind: str) -> Optional[State]:
    text = text.strip()
    if kind == "str":
        return text if re.fullmatch(r"[a-z]+", text) else None
    if re.fullmatch(r"-?\d{1,9}( -?\d{1,9})*", text):
        return [int(x) for x in text.split(" ")]
    return None


def apply_op(op: str, state: State) -> Optional[State]:
    """``op`` (e.g. ``"swap 0 2"``) applied to ``state``; None if it does not apply."""
    parts = op.split()
    if not parts or parts[0] not in _ARITY or len(parts) != 1 + _ARITY[parts[0]]:
        return None
    name, args = parts[0], parts[1:]
    is_str = isinstance(state, str)
    items = list(state)
    n = len(items)

    def index(a: str, hi: int) -> Optional[int]:
        return int(a) if re.fullmatch(r"\d+", a) and int(a) < hi else None

    if name == "rev":
        items = items[::-1]
    elif name == "sort":
        items = sorted(items)
    elif name == "rot":
        k = index(args[0], n)
        if k is None or k == 0:
            return None
        items = items[k:] + items[:k]
    elif name == "del":
        i = index(args[0], n)
        if i is None or n < 2:
            return None
        del items[i]
    elif name == "swap":
        i, j = index(args[0], n), index(args[1], n)
        if i is None or j is None or i == j:
            return None
        items[i], items[j] = items[j], items[i]
    elif name == "ins":
        i = index(args[0], n + 1)
        if i is None:
            return None
        if is_str:
            if not re.fullmatch(r"[a-z]", args[1]):
                return None
            items.insert(i, args[1])
        else:
            if not re.fullmatch(r"-?\d{1,9}", args[1]):
                return None
            items.insert(i, int(args[1]))
    elif name == "rep":
        a, b = args
        if not is_str or not re.fullmatch(r"[a-z]", a) or not re.fullmatch(r"[a-z]", b) \
                or a == b or a not in items:
            return None
        items = [b if x == a else x for x in items]
    elif name == "add":
        if is_str or not re.fullmatch(r"-?\d{1,9}", args[0]):
            return None
        items = [x + int(args[0]) for x in items]
    return "".join(items) if is_str else items


def _random_op(rng: random.Random, state: State, max_len: int) -> str:
    is_str = isinstance(state, str)
    n = len(state)
    choices = [op for op in OPS["str" if is_str else "list"]
               if not (op == "del" and n < 2) and not (op == "ins" and n >= max_len)
               and not (op in ("rot", "swap") and n < 2)]
    name = rng.choice(choices)
    if name in ("rev", "sort"):
        return name
    if name == "rot":
        return f"rot {rng.randint(1, n - 1)}"
    if name == "del":
        return f"del {rng.randrange(n)}"
    if name == "swap":
        i, j = rng.sample(range(n), 2)
        return f"swap {i} {j}"
    if name == "ins":
        x = rng.choice(string.ascii_lowercase) if is_str else rng.randint(0, 9)
        return f"ins {rng.randint(0, n)} {x}"
    if name == "rep":
        a = rng.choice(state)
        b = rng.choice([c for c in string.ascii_lowercase if c != a])
        return f"rep {a} {b}"
    return f"add {rng.randint(1, 9)}"


@register_task
@dataclasses.dataclass(frozen=True)
class ProcBench(Task):
    """String / list procedures with the state after each operation as a step."""

    name: ClassVar[str] = "procbench"
    DIFFICULTIES: ClassVar[dict] = {
        "easy": {"n_steps": 2, "length": 3},
        "medium": {"n_steps": 4, "length": 4},
        "hard": {"n_steps": 12, "length": 6},
        "extreme": {"n_steps": 25, "length": 8},
    }

    n_steps: int = 4
    length: int = 4
    kind: str = "str"

    def __post_init__(self):
        if self.n_steps < 1 or self.length < 1:
            raise TaskError(f"procbench: n_steps and length must be >= 1, got "
                            f"{self.n_steps}, {self.length}")
        if self.kind not in KINDS:
            raise TaskError(f"procbench: kind must be one of {KINDS}, got {self.kind!r}")

    def sample(self, rng: random.Random) -> Problem:
        kind = rng.choice(("str", "list")) if self.kind == "mixed" else self.kind
        if kind == "str":
            state: State = "".join(rng.choice(string.ascii_lowercase)
                                   for _ in range(self.length))
        else:
            state = [rng.randint(0, 9) for _ in range(self.length)]
        start = render_state(state)
        ops = []
        for _ in range(self.n_steps):
            for _ in range(20):  # prefer operations that change the state
                op = _random_op(rng, state, self.length + 4)
                new = apply_op(op, state)
                if new != state:
                    break
            state = new
            ops.append(op)
        return self.from_instance(start, ops, kind)

    def from_instance(self, state: str, operations: Sequence[str],
                      kind: str = "str") -> Problem:
        """A problem from a start state (``"dbca"`` or ``"3 1 4"``) and operations."""
        if kind not in ("str", "list"):
            raise TaskError(f"procbench: kind must be 'str' or 'list', got {kind!r}")
        current = parse_state(state, kind)
        if current is None:
            raise TaskError(f"procbench: start state {state!r} is not a {kind} state "
                            "(lowercase letters, or integers separated by single spaces)")
        if not operations:
            raise TaskError("procbench: needs at least one operation")
        steps = []
        for i, op in enumerate(operations):
            if op.split()[:1] and op.split()[0] not in OPS[kind]:
                raise TaskError(f"procbench: operation {i} {op!r} is not a {kind} operation "
                                f"({', '.join(OPS[kind])})")
            current = apply_op(op, current)
            if current is None:
                raise TaskError(f"procbench: operation {i} {op!r} does not apply to the state "
                                f"{steps[-1] if steps else state!r}")
            steps.append(render_state(current))
        steps[-1] = ANSWER_PREFIX + steps[-1]
        start = render_state(parse_state(state, kind))
        return Problem(task=self.name, question="; ".join([start, *operations]),
                       steps=tuple(steps), answer=render_state(current),
                       instance={"state": start, "operations": list(operations),
                                 "kind": kind},
                       meta={"n_steps": len(steps)})

    def answer_correct(self, problem: Problem, answer: str) -> bool:
        return " ".join(answer.split()) == problem.answer

    def judge_steps(self, problem: Problem, steps: Sequence[str]) -> list[tuple[bool, str]]:
        kind = problem.instance["kind"]
        ops = problem.instance["operations"]
        state: Optional[State] = parse_state(problem.instance["state"], kind)
        out = []
        for i, step in enumerate(steps):
            final = self.is_final_step(step)
            text = (answers.extract_tagged(step) or "") if final else step
            written = parse_state(text, kind)
            todo = ops[i:] if final else ops[i:i + 1]
            expected = state
            for op in todo:
                expected = apply_op(op, expected) if expected is not None else None
            if not todo:
                why = "more steps than operations"
            elif written is None:
                why = f"{text!r} is not a {kind} state"
            elif expected is None:
                why = f"{ops[i]!r} does not apply to the previous state"
            elif written != expected:
                why = f"expected {render_state(expected)!r}"
            else:
                why = ""
            out.append((not why, why))
            if written is not None:
                state = written  # later steps are judged against what was written
        return out
