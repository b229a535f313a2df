"""Prompt rows in, text out: the one place that pads prompt batches and decodes ids.

- :func:`encode_prompts`: every problem's prompt (``task.prompt``) encoded once
  (BOS + prompt) and left-padded to one length (:attr:`Env.prompt_len` or the longest);
- :func:`batch_rows`: fixed-size batches of row indices; the last one is filled up by
  repeating its last real row (a real prompt, never an empty row), so every call of a run
  has one shape (one compile, divisible over the mesh's data axes);
- :func:`completion_text`: generated ids -> text, without a final EOS.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator, Optional, Sequence

import numpy as np

from reasonjax.data import formatting
from reasonjax.data.task import Problem
from reasonjax.models.tokenizer import Tokenizer


@dataclasses.dataclass(frozen=True)
class Prompts:
    """P prompts, left-padded. tokens: [P, L] int32; mask: [P, L] int32 (1 = real)."""

    tokens: np.ndarray
    mask: np.ndarray

    def rows(self, idx: np.ndarray) -> "Prompts":
        return Prompts(self.tokens[idx], self.mask[idx])


def encode_prompts(env, problems: Sequence[Problem],
                   texts: Optional[Sequence[str]] = None) -> Prompts:
    """The prompts of ``problems``, left-padded to ``env.prompt_len`` (default: the
    longest); a longer prompt is an error naming both lengths. ``texts``: other prompt
    texts instead (e.g. prompt + a step prefix), truncated from the left when longer."""
    truncate = texts is not None
    if texts is None:
        texts = [env.task.prompt(p) for p in problems]
    if not texts:
        raise ValueError("no prompts to encode; give at least one problem")
    encoded = [formatting.encode_prompt(env.tokenizer, t) for t in texts]
    longest = max(len(e["prompt_tokens"]) for e in encoded)
    length = env.prompt_len or longest
    if longest > length and not truncate:
        raise ValueError(f"a prompt has {longest} tokens, more than prompt_len={length}; "
                         "raise prompt_len (or leave it unset: the longest prompt)")
    batch = formatting.stack([formatting.to_length(e, "prompt", length, "truncate")[0]
                              for e in encoded])
    return Prompts(batch["prompt_tokens"], batch["prompt_mask"])


def batch_rows(count: int, batch_size: int) -> Iterator[tuple[int, np.ndarray]]:
    """(start, rows [batch_size]) for every batch of ``count`` items: rows ``start ..
    start + real - 1`` then repeats of the last real row."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for start in range(0, count, batch_size):
        yield start, np.minimum(np.arange(start, start + batch_size), count - 1)


def completion_text(tok: Tokenizer, ids: np.ndarray, length: int) -> str:
    """The text of a completion's first ``length`` ids, without a final EOS."""
    ids = [int(t) for t in ids[:length]]
    if ids and tok.eos_id is not None and ids[-1] == tok.eos_id:
        ids = ids[:-1]
    return tok.decode(ids)
