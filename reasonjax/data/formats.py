"""The batch formats shared by data pipelines, training losses and recipes.

A batch is a dict of numpy / jax arrays with the batch axis first. Token sequences always
come as the quadruple (``*tokens``, ``*positions``, ``*segment_ids``, ``*loss_mask``):

- ``tokens``      [B, T] int32
- ``positions``   [B, T] int32, RoPE positions (restart at 0 for each packed sequence)
- ``segment_ids`` [B, T] int32, 0 = padding, 1.. = which packed sequence a token belongs to
- ``loss_mask``   [B, T] float32, weight of predicting token t from tokens < t (1 on the
  completion / solution tokens, 0 on prompt and padding). Aligned with ``tokens``: the loss
  pairs ``logits[:, t - 1]`` with ``tokens[:, t]`` weighted by ``loss_mask[:, t]``.

Kinds (``KINDS[kind]`` lists the required keys; optional keys are noted):

- ``sft``: the quadruple. Rows may pack several sequences.
- ``preference``: ``chosen_*`` and ``rejected_*`` quadruples, one sequence per row (shared
  prompt / step prefix in both, ``loss_mask`` only on the continuation, so step-level DPO
  is the same format with a one-step continuation). Optional ``ref_chosen_logps`` and
  ``ref_rejected_logps`` [B] float32: reference log-probs precomputed over the masked tokens.
- ``unpaired`` (KTO): the quadruple plus ``desirable`` [B] float32 (1 / 0); optional
  ``ref_logps`` [B].
- ``value``: the quadruple plus ``value_mask`` [B, T] float32 (1 where a value target
  applies, e.g. step-end tokens) and ``value_targets`` [B, T] float32 (hard 0/1 labels,
  Monte Carlo fractions, or tree Q-values). The value of a prefix is read at its last token.
- ``joint`` (AlphaMath): the ``value`` keys; ``loss_mask`` selects the SFT tokens (correct
  paths) and ``value_mask`` / ``value_targets`` the value targets, on the same rows.
- ``prompt`` (search and RL): ``prompt_tokens`` [B, P] int32 left-padded with
  ``prompt_mask`` [B, P] int32 (1 = real token); answers stay on the host beside the batch.
- ``rollout`` (RL updates on sampled completions): the quadruple of prompt + completion
  (``loss_mask`` 1 on the sampled tokens) plus ``advantages`` [B, T] float32, aligned with
  ``tokens`` like ``loss_mask``. Optional ``old_logps`` [B, T] float32 (log-probs of the
  tokens under the policy that sampled them; absent when the update is on-policy, where
  they equal the loss's own), ``ref_logps`` [B, T] (reference policy, for a KL term),
  ``returns`` and ``old_values`` [B, T] (PPO critic targets and the critic's values at
  sampling time; the value of the state before token t sits at t).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

SEQUENCE_KEYS = ("tokens", "positions", "segment_ids", "loss_mask")

KINDS: dict[str, tuple[str, ...]] = {
    "sft": SEQUENCE_KEYS,
    "preference": tuple(f"{p}_{k}" for p in ("chosen", "rejected") for k in SEQUENCE_KEYS),
    "unpaired": SEQUENCE_KEYS + ("desirable",),
    "value": SEQUENCE_KEYS + ("value_mask", "value_targets"),
    "joint": SEQUENCE_KEYS + ("value_mask", "value_targets"),
    "prompt": ("prompt_tokens", "prompt_mask"),
    "rollout": SEQUENCE_KEYS + ("advantages",),
}

OPTIONAL: dict[str, tuple[str, ...]] = {
    "preference": ("ref_chosen_logps", "ref_rejected_logps", "label_smoothing"),
    "unpaired": ("ref_logps",),
    "rollout": ("old_logps", "ref_logps", "returns", "old_values"),
}


# Keys holding one value per row ([B]); every other key is aligned with its tokens ([B, T]).
PER_ROW: dict[str, tuple[str, ...]] = {
    "preference": ("ref_chosen_logps", "ref_rejected_logps", "label_smoothing"),
    "unpaired": ("desirable", "ref_logps"),
}


class BatchError(ValueError):
    """A batch lacks keys or has inconsistent shapes; the message names them."""


def check_batch(batch: Mapping, kind: str) -> None:
    """Raises BatchError unless ``batch`` has the keys and consistent shapes of ``kind``."""
    if kind not in KINDS:
        raise BatchError(f"unknown batch kind {kind!r}; known: {sorted(KINDS)}")
    required = KINDS[kind]
    missing = [k for k in required if k not in batch]
    if missing:
        raise BatchError(f"{kind} batch is missing key(s) {missing}; it has {sorted(batch)}. "
                         f"A {kind} batch needs {list(required)}")
    allowed = set(required) | set(OPTIONAL.get(kind, ()))
    unknown = sorted(set(batch) - allowed)
    if unknown:
        raise BatchError(f"{kind} batch has unexpected key(s) {unknown}; "
                         f"expected {sorted(allowed)}")
    shapes = {k: tuple(np.shape(batch[k])) for k in allowed if k in batch}
    B = shapes[required[0]][0] if shapes[required[0]] else None
    for k, shape in shapes.items():
        if not shape or shape[0] != B:
            raise BatchError(f"{kind} batch: {k} has shape {shape}; every key needs the same "
                             f"leading batch size {B}")
    prefixes = sorted({k.rsplit("tokens", 1)[0] for k in required if k.endswith("tokens")},
                      key=len, reverse=True)
    for prefix in prefixes:
        if len(shapes[f"{prefix}tokens"]) != 2:
            raise BatchError(f"{kind} batch: {prefix}tokens must be [B, T], got "
                             f"{shapes[f'{prefix}tokens']}")
    for k, shape in shapes.items():
        if k in PER_ROW.get(kind, ()):
            if len(shape) != 1:
                raise BatchError(f"{kind} batch: {k} must be [B] (one value per row), got "
                                 f"{shape}")
            continue
        prefix = next(p for p in prefixes if k.startswith(p))
        ref = shapes[f"{prefix}tokens"]
        if shape != ref:
            raise BatchError(f"{kind} batch: {k} has shape {shape}, but {prefix}tokens has "
                             f"{ref}; they must match")


def batch_layout(kind: str, batch_size: int, seq_len: int,
                 extra: tuple[str, ...] = ()) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """{key: (shape, dtype)} of a ``kind`` batch of ``batch_size`` rows of ``seq_len``
    tokens with its required keys plus the optional ``extra`` ones: what ahead-of-time
    compilation needs instead of data (``prompt`` batches: ``seq_len`` = prompt length)."""
    if kind not in KINDS:
        raise BatchError(f"unknown batch kind {kind!r}; known: {sorted(KINDS)}")
    unknown = sorted(set(extra) - set(OPTIONAL.get(kind, ())))
    if unknown:
        raise BatchError(f"{kind} batch has no optional key(s) {unknown}")
    ints = ("tokens", "positions", "segment_ids", "prompt_mask")
    out = {}
    for k in KINDS[kind] + tuple(extra):
        shape = (batch_size,) if k in PER_ROW.get(kind, ()) else (batch_size, seq_len)
        out[k] = (shape, np.dtype(np.int32 if k.endswith(ints) else np.float32))
    return out
