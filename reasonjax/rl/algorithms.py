"""One frozen config per RL algorithm: its own knobs, the extra keys it puts in the policy
batch (``advantages`` and what its loss reads) and its :class:`~reasonjax.train.rl.
PolicyLossConfig`. The math is in :mod:`reasonjax.train.rl`; papers:

- :class:`GRPO` (Shao et al., 2024, "DeepSeekMath"): group-normalised outcome rewards,
  the loss averaged per sequence, k3 KL to the reference in the loss;
- :class:`DrGRPO` (Liu et al., 2025, "Understanding R1-Zero-Like Training"): mean-centred
  only, the loss summed over tokens and divided by a constant (B x max_new_tokens);
- :class:`RLOO` (Ahmadian et al., 2024, "Back to Basics"): leave-one-out baseline;
- :class:`PPO` as in ReFT (Luong et al., 2024): the outcome reward on the last token minus
  kl_coef x k1 per token, GAE with the value head as critic, whitened advantages, clipped
  critic loss;
- :class:`PRIME` (Cui et al., 2025, "Process Reinforcement through Implicit Rewards"):
  implicit process rewards from an online implicit PRM plus leave-one-out outcome
  advantages (the PRM's own step is :func:`reasonjax.rl.update.make_prime_prm_update`).

PRM step rewards (``RLConfig.prm_shaping``) enter as token rewards before GAE for PPO and
as their return-to-go added to the advantages otherwise.

Every config has a ``name`` field: ``RLConfig.algorithm`` holds any of them, and when a
config is rebuilt from YAML or ``key=value`` overrides (:mod:`reasonjax.config` tries the
members of a union in order) the name is what picks the right class.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Literal, Optional, Union

import jax

from reasonjax.train import rl


@dataclasses.dataclass(frozen=True)
class RolloutStats:
    """What one iteration's advantages are computed from: R rollouts of L tokens.

    rewards_R:       [R] outcome rewards.
    mask_RL:         [R, L] loss mask (1 on the sampled completion tokens).
    logps_RL:        [R, L] the policy's token log-probs when the rollouts were sampled.
    values_RL:       [R, L] its value head, aligned with the tokens (``shift_values``).
    ref_logps_RL:    [R, L] the frozen reference's log-probs (None when not needed).
    step_rewards_RL: [R, L] PRM step rewards x prm_coef on step-end tokens (None: no
                     shaping).
    process_RL:      [R, L] PRIME's implicit process rewards (None for the others).
    """

    rewards_R: jax.Array
    mask_RL: jax.Array
    logps_RL: jax.Array
    values_RL: jax.Array
    ref_logps_RL: Optional[jax.Array] = None
    step_rewards_RL: Optional[jax.Array] = None
    process_RL: Optional[jax.Array] = None


def _kl_in_loss(clip_eps: float, kl_coef: float, aggregation: rl.Aggregation = "sequence",
                max_tokens: Optional[int] = None) -> rl.PolicyLossConfig:
    return rl.PolicyLossConfig(clip_eps=clip_eps, kl_coef=kl_coef, kl_estimator="k3",
                               aggregation=aggregation, max_tokens=max_tokens)


def _with_step_returns(advantages_RL: jax.Array, s: RolloutStats, kl_coef: float,
                       gamma: float) -> dict:
    """Batch keys of the algorithms with the KL in the loss: advantages plus the PRM step
    rewards' return-to-go, and the reference log-probs when the KL term is on."""
    if s.step_rewards_RL is not None:
        advantages_RL = advantages_RL + rl.discounted_returns(s.step_rewards_RL, s.mask_RL,
                                                              gamma)
    out = {"advantages": advantages_RL}
    if kl_coef > 0:
        out["ref_logps"] = s.ref_logps_RL
    return out


@dataclasses.dataclass(frozen=True)
class _GroupBaseline:
    """What GRPO, Dr. GRPO, RLOO and PRIME share: the PPO ratio clip ``clip_eps``, the k3
    KL to the reference in the loss (``kl_coef``; 0: no reference needed), advantages from
    the group of samples of one prompt (:meth:`advantages`), plus the PRM step rewards'
    return-to-go."""

    name: str = ""
    clip_eps: float = 0.2
    kl_coef: float = 0.0

    group_baseline: ClassVar[bool] = True

    @property
    def needs_reference(self) -> bool:
        return self.kl_coef > 0

    def loss_config(self, max_new_tokens: int) -> rl.PolicyLossConfig:
        return _kl_in_loss(self.clip_eps, self.kl_coef)

    def advantages(self, s: RolloutStats, group_size: int, gamma: float) -> jax.Array:
        raise NotImplementedError

    def loss_inputs(self, s: RolloutStats, group_size: int, gamma: float) -> dict:
        return _with_step_returns(self.advantages(s, group_size, gamma), s, self.kl_coef,
                                  gamma)


@dataclasses.dataclass(frozen=True)
class GRPO(_GroupBaseline):
    """GRPO: (r - group mean) / (group std + eps) on every completion token."""

    name: Literal["grpo"] = "grpo"

    def advantages(self, s: RolloutStats, group_size: int, gamma: float) -> jax.Array:
        adv = rl.group_advantages(s.rewards_R, group_size, scale_by_std=True)
        return rl.broadcast_to_tokens(adv, s.mask_RL)


@dataclasses.dataclass(frozen=True)
class DrGRPO(_GroupBaseline):
    """Dr. GRPO: r - group mean on every completion token; the loss summed over tokens
    and divided by a constant."""

    name: Literal["dr_grpo"] = "dr_grpo"

    def loss_config(self, max_new_tokens: int) -> rl.PolicyLossConfig:
        return _kl_in_loss(self.clip_eps, self.kl_coef, "constant", max_new_tokens)

    def advantages(self, s: RolloutStats, group_size: int, gamma: float) -> jax.Array:
        adv = rl.group_advantages(s.rewards_R, group_size, scale_by_std=False)
        return rl.broadcast_to_tokens(adv, s.mask_RL)


@dataclasses.dataclass(frozen=True)
class RLOO(_GroupBaseline):
    """RLOO: r_i - mean of the group's other rewards, on every completion token."""

    name: Literal["rloo"] = "rloo"

    def advantages(self, s: RolloutStats, group_size: int, gamma: float) -> jax.Array:
        return rl.broadcast_to_tokens(rl.leave_one_out_advantages(s.rewards_R, group_size),
                                      s.mask_RL)


@dataclasses.dataclass(frozen=True)
class PPO:
    """PPO with a critic (ReFT). clip_eps: ratio clip. kl_coef: k1 KL to the reference
    subtracted from the token rewards. value_coef / value_clip: the clipped critic loss on
    the value head. lam: GAE's lambda. whiten: normalise the advantages over the batch."""

    name: Literal["ppo"] = "ppo"
    clip_eps: float = 0.2
    kl_coef: float = 0.0
    value_coef: float = 0.5
    value_clip: float = 0.2
    lam: float = 0.95
    whiten: bool = True

    group_baseline: ClassVar[bool] = False

    @property
    def needs_reference(self) -> bool:
        return self.kl_coef > 0

    def loss_config(self, max_new_tokens: int) -> rl.PolicyLossConfig:
        return rl.PolicyLossConfig(clip_eps=self.clip_eps, aggregation="token",
                                   value_coef=self.value_coef, value_clip=self.value_clip)

    def loss_inputs(self, s: RolloutStats, group_size: int, gamma: float) -> dict:
        """GAE advantages and returns of the token rewards, and the critic's old values."""
        token_rewards = rl.rewards_at_end(s.rewards_R, s.mask_RL)
        if self.kl_coef > 0:
            token_rewards -= self.kl_coef * rl.kl_penalty(s.logps_RL, s.ref_logps_RL,
                                                          "k1") * s.mask_RL
        if s.step_rewards_RL is not None:
            token_rewards += s.step_rewards_RL
        adv, returns = rl.gae(token_rewards, s.values_RL, s.mask_RL, gamma, self.lam)
        if self.whiten:
            adv = rl.whiten(adv, s.mask_RL)
        return {"advantages": adv, "returns": returns, "old_values": s.values_RL}


@dataclasses.dataclass(frozen=True)
class PRIME(_GroupBaseline):
    """PRIME: discounted leave-one-out implicit process returns plus leave-one-out outcome
    advantages. beta: the implicit PRM's reward scale (its loss and the process rewards).
    process_coef: weight of the process advantages next to the outcome ones. Always needs
    the reference (the PRM's log-ratio is against it)."""

    name: Literal["prime"] = "prime"
    beta: float = 0.05
    process_coef: float = 1.0

    @property
    def needs_reference(self) -> bool:
        return True

    def advantages(self, s: RolloutStats, group_size: int, gamma: float) -> jax.Array:
        return rl.prime_advantages(s.process_RL, s.rewards_R, s.mask_RL, group_size,
                                   process_coef=self.process_coef, gamma=gamma)


Algorithm = Union[GRPO, DrGRPO, RLOO, PPO, PRIME]

# The ``reasonjax train KIND`` names.
ALGORITHMS: dict[str, type] = {"grpo": GRPO, "dr_grpo": DrGRPO, "rloo": RLOO, "ppo": PPO,
                               "prime": PRIME}

_POSITIVE = ("clip_eps", "beta")
_NON_NEGATIVE = ("kl_coef", "value_coef", "value_clip", "process_coef")
_UNIT_INTERVAL = ("lam",)


def algorithm_problems(algorithm: Algorithm) -> list[str]:
    """Field-named problems of an algorithm config (empty when it is valid).

    RLConfig raises them: a member's own ``__post_init__`` error would be swallowed while
    :mod:`reasonjax.config` tries the union's members, leaving a vaguer message."""
    out = []
    for field in dataclasses.fields(algorithm):
        value = getattr(algorithm, field.name)
        where = f"rl.algorithm.{field.name}"
        if field.name in _POSITIVE and not value > 0:
            out.append(f"{where} must be > 0, got {value}")
        if field.name in _NON_NEGATIVE and not value >= 0:
            out.append(f"{where} must be >= 0, got {value}")
        if field.name in _UNIT_INTERVAL and not 0 <= value <= 1:
            out.append(f"{where} must lie in [0, 1], got {value}")
    return out
