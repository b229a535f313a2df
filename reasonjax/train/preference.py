"""Preference losses: the DPO family (paired) and KTO (unpaired).

The math is exposed on per-sequence log-probs ``pi_c, pi_r`` (policy, chosen / rejected,
summed over the loss-masked tokens) and ``ref_c, ref_r`` (reference), with the implicit
reward margin ``h = (pi_c - ref_c) - (pi_r - ref_r)``; each returns a per-pair loss [B]:

- ``dpo``    Rafailov et al., 2023, "Direct Preference Optimization":
             -log sigmoid(beta h).
- ``cdpo``   conservative DPO (Mitchell, 2023, "A note on DPO with noisy preferences"):
             labels flipped with probability eps (label smoothing):
             -(1 - eps) log sigmoid(beta h) - eps log sigmoid(-beta h).
- ``robust`` Chowdhury et al., 2024, "Provably Robust DPO": the unbiased loss under
             label noise eps: (-(1 - eps) log sigmoid(beta h) + eps log sigmoid(-beta h))
             / (1 - 2 eps).
- ``ipo``    Azar et al., 2023, "A General Theoretical Paradigm to Understand Learning from
             Human Preferences": (h - 1 / (2 beta))^2, on summed log-probs as in the paper.
- ``hinge``  SLiC (Zhao et al., 2023): max(0, 1 - beta h).
- ``orpo``   Hong et al., 2024, "ORPO: Monolithic Preference Optimization without Reference
             Model": NLL(chosen) + lambda * -log sigmoid(log odds(c) - log odds(r)), where
             odds(y) = P(y) / (1 - P(y)) with P(y) the per-token mean probability
             exp(mean log-prob); no reference.
- ``simpo``  Meng et al., 2024, "SimPO: Simple Preference Optimization with a
             Reference-Free Reward": -log sigmoid(beta (avg_c - avg_r) - gamma) on
             length-normalised (mean per token) log-probs; no reference.

Any reference-based member can add a likelihood term on the chosen response,
``nll_weight * NLL(chosen)`` with NLL the mean per-token negative log-likelihood (RPO: Pang
et al., 2024, "Iterative Reasoning Preference Optimization", DPO + NLL; TRL's
``rpo_alpha``). DPO on pairs that share most of their tokens can lower the chosen
response's likelihood along with the rejected one's; the NLL term holds it up.

Step-level DPO (Lai et al., 2024, "Step-DPO"; MCTS-DPO, Xie et al., 2024) uses the same
batch format: the shared prefix (question + correct earlier steps) is in both rows with
``loss_mask`` 0 and only the one-step continuation carries ``loss_mask`` 1, so every loss
here reads only the step tokens.

KTO (Ethayarajh et al., 2024, "KTO: Model Alignment as Prospect Theoretic Optimization")
takes unpaired examples: r = pi - ref; desirable rows lose lambda_D (1 - sigmoid(beta (r -
z0))), undesirable rows lambda_U (1 - sigmoid(beta (z0 - r))). The paper estimates the
reference point z0 = KL(pi || ref) from mismatched (x, y') pairs of the micro-batch; with the
``unpaired`` batch format we estimate it from the batch's own rows: z0 = max(0, mean_i r_i),
without gradient.

The reference model is either frozen params passed to the step (``ref_params``) or
precomputed log-probs in the batch (``ref_chosen_logps``, ``ref_rejected_logps`` /
``ref_logps``; see :func:`add_reference_logps`).
"""

from __future__ import annotations

import dataclasses
from typing import Literal, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np

from reasonjax.models.config import ModelConfig
from reasonjax.train.logprobs import (concat_pair, forward, masked_sum,
                                      reference_sequence_logprobs, sequence_logprobs,
                                      token_logprobs)
from reasonjax.train.loss import Loss

PairedLoss = Literal["dpo", "cdpo", "robust", "ipo", "hinge", "orpo", "simpo"]
REFERENCE_FREE = ("orpo", "simpo")


@dataclasses.dataclass(frozen=True)
class PreferenceConfig:
    """loss: which member of the family. beta: inverse temperature of the implicit reward
    (SimPO: reward scale). label_smoothing: eps, the assumed rate of flipped labels, of
    cdpo / robust (None: :data:`DEFAULT_EPS`; with eps 0 both are exactly DPO).
    orpo_lambda: weight of the odds-ratio term. simpo_gamma: SimPO's target margin.
    nll_weight: weight of the mean per-token NLL of the chosen response added to a
    reference-based loss (RPO; 0 = off)."""

    loss: PairedLoss = "dpo"
    beta: float = 0.1
    label_smoothing: Optional[float] = None
    orpo_lambda: float = 0.1
    simpo_gamma: float = 0.5
    nll_weight: float = 0.0

    @property
    def eps(self) -> float:
        """The label smoothing in effect: the set one, else DEFAULT_EPS for cdpo / robust
        (0 for the losses that have none)."""
        if self.label_smoothing is not None:
            return self.label_smoothing
        return DEFAULT_EPS if self.loss in ("cdpo", "robust") else 0.0


# cdpo / robust's eps when unset: a 10% flip rate (cDPO's example setting, Mitchell 2023;
# the low end of rDPO's, Chowdhury et al. 2024). 0 would make both exactly DPO.
DEFAULT_EPS = 0.1


@dataclasses.dataclass(frozen=True)
class KTOConfig:
    beta: float = 0.1
    desirable_weight: float = 1.0
    undesirable_weight: float = 1.0


# ---------------------------------------------------------------------------------------
# The math on per-sequence log-probs (each returns a per-pair loss [B]).


def reward_margin(pi_c, pi_r, ref_c, ref_r):
    """h = (pi_c - ref_c) - (pi_r - ref_r), the implicit-reward margin (before beta)."""
    return (pi_c - ref_c) - (pi_r - ref_r)


def dpo_loss(h, beta):
    return -jax.nn.log_sigmoid(beta * h)


def cdpo_loss(h, beta, eps):
    return -(1 - eps) * jax.nn.log_sigmoid(beta * h) - eps * jax.nn.log_sigmoid(-beta * h)


def robust_dpo_loss(h, beta, eps):
    return (-(1 - eps) * jax.nn.log_sigmoid(beta * h)
            + eps * jax.nn.log_sigmoid(-beta * h)) / (1 - 2 * eps)


def ipo_loss(h, beta):
    return (h - 1 / (2 * beta)) ** 2


def hinge_loss(h, beta):
    return jax.nn.relu(1 - beta * h)


def log_odds(mean_logp):
    """log(P / (1 - P)) for P = exp(mean_logp) < 1, computed stably near P = 1."""
    x = jnp.minimum(mean_logp, -1e-6)
    # log(1 - e^x): expm1 form for x near 0, log1p form for very negative x.
    log1mexp = jnp.where(x > -0.693, jnp.log(-jnp.expm1(x)), jnp.log1p(-jnp.exp(x)))
    return x - log1mexp


def orpo_loss(avg_c, avg_r, nll_c, lam):
    """NLL(chosen) + lam * -log sigmoid(log odds(c) - log odds(r)); avg_* are mean
    per-token log-probs, nll_c the mean per-token NLL of the chosen sequence."""
    return nll_c - lam * jax.nn.log_sigmoid(log_odds(avg_c) - log_odds(avg_r))


def simpo_loss(avg_c, avg_r, beta, gamma):
    return -jax.nn.log_sigmoid(beta * (avg_c - avg_r) - gamma)


def kto_loss(pi, ref, desirable, beta, desirable_weight=1.0, undesirable_weight=1.0):
    """Per-example KTO loss [B] with the in-batch reference point (module docstring).

    Returns (loss [B], z0 scalar)."""
    r = pi - ref
    z0 = jax.lax.stop_gradient(jnp.maximum(jnp.mean(r), 0.0))
    good = desirable_weight * (1 - jax.nn.sigmoid(beta * (r - z0)))
    bad = undesirable_weight * (1 - jax.nn.sigmoid(beta * (z0 - r)))
    return jnp.where(desirable > 0, good, bad), z0


def paired_loss(config: PreferenceConfig, pi_c, pi_r, ref_c, ref_r, len_c, len_r, eps=None):
    """Per-pair loss [B] and the implicit rewards (chosen [B], rejected [B]) it ranks.

    len_* are the loss-masked token counts [B] (used by orpo and simpo). eps: per-pair
    label smoothing [B] of cdpo / robust (default: ``config.label_smoothing``)."""
    b = config.beta
    eps = config.eps if eps is None else eps
    if config.loss in REFERENCE_FREE:
        avg_c, avg_r = pi_c / jnp.maximum(len_c, 1), pi_r / jnp.maximum(len_r, 1)
        if config.loss == "orpo":
            return orpo_loss(avg_c, avg_r, -avg_c, config.orpo_lambda), avg_c, avg_r
        return simpo_loss(avg_c, avg_r, b, config.simpo_gamma), b * avg_c, b * avg_r
    h = reward_margin(pi_c, pi_r, ref_c, ref_r)
    losses = {"dpo": lambda: dpo_loss(h, b), "cdpo": lambda: cdpo_loss(h, b, eps),
              "robust": lambda: robust_dpo_loss(h, b, eps), "ipo": lambda: ipo_loss(h, b),
              "hinge": lambda: hinge_loss(h, b)}
    loss = losses[config.loss]()
    if config.nll_weight:
        loss = loss + config.nll_weight * -pi_c / jnp.maximum(len_c, 1)
    return loss, b * (pi_c - ref_c), b * (pi_r - ref_r)


# ---------------------------------------------------------------------------------------
# Losses on batches.


def _validate(config: PreferenceConfig) -> None:
    if config.beta <= 0:
        raise ValueError(f"preference.beta must be positive, got {config.beta}")
    if config.loss == "robust" and not 0 <= config.eps < 0.5:
        raise ValueError("preference.label_smoothing must lie in [0, 0.5) for the robust "
                         f"loss, got {config.eps}")
    if config.nll_weight < 0:
        raise ValueError(f"preference.nll_weight must be >= 0, got {config.nll_weight}")
    if config.nll_weight and config.loss in REFERENCE_FREE:
        raise ValueError(f"preference.nll_weight applies to reference-based losses; "
                         f"{config.loss} has its own terms (orpo already adds the NLL)")
    if config.loss == "cdpo" and not 0 <= config.eps <= 0.5:
        raise ValueError("preference.label_smoothing must lie in [0, 0.5] for cdpo, got "
                         f"{config.eps}")


def pair_logprobs(model_config: ModelConfig, params, batch: Mapping) -> tuple:
    """(chosen [B], rejected [B]) summed masked log-probs, one forward over both."""
    both = concat_pair(batch, "chosen", "rejected")
    out = forward(model_config, params, both)
    logps = masked_sum(token_logprobs(out.logits, both["tokens"]), both["loss_mask"])
    B = batch["chosen_tokens"].shape[0]
    return logps[:B], logps[B:]


def preference_loss(model_config: ModelConfig, config: PreferenceConfig = PreferenceConfig()
                    ) -> Loss:
    """The paired :class:`Loss` on ``preference`` batches (DPO family, ORPO, SimPO). A
    batch's optional ``label_smoothing`` [B] gives cdpo / robust a smoothing per pair
    (e.g. MCTS-DPO's confidence from visit counts) in place of the config's."""
    _validate(config)
    needs_ref = config.loss not in REFERENCE_FREE

    def fn(params, batch, rng, ref_params=None):
        pi_c, pi_r = pair_logprobs(model_config, params, batch)
        if not needs_ref:
            ref_c = ref_r = jnp.zeros_like(pi_c)
        elif "ref_chosen_logps" in batch:
            ref_c, ref_r = batch["ref_chosen_logps"], batch["ref_rejected_logps"]
        else:
            ref_c, ref_r = pair_logprobs(model_config, ref_params, batch)
        ref_c, ref_r = jax.lax.stop_gradient(ref_c), jax.lax.stop_gradient(ref_r)
        len_c = jnp.sum(batch["chosen_loss_mask"], -1)
        len_r = jnp.sum(batch["rejected_loss_mask"], -1)
        per_pair, rew_c, rew_r = paired_loss(config, pi_c, pi_r, ref_c, ref_r, len_c, len_r,
                                             batch.get("label_smoothing"))
        loss = jnp.mean(per_pair)
        return loss, {"loss": loss, "reward_chosen": jnp.mean(rew_c),
                      "reward_rejected": jnp.mean(rew_r),
                      "reward_margin": jnp.mean(rew_c - rew_r),
                      "reward_accuracy": jnp.mean((rew_c > rew_r).astype(jnp.float32)),
                      "logp_chosen": jnp.mean(pi_c), "logp_rejected": jnp.mean(pi_r)}

    return Loss(name=config.loss, kind="preference", fn=fn, needs_reference=needs_ref,
                reference_keys=("ref_chosen_logps", "ref_rejected_logps") if needs_ref else ())


def kto(model_config: ModelConfig, config: KTOConfig = KTOConfig()) -> Loss:
    """The KTO :class:`Loss` on ``unpaired`` batches."""
    if config.beta <= 0:
        raise ValueError(f"kto.beta must be positive, got {config.beta}")

    def fn(params, batch, rng, ref_params=None):
        pi = sequence_logprobs(model_config, params, batch)
        ref = reference_sequence_logprobs(model_config, ref_params, batch)
        per_example, z0 = kto_loss(pi, ref, batch["desirable"], config.beta,
                                   config.desirable_weight, config.undesirable_weight)
        loss = jnp.mean(per_example)
        return loss, {"loss": loss, "kl_reference_point": z0,
                      "reward_mean": jnp.mean(config.beta * (pi - ref))}

    return Loss(name="kto", kind="unpaired", fn=fn, needs_reference=True,
                reference_keys=("ref_logps",))


def add_reference_logps(model_config: ModelConfig, ref_params, batch: Mapping,
                        kind: str = "preference") -> dict:
    """``batch`` plus the reference log-probs a ``preference`` / ``unpaired`` loss reads.

    Precomputing them once lets DPO-family training run without keeping the reference
    params in memory during the step."""
    if kind == "preference":
        ref_c, ref_r = _pair_logprobs_jit(model_config, ref_params, dict(batch))
        return {**batch, "ref_chosen_logps": np.asarray(ref_c),
                "ref_rejected_logps": np.asarray(ref_r)}
    if kind == "unpaired":
        return {**batch, "ref_logps": np.asarray(_seq_logprobs_jit(model_config, ref_params,
                                                                   dict(batch)))}
    raise ValueError(f"add_reference_logps: kind must be 'preference' or 'unpaired', got {kind!r}")


_pair_logprobs_jit = jax.jit(pair_logprobs, static_argnums=0)

_seq_logprobs_jit = jax.jit(sequence_logprobs, static_argnums=0)
