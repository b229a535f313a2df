"""Tasks for real datasets: GSM8K-style, MATH-style and multiple-choice (ARC-style).

These judge final answers only (no exact step checker: label their steps with Monte Carlo
rollouts). Problems come from :mod:`reasonjax.data.local` or ``from_instance``.

- ``gsm8k``: steps are the solution's lines (calculator annotations ``<<48/2=24>>``
  removed); the last step is ``#### <answer>``. Step delimiter ``"\\n"``.
- ``math``: steps are the solution's paragraphs, the answer is the last ``\\boxed{}``.
  Step delimiter ``"\\n\\n"`` (PRM800K / Math-Shepherd style).
- ``mc``: the prompt lists the choices as ``A) ...`` lines; the solution is
  ``answer: <letter>``. Step delimiter ``"\\n"``.
"""

from __future__ import annotations

import dataclasses
import re
from typing import ClassVar, Optional, Sequence

from reasonjax.data import answers
from reasonjax.data.task import ANSWER_PREFIX, Problem, Task, TaskError, register_task

_CALC = re.compile(r"<<[^<>]*>>")


@dataclasses.dataclass(frozen=True)
class RealTask(Task):
    """Final-answer-only tasks over user data. ``prompt_format``: the prompt with
    ``{question}`` where the problem goes (:mod:`reasonjax.data.prompting` builds it from
    a template, few-shot exemplars and a chat template); ``answer_fallback``: a completion
    without the task's answer marks answers with its last number; ``stop``: strings that
    end a completion (a few-shot model starting the next ``Question:``): its answer is
    read from the text before the first of them."""

    exact_steps: ClassVar[bool] = False
    prompt_format: str = "{question}\n"
    answer_fallback: bool = False
    stop: tuple[str, ...] = ()

    def prompt(self, problem: Problem) -> str:
        return self.prompt_format.replace("{question}", problem.question)

    def answer_correct(self, problem: Problem, answer: str) -> bool:
        return answers.answers_equal(answer, problem.answer)

    def _extract(self, text: str, *marks) -> Optional[str]:
        """The first answer the ``marks`` extractors find, then an ``answer: X`` line, then
        "the answer is ...", then (with ``answer_fallback``) the last number."""
        fallback = (answers.extract_last_number,) if self.answer_fallback else ()
        for s in self.stop:
            text = text.split(s, 1)[0]
        for fn in (*marks, answers.extract_tagged, answers.extract_answer_is, *fallback):
            got = fn(text)
            if got:
                return got
        return None


@register_task
@dataclasses.dataclass(frozen=True)
class GSM8K(RealTask):
    """Grade-school word problems with ``#### answer`` (Cobbe et al., 2021)."""

    name: ClassVar[str] = "gsm8k"

    def from_instance(self, question: str, answer: str,
                      solution: Optional[str] = None) -> Problem:
        """``answer`` may be GSM8K's raw ``"steps...\\n#### 72"`` or just ``"72"``."""
        if "####" in answer:
            body, answer = answer.rsplit("####", 1)
            solution = body if solution is None else solution
        answer = answer.strip()
        if not answer:
            raise TaskError("gsm8k: the answer is empty")
        lines = [_CALC.sub("", line).strip() for line in (solution or "").split("\n")]
        steps = tuple(line for line in lines if line) + (f"#### {answer}",)
        return Problem(task=self.name, question=question.strip(), steps=steps,
                       answer=answer, instance={"question": question.strip(), "answer": answer,
                                                "solution": "\n".join(steps[:-1])},
                       meta={"n_steps": len(steps)})

    def is_final_step(self, step: str) -> bool:
        return step.lstrip().startswith("####")

    def extract_answer(self, text: str) -> Optional[str]:
        return self._extract(text, answers.extract_gsm8k, answers.extract_boxed)


@register_task
@dataclasses.dataclass(frozen=True)
class MATH(RealTask):
    """Competition math with ``\\boxed{}`` answers (Hendrycks et al., 2021)."""

    name: ClassVar[str] = "math"
    step_delimiter: ClassVar[str] = "\n\n"

    def from_instance(self, question: str, answer: Optional[str] = None,
                      solution: Optional[str] = None) -> Problem:
        """Needs ``answer`` or a ``solution`` with a ``\\boxed{}`` answer."""
        if answer is None:
            answer = answers.extract_boxed(solution or "")
            if answer is None:
                raise TaskError("math: no answer given and the solution has no \\boxed{}")
        answer = answer.strip()
        if not answer:
            raise TaskError("math: the answer is empty")
        if solution is None or answers.extract_boxed(solution) is None:
            solution = ((solution or "").strip() + "\n\n" if solution else "") + \
                f"The answer is $\\boxed{{{answer}}}$."
        steps = tuple(p.strip() for p in solution.strip().split("\n\n") if p.strip())
        return Problem(task=self.name, question=question.strip(), steps=steps, answer=answer,
                       instance={"question": question.strip(), "answer": answer,
                                 "solution": solution.strip()},
                       meta={"n_steps": len(steps)})

    def is_final_step(self, step: str) -> bool:
        return answers.extract_boxed(step) is not None

    def extract_answer(self, text: str) -> Optional[str]:
        return self._extract(text, answers.extract_boxed)


LABELS = "ABCDEFGHIJ"


@register_task
@dataclasses.dataclass(frozen=True)
class MultipleChoice(RealTask):
    """Multiple choice (ARC-style): choices lettered A, B, ...; answer a letter."""

    name: ClassVar[str] = "mc"

    def from_instance(self, question: str, choices: Sequence[str], answer: str | int,
                      labels: Optional[Sequence[str]] = None) -> Problem:
        """``answer``: a label (``"B"``, or one of ``labels`` such as ``"2"``) or a
        0-based index. The choices are relettered A, B, ... in the prompt."""
        choices = [str(c).strip() for c in choices]
        if not 2 <= len(choices) <= len(LABELS):
            raise TaskError(f"mc: needs 2..{len(LABELS)} choices, got {len(choices)}")
        given = [str(x).strip() for x in labels] if labels is not None \
            else list(LABELS[:len(choices)])
        if len(given) != len(choices):
            raise TaskError(f"mc: {len(given)} labels for {len(choices)} choices")
        if isinstance(answer, int) and not isinstance(answer, bool):
            index = answer
        elif str(answer).strip() in given:
            index = given.index(str(answer).strip())
        else:
            raise TaskError(f"mc: answer {answer!r} is not one of the labels {given}")
        if not 0 <= index < len(choices):
            raise TaskError(f"mc: answer index {index} is out of range for {len(choices)} "
                            "choices")
        letter = LABELS[index]
        text = question.strip() + "\n" + "\n".join(
            f"{LABELS[i]}) {c}" for i, c in enumerate(choices))
        return Problem(task=self.name, question=text, steps=(ANSWER_PREFIX + letter,),
                       answer=letter, instance={"question": question.strip(),
                                                "choices": choices, "answer": index},
                       meta={"n_steps": 1, "n_choices": len(choices)})

    def extract_answer(self, text: str) -> Optional[str]:
        return answers.extract_choice(text)

    def answer_correct(self, problem: Problem, answer: str) -> bool:
        return answers.answers_equal(answer, problem.answer, mode="choice")
