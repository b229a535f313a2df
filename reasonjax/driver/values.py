"""A model's value head read at the step ends of given solutions: a PRM's / SORM's step
scores, a value model's targets to compare, the ORM reading of a solution (its last step).

:func:`head_values` runs encoded value / joint examples; :func:`step_values` encodes
problems' solution texts first (steps split by the task's delimiter, the last step ending
with EOS when it states the answer).
"""

from __future__ import annotations

import functools
from typing import Mapping, Sequence

import jax
import numpy as np

from reasonjax import parallel
from reasonjax.data import formatting
from reasonjax.data.task import Problem
from reasonjax.driver.env import Env


def head_values(env: Env, params, examples: Sequence[Mapping[str, np.ndarray]],
                kind: str, seq_len: int, transform: str, batch_size: int = 64) -> list:
    """transform(value head) at every value position of each example (``value`` /
    ``joint`` kinds: the step ends): a list of [n_steps] arrays. ``params`` are
    ``env.model_config``'s. Examples are padded or truncated to ``seq_len`` (steps cut
    off are dropped) and run ``batch_size`` at a time, the last batch filled with
    repeats, so one compile serves every call."""
    fn = _head_values_fn(env.model_config, transform)
    out = []
    for start in range(0, len(examples), batch_size):
        chunk = list(examples[start:start + batch_size])
        rows = chunk + [chunk[-1]] * (batch_size - len(chunk))
        batch = formatting.stack([formatting.to_length(e, kind, seq_len, "truncate")[0]
                                  for e in rows])
        inputs = {k: batch[k] for k in ("tokens", "positions", "segment_ids")}
        if env.mesh is not None:  # rows split over the data axes, each process its share
            parallel.validate_batch(batch_size, env.mesh, "head_values batch_size")
            inputs = parallel.shard_batch({k: parallel.local_rows(v) for k, v in
                                           inputs.items()}, env.mesh)
        values = parallel.to_host(fn(params, inputs))
        out += [values[i][batch["value_mask"][i] > 0] for i in range(len(chunk))]
    return out


@functools.lru_cache(maxsize=8)
def _head_values_fn(model_config, transform: str):
    # One jitted function per (model config, transform): runs in one process share it.
    from reasonjax.train.logprobs import forward
    from reasonjax.train.value import TRANSFORMS

    return jax.jit(lambda p, b: TRANSFORMS[transform](forward(model_config, p, b).values))


def step_values(env: Env, params, problems: Sequence[Problem], solutions: Sequence[str],
                transform: str, batch_size: int = 64, bucket: int = 32
                ) -> tuple[list[np.ndarray], int]:
    """(scores, tokens read): transform(value head of ``params``, a model of
    ``env.model_config`` on ``env.tokenizer``'s ids) at each step end of each problem's
    solution, [n_steps] per solution (empty for an empty solution); tokens read: prompt +
    solution tokens of every row scored. Rows are padded to a multiple of ``bucket``."""
    task, tok = env.task, env.tokenizer
    examples, rows = [], []
    for i, (p, text) in enumerate(zip(problems, solutions)):
        steps = task.split_steps(text)
        if steps:
            rows.append(i)
            examples.append(formatting.encode_steps(
                tok, task.prompt(p), steps, [0.0] * len(steps), task.step_delimiter,
                complete=task.is_final_step(steps[-1]), sft=False))
    scores = [np.zeros((0,), np.float32) for _ in problems]
    if not examples:
        return scores, 0
    longest = max(len(e["tokens"]) for e in examples)
    seq_len = min(-(-longest // bucket) * bucket, env.model_config.max_seq_len)
    for i, s in zip(rows, head_values(env, params, examples, "value", seq_len, transform,
                                      batch_size)):
        scores[i] = np.asarray(s, np.float32)
    return scores, sum(min(len(e["tokens"]), seq_len) for e in examples)
