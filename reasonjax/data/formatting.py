"""Text -> token examples and fixed-shape batches in the formats of :mod:`.formats`.

Two layers:

- ``encode_*`` turn texts into one variable-length example (a dict of 1-D numpy arrays):
  sft / unpaired / value (``tokens``, ``loss_mask`` [+ ``value_mask``, ``value_targets``,
  ``desirable``]), preference (``chosen_*``, ``rejected_*``), prompt (``prompt_tokens``).
- ``to_length`` pads (or truncates) one example to a fixed length, adding ``positions`` and
  ``segment_ids``; ``stack`` makes a batch. The ``*_batch`` helpers do all three.
  Packing several sequences per row is done by :mod:`.pipeline` (grain).

Conventions: a sequence is ``[bos] prompt completion [eos]``; ``loss_mask`` is 1 on the
completion tokens and the eos (the tokens the model must learn to produce), 0 on bos,
prompt and padding. Prompt and completion are tokenized separately, so the boundary is
exact for every tokenizer. Prompts are LEFT-padded (``prompt`` kind), everything else
right-padded.

Step sequences (value / joint kinds, step-level preference pairs): each step is followed
by the step delimiter, except a final step, which is followed by eos. The value target of
a step sits on the last token of its delimiter (or its eos): where a sampler that stops at
the delimiter reads the value of that prefix.

Exact process labels for a built-in task's completion (value / PRM training)::

    steps = task.split_steps(completion)
    check = task.check_steps(problem, steps)
    ex = encode_steps(tok, task.prompt(problem), steps, [float(c) for c in
                      check.prefix_correct], task.step_delimiter, complete=check.complete)

Overflow (a sequence longer than the length): ``on_overflow="error"`` raises
:class:`SequenceTooLong`; ``"truncate"`` keeps the first tokens (prompts: the last ones,
nearest to where generation continues) and the batch helpers warn with the count.
"""

from __future__ import annotations

import warnings
from typing import Mapping, Optional, Sequence

import numpy as np

from reasonjax.data.formats import check_batch
from reasonjax.models.tokenizer import Tokenizer

Example = dict[str, np.ndarray]
OVERFLOW = ("error", "truncate")


class SequenceTooLong(ValueError):
    """A sequence does not fit the fixed length and truncation was not asked for."""


def _ids(tok: Tokenizer, text: str) -> list[int]:
    return tok.encode(text) if text else []


def _bos(tok: Tokenizer, add_bos: bool) -> list[int]:
    return [tok.bos_id] if add_bos and tok.bos_id is not None else []


def encode_completion(tok: Tokenizer, prompt: str, completion: str, add_bos: bool = True,
                      add_eos: bool = True) -> Example:
    """tokens [L] int32 and loss_mask [L] float32 (1 on completion + eos)."""
    head = _bos(tok, add_bos) + _ids(tok, prompt)
    tail = _ids(tok, completion) + ([tok.eos_id] if add_eos else [])
    tokens = np.asarray(head + tail, np.int32)
    mask = np.concatenate([np.zeros(len(head), np.float32), np.ones(len(tail), np.float32)])
    mask[:1] = 0.0  # nothing predicts the first token
    return {"tokens": tokens, "loss_mask": mask}


encode_sft = encode_completion


def encode_preference(tok: Tokenizer, prompt: str, chosen: str, rejected: str,
                      add_bos: bool = True, chosen_eos: bool = True,
                      rejected_eos: bool = True) -> Example:
    """chosen_/rejected_ tokens and loss_mask: the shared prompt, then each continuation."""
    out = {}
    for name, text, eos in (("chosen", chosen, chosen_eos), ("rejected", rejected, rejected_eos)):
        ex = encode_completion(tok, prompt, text, add_bos=add_bos, add_eos=eos)
        out[f"{name}_tokens"], out[f"{name}_loss_mask"] = ex["tokens"], ex["loss_mask"]
    return out


def encode_step_preference(tok: Tokenizer, prompt: str, prefix_steps: Sequence[str],
                           chosen_step: str, rejected_step: str, delimiter: str,
                           chosen_final: bool = False, rejected_final: bool = False,
                           add_bos: bool = True) -> Example:
    """A step-level pair (Step-DPO, MCTS-DPO): context = prompt + the correct previous
    steps (each with its delimiter); continuations = one step, ended by the delimiter, or
    by eos when it is a final (answer) step."""
    context = prompt + "".join(s + delimiter for s in prefix_steps)
    return encode_preference(
        tok, context, chosen_step + ("" if chosen_final else delimiter),
        rejected_step + ("" if rejected_final else delimiter), add_bos=add_bos,
        chosen_eos=chosen_final, rejected_eos=rejected_final)


def encode_unpaired(tok: Tokenizer, prompt: str, completion: str, desirable: bool,
                    add_bos: bool = True) -> Example:
    """KTO example: the sft keys plus ``desirable`` (a float32 scalar)."""
    ex = encode_completion(tok, prompt, completion, add_bos=add_bos)
    ex["desirable"] = np.float32(1.0 if desirable else 0.0)
    return ex


def encode_steps(tok: Tokenizer, prompt: str, steps: Sequence[str],
                 targets: Sequence[float], delimiter: str, complete: bool,
                 sft: bool = True, add_bos: bool = True) -> Example:
    """Value / joint example: tokens, loss_mask, value_mask, value_targets (all [L]).

    targets: one value target per step (hard 0/1 labels, Monte Carlo fractions or tree
    Q-values). complete: the last step ends the solution (eos instead of the delimiter).
    sft: put the SFT loss on the steps (False for value-only rows of a joint batch).
    """
    if len(targets) != len(steps):
        raise ValueError(f"encode_steps: {len(targets)} targets for {len(steps)} steps; "
                         "give one target per step")
    tokens = _bos(tok, add_bos) + _ids(tok, prompt)
    n_prompt = len(tokens)
    ends = []
    delim_ids = _ids(tok, delimiter)
    for i, step in enumerate(steps):
        last = i == len(steps) - 1
        tokens += _ids(tok, step) + ([tok.eos_id] if last and complete else delim_ids)
        ends.append(len(tokens) - 1)
    tokens_arr = np.asarray(tokens, np.int32)
    loss = np.zeros(len(tokens), np.float32)
    if sft:
        loss[n_prompt:] = 1.0
        loss[:1] = 0.0
    value_mask = np.zeros(len(tokens), np.float32)
    value_targets = np.zeros(len(tokens), np.float32)
    value_mask[ends] = 1.0
    value_targets[ends] = np.asarray(targets, np.float32)
    return {"tokens": tokens_arr, "loss_mask": loss, "value_mask": value_mask,
            "value_targets": value_targets}


def encode_prompt(tok: Tokenizer, prompt: str, add_bos: bool = True) -> Example:
    return {"prompt_tokens": np.asarray(_bos(tok, add_bos) + _ids(tok, prompt), np.int32)}


# ---------------------------------------------------------------------------------------
# Fixed shapes


def _check_overflow(n: int, length: int, on_overflow: str, what: str) -> bool:
    if on_overflow not in OVERFLOW:
        raise ValueError(f"on_overflow must be one of {OVERFLOW}, got {on_overflow!r}")
    if n <= length:
        return False
    if on_overflow == "error":
        raise SequenceTooLong(f"{what} has {n} tokens, more than the length {length}; raise "
                              "seq_len or pass on_overflow='truncate'")
    return True


def clip(example: Mapping[str, np.ndarray], kind: str, length: int,
         on_overflow: str = "error", what: str = "a sequence") -> tuple[Example, bool]:
    """Truncates an ``encode_*`` output to ``length`` tokens (prompts keep their last
    tokens); returns (example, truncated). Raises SequenceTooLong with ``"error"``."""
    if kind == "prompt":
        ids = example["prompt_tokens"]
        truncated = _check_overflow(len(ids), length, on_overflow, what)
        return ({"prompt_tokens": ids[len(ids) - length:]} if truncated else dict(example),
                truncated)
    out = dict(example)
    truncated = False
    for prefix in _prefixes(kind):
        truncated |= _check_overflow(len(example[f"{prefix}tokens"]), length, on_overflow,
                                     what)
        for key in _STEP_KEYS:
            if f"{prefix}{key}" in out:
                out[f"{prefix}{key}"] = out[f"{prefix}{key}"][:length]
    return out, truncated


def pad(example: Mapping[str, np.ndarray], kind: str, length: int) -> Example:
    """Pads a clipped example to ``length``: sequence kinds get ``positions`` and
    ``segment_ids`` (1 on tokens, 0 on padding); prompts are left-padded with
    ``prompt_mask``. Scalars (``desirable``) pass through."""
    if kind == "prompt":
        ids = example["prompt_tokens"]
        tokens = np.zeros(length, np.int32)
        mask = np.zeros(length, np.int32)
        tokens[length - len(ids):] = ids
        mask[length - len(ids):] = 1
        return {"prompt_tokens": tokens, "prompt_mask": mask}
    out: Example = {}
    for prefix in _prefixes(kind):
        n = len(example[f"{prefix}tokens"])
        for key in _STEP_KEYS:
            if f"{prefix}{key}" in example:
                src = example[f"{prefix}{key}"]
                arr = np.zeros(length, src.dtype)
                arr[:n] = src
                out[f"{prefix}{key}"] = arr
        positions = np.zeros(length, np.int32)
        positions[:n] = np.arange(n, dtype=np.int32)
        segments = np.zeros(length, np.int32)
        segments[:n] = 1
        out[f"{prefix}positions"], out[f"{prefix}segment_ids"] = positions, segments
    for key, value in example.items():
        if np.ndim(value) == 0:
            out[key] = np.asarray(value)
    return out


def to_length(example: Mapping[str, np.ndarray], kind: str, length: int,
              on_overflow: str = "error", what: str = "a sequence") -> tuple[Example, bool]:
    """:func:`clip` then :func:`pad`; returns (fixed-shape example, truncated)."""
    clipped, truncated = clip(example, kind, length, on_overflow, what)
    return pad(clipped, kind, length), truncated


_STEP_KEYS = ("tokens", "loss_mask", "value_mask", "value_targets")


def _prefixes(kind: str) -> tuple[str, ...]:
    return ("chosen_", "rejected_") if kind == "preference" else ("",)


def stack(examples: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Stacks fixed-shape examples into a batch (leading axis B)."""
    if not examples:
        raise ValueError("stack: no examples")
    return {k: np.stack([np.asarray(ex[k]) for ex in examples]) for k in examples[0]}


def _batch(examples: Sequence[Example], kind: str, length: int,
           on_overflow: str) -> dict[str, np.ndarray]:
    fitted, n_truncated = [], 0
    for i, ex in enumerate(examples):
        row, truncated = to_length(ex, kind, length, on_overflow, what=f"example {i}")
        fitted.append(row)
        n_truncated += truncated
    if n_truncated:
        warnings.warn(f"{n_truncated} of {len(examples)} {kind} sequences were longer than "
                      f"{length} tokens and were truncated", stacklevel=3)
    batch = stack(fitted)
    check_batch(batch, "value" if kind == "joint" else kind)
    return batch


def sft_batch(tok: Tokenizer, prompts: Sequence[str], completions: Sequence[str],
              seq_len: int, on_overflow: str = "error") -> dict[str, np.ndarray]:
    """An ``sft`` batch [B, seq_len], one sequence per row."""
    _same_length(prompts=prompts, completions=completions)
    return _batch([encode_completion(tok, p, c) for p, c in zip(prompts, completions)],
                  "sft", seq_len, on_overflow)


def preference_batch(tok: Tokenizer, prompts: Sequence[str], chosen: Sequence[str],
                     rejected: Sequence[str], seq_len: int,
                     on_overflow: str = "error") -> dict[str, np.ndarray]:
    """A ``preference`` batch: chosen_* and rejected_* [B, seq_len]."""
    _same_length(prompts=prompts, chosen=chosen, rejected=rejected)
    return _batch([encode_preference(tok, p, c, r) for p, c, r in zip(prompts, chosen, rejected)],
                  "preference", seq_len, on_overflow)


def unpaired_batch(tok: Tokenizer, prompts: Sequence[str], completions: Sequence[str],
                   desirable: Sequence[bool], seq_len: int,
                   on_overflow: str = "error") -> dict[str, np.ndarray]:
    """An ``unpaired`` (KTO) batch."""
    _same_length(prompts=prompts, completions=completions, desirable=desirable)
    return _batch([encode_unpaired(tok, p, c, d)
                   for p, c, d in zip(prompts, completions, desirable)],
                  "unpaired", seq_len, on_overflow)


def value_batch(tok: Tokenizer, prompts: Sequence[str], steps: Sequence[Sequence[str]],
                targets: Sequence[Sequence[float]], delimiter: str, seq_len: int,
                complete: Sequence[bool], sft: Optional[Sequence[bool]] = None,
                on_overflow: str = "error") -> dict[str, np.ndarray]:
    """A ``value`` batch (or ``joint``: pass ``sft`` per row to choose SFT rows)."""
    sft = [True] * len(prompts) if sft is None else sft
    _same_length(prompts=prompts, steps=steps, targets=targets, complete=complete, sft=sft)
    return _batch([encode_steps(tok, p, s, t, delimiter, c, f)
                   for p, s, t, c, f in zip(prompts, steps, targets, complete, sft)],
                  "value", seq_len, on_overflow)


def prompt_batch(tok: Tokenizer, prompts: Sequence[str], length: int,
                 on_overflow: str = "error") -> dict[str, np.ndarray]:
    """A ``prompt`` batch: prompt_tokens [B, length] left-padded, prompt_mask."""
    return _batch([encode_prompt(tok, p) for p in prompts], "prompt", length, on_overflow)


def _same_length(**lists) -> None:
    sizes = {k: len(v) for k, v in lists.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"inputs have different lengths: {sizes}")
