"""reasoning-gym's procedural datasets as reasonjax tasks: ``--task gym:<dataset>``.

reasoning-gym (Stojanovski et al., 2025, "REASONING GYM: Reasoning Environments for
Reinforcement Learning with Verifiable Rewards"; ``pip install 'reasonjax[gym]'``)
generates problems in 100+ domains (arithmetic, algebra, logic, games, graphs, ...)
and scores answers with each dataset's own ``score_answer``. Any of them is a task here::

    task = get_task("gym:chain_sum", config={"min_terms": 3})
    task_from_args("gym:countdown", None, ["min_numbers=3", "max_numbers=4"])
    reasonjax train grpo --task gym:chain_sum max_terms=3 ...

- Problems: problem ``index`` of stream ``seed`` is item ``index % 256`` of the dataset
  built with the generator config and a seed derived from (dataset, seed, index // 256):
  deterministic, random access, and never a dataset large enough to make a generator
  precompute for long (some build ``size`` items up front).
- Text: the prompt is the dataset's question (with its own answer-format instructions)
  and a newline; the reference solution, where the dataset gives an answer, is one step
  ``answer: <answer>``; a completion's answer is the last ``<answer>...</answer>`` (the
  reasoning-gym convention) or else the first ``answer:`` line.
- Judging: ``score(problem, completion)`` is the dataset's ``score_answer`` on the entry
  rebuilt from the problem's instance (partial credit kept: RL rewards use it); a
  completion is correct when it scores 1.
- Steps: datasets whose entries carry an integer expression (:data:`EXPRESSION_DATASETS`:
  ``chain_sum``) get the arithmetic task's exact solution, one operation per step, and its
  exact step checker (``exact_steps`` is true for them); the others are final-answer only.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from typing import Any, ClassVar, Optional

from reasonjax.data import answers
from reasonjax.data.task import ANSWER_PREFIX, Problem, Task, TaskError, register_task
from reasonjax.data.tasks.arithmetic import Arithmetic

PREFIX = "gym:"
# Datasets whose entries hold an integer expression (metadata field) that
# :class:`~reasonjax.data.tasks.arithmetic.Arithmetic` solves and checks step by step.
EXPRESSION_DATASETS = {"chain_sum": "expression"}
CHUNK = 256  # items per generator instance (see the module docstring)


def _gym():
    try:
        import reasoning_gym
    except ImportError:
        raise TaskError("gym tasks need reasoning-gym: pip install 'reasonjax[gym]' (or "
                        "reasoning-gym)") from None
    return reasoning_gym


def dataset_names() -> list[str]:
    """Every reasoning-gym dataset name (empty when reasoning-gym is not installed)."""
    try:
        from reasoning_gym.factory import DATASETS
    except ImportError:
        return []
    return sorted(DATASETS)


def describe(dataset: str) -> str:
    """The first line of a dataset's docstring (for ``reasonjax data list``)."""
    from reasoning_gym.factory import DATASETS

    cls, config_cls = DATASETS[dataset]
    doc = (cls.__doc__ or config_cls.__doc__ or "").strip()
    return doc.splitlines()[0] if doc else "(no description)"


def _seed(dataset: str, seed: Any, chunk: int) -> int:
    digest = hashlib.sha256(f"{dataset}/{seed}/{chunk}".encode()).hexdigest()
    return int(digest[:8], 16)


@functools.lru_cache(maxsize=64)
def _generator(dataset: str, config_json: str, seed: int):
    gym = _gym()
    try:
        return gym.create_dataset(dataset, seed=seed, size=CHUNK, **json.loads(config_json))
    except (TypeError, ValueError, AssertionError) as e:
        raise TaskError(f"task gym:{dataset}: bad generator config "
                        f"{json.loads(config_json)}: {e}") from None


@register_task
@dataclasses.dataclass(frozen=True)
class GymTask(Task):
    """A reasoning-gym dataset (module docstring). ``dataset``: its registry name;
    ``config``: its generator config's fields (``key=value`` on the command line)."""

    name: ClassVar[str] = "gym"
    exact_steps: ClassVar[bool] = False
    MEMBER_FIELD: ClassVar[Optional[str]] = "dataset"
    KNOB_FIELD: ClassVar[Optional[str]] = "config"

    dataset: str = "chain_sum"
    config: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        _gym()  # the install hint when reasoning-gym is missing
        if self.dataset not in dataset_names():
            raise TaskError(f"gym: no reasoning-gym dataset {self.dataset!r}; see "
                            "`reasonjax data list`")
        bad = [k for k in self.config if k in ("seed", "size")]
        if bad:
            raise TaskError(f"gym:{self.dataset}: {bad} are set by reasonjax (the problem "
                            "stream's seed and index), not in the config")
        self._entry(0, 0)  # the generator validates its config now, not mid-run
        # The class is registered as "gym"; an instance is named for its dataset, and has
        # exact steps when its dataset's entries are arithmetic expressions.
        object.__setattr__(self, "name", PREFIX + self.dataset)
        object.__setattr__(self, "exact_steps", self.dataset in EXPRESSION_DATASETS)

    def _entry(self, seed: Any, index: int) -> dict:
        config = json.dumps(self.config, sort_keys=True)
        gen = _generator(self.dataset, config, _seed(self.dataset, seed, index // CHUNK))
        return gen[index % CHUNK]

    def _score(self, problem: Problem, answer: Optional[str]) -> float:
        inst = problem.instance
        task = self if inst.get("config", {}) == self.config else \
            GymTask(inst["dataset"], dict(inst.get("config", {})))
        gen = _generator(task.dataset, json.dumps(task.config, sort_keys=True),
                         _seed(task.dataset, inst["seed"], inst["index"] // CHUNK))
        return float(gen.score_answer(answer, gen[inst["index"] % CHUNK]))

    # ---- generation --------------------------------------------------------------------

    def problem(self, index: int, seed: int | str = 0) -> Problem:
        return self.from_instance(self.dataset, self.config, seed, index)

    def from_instance(self, dataset: str, config: Optional[dict] = None, seed: Any = 0,
                      index: int = 0, expression: Optional[str] = None) -> Problem:
        """Problem ``index`` of stream ``seed`` of ``dataset`` with generator ``config``
        (``expression`` is derived: the arithmetic instance of an expression dataset)."""
        task = self if (dataset, dict(config or {})) == (self.dataset, self.config) else \
            GymTask(dataset, dict(config or {}))
        entry = task._entry(seed, index)
        answer = entry.get("answer")
        steps = (ANSWER_PREFIX + str(answer),) if answer is not None else ()
        instance = {"dataset": dataset, "config": dict(config or {}), "seed": seed,
                    "index": index}
        if task.exact_steps:
            expression = str(entry["metadata"][EXPRESSION_DATASETS[dataset]]).replace(" ", "")
            solved = Arithmetic().from_instance(expression)
            if solved.answer != str(answer):
                raise TaskError(f"gym:{dataset} item {index}: the expression {expression!r} "
                                f"gives {solved.answer}, the dataset says {answer}")
            steps, instance["expression"] = solved.steps, expression
        meta = {"seed": seed, "index": index, "knobs": task.knobs(),
                "has_reference": answer is not None}
        return Problem(task=task.name, question=entry["question"], steps=steps,
                       answer="" if answer is None else str(answer), instance=instance,
                       meta=meta)

    # ---- text and judging --------------------------------------------------------------

    def extract_answer(self, text: str) -> Optional[str]:
        from reasoning_gym.utils import extract_answer

        tagged = extract_answer(text)
        return tagged if tagged is not None else answers.extract_tagged(text)

    def score(self, problem: Problem, completion: str) -> float:
        """The dataset's own score in [0, 1] of the completion's answer (partial credit
        kept); 0 when there is no answer."""
        answer = self.extract_answer(completion)
        return 0.0 if answer is None else self._score(problem, answer)

    def answer_correct(self, problem: Problem, answer: str) -> bool:
        return self._score(problem, answer) >= 1.0

    def judge_steps(self, problem: Problem, steps) -> list[tuple[bool, str]]:
        if "expression" not in problem.instance:
            return super().judge_steps(problem, steps)  # raises: no exact step checker
        return Arithmetic().judge_steps(problem, steps)
