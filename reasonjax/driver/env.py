"""What the driver runs on: a task, a tokenizer, a model config and a mesh.

:class:`Env` holds everything about a run that is fixed while params change: the task
(prompts, answer extraction, verification, step delimiter), the tokenizer (encoding,
decoding, pad / EOS ids), the model config and the device mesh, and derives from them the
stop tables (EOS ids + step-delimiter automaton) that every sampler and search takes. pad
and EOS ids and stop tables therefore come from here at run time, never from a method's
config.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Optional, Sequence

import numpy as np
from jax.sharding import Mesh

from reasonjax.data.task import Problem, Task
from reasonjax.errors import ConfigError
from reasonjax.models.config import ModelConfig
from reasonjax.models.tokenizer import Tokenizer
from reasonjax.search.sampler import StopTokens, stop_tokens_for


@dataclasses.dataclass(frozen=True, eq=False)
class Env:
    """task / tokenizer / model_config: see the module docstring. mesh: the device mesh
    params and prompt rows are sharded over (None: one device, nothing placed).
    prompt_len: prompt tokens per row (left-padded); None: the longest prompt of each call.
    Fix it (e.g. :func:`longest_prompt` over every problem a run will see) so that every
    call of a run has one shape and compiles once."""

    task: Task
    tokenizer: Tokenizer
    model_config: ModelConfig
    mesh: Optional[Mesh] = None
    prompt_len: Optional[int] = None

    @functools.cached_property
    def stop(self) -> StopTokens:
        """EOS ids and the task's step-delimiter automaton over the model's vocabulary."""
        return stop_tokens_for(self.tokenizer, self.model_config.vocab_size,
                               self.task.step_delimiter)

    @functools.cached_property
    def verifier(self) -> "TaskVerifier":
        """The MCTS terminal verifier of this env (one object, so searches compile once)."""
        return TaskVerifier(self)


def single_token_ids(tokenizer: Tokenizer, texts: Sequence[str]) -> tuple[int, ...]:
    """The token id of each of ``texts`` (each must encode to exactly one token, without
    BOS), e.g. the reflection tokens of
    :class:`~reasonjax.search.sampler.CyclicReflex`: ``(" Wait", " But")`` -> ids."""
    out = []
    for text in texts:
        ids = tokenizer.encode(text)
        if len(ids) != 1:
            raise ConfigError(f"token {text!r} encodes to {len(ids)} tokens {ids}, not one; "
                              "give a string the tokenizer keeps whole (mind a leading "
                              "space) or its id")
        out.append(int(ids[0]))
    return tuple(out)


def longest_prompt(env: Env, problems: Sequence[Problem]) -> int:
    """Tokens of the longest of ``problems``' prompts (BOS included)."""
    from reasonjax.driver.prompts import encode_prompts

    return encode_prompts(env, problems).tokens.shape[1]


class TaskVerifier:
    """The MCTS verifier (:data:`reasonjax.search.mcts.Verifier`) over an env's task:
    reward +1 when a terminal path's text verifies, else -1 (AlphaMath's outcome reward).

    Problems are registered (append-only, by identity) before a search, and rows carry
    their registry index as ``problem_ids``. jit keys the search on this object's
    identity, so one verifier per env serves every batch and round without recompiling;
    registered problems never change, so a compiled search always reads the right ones."""

    def __init__(self, env: Env):
        self.env = env
        self.problems: list[Problem] = []
        self._index: dict[int, int] = {}

    def register(self, problems: Sequence[Problem]) -> np.ndarray:
        """Registry indices [P] of ``problems`` (added when new)."""
        out = []
        for p in problems:
            if id(p) not in self._index:
                self._index[id(p)] = len(self.problems)
                self.problems.append(p)
            out.append(self._index[id(p)])
        return np.asarray(out, np.int32)

    def __call__(self, problem_ids: np.ndarray, paths: np.ndarray,
                 lengths: np.ndarray) -> np.ndarray:
        from reasonjax.driver.prompts import completion_text

        out = np.empty(len(problem_ids), np.float32)
        for b, (i, ids, n) in enumerate(zip(problem_ids, paths, lengths)):
            text = completion_text(self.env.tokenizer, ids, int(n))
            out[b] = 1.0 if self.env.task.verify(self.problems[int(i)], text) else -1.0
        return out
