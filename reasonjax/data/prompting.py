"""Prompt formats for real-data tasks: templates, few-shot exemplars, chat templates.

Papers prompt their models in a specific way: Large Language Monkeys puts 2 training
examples before each GSM8K question (``Question: ...\\nAnswer: ...``), MCTS-DPO asks
``QUESTION: {q}\\n\\nANSWER:``, Step-DPO and search-and-learn render the instruct model's
chat template with a system prompt. A :class:`PromptSpec` says which; :func:`configure`
bakes it, with the exemplars and the tokenizer's chat template, into the task
(``RealTask.prompt_format``), so that every path that renders a prompt (sampling, search,
training, RL) goes through ``task.prompt(problem)`` and sees the same text.

The chat template is rendered in Jinja's sandbox (:func:`reasonjax.models.tokenizer.
apply_chat_template`) once per prompt format with a placeholder that is then replaced by
each question: the template's text, special tokens included, becomes part of the prompt
string, and the tokenizer maps the special-token strings back to their ids.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Optional

from reasonjax.config import ConfigError

# Built-in exemplars (written for this project, in each dataset's solution style): used
# when ``few_shot > 0`` and no ``few_shot_file`` is given.
EXEMPLARS: dict[str, tuple[tuple[str, str], ...]] = {
    "gsm8k": (
        ("A baker makes 3 trays of 12 muffins and sells 30 of them. How many muffins are "
         "left?",
         "The baker makes 3 * 12 = 36 muffins.\nAfter selling 30, 36 - 30 = 6 are left.\n"
         "#### 6"),
        ("Tom reads 15 pages a day for 4 days and then 20 pages on the fifth day. How many "
         "pages does he read in total?",
         "In 4 days he reads 15 * 4 = 60 pages.\nWith the fifth day he reads 60 + 20 = 80 "
         "pages.\n#### 80"),
        ("A bike costs $120. Ana has saved $45 and saves $15 more each week. How many weeks "
         "until she can buy the bike?",
         "She still needs 120 - 45 = 75 dollars.\nAt 15 dollars a week that is 75 / 15 = 5 "
         "weeks.\n#### 5"),
        ("There are 8 red and 12 blue marbles in a bag. What percent of the marbles are "
         "red?",
         "There are 8 + 12 = 20 marbles.\nRed ones are 8 / 20 = 0.4 of them, which is 40 "
         "percent.\n#### 40"),
    ),
    "math": (
        ("What is the smallest positive integer $n$ such that $3n \\equiv 2 \\pmod{7}$?",
         "We need $3n - 2$ to be a multiple of 7. Trying $n = 1, 2, 3$ gives $1, 4, 7$, so "
         "$n = 3$ works and no smaller positive $n$ does.\n\nThe answer is $\\boxed{3}$."),
        ("Simplify $\\frac{x^2 - 9}{x - 3}$ for $x \\neq 3$.",
         "The numerator factors as $(x - 3)(x + 3)$.\n\nCancelling $x - 3$ leaves $x + 3$."
         "\n\nThe answer is $\\boxed{x + 3}$."),
        ("A right triangle has legs 5 and 12. What is its hypotenuse?",
         "By the Pythagorean theorem the hypotenuse is $\\sqrt{5^2 + 12^2} = \\sqrt{169}$."
         "\n\nSo it is 13.\n\nThe answer is $\\boxed{13}$."),
        ("How many ways can 3 books be chosen from 6 different books?",
         "The order does not matter, so the count is $\\binom{6}{3} = \\frac{6 \\cdot 5 "
         "\\cdot 4}{3 \\cdot 2 \\cdot 1} = 20$.\n\nThe answer is $\\boxed{20}$."),
    ),
}

_PLACEHOLDER = "\x00QUESTION\x00"


@dataclasses.dataclass(frozen=True)
class PromptSpec:
    """How a question becomes the model's prompt.

    template: the user turn, ``{question}`` replaced by the problem (default: the
    question and a newline, the project's plain format). few_shot: exemplars placed
    before it, each ``exemplar`` with ``{question}`` and ``{solution}``; they come from
    ``few_shot_file`` (a local file of the task's format; ``few_shot_seed`` picks them,
    the same for every problem) or from the built-in ones. chat: render the tokenizer's
    chat template (instruct models) with ``system`` as the system message.
    answer_fallback: also take the last number of a completion as its answer when it has
    none of the task's answer marks (off: a completion without an answer is wrong).
    stop: strings that end a completion (e.g. ``Question:`` after a few-shot answer); the
    answer is read before the first."""

    template: str = "{question}\n"
    few_shot: int = 0
    few_shot_file: Optional[str] = None
    few_shot_seed: int = 0
    exemplar: str = "{question}\n{solution}\n\n"
    chat: bool = False
    system: Optional[str] = None
    answer_fallback: bool = False
    stop: tuple[str, ...] = ()

    def __post_init__(self):
        if "{question}" not in self.template:
            raise ConfigError(f"prompt.template={self.template!r} must contain {{question}}")
        if self.few_shot < 0:
            raise ConfigError(f"prompt.few_shot={self.few_shot} must be >= 0")
        if self.few_shot and not all(k in self.exemplar for k in ("{question}",
                                                                   "{solution}")):
            raise ConfigError(f"prompt.exemplar={self.exemplar!r} must contain {{question}} "
                              "and {solution}")
        if self.system is not None and not self.chat:
            raise ConfigError("prompt.system needs prompt.chat=true (a system message is "
                              "part of a chat template)")

    @property
    def is_default(self) -> bool:
        return self == PromptSpec()


def exemplars(spec: PromptSpec, task_name: str) -> list[tuple[str, str]]:
    """The ``spec.few_shot`` (question, solution) exemplars."""
    if not spec.few_shot:
        return []
    if spec.few_shot_file:
        from reasonjax.data.local import load_local
        from reasonjax.data.task import get_task

        pool = load_local(spec.few_shot_file, task_name).problems
        task = get_task(task_name)
        pool = [(p.question, task.solution(p)) for p in pool]
    else:
        pool = list(EXEMPLARS.get(task_name, ()))
        if not pool:
            raise ConfigError(f"prompt.few_shot={spec.few_shot}: task {task_name!r} has no "
                              "built-in exemplars; give prompt.few_shot_file")
    if spec.few_shot > len(pool):
        where = spec.few_shot_file or "the built-in exemplars"
        raise ConfigError(f"prompt.few_shot={spec.few_shot}: {where} has only {len(pool)}")
    if spec.few_shot_file:
        pool = random.Random(spec.few_shot_seed).sample(pool, spec.few_shot)
    return pool[:spec.few_shot]


def prompt_format(spec: PromptSpec, task_name: str, tokenizer=None) -> str:
    """The prompt text with ``{question}`` where the problem goes (``str.replace``, so
    braces elsewhere stay literal): exemplars + template, inside the chat template when
    ``spec.chat`` (needs a ``tokenizer`` with one)."""
    shots = "".join(spec.exemplar.replace("{question}", q).replace("{solution}", s)
                    for q, s in exemplars(spec, task_name))
    user = shots + spec.template.replace("{question}", _PLACEHOLDER)
    if spec.chat:
        from reasonjax.models.tokenizer import apply_chat_template

        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ConfigError("prompt.chat=true: the model's tokenizer has no chat template "
                              "(tokenizer_config.json 'chat_template'); set prompt.chat=false")
        messages = ([{"role": "system", "content": spec.system}] if spec.system else []) + \
            [{"role": "user", "content": user}]
        user = apply_chat_template(tokenizer, messages, add_generation_prompt=True)
    if user.count(_PLACEHOLDER) != 1:
        raise ConfigError("prompt: the chat template did not keep the question exactly once")
    return user.replace(_PLACEHOLDER, "{question}")


def configure(task, spec: PromptSpec, tokenizer=None):
    """``task`` with ``spec`` baked in (a real-data task; built-in tasks keep their plain
    format and accept only the default spec)."""
    from reasonjax.data.tasks.real import RealTask

    if not isinstance(task, RealTask):
        if not spec.is_default:
            raise ConfigError(f"prompt: task {task.name!r} has a fixed prompt format; prompt "
                              "settings apply to data-file tasks (gsm8k, math, mc)")
        return task
    return dataclasses.replace(task, prompt_format=prompt_format(spec, task.name, tokenizer),
                               answer_fallback=spec.answer_fallback, stop=tuple(spec.stop))
