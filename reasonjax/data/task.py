"""The task protocol: problems with verifiable answers and, where exact, checkable steps.

A task is a frozen dataclass whose fields are its difficulty knobs. It turns a seed and an
index into a :class:`Problem` (question, solution steps, final answer), renders the text
the model sees, and judges completions:

- ``prompt(problem)``: the question followed by a newline;
- ``solution(problem)``: the steps joined by ``step_delimiter`` (no trailing delimiter);
- ``split_steps(text)``: a completion back into steps;
- ``extract_answer(text)`` / ``verify(problem, completion)``: the final answer;
- ``check_steps(problem, steps)`` -> :class:`StepCheck` (built-in tasks: exact);
- ``from_instance(...)``: a problem from an instance the user brings.

Built-in text format (short and regular, for character-level tiny models): one step per
line (``step_delimiter = "\\n"``), the last step is ``answer: <final answer>``; only
newline and printable ASCII characters. ``extract_answer`` reads the FIRST ``answer:``
line, so text a model writes after its answer does not change it.

Generation is deterministic: problem ``index`` under ``seed`` depends only on
(task knobs, seed, index), never on what was generated before, so datasets can be
generated lazily with random access (:func:`reasonjax.data.pipeline.task_source`).
"""

from __future__ import annotations

import dataclasses
import json
import random
from typing import Any, Callable, ClassVar, Mapping, Optional, Sequence

from reasonjax.config import ConfigError, from_dict, override
from reasonjax.data import answers

ANSWER_PREFIX = "answer: "


class TaskError(ValueError):
    """A task instance or knob is invalid; the message names it and the fix."""


@dataclasses.dataclass(frozen=True)
class Problem:
    """One problem.

    task: registry name of the task that made it (``get_task(problem.task)`` verifies it).
    question: the problem text (the prompt is ``question + "\\n"``).
    steps: the reference solution, one string per step; the last states the answer.
    answer: the final answer as text.
    instance: JSON-able description the task rebuilds the problem from
      (``task.from_instance(**problem.instance)``) and checks steps against.
    meta: JSON-able provenance (seed and index, or source file:line) and difficulty.
    """

    task: str
    question: str
    steps: tuple[str, ...]
    answer: str
    instance: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    meta: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict:
        return {"task": self.task, "question": self.question, "steps": list(self.steps),
                "answer": self.answer, "instance": dict(self.instance),
                "meta": dict(self.meta)}

    @classmethod
    def from_json(cls, d: Mapping) -> "Problem":
        return cls(task=d["task"], question=d["question"], steps=tuple(d["steps"]),
                   answer=d["answer"], instance=dict(d.get("instance", {})),
                   meta=dict(d.get("meta", {})))


@dataclasses.dataclass(frozen=True)
class StepCheck:
    """Exact judgement of a sequence of steps.

    correct: per step, whether the step is valid given the steps before it AS WRITTEN
      (so a step after a mistake can still be locally right).
    first_error: index of the first incorrect step; None when every step is correct.
    complete: the steps end with an answer step.
    reasons: per step, '' when correct, else why not.
    """

    correct: tuple[bool, ...]
    first_error: Optional[int]
    complete: bool
    reasons: tuple[str, ...]

    @property
    def prefix_correct(self) -> tuple[bool, ...]:
        """Per step: the prefix ending at this step has no error (the exact process label
        Monte Carlo estimates approximate)."""
        n = len(self.correct) if self.first_error is None else self.first_error
        return tuple(i < n for i in range(len(self.correct)))

    @property
    def solved(self) -> bool:
        return self.complete and self.first_error is None


def step_check(judgements: Sequence[tuple[bool, str]], complete: bool) -> StepCheck:
    """Builds a StepCheck from per-step (correct, reason) pairs."""
    correct = tuple(bool(ok) for ok, _ in judgements)
    first = next((i for i, ok in enumerate(correct) if not ok), None)
    return StepCheck(correct=correct, first_error=first, complete=complete,
                     reasons=tuple("" if ok else (why or "incorrect") for ok, why in judgements))


class Task:
    """Base class of all tasks: the text format and the judging protocol.

    Subclasses are frozen dataclasses (fields = knobs) that define ``name``,
    ``DIFFICULTIES`` (preset name -> knob overrides), ``sample(rng)``,
    ``from_instance(...)``, ``answer_correct(problem, answer)`` and, where exact,
    ``judge_steps(problem, steps)``.
    """

    name: ClassVar[str] = ""
    step_delimiter: ClassVar[str] = "\n"
    exact_steps: ClassVar[bool] = True
    DIFFICULTIES: ClassVar[dict[str, dict[str, Any]]] = {}
    # A task family (reasoning-gym): ``get_task("NAME:MEMBER")`` sets MEMBER_FIELD to
    # MEMBER, and knobs that are not fields go into the dict field KNOB_FIELD.
    MEMBER_FIELD: ClassVar[Optional[str]] = None
    KNOB_FIELD: ClassVar[Optional[str]] = None

    # ---- generation --------------------------------------------------------------------

    def sample(self, rng: random.Random) -> Problem:
        raise NotImplementedError(f"{type(self).__name__} does not generate problems")

    def problem(self, index: int, seed: int | str = 0) -> Problem:
        """Problem number ``index`` of the stream ``seed`` (deterministic, random access)."""
        rng = random.Random(f"{self.name}/{seed}/{index}")
        p = self.sample(rng)
        meta = {"seed": seed, "index": index, "knobs": self.knobs(), **dict(p.meta)}
        return dataclasses.replace(p, meta=meta)

    def generate(self, n: int, seed: int | str = 0, start: int = 0) -> list[Problem]:
        """Problems ``start .. start + n - 1`` of stream ``seed``."""
        return [self.problem(i, seed) for i in range(start, start + n)]

    def from_instance(self, **instance) -> Problem:
        raise NotImplementedError(f"{type(self).__name__} has no from_instance")

    def knobs(self) -> dict:
        return dataclasses.asdict(self) if dataclasses.is_dataclass(self) else {}

    # ---- text --------------------------------------------------------------------------

    def prompt(self, problem: Problem) -> str:
        return problem.question + "\n"

    def solution(self, problem: Problem) -> str:
        return self.step_delimiter.join(problem.steps)

    def split_steps(self, text: str) -> list[str]:
        """Steps of a completion; a trailing delimiter does not make an empty step."""
        if text.endswith(self.step_delimiter):
            text = text[:-len(self.step_delimiter)]
        return text.split(self.step_delimiter) if text else []

    def is_final_step(self, step: str) -> bool:
        """Whether ``step`` states the final answer (then the solution ends)."""
        return "\n" not in step and answers.extract_tagged(step) is not None

    def extract_answer(self, text: str) -> Optional[str]:
        return answers.extract_tagged(text)

    # ---- judging -----------------------------------------------------------------------

    def answer_correct(self, problem: Problem, answer: str) -> bool:
        raise NotImplementedError(f"{type(self).__name__} does not judge answers")

    def verify(self, problem: Problem, completion: str) -> bool:
        """Whether the completion's final answer is correct."""
        answer = self.extract_answer(completion)
        return answer is not None and self.answer_correct(problem, answer)

    def score(self, problem: Problem, completion: str) -> float:
        """The completion's reward in [0, 1]: 1 when it verifies, else 0 (tasks with
        partial credit, such as reasoning-gym's, override this)."""
        return float(self.verify(problem, completion))

    def judge_steps(self, problem: Problem, steps: Sequence[str]) -> list[tuple[bool, str]]:
        raise TaskError(f"task {self.name!r} has no exact step checker; label steps with "
                        "Monte Carlo rollouts instead")

    def check_steps(self, problem: Problem, steps: Sequence[str]) -> StepCheck:
        """Exact per-step judgement (see :class:`StepCheck`). Steps after the first answer
        step are incorrect."""
        steps = list(steps)
        end = next((i for i, s in enumerate(steps) if self.is_final_step(s)), None)
        body = steps if end is None else steps[:end + 1]
        judged = list(self.judge_steps(problem, body))
        judged += [(False, "step after the answer")] * (len(steps) - len(body))
        return step_check(judged, complete=end is not None)


# ---------------------------------------------------------------------------------------
# Registry

_REGISTRY: dict[str, Callable[..., Task]] = {}


def register_task(cls):
    """Class decorator: makes ``get_task(cls.name)`` build ``cls``."""
    if not cls.name:
        raise TaskError(f"{cls.__name__} needs a class attribute `name`")
    _REGISTRY[cls.name] = cls
    return cls


def _load_builtin() -> None:
    import reasonjax.data.tasks  # noqa: F401  (registers the built-in tasks)


def task_names() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def get_task(name: str, difficulty: Optional[str] = None, **knobs) -> Task:
    """The task ``name`` with the knobs of preset ``difficulty`` and then ``knobs``.
    ``NAME:MEMBER`` names a member of a task family (``gym:chain_sum``); its knobs that
    are not task fields go into the family's config dict."""
    _load_builtin()
    family, _, member = name.partition(":")
    if member and family in _REGISTRY and _REGISTRY[family].MEMBER_FIELD:
        cls = _REGISTRY[family]
        fields = {f.name for f in dataclasses.fields(cls)}
        inner = {k: knobs.pop(k) for k in list(knobs) if k not in fields}
        knobs = {**knobs, cls.MEMBER_FIELD: member}
        if inner:
            knobs[cls.KNOB_FIELD] = {**knobs.get(cls.KNOB_FIELD, {}), **inner}
        name = family
    if name not in _REGISTRY:
        raise TaskError(f"unknown task {name!r}; known tasks: {sorted(_REGISTRY)} (and "
                        "gym:<dataset>, see `reasonjax data list`)")
    cls = _REGISTRY[name]
    settings: dict[str, Any] = {}
    if difficulty is not None:
        if difficulty not in cls.DIFFICULTIES:
            raise TaskError(f"task {name!r} has no difficulty {difficulty!r}; presets: "
                            f"{sorted(cls.DIFFICULTIES)}")
        settings.update(cls.DIFFICULTIES[difficulty])
    settings.update(knobs)
    try:
        return from_dict(cls, settings)
    except ConfigError as e:
        raise TaskError(f"task {name!r}: {e}") from None


def task_from_args(name: str, difficulty: Optional[str] = None,
                   assignments: Sequence[str] = ()) -> Task:
    """``get_task`` from command-line ``knob=value`` strings (typed by the knob fields)."""
    task = get_task(name, difficulty)
    field = type(task).KNOB_FIELD
    if field:  # a family's knobs are its config's keys
        fields = {f.name for f in dataclasses.fields(task)}
        assignments = [a if a.split("=", 1)[0].split(".")[0] in fields else f"{field}.{a}"
                       for a in assignments]
    try:
        return override(task, list(assignments))
    except ConfigError as e:
        raise TaskError(f"task {name!r}: {e}") from None


def decode_problem(record: Mapping) -> Problem:
    """A Problem from a JSON-style dict or a TFDS record (bytes fields, JSON text)."""
    def text(v):
        return v.decode("utf-8") if isinstance(v, bytes) else str(v)

    def obj(v):
        return json.loads(text(v)) if isinstance(v, (bytes, str)) else dict(v)

    return Problem(task=text(record["task"]), question=text(record["question"]),
                   steps=tuple(text(s) for s in record["steps"]),
                   answer=text(record["answer"]), instance=obj(record["instance"]),
                   meta=obj(record["meta"]))
