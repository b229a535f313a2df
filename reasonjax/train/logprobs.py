"""Token and sequence log-probabilities from the model, in the batch-format convention.

``logits[:, t - 1]`` predicts ``tokens[:, t]``, weighted by ``loss_mask[:, t]`` (see
:mod:`reasonjax.data.formats`). Every per-token array here is aligned with ``tokens``:
entry ``t`` concerns token ``t`` and entry 0 is always 0 (nothing predicts the first token).
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp

from reasonjax.models.config import ModelConfig
from reasonjax.models.transformer import ModelOutput, Transformer


def token_logprobs(logits_BTV: jax.Array, tokens_BT: jax.Array) -> jax.Array:
    """[B, T] log p(tokens[:, t] | tokens[:, :t]); column 0 is 0."""
    logits_BTV = logits_BTV[:, :-1].astype(jnp.float32)
    targets_BT = tokens_BT[:, 1:]
    # logit of the target minus logsumexp: avoids materialising the full log-softmax.
    picked = jnp.take_along_axis(logits_BTV, targets_BT[..., None].astype(jnp.int32), -1)[..., 0]
    logp = picked - jax.nn.logsumexp(logits_BTV, axis=-1)
    return jnp.pad(logp, ((0, 0), (1, 0)))


def token_accuracy(logits_BTV: jax.Array, tokens_BT: jax.Array) -> jax.Array:
    """[B, T] 1.0 where argmax(logits[:, t - 1]) == tokens[:, t]; column 0 is 0."""
    hit = (jnp.argmax(logits_BTV[:, :-1], axis=-1) == tokens_BT[:, 1:]).astype(jnp.float32)
    return jnp.pad(hit, ((0, 0), (1, 0)))


def shift_values(values_BT: jax.Array) -> jax.Array:
    """Values aligned with tokens: out[:, t] = values[:, t - 1], the value of the prefix
    that token t continues (the state in which token t is the action); out[:, 0] = 0."""
    return jnp.pad(values_BT[:, :-1], ((0, 0), (1, 0)))


def masked_sum(x_BT: jax.Array, mask_BT: jax.Array) -> jax.Array:
    """[B] sum over t of x * mask."""
    return jnp.sum(x_BT * mask_BT, axis=-1)


def masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
    """Scalar mean of x over the entries where mask > 0 (0 when the mask is empty)."""
    return jnp.sum(x * mask) / jnp.maximum(jnp.sum(mask), 1e-8)


def forward(config: ModelConfig, params, batch: Mapping[str, jax.Array],
            prefix: str = "") -> ModelOutput:
    """The model on ``batch[prefix + 'tokens']`` with its positions and segment ids."""
    return Transformer(config).apply(
        {"params": params}, batch[f"{prefix}tokens"], positions=batch[f"{prefix}positions"],
        segment_ids=batch[f"{prefix}segment_ids"])


def sequence_logprobs(config: ModelConfig, params, batch: Mapping[str, jax.Array],
                      prefix: str = "") -> jax.Array:
    """[B] sum of the masked token log-probs of each row (one sequence per row)."""
    out = forward(config, params, batch, prefix)
    return masked_sum(token_logprobs(out.logits, batch[f"{prefix}tokens"]),
                      batch[f"{prefix}loss_mask"])


def reference_sequence_logprobs(config: ModelConfig, ref_params, batch: Mapping[str, jax.Array],
                                key: str = "ref_logps") -> jax.Array:
    """[B] the reference's summed masked log-probs of each row, gradient stopped:
    ``batch[key]`` when precomputed there, else a forward of ``ref_params``."""
    ref = batch[key] if key in batch else sequence_logprobs(config, ref_params, batch)
    return jax.lax.stop_gradient(ref)


def pad_to(x_BT: jax.Array, length: int, value=0) -> jax.Array:
    """Right-pads the time axis of [B, T] to ``length``."""
    return jnp.pad(x_BT, ((0, 0), (0, length - x_BT.shape[1])), constant_values=value)


def concat_pair(batch: Mapping[str, jax.Array], first: str, second: str,
                keys=("tokens", "positions", "segment_ids", "loss_mask")) -> dict:
    """Stacks the ``first_*`` and ``second_*`` sequences into one [2B, T] batch (padded to
    the longer T) so a preference pair takes one forward pass."""
    T = max(batch[f"{first}_tokens"].shape[1], batch[f"{second}_tokens"].shape[1])
    return {k: jnp.concatenate([pad_to(batch[f"{first}_{k}"], T),
                                pad_to(batch[f"{second}_{k}"], T)], axis=0) for k in keys}
