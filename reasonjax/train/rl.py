"""RL on sampled rollouts: advantages, KL to a reference, reward shaping, and the clipped
policy-gradient loss (with an optional PPO critic on the value head).

All per-token arrays are [B, T] aligned with ``tokens`` (entry t concerns token t, see
:mod:`reasonjax.train.logprobs`); ``mask`` is the rollout's ``loss_mask`` (1 on the sampled
completion tokens, which are contiguous). Rows of a group (the n samples of one prompt)
are consecutive: rows ``[g * n, (g + 1) * n)`` form group g.

Advantages
- PPO with GAE (Schulman et al., 2016) and the value head as critic, as in ReFT (Luong et
  al., 2024, "ReFT: Reasoning with Reinforced Fine-Tuning"): :func:`gae`.
- GRPO (Shao et al., 2024, "DeepSeekMath"): (r - mean_group) / (std_group + eps);
  Dr. GRPO (Liu et al., 2025, "Understanding R1-Zero-Like Training"): r - mean_group, and
  the loss summed over tokens divided by a constant (``seq-mean-token-sum-norm``) instead
  of each sequence's length: :func:`group_advantages`.
- RLOO (Ahmadian et al., 2024, "Back to Basics"; Kool et al., 2019): r minus the mean of
  the other n - 1 samples: :func:`leave_one_out_advantages`.
- REINFORCE++ (Hu et al., 2025, "REINFORCE++: Stabilizing Critic-Free Policy
  Optimization"): no per-prompt baseline, the token returns whitened over the whole batch;
  REINFORCE++-baseline: the group mean subtracted first (:func:`outcome_advantages`
  with ``scale="batch"`` and :func:`whiten`).
- DAPO (Yu et al., 2025, "DAPO: an Open-Source LLM Reinforcement Learning System at
  Scale"): GRPO's advantages with an overlong length penalty added to the reward
  (:func:`overlong_penalty`) and groups whose rewards are all equal dropped and refilled
  (:func:`informative_groups`, used by :mod:`reasonjax.rl.loop`).
- PRIME (Cui et al., 2025, "Process Reinforcement through Implicit Rewards"): token
  rewards r_t = beta * (log pi_phi(y_t) - log pi_ref(y_t)) from an implicit PRM phi
  (:func:`prime_process_rewards`), with leave-one-out baselines on both the process and the
  outcome rewards (:func:`prime_advantages`); phi is trained online on outcome labels with
  :func:`prime_prm_loss`.

Policy objectives (per token, to minimise; rho_t = pi / pi_old on the token):
- ``ppo``: max(-A rho, -A clip(rho, 1 - clip_low, 1 + clip_high)) (Schulman et al.,
  2017); clip_high > clip_low is DAPO's "clip-higher": :func:`clipped_policy_loss`;
- ``gspo`` (Zheng et al., 2025, "Group Sequence Policy Optimization"): the same clip on
  the sequence ratio s = exp(mean_t log rho_t), with GSPO-token's gradient
  sg(s) rho_t / sg(rho_t): :func:`gspo_policy_loss`;
- ``cispo`` (MiniMax, 2025, "MiniMax-M1"): -sg(clip(rho, 1 - clip_low, 1 + clip_high)) A
  log pi, so clipped tokens still get a gradient: :func:`cispo_policy_loss`.
With ``clone_positive`` (OREAL, :mod:`reasonjax.train.oreal`) tokens with A > 0 are
behaviour-cloned, -A log pi, and only the others take the objective above.
Aggregation over tokens (verl's names): ``token-mean`` (all tokens of the batch alike:
DAPO), ``seq-mean-token-mean`` (each row's mean, then over rows: GRPO),
``seq-mean-token-sum`` (each row's sum, then over rows), ``seq-mean-token-sum-norm``
(each row's sum / max_tokens, then over rows: Dr. GRPO): :func:`aggregate`.

KL to a reference (Schulman, 2020, "Approximating KL divergence"), with the log ratio
lr = log pi_ref - log pi on tokens sampled from pi: k1 = -lr, k2 = lr^2 / 2,
k3 = exp(lr) - 1 - lr (unbiased, non-negative; GRPO's choice). Either added to the loss
(``PolicyLossConfig.kl_coef``, GRPO) or subtracted from the token rewards (PPO / ReFT,
REINFORCE++; see :mod:`reasonjax.rl.algorithms`).

PRM reward shaping (Gao et al., 2024, "On Designing Effective RL Reward at Training Time
for LLM Reasoning"): raw PRM bonuses get hacked by repeating good steps, so the step
rewards are bounded: ``clip``: r_k = min(s_k - eta, 0) (the PRM can only penalise);
``delta``: r_k = s_k - s_{k+1} with s_{K+1} = 0, so the return from step k telescopes to
s_k; ``clip_delta``: delta on the clipped scores. Our choice s_{K+1} = 0 keeps the last
step's score in the trajectory, so the return from every step equals its own score.
"""

from __future__ import annotations

import dataclasses
from typing import Literal, Optional, get_args

import jax
import jax.numpy as jnp

from reasonjax.models.config import ModelConfig
from reasonjax.train.logprobs import (forward, masked_mean, masked_sum,
                                      reference_sequence_logprobs, sequence_logprobs,
                                      shift_values, token_logprobs)
from reasonjax.train.loss import Loss

KLEstimator = Literal["k1", "k2", "k3"]
Aggregation = Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum",
                      "seq-mean-token-sum-norm"]
Objective = Literal["ppo", "gspo", "cispo"]
Baseline = Literal["mean", "leave_one_out", "none"]
Scale = Literal["group", "batch", "none"]
AGGREGATIONS = get_args(Aggregation)
OBJECTIVES = get_args(Objective)


@dataclasses.dataclass(frozen=True)
class PolicyLossConfig:
    """The policy-gradient objective on ``rollout`` batches (module docstring).

    objective: ``ppo``, ``gspo`` or ``cispo``; clip_low / clip_high: its ratio range
    [1 - clip_low, 1 + clip_high]. kl_coef / kl_estimator: KL-to-reference term added per
    token (0 disables it and the need for a reference). aggregation: how per-token terms
    become a scalar (:data:`AGGREGATIONS`); max_tokens: the normaliser of
    ``seq-mean-token-sum-norm`` (default T). value_coef > 0 adds the PPO critic loss on
    the value head (needs ``returns`` and ``old_values``), clipped to value_clip around the
    old values. clone_positive: tokens with a positive advantage A are behaviour-cloned,
    -A log pi (no ratio, no clip), and only the negative ones go through the objective
    (OREAL, :mod:`reasonjax.train.oreal`).
    """

    objective: Objective = "ppo"
    clip_low: float = 0.2
    clip_high: float = 0.2
    kl_coef: float = 0.0
    kl_estimator: KLEstimator = "k3"
    aggregation: Aggregation = "seq-mean-token-mean"
    max_tokens: Optional[int] = None
    value_coef: float = 0.0
    value_clip: float = 0.2
    clone_positive: bool = False


# ---------------------------------------------------------------------------------------
# Advantages and rewards


def _groups(x_B: jax.Array, group_size: int) -> jax.Array:
    if x_B.shape[0] % group_size:
        raise ValueError(f"{x_B.shape[0]} rollouts do not split into groups of {group_size}; "
                         "the batch must hold whole groups (n samples per prompt)")
    return x_B.reshape(-1, group_size)


def group_advantages(rewards_B: jax.Array, group_size: int, scale_by_std: bool = True,
                     eps: float = 1e-6) -> jax.Array:
    """GRPO: (r - group mean) / (group std + eps); Dr. GRPO: scale_by_std=False. [B]

    A group whose rewards are all equal gets exactly 0 (in float32 its mean can be one
    rounding step off every member: 0.1 x 16 would give each -7e-3 after scaling)."""
    return outcome_advantages(rewards_B, group_size, "mean",
                              "group" if scale_by_std else "none", eps)


def leave_one_out_mean(x_B: jax.Array, group_size: int) -> jax.Array:
    """mean_{j != i} x_j over the other members of i's group. [B]"""
    if group_size < 2:
        raise ValueError("leave-one-out baselines need group_size >= 2")
    x = _groups(x_B, group_size)
    return ((x.sum(axis=1, keepdims=True) - x) / (group_size - 1)).reshape(-1)


def leave_one_out_advantages(rewards_B: jax.Array, group_size: int) -> jax.Array:
    """RLOO: r_i - mean_{j != i} r_j within each group (exactly 0 in a tied group). [B]"""
    return outcome_advantages(rewards_B, group_size, "leave_one_out", "none")


def outcome_advantages(rewards_B: jax.Array, group_size: int, baseline: Baseline = "mean",
                       scale: Scale = "group", eps: float = 1e-6) -> jax.Array:
    """Per-sample advantages from outcome rewards. [B]

    baseline: ``mean`` (the group's mean: GRPO, Dr. GRPO, DAPO, REINFORCE++-baseline),
    ``leave_one_out`` (the mean of the group's other samples: RLOO) or ``none`` (r itself:
    REINFORCE++). scale: ``group`` divides by the group's std + eps (GRPO); ``batch`` and
    ``none`` leave it (``batch`` whitens the token advantages later, :func:`whiten`).
    With a baseline, a group whose rewards are all equal gets exactly 0."""
    if baseline not in get_args(Baseline):
        raise ValueError(f"baseline must be mean, leave_one_out or none, got {baseline!r}")
    if scale not in get_args(Scale):
        raise ValueError(f"scale must be group, batch or none, got {scale!r}")
    r = _groups(rewards_B, group_size)
    if baseline == "mean":
        adv = r - r.mean(axis=1, keepdims=True)
    elif baseline == "leave_one_out":
        adv = r - leave_one_out_mean(rewards_B, group_size).reshape(r.shape)
    else:
        adv = r
    if scale == "group":
        adv = adv / (r.std(axis=1, keepdims=True) + eps)
    if baseline != "none":
        adv = jnp.where(informative_groups(rewards_B, group_size)[:, None], adv, 0.0)
    return adv.reshape(-1)


def informative_groups(rewards_B: jax.Array, group_size: int) -> jax.Array:
    """DAPO's dynamic-sampling filter: [G] bool, True for groups whose rewards are not all
    equal (a tied group's baselined advantages are 0: it adds nothing to the gradient)."""
    r = _groups(rewards_B, group_size)
    return r.max(axis=1) > r.min(axis=1)


def overlong_penalty(lengths_B: jax.Array, max_len: int, buffer: int,
                     penalty: float = 1.0) -> jax.Array:
    """DAPO's soft overlong punishment (eq. 13), added to the outcome reward. [B]

    0 for |y| <= max_len - buffer, falling linearly to -penalty at |y| = max_len (a
    completion cut at the budget), -penalty beyond. buffer 0 disables it."""
    if buffer <= 0:
        return jnp.zeros(lengths_B.shape, jnp.float32)
    if buffer > max_len:
        raise ValueError(f"overlong buffer {buffer} exceeds the length budget {max_len}")
    over = (jnp.asarray(lengths_B, jnp.float32) - (max_len - buffer)) / buffer
    return -penalty * jnp.clip(over, 0.0, 1.0)


def broadcast_to_tokens(x_B: jax.Array, mask_BT: jax.Array) -> jax.Array:
    """[B] -> [B, T]: every masked token of a row gets the row's value."""
    return x_B[:, None] * mask_BT


def last_token_mask(mask_BT: jax.Array) -> jax.Array:
    """[B, T] 1 at the last masked token of each row (all 0 for an empty row)."""
    idx = mask_BT.shape[1] - 1 - jnp.argmax(mask_BT[:, ::-1] > 0, axis=1)
    has = jnp.any(mask_BT > 0, axis=1)
    return jax.nn.one_hot(idx, mask_BT.shape[1]) * has[:, None]


def rewards_at_end(reward_B: jax.Array, mask_BT: jax.Array) -> jax.Array:
    """[B, T] token rewards with the outcome reward on each row's last completion token."""
    return reward_B[:, None] * last_token_mask(mask_BT)


def discounted_returns(rewards_BT: jax.Array, mask_BT: jax.Array, gamma: float = 1.0
                       ) -> jax.Array:
    """[B, T] sum_{s >= t} gamma^(s - t) r_s over the masked tokens (0 elsewhere)."""
    def body(next_ret, x):
        r, m = x
        ret = (r + gamma * next_ret) * m
        return ret, ret

    _, out = jax.lax.scan(body, jnp.zeros(rewards_BT.shape[0]),
                          (rewards_BT.T, mask_BT.T), reverse=True)
    return out.T


def gae(rewards_BT: jax.Array, values_BT: jax.Array, mask_BT: jax.Array, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[jax.Array, jax.Array]:
    """Generalised advantage estimation over the masked tokens. Returns (advantages,
    returns) [B, T]; values[:, t] is V of the state before token t (``shift_values``).

    delta_t = r_t + gamma V_{t+1} - V_t (V after the last token = 0);
    A_t = delta_t + gamma lam A_{t+1}; returns = A + V.
    """
    def body(carry, x):
        next_adv, next_value, next_mask = carry
        r, v, m = x
        delta = r + gamma * next_value * next_mask - v
        adv = (delta + gamma * lam * next_mask * next_adv) * m
        return (adv, v, m), adv

    zeros = jnp.zeros(rewards_BT.shape[0])
    _, adv = jax.lax.scan(body, (zeros, zeros, zeros),
                          (rewards_BT.T, values_BT.T, mask_BT.T), reverse=True)
    adv = adv.T
    return adv, (adv + values_BT) * mask_BT


def whiten(x_BT: jax.Array, mask_BT: jax.Array, eps: float = 1e-8) -> jax.Array:
    """(x - mean) / std over the masked entries; 0 elsewhere."""
    mean = masked_mean(x_BT, mask_BT)
    var = masked_mean((x_BT - mean) ** 2, mask_BT)
    return (x_BT - mean) * jax.lax.rsqrt(var + eps) * mask_BT


def kl_penalty(logps_BT: jax.Array, ref_logps_BT: jax.Array, estimator: KLEstimator = "k3"
               ) -> jax.Array:
    """Per-token estimate of KL(pi || pi_ref) from tokens sampled from pi. [B, T]"""
    lr = ref_logps_BT - logps_BT
    if estimator == "k1":
        return -lr
    if estimator == "k2":
        return 0.5 * lr ** 2
    if estimator == "k3":
        return jnp.expm1(lr) - lr
    raise ValueError(f"kl_estimator must be k1, k2 or k3, got {estimator!r}")


def prime_process_rewards(phi_logps_BT: jax.Array, ref_logps_BT: jax.Array,
                          mask_BT: jax.Array, beta: float) -> jax.Array:
    """PRIME implicit process reward r_t = beta * (log pi_phi - log pi_ref)(y_t). [B, T]"""
    return beta * (phi_logps_BT - ref_logps_BT) * mask_BT


def prime_advantages(process_rewards_BT: jax.Array, outcome_B: jax.Array, mask_BT: jax.Array,
                     group_size: int, process_coef: float = 1.0, outcome_coef: float = 1.0,
                     gamma: float = 1.0) -> jax.Array:
    """PRIME's Monte Carlo advantages with leave-one-out baselines (Cui et al., 2025,
    eq. 5). [B, T]

    A_t = sum_{s >= t} gamma^(s-t) (r_s - b_proc) * process_coef
          + (r_o - b_out) * outcome_coef,
    where b_proc is the mean over the group's other samples of their mean token process
    reward and b_out the mean of their outcome rewards: only the process term is
    discounted; the outcome term reaches every token whole.
    """
    per_row = masked_sum(process_rewards_BT, mask_BT) / jnp.maximum(jnp.sum(mask_BT, -1), 1)
    proc = (process_rewards_BT - leave_one_out_mean(per_row, group_size)[:, None]) * mask_BT
    out = leave_one_out_advantages(outcome_B, group_size)
    return (process_coef * discounted_returns(proc, mask_BT, gamma)
            + outcome_coef * broadcast_to_tokens(out, mask_BT))


def shape_prm_rewards(scores_BT: jax.Array, step_end_BT: jax.Array,
                      mode: Literal["clip", "delta", "clip_delta"], eta: float = 0.0
                      ) -> jax.Array:
    """Bounded step rewards from PRM scores s_k at the step-end tokens (module docstring).

    scores_BT: PRM score at each step-end token (ignored elsewhere); step_end_BT: 1 there.
    Returns [B, T] rewards on the step-end tokens."""
    if mode not in ("clip", "delta", "clip_delta"):
        raise ValueError(f"PRM shaping mode must be clip, delta or clip_delta, got {mode!r}")
    s = scores_BT
    if mode in ("clip", "clip_delta"):
        s = jnp.minimum(s - eta, 0.0)
    if mode == "clip":
        return s * step_end_BT

    def body(next_score, x):
        score, end = x
        r = (score - next_score) * end
        return jnp.where(end > 0, score, next_score), r

    _, r = jax.lax.scan(body, jnp.zeros(s.shape[0]), (s.T, step_end_BT.T), reverse=True)
    return r.T


# ---------------------------------------------------------------------------------------
# Losses


def aggregate(x_BT: jax.Array, mask_BT: jax.Array, aggregation: Aggregation,
              max_tokens: Optional[int] = None) -> jax.Array:
    """Scalar of per-token terms by the rule named in :class:`PolicyLossConfig`. Rows
    with no masked token do not count in the sequence means."""
    if aggregation == "token-mean":
        return masked_mean(x_BT, mask_BT)
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {', '.join(AGGREGATIONS)}, "
                         f"got {aggregation!r}")
    n_B = jnp.sum(mask_BT, -1)
    per_row = masked_sum(x_BT, mask_BT)
    if aggregation == "seq-mean-token-mean":
        per_row = per_row / jnp.maximum(n_B, 1)
    elif aggregation == "seq-mean-token-sum-norm":
        per_row = per_row / (max_tokens or x_BT.shape[1])
    return jnp.sum(per_row) / jnp.maximum(jnp.sum(n_B > 0), 1)


def clipped_policy_loss(logps_BT, old_logps_BT, advantages_BT, clip_low, clip_high=None):
    """Per-token PPO objective (to minimise): max(-A rho, -A clip(rho, 1 - clip_low,
    1 + clip_high)), rho = exp(logp - old_logp); clip_high defaults to clip_low. Returns
    (loss [B, T], clipped [B, T] 0/1: where the clipped term is the one taken)."""
    clip_high = clip_low if clip_high is None else clip_high
    ratio = jnp.exp(logps_BT - old_logps_BT)
    unclipped = -advantages_BT * ratio
    clipped = -advantages_BT * jnp.clip(ratio, 1 - clip_low, 1 + clip_high)
    return jnp.maximum(unclipped, clipped), (clipped > unclipped).astype(jnp.float32)


def sequence_ratio(logps_BT, old_logps_BT, mask_BT) -> jax.Array:
    """GSPO's per-token importance ratio [B, T]: its value is the sequence ratio
    s = exp(mean over the row's tokens of log(pi / pi_old)), its gradient that of
    sg(s) * pi_t / sg(pi_t) (GSPO-token: each token carries s times its own score)."""
    log_s = masked_sum(logps_BT - old_logps_BT, mask_BT) / jnp.maximum(jnp.sum(mask_BT, -1), 1)
    s = jax.lax.stop_gradient(jnp.exp(log_s))[:, None]
    return s * jnp.exp(logps_BT - jax.lax.stop_gradient(logps_BT))


def gspo_policy_loss(logps_BT, old_logps_BT, advantages_BT, mask_BT, clip_low, clip_high):
    """GSPO (Zheng et al., 2025) per token: max(-A s_t, -A clip(s_t, 1 - clip_low,
    1 + clip_high)) with s_t from :func:`sequence_ratio`, so a whole sequence is clipped
    or not. Returns (loss [B, T], clipped [B, T] 0/1)."""
    s = sequence_ratio(logps_BT, old_logps_BT, mask_BT)
    unclipped = -advantages_BT * s
    clipped = -advantages_BT * jnp.clip(s, 1 - clip_low, 1 + clip_high)
    return jnp.maximum(unclipped, clipped), (clipped > unclipped).astype(jnp.float32)


def cispo_policy_loss(logps_BT, old_logps_BT, advantages_BT, clip_low, clip_high):
    """CISPO (MiniMax-M1, 2025) per token: -sg(clip(rho, 1 - clip_low, 1 + clip_high)) A
    log pi. The gradient is the clipped weight times A grad log pi at every token, clipped
    or not. Returns (loss [B, T], clipped [B, T] 0/1: where the weight was clipped)."""
    ratio = jnp.exp(logps_BT - old_logps_BT)
    weight = jax.lax.stop_gradient(jnp.clip(ratio, 1 - clip_low, 1 + clip_high))
    outside = (ratio < 1 - clip_low) | (ratio > 1 + clip_high)
    return -weight * advantages_BT * logps_BT, outside.astype(jnp.float32)


def policy_objective(config: PolicyLossConfig, logps_BT, old_logps_BT, advantages_BT,
                     mask_BT) -> tuple[jax.Array, jax.Array]:
    """(per-token loss [B, T], clipped [B, T]) of ``config.objective``."""
    lo, hi = config.clip_low, config.clip_high
    if config.objective == "ppo":
        return clipped_policy_loss(logps_BT, old_logps_BT, advantages_BT, lo, hi)
    if config.objective == "gspo":
        return gspo_policy_loss(logps_BT, old_logps_BT, advantages_BT, mask_BT, lo, hi)
    if config.objective == "cispo":
        return cispo_policy_loss(logps_BT, old_logps_BT, advantages_BT, lo, hi)
    raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, "
                     f"got {config.objective!r}")


def clipped_value_loss(values_BT, old_values_BT, returns_BT, mask_BT, clip):
    """PPO critic loss: 0.5 * max((V - R)^2, (V_clip - R)^2), V_clip = V_old + clip(V -
    V_old, -c, c); mean over the masked tokens."""
    v_clip = old_values_BT + jnp.clip(values_BT - old_values_BT, -clip, clip)
    per_token = 0.5 * jnp.maximum((values_BT - returns_BT) ** 2, (v_clip - returns_BT) ** 2)
    return masked_mean(per_token, mask_BT)


def policy_gradient_loss(model_config: ModelConfig,
                         config: PolicyLossConfig = PolicyLossConfig()) -> Loss:
    """The policy-gradient :class:`Loss` on ``rollout`` batches (the algorithms of
    :mod:`reasonjax.rl.algorithms` differ in the advantages put in the batch and in this
    config)."""
    if not (0 < config.clip_low <= 1 and config.clip_high > 0):
        raise ValueError(f"clip_low must lie in (0, 1] and clip_high be > 0, got "
                         f"{config.clip_low}, {config.clip_high}")
    needs_ref = config.kl_coef > 0
    critic = config.value_coef > 0

    def fn(params, batch, rng, ref_params=None):
        out = forward(model_config, params, batch)
        tokens, mask = batch["tokens"], batch["loss_mask"]
        logps = token_logprobs(out.logits, tokens)
        adv = batch["advantages"]
        # Without old log-probs the update is on-policy: the ratio is 1 and its gradient
        # the log-probs' own (RLConfig.rollout_forward).
        old = batch["old_logps"] if "old_logps" in batch else jax.lax.stop_gradient(logps)
        pg, clipped = policy_objective(config, logps, old, adv, mask)
        metrics = {}
        if config.clone_positive:
            cloned = adv > 0
            clone = jnp.where(cloned, -adv * logps, 0.0)
            pg = jnp.where(cloned, clone, pg)
            clipped = jnp.where(cloned, 0.0, clipped)
            metrics["clone_loss"] = aggregate(clone, mask, config.aggregation,
                                              config.max_tokens)
        per_token = pg
        metrics.update({"clip_fraction": masked_mean(clipped, mask),
                        "approx_kl_old": masked_mean(0.5 * (logps - old) ** 2,
                                                     mask)})
        if needs_ref:
            if "ref_logps" in batch:
                ref = batch["ref_logps"]
            else:
                ref = token_logprobs(forward(model_config, ref_params, batch).logits, tokens)
            kl = kl_penalty(logps, jax.lax.stop_gradient(ref), config.kl_estimator)
            per_token = per_token + config.kl_coef * kl
            metrics["kl_ref"] = masked_mean(kl, mask)
        loss = aggregate(per_token, mask, config.aggregation, config.max_tokens)
        metrics["policy_loss"] = aggregate(pg, mask, config.aggregation, config.max_tokens)
        if critic:
            values = shift_values(out.values)
            vf = clipped_value_loss(values, batch["old_values"], batch["returns"], mask,
                                    config.value_clip)
            loss = loss + config.value_coef * vf
            metrics["value_loss"] = vf
        metrics["loss"] = loss
        return loss, metrics

    return Loss(name="policy_gradient", kind="rollout", fn=fn, needs_reference=needs_ref,
                reference_keys=("ref_logps",) if needs_ref else (),
                extra_keys=("returns", "old_values") if critic else ())


def prime_prm_loss(model_config: ModelConfig, beta: float = 0.05) -> Loss:
    """PRIME's implicit-PRM update: cross-entropy between the outcome label and
    sigmoid(beta * sum_t (log pi_phi - log pi_ref)(y_t)) on ``unpaired`` batches
    (``desirable`` = verified correct; ``ref_logps`` or reference params give pi_ref)."""
    def fn(params, batch, rng, ref_params=None):
        phi = sequence_logprobs(model_config, params, batch)
        ref = reference_sequence_logprobs(model_config, ref_params, batch)
        logit = beta * (phi - ref)
        y = batch["desirable"]
        loss = jnp.mean(-(y * jax.nn.log_sigmoid(logit) + (1 - y) * jax.nn.log_sigmoid(-logit)))
        acc = jnp.mean(((logit > 0) == (y > 0)).astype(jnp.float32))
        return loss, {"loss": loss, "prm_accuracy": acc}

    return Loss(name="prime_prm", kind="unpaired", fn=fn, needs_reference=True,
                reference_keys=("ref_logps",))
