"""OREAL (Lyu et al., 2025, "Exploring the Limit of Outcome Reward for Learning
Mathematical Reasoning"): behaviour cloning on the positive samples of each prompt's
best-of-N group, reshaped rewards on its negative samples, and per-token weights from a
token-level reward model fit to the outcome labels alone.

Per-token arrays are [B, T] aligned with ``tokens`` and rows of a group consecutive, as in
:mod:`reasonjax.train.rl`. y_i = 1 when sample i of a group verifies, p = the group's pass
rate (the mean of its y).

Positive samples (the paper's Sec. 2: behaviour cloning on best-of-N positives learns the
KL-regularised optimal policy under binary feedback): with binary rewards a best-of-N
pick is any correct sample, and each takes sample weight 1 in an NLL term.

Negative samples (Sec. 2.3, the reshaping that keeps the gradients consistent): for
samples of pi, E_pi[grad log pi] = 0 splits as p E+[grad log pi] + (1 - p) E-[grad log pi]
= 0, so the group-baselined policy gradient E_pi[(y - p) grad log pi] is
p (1 - p) (E+ - E-). Cloning the positives fixes their weight at 1, i.e. divides (y - p)
by (1 - p); the negatives must be divided alike, which reshapes their reward to
-p / (1 - p) (:func:`reshaped_rewards`). Per group the two terms then carry equal mass
(n p positives x 1, n (1 - p) negatives x p / (1 - p)): per group the loss is
E_{S+}[-log pi] + eta E_{S-}[log pi] over its positive and negative sets. This is GRPO's
pass-rate scaling applied to the negatives only (the paper's comparison at the end of
Sec. 2.3); the released trainer (RLOO advantages of +-1 rewards multiplying both terms,
one correct and one incorrect sample per prompt) weights a pair (1 - p) : p, the same
ratio. eta (``negative_coef``) is the released config's negative-loss factor 0.5. Groups
with p = 0 or 1 carry no weight (the released trainer drops them).

Token weights (the paper's token-level reward model, Sec. 2; released code
``threshold_rescale`` / ``topk_rescale``): a scalar head w_t on every
completion token, trained with cross-entropy between the outcome y and
sigma(mean_t w_t) (:func:`token_rm_loss`), so only the outcome supervises it. A token's
probability of lying on a correct path is q_t = sigma(mean_{k <= t} w_k) over the
completion tokens up to t (:func:`cumulative_probs`); positives weight token t by how
correct its prefix looks, negatives by how wrong:
- ``threshold`` (the released default, tau = 0.5): w+_t = clip((q_t - tau) / (1 - tau),
  0, 1), w-_t = clip((1 - q_t - tau) / (1 - tau), 0, 1) (:func:`threshold_weights`);
- ``topk``: the floor(ratio x |y|) largest scores of a row, min-max scaled to [0, 1]
  among themselves (1 when they tie), the rest 0 (:func:`topk_weights`);
- ``none``: every token 1 (the released "without token RM" setting).

Our simplifications, against the released trainer (InternLM/OREAL train_oreal.py):
all samples of an informative group train, not one correct and one incorrect per prompt;
the two terms go through one aggregation over the batch (default token-mean) with the
per-group mass above, not a token mean over each set; positives weigh 1, not their RLOO
advantage; the negatives' term is the shared
clipped ratio objective (the released one is the unclipped ratio, equal at the first
step); w_t is read at token t itself (the released code reads the head one position
earlier, so the first completion token's weight ignores that token); the reward model
takes its step before scoring the batch, instead of after it and instead of the released
10 warm-up iterations with the policy frozen.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp

from reasonjax.models.config import ModelConfig
from reasonjax.train.logprobs import forward, masked_sum
from reasonjax.train.loss import Loss
from reasonjax.train.rl import _groups

TokenWeights = Literal["threshold", "topk", "none"]


def pass_rates(correct_B: jax.Array, group_size: int) -> jax.Array:
    """Each row's group pass rate p (the mean of the group's 0/1 labels). [B]"""
    y = _groups(jnp.asarray(correct_B, jnp.float32), group_size)
    return jnp.broadcast_to(y.mean(axis=1, keepdims=True), y.shape).reshape(-1)


def reshaped_rewards(correct_B: jax.Array, group_size: int, negative_coef: float = 1.0
                     ) -> jax.Array:
    """OREAL's per-sample weights (module docstring): 1 for a correct sample,
    -negative_coef x p / (1 - p) for an incorrect one, 0 in a group with p = 0 or 1. [B]"""
    y = jnp.asarray(correct_B, jnp.float32)
    p = pass_rates(y, group_size)
    informative = (p > 0) & (p < 1)
    negative = -negative_coef * p / jnp.where(informative, 1 - p, 1.0)
    return jnp.where(informative, jnp.where(y > 0, 1.0, negative), 0.0)


def cumulative_probs(scores_BT: jax.Array, mask_BT: jax.Array) -> jax.Array:
    """q_t = sigmoid(mean of the scores over the masked tokens up to t); 0 off the mask.
    [B, T]"""
    total = jnp.cumsum(scores_BT * mask_BT, axis=1)
    count = jnp.cumsum(mask_BT, axis=1)
    return jax.nn.sigmoid(total / jnp.maximum(count, 1)) * mask_BT


def threshold_weights(x_BT: jax.Array, mask_BT: jax.Array, threshold: float = 0.5
                      ) -> jax.Array:
    """clip((x - threshold) / (1 - threshold), 0, 1) on the masked tokens. [B, T]"""
    return jnp.clip((x_BT - threshold) / (1 - threshold), 0.0, 1.0) * mask_BT


def topk_weights(x_BT: jax.Array, mask_BT: jax.Array, ratio: float = 0.5) -> jax.Array:
    """Per row, the k = floor(ratio x masked tokens) largest x min-max scaled to [0, 1]
    among themselves (all 1 when they are equal); every other token 0. [B, T]"""
    on = mask_BT > 0
    keyed = jnp.where(on, x_BT, -jnp.inf)
    rank = jnp.argsort(jnp.argsort(-keyed, axis=1, stable=True), axis=1)  # 0 = largest
    k = jnp.floor(ratio * jnp.sum(on, axis=1, keepdims=True)).astype(rank.dtype)
    chosen = on & (rank < k)
    lo = jnp.min(jnp.where(chosen, x_BT, jnp.inf), axis=1, keepdims=True)
    hi = jnp.max(jnp.where(chosen, x_BT, -jnp.inf), axis=1, keepdims=True)
    spread = jnp.where(hi > lo, hi - lo, 1.0)
    scaled = jnp.where(hi > lo, (x_BT - lo) / spread, 1.0)
    return jnp.where(chosen, scaled, 0.0)


def token_weights(scores_BT: jax.Array, mask_BT: jax.Array, correct_B: jax.Array,
                  mode: TokenWeights = "threshold", threshold: float = 0.5,
                  ratio: float = 0.5) -> jax.Array:
    """OREAL's token weights from the token-level RM's scores w_t: the rule ``mode``
    applied to q_t on correct rows and to 1 - q_t on incorrect ones. [B, T]"""
    if mode == "none":
        return mask_BT
    q = cumulative_probs(scores_BT, mask_BT)
    x = jnp.where(jnp.asarray(correct_B)[:, None] > 0, q, 1 - q) * mask_BT
    if mode == "threshold":
        return threshold_weights(x, mask_BT, threshold)
    if mode == "topk":
        return topk_weights(x, mask_BT, ratio)
    raise ValueError(f"token_weights must be threshold, topk or none, got {mode!r}")


def sequence_scores(scores_BT: jax.Array, mask_BT: jax.Array) -> jax.Array:
    """The token RM's sequence logit: the mean of w_t over the masked tokens. [B]"""
    return masked_sum(scores_BT, mask_BT) / jnp.maximum(jnp.sum(mask_BT, -1), 1)


def token_rm_loss(model_config: ModelConfig) -> Loss:
    """The token-level RM's step on ``unpaired`` batches (``desirable`` = verified
    correct): binary cross-entropy between y and sigmoid(mean_t w_t), w_t the value head
    at each completion token (it has read token t)."""
    def fn(params, batch, rng, ref_params=None):
        scores = forward(model_config, params, batch).values
        logit = sequence_scores(scores, batch["loss_mask"])
        y = batch["desirable"]
        loss = jnp.mean(-(y * jax.nn.log_sigmoid(logit) + (1 - y) * jax.nn.log_sigmoid(-logit)))
        acc = jnp.mean(((logit > 0) == (y > 0)).astype(jnp.float32))
        return loss, {"loss": loss, "rm_accuracy": acc}

    return Loss(name="oreal_token_rm", kind="unpaired", fn=fn)
