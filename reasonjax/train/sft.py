"""Supervised fine-tuning: next-token cross-entropy on the loss-masked tokens.

Optional Masked Thought (Chen et al., 2024, "Masked Thought: Simply Masking Partial
Reasoning Steps Can Improve Mathematical Reasoning Learning of Language Models"): each
input token of the solution (``loss_mask > 0``) is replaced by ``mask_token_id`` with
probability ``mask_prob``; the targets stay the original tokens, so the model learns to
continue a reasoning chain from a partly hidden one. The paper masks with a special token;
runs that know their tokenizer (:func:`~reasonjax.train.fit.sft_on_task`, ``reasonjax
train sft``) default to its pad id, which the model sees as an ordinary input token
because ``segment_ids`` keep it inside the sequence. Id 0 is never assumed: in HF
vocabularies it is a real token (``!`` for Llama 3 and Qwen2).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import jax
import jax.numpy as jnp

from reasonjax.models.config import ModelConfig
from reasonjax.models.transformer import Transformer
from reasonjax.train.logprobs import masked_mean, token_accuracy, token_logprobs
from reasonjax.train.loss import Loss


@dataclasses.dataclass(frozen=True)
class SFTConfig:
    """mask_prob: Masked Thought input-masking probability (0 = plain SFT);
    mask_token_id: the id masked inputs get (None: the tokenizer's pad id, filled in by
    :func:`with_mask_token`)."""

    mask_prob: float = 0.0
    mask_token_id: Optional[int] = None


def with_mask_token(config: SFTConfig, tokenizer) -> SFTConfig:
    """``config`` with an unset ``mask_token_id`` set to ``tokenizer.pad_id``."""
    if config.mask_token_id is not None:
        return config
    return dataclasses.replace(config, mask_token_id=tokenizer.pad_id)


def sft_loss_from_logps(token_logps_BT: jax.Array, loss_mask_BT: jax.Array) -> jax.Array:
    """Mean negative log-likelihood per loss-masked token (a scalar).

    Tokens, not sequences, are averaged: every supervised token of the batch weighs the
    same, which is what packing several sequences per row requires.
    """
    return -masked_mean(token_logps_BT, loss_mask_BT)


def masked_thought_inputs(tokens_BT: jax.Array, loss_mask_BT: jax.Array, rng: jax.Array,
                          mask_prob: float, mask_token_id: int) -> jax.Array:
    """Inputs with each solution token replaced by ``mask_token_id`` w.p. ``mask_prob``."""
    drop = (jax.random.uniform(rng, tokens_BT.shape) < mask_prob) & (loss_mask_BT > 0)
    return jnp.where(drop, jnp.asarray(mask_token_id, tokens_BT.dtype), tokens_BT)


def sft_loss(model_config: ModelConfig, config: SFTConfig = SFTConfig()) -> Loss:
    """The SFT :class:`Loss` on ``sft`` batches."""
    if not 0.0 <= config.mask_prob < 1.0:
        raise ValueError(f"sft.mask_prob must lie in [0, 1), got {config.mask_prob}")
    if config.mask_prob > 0 and config.mask_token_id is None:
        raise ValueError("sft.mask_token_id is unset: give the id masked inputs get (e.g. "
                         "the tokenizer's pad id, see sft.with_mask_token); id 0 is a real "
                         "token in HF vocabularies")
    model = Transformer(model_config)

    def fn(params, batch, rng, ref_params=None):
        tokens, mask = batch["tokens"], batch["loss_mask"]
        inputs = tokens
        if config.mask_prob > 0:
            inputs = masked_thought_inputs(tokens, mask, rng, config.mask_prob,
                                           config.mask_token_id)
        out = model.apply({"params": params}, inputs, positions=batch["positions"],
                          segment_ids=batch["segment_ids"])
        loss = sft_loss_from_logps(token_logprobs(out.logits, tokens), mask)
        return loss, {"loss": loss,
                      "token_accuracy": masked_mean(token_accuracy(out.logits, tokens), mask),
                      "target_tokens": jnp.sum(mask)}

    return Loss(name="sft", kind="sft", fn=fn)
