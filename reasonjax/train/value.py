"""Value / process-reward-model losses on the model's scalar head.

The value of a prefix is read at its last token: ``values[:, t]`` scores the prefix
``tokens[:, :t + 1]``; ``value_mask`` marks where a target applies (e.g. step ends) and
``value_targets`` holds it (see :mod:`reasonjax.data.formats`). The head's raw output is
mapped by ``transform`` before a regression loss: ``sigmoid`` for targets in [0, 1]
(correctness probabilities), ``tanh`` for [-1, 1] (AlphaMath's Q-values), ``identity``
(the raw head; the same names as :mod:`reasonjax.search.scoring`'s transforms).

- PRM on hard step labels (Lightman et al., 2023; Math-Shepherd, Wang et al., 2024):
  binary cross-entropy with the raw head as the logit (``loss="bce"``).
- Monte Carlo soft labels (Math-Shepherd soft estimation, OmegaPRM; GLoRe's SORM): the
  same BCE with fractional targets, or MSE on transformed values (``loss="mse"``).
- Outcome-supervised value model (OVM, Yu et al., 2024, "OVM, Outcome-supervised Value
  Models for Planning in Mathematical Reasoning"): every prefix of a solution is labelled
  with the solution's final outcome (:func:`ovm_targets`), trained with either loss.
- AlphaMath (Chen et al., 2024, "AlphaMath Almost Zero: process Supervision without
  process"): L = SFT(correct paths) + beta * MSE(tanh(value(prefix)), Q(prefix)) on ONE set
  of params (:func:`joint_loss`).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax
import jax.numpy as jnp
import optax

from reasonjax.models.config import ModelConfig
from reasonjax.train.logprobs import forward, masked_mean, token_accuracy, token_logprobs
from reasonjax.train.loss import Loss
from reasonjax.train.sft import sft_loss_from_logps

Transform = Literal["sigmoid", "tanh", "identity"]

TRANSFORMS = {"sigmoid": jax.nn.sigmoid, "tanh": jnp.tanh, "identity": lambda x: x}


@dataclasses.dataclass(frozen=True)
class ValueConfig:
    """loss: ``bce`` (raw head = logit; targets in [0, 1], hard or soft) or ``mse`` (on
    ``transform(head)``)."""

    loss: Literal["bce", "mse"] = "bce"
    transform: Transform = "sigmoid"


@dataclasses.dataclass(frozen=True)
class JointConfig:
    """AlphaMath: value_coef is the paper's beta; transform maps the head onto Q's range."""

    value_coef: float = 1.0
    transform: Transform = "tanh"


def value_bce(head_BT: jax.Array, targets_BT: jax.Array, mask_BT: jax.Array) -> jax.Array:
    """Mean binary cross-entropy (raw head as logit) over the masked positions."""
    return masked_mean(optax.sigmoid_binary_cross_entropy(head_BT, targets_BT), mask_BT)


def value_mse(pred_BT: jax.Array, targets_BT: jax.Array, mask_BT: jax.Array) -> jax.Array:
    """Mean squared error over the masked positions."""
    return masked_mean((pred_BT - targets_BT) ** 2, mask_BT)


def ovm_targets(loss_mask_BT: jax.Array, outcome_B: jax.Array) -> tuple[jax.Array, jax.Array]:
    """OVM labels: (value_mask, value_targets) [B, T] giving every solution token (every
    prefix) the final outcome of its row."""
    mask = (loss_mask_BT > 0).astype(jnp.float32)
    return mask, mask * jnp.asarray(outcome_B, jnp.float32)[:, None]


def _value_terms(head_BT, batch, config: ValueConfig):
    mask, targets = batch["value_mask"], batch["value_targets"]
    pred = TRANSFORMS[config.transform](head_BT)
    if config.loss == "bce":
        loss = value_bce(head_BT, targets, mask)
    else:
        loss = value_mse(pred, targets, mask)
    return loss, {"value_mae": masked_mean(jnp.abs(pred - targets), mask),
                  "value_targets": jnp.sum(mask)}


def value_loss(model_config: ModelConfig, config: ValueConfig = ValueConfig()) -> Loss:
    """The value / PRM :class:`Loss` on ``value`` batches."""
    if config.loss == "bce" and config.transform != "sigmoid":
        raise ValueError("value.loss=bce reads the head as a logit, so value.transform must be "
                         f"'sigmoid' (got {config.transform!r}); use value.loss=mse otherwise")

    def fn(params, batch, rng, ref_params=None):
        out = forward(model_config, params, batch)
        loss, metrics = _value_terms(out.values, batch, config)
        return loss, {"loss": loss, **metrics}

    return Loss(name=f"value_{config.loss}", kind="value", fn=fn)


def joint_loss(model_config: ModelConfig, config: JointConfig = JointConfig()) -> Loss:
    """AlphaMath's joint policy + value :class:`Loss` on ``joint`` batches."""

    def fn(params, batch, rng, ref_params=None):
        out = forward(model_config, params, batch)
        sft = sft_loss_from_logps(token_logprobs(out.logits, batch["tokens"]),
                                  batch["loss_mask"])
        value, metrics = _value_terms(out.values, batch, ValueConfig("mse", config.transform))
        loss = sft + config.value_coef * value
        return loss, {"loss": loss, "sft_loss": sft, "value_loss": value,
                      "token_accuracy": masked_mean(token_accuracy(out.logits, batch["tokens"]),
                                                    batch["loss_mask"]), **metrics}

    return Loss(name="joint", kind="joint", fn=fn)
