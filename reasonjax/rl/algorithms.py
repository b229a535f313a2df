"""One frozen config per RL algorithm: its knobs, the extra keys it puts in the policy
batch (``advantages`` and what its loss reads) and its :class:`~reasonjax.train.rl.
PolicyLossConfig`. The math is in :mod:`reasonjax.train.rl`.

Every algorithm has the policy-loss and sampling knobs of :class:`PolicyGradient`
(objective, clip range, KL in the loss or in the reward, aggregation, DAPO's overlong
penalty and dynamic sampling); the outcome-reward algorithms add a baseline and a scale
(:class:`OutcomeAlgorithm`). The named algorithms are those knobs' defaults as the papers
set them, and every knob can be changed (``algorithm.clip_high=0.28``):

=====================  =============  =====  =========  ==========  =======================
name                   baseline       scale  objective  clip        aggregation; extras
=====================  =============  =====  =========  ==========  =======================
grpo                   mean           group  ppo        0.2, 0.2    seq-mean-token-mean
dr_grpo                mean           none   ppo        0.2, 0.2    seq-mean-token-sum-norm
rloo                   leave_one_out  none   ppo        0.2, 0.2    seq-mean-token-mean
dapo                   mean           group  ppo        0.2, 0.28   token-mean; overlong
                                                                    0.2; dynamic sampling
gspo                   mean           group  gspo       3e-4, 4e-4  seq-mean-token-mean
cispo                  mean           group  cispo      1.0, 0.28   token-mean
reinforce_pp           none           batch  ppo        0.2, 0.2    token-mean; k1 KL 0.01
                                                                    in the reward
reinforce_pp_baseline  mean           batch  ppo        0.2, 0.2    token-mean
=====================  =============  =====  =========  ==========  =======================

Papers: GRPO (Shao et al., 2024, "DeepSeekMath"); Dr. GRPO (Liu et al., 2025,
"Understanding R1-Zero-Like Training"); RLOO (Ahmadian et al., 2024, "Back to Basics");
DAPO (Yu et al., 2025); GSPO (Zheng et al., 2025, "Group Sequence Policy Optimization":
the sequence-ratio clip range is theirs); CISPO (MiniMax, 2025, "MiniMax-M1": no lower
bound on the weight, clip_low = 1; the paper tunes only the upper bound, and our default
0.28 is DAPO's clip-higher); REINFORCE++ (Hu et al., 2025: the KL in the reward for the plain
variant, none for -baseline, as OpenRLHF runs them).

- :class:`PPO` as in ReFT (Luong et al., 2024): the outcome reward on the last token minus
  kl_coef x k1 per token, GAE with the value head as critic, whitened advantages, clipped
  critic loss;
- :class:`PRIME` (Cui et al., 2025, "Process Reinforcement through Implicit Rewards"):
  implicit process rewards from an online implicit PRM plus leave-one-out outcome
  advantages (the PRM's own step is :func:`reasonjax.rl.update.make_prime_prm_update`);
- :class:`OREAL` (Lyu et al., 2025, "Exploring the Limit of Outcome Reward for Learning
  Mathematical Reasoning"): behaviour cloning on the correct samples, pass-rate-reshaped
  rewards on the incorrect ones, token weights from an online token-level reward model
  (:mod:`reasonjax.train.oreal`; its step is :func:`reasonjax.rl.update.
  make_token_rm_update`).

Token rewards (the KL penalty when ``kl_in="reward"``, PRM step rewards from
``RLConfig.prm_shaping``) enter before GAE for PPO and as their return-to-go added to the
advantages otherwise; ``scale="batch"`` then whitens the token advantages over the batch.

Every config has a ``name`` field: ``RLConfig.algorithm`` holds any of them, and when a
config is rebuilt from YAML or ``key=value`` overrides (:mod:`reasonjax.config` tries the
members of a union in order) the name is what picks the right class.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Literal, Optional, Union

import jax

from reasonjax.train import oreal, rl


@dataclasses.dataclass(frozen=True)
class RolloutStats:
    """What one iteration's advantages are computed from: R rollouts of L tokens.

    rewards_R:       [R] outcome rewards.
    mask_RL:         [R, L] loss mask (1 on the sampled completion tokens).
    logps_RL:        [R, L] the policy's token log-probs when the rollouts were sampled.
    values_RL:       [R, L] its value head, aligned with the tokens (``shift_values``).
                     Both None when the update skips that forward
                     (:attr:`reasonjax.rl.config.RLConfig.rollout_forward`).
    ref_logps_RL:    [R, L] the frozen reference's log-probs (None when not needed).
    step_rewards_RL: [R, L] PRM step rewards x prm_coef on step-end tokens (None: no
                     shaping).
    process_RL:      [R, L] per-token scores of the algorithm's second trained model:
                     PRIME's implicit process rewards, OREAL's token-level RM scores w_t
                     (None for the others).
    correct_R:       [R] 1.0 where the final answer verifies (OREAL's labels; None: not
                     passed).
    """

    rewards_R: jax.Array
    mask_RL: jax.Array
    logps_RL: Optional[jax.Array]
    values_RL: Optional[jax.Array]
    ref_logps_RL: Optional[jax.Array] = None
    step_rewards_RL: Optional[jax.Array] = None
    process_RL: Optional[jax.Array] = None
    correct_R: Optional[jax.Array] = None


@dataclasses.dataclass(frozen=True)
class PolicyGradient:
    """The knobs every algorithm shares.

    objective: ``ppo`` / ``gspo`` / ``cispo`` (:mod:`reasonjax.train.rl`); clip_low /
    clip_high: its ratio range [1 - clip_low, 1 + clip_high]. kl_coef: weight of the KL to
    the reference (0: no reference needed), estimated per token by kl_estimator (k1 / k2 /
    k3) and either added to the loss (``kl_in="loss"``) or subtracted from the token
    rewards (``"reward"``). aggregation: how the per-token loss becomes a scalar.
    overlong_buffer: DAPO's soft overlong penalty over the last ``overlong_buffer`` x
    max_new_tokens tokens of the budget, reaching -overlong_penalty at the budget (0: off).
    dynamic_sampling: DAPO's filter: groups whose rewards are all equal are dropped and
    the batch refilled from up to ``max_resamples`` further draws of prompts
    (:mod:`reasonjax.rl.loop`)."""

    name: str = ""
    objective: rl.Objective = "ppo"
    clip_low: float = 0.2
    clip_high: float = 0.2
    kl_coef: float = 0.0
    kl_estimator: rl.KLEstimator = "k3"
    kl_in: Literal["loss", "reward"] = "loss"
    aggregation: rl.Aggregation = "seq-mean-token-mean"
    overlong_buffer: float = 0.0
    overlong_penalty: float = 1.0
    dynamic_sampling: bool = False
    max_resamples: int = 3

    group_baseline: ClassVar[bool] = True

    @property
    def needs_reference(self) -> bool:
        return self.kl_coef > 0

    @property
    def reads_rollout_policy(self) -> bool:
        """True when the advantages read the policy's rollout log-probs or values
        (``RolloutStats.logps_RL`` / ``values_RL``): a KL penalty in the reward."""
        return self.kl_coef > 0 and self.kl_in == "reward"

    @property
    def reward_model(self) -> bool:
        """True when the algorithm trains a second model next to the policy (PRIME's
        implicit PRM, OREAL's token-level RM), held in ``RLState.prm``."""
        return False

    def loss_config(self, max_new_tokens: int, value_coef: float = 0.0,
                    value_clip: float = 0.2) -> rl.PolicyLossConfig:
        return rl.PolicyLossConfig(
            objective=self.objective, clip_low=self.clip_low, clip_high=self.clip_high,
            kl_coef=self.kl_coef if self.kl_in == "loss" else 0.0,
            kl_estimator=self.kl_estimator, aggregation=self.aggregation,
            max_tokens=max_new_tokens, value_coef=value_coef, value_clip=value_clip)

    def token_rewards(self, s: RolloutStats) -> Optional[jax.Array]:
        """[R, L] per-token rewards besides the outcome: minus kl_coef x KL when the KL is
        in the reward, plus the PRM step rewards; None when there are none."""
        out = None
        if self.kl_coef > 0 and self.kl_in == "reward":
            out = -self.kl_coef * rl.kl_penalty(s.logps_RL, s.ref_logps_RL,
                                                self.kl_estimator) * s.mask_RL
        if s.step_rewards_RL is not None:
            out = s.step_rewards_RL if out is None else out + s.step_rewards_RL
        return out

    def reference_inputs(self, s: RolloutStats) -> dict:
        """The reference log-probs the loss reads (KL in the loss), else nothing."""
        return {"ref_logps": s.ref_logps_RL} if self.kl_coef > 0 and self.kl_in == "loss" else {}

    def with_token_returns(self, advantages_RL: jax.Array, s: RolloutStats,
                           gamma: float) -> jax.Array:
        """advantages + the return-to-go of :meth:`token_rewards`."""
        extra = self.token_rewards(s)
        if extra is None:
            return advantages_RL
        return advantages_RL + rl.discounted_returns(extra, s.mask_RL, gamma)

    def loss_inputs(self, s: RolloutStats, group_size: int, gamma: float) -> dict:
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class OutcomeAlgorithm(PolicyGradient):
    """Advantages from the group's outcome rewards (:func:`reasonjax.train.rl.
    outcome_advantages`): baseline ``mean`` / ``leave_one_out`` / ``none``, scale
    ``group`` (by the group's std) / ``batch`` (whiten the token advantages over the
    batch) / ``none``; broadcast to every completion token, plus the token rewards'
    return-to-go."""

    baseline: rl.Baseline = "mean"
    scale: rl.Scale = "group"

    def loss_inputs(self, s: RolloutStats, group_size: int, gamma: float) -> dict:
        adv = rl.outcome_advantages(s.rewards_R, group_size, self.baseline, self.scale)
        adv_RL = self.with_token_returns(rl.broadcast_to_tokens(adv, s.mask_RL), s, gamma)
        if self.scale == "batch":
            adv_RL = rl.whiten(adv_RL, s.mask_RL)
        return {"advantages": adv_RL, **self.reference_inputs(s)}


@dataclasses.dataclass(frozen=True)
class GRPO(OutcomeAlgorithm):
    """GRPO: (r - group mean) / (group std + eps) on every completion token."""

    name: Literal["grpo"] = "grpo"


@dataclasses.dataclass(frozen=True)
class DrGRPO(OutcomeAlgorithm):
    """Dr. GRPO: r - group mean on every completion token; the loss summed over tokens
    and divided by a constant (max_new_tokens)."""

    name: Literal["dr_grpo"] = "dr_grpo"
    scale: rl.Scale = "none"
    aggregation: rl.Aggregation = "seq-mean-token-sum-norm"


@dataclasses.dataclass(frozen=True)
class RLOO(OutcomeAlgorithm):
    """RLOO: r_i - mean of the group's other rewards, on every completion token."""

    name: Literal["rloo"] = "rloo"
    baseline: rl.Baseline = "leave_one_out"
    scale: rl.Scale = "none"


@dataclasses.dataclass(frozen=True)
class DAPO(OutcomeAlgorithm):
    """DAPO: GRPO's advantages with clip-higher (0.2 / 0.28), the token-mean loss, no KL,
    the soft overlong penalty over the last 20% of the budget (4096 of 20480 tokens in the
    paper) and dynamic sampling."""

    name: Literal["dapo"] = "dapo"
    clip_high: float = 0.28
    aggregation: rl.Aggregation = "token-mean"
    overlong_buffer: float = 0.2
    dynamic_sampling: bool = True


@dataclasses.dataclass(frozen=True)
class GSPO(OutcomeAlgorithm):
    """GSPO: GRPO's advantages, the clip on the sequence's length-normalised ratio with
    the paper's range (3e-4, 4e-4)."""

    name: Literal["gspo"] = "gspo"
    objective: rl.Objective = "gspo"
    clip_low: float = 3e-4
    clip_high: float = 4e-4


@dataclasses.dataclass(frozen=True)
class CISPO(OutcomeAlgorithm):
    """CISPO: GRPO's advantages, clipped stop-gradient importance weights on log pi (no
    lower bound), the token-mean loss."""

    name: Literal["cispo"] = "cispo"
    objective: rl.Objective = "cispo"
    clip_low: float = 1.0
    clip_high: float = 0.28
    aggregation: rl.Aggregation = "token-mean"


@dataclasses.dataclass(frozen=True)
class ReinforcePP(OutcomeAlgorithm):
    """REINFORCE++: no per-prompt baseline; token returns of the outcome and a k1 KL
    penalty in the reward, whitened over the batch; the clipped token-mean loss."""

    name: Literal["reinforce_pp"] = "reinforce_pp"
    baseline: rl.Baseline = "none"
    scale: rl.Scale = "batch"
    kl_coef: float = 0.01
    kl_estimator: rl.KLEstimator = "k1"
    kl_in: Literal["loss", "reward"] = "reward"
    aggregation: rl.Aggregation = "token-mean"


@dataclasses.dataclass(frozen=True)
class ReinforcePPBaseline(OutcomeAlgorithm):
    """REINFORCE++-baseline: r - group mean, then whitened over the batch; the clipped
    token-mean loss."""

    name: Literal["reinforce_pp_baseline"] = "reinforce_pp_baseline"
    scale: rl.Scale = "batch"
    aggregation: rl.Aggregation = "token-mean"


@dataclasses.dataclass(frozen=True)
class PPO(PolicyGradient):
    """PPO with a critic (ReFT): the KL (k1) subtracted from the token rewards by default.
    value_coef / value_clip: the clipped critic loss on the value head. lam: GAE's lambda.
    whiten: normalise the advantages over the batch."""

    name: Literal["ppo"] = "ppo"
    kl_estimator: rl.KLEstimator = "k1"
    kl_in: Literal["loss", "reward"] = "reward"
    aggregation: rl.Aggregation = "token-mean"
    value_coef: float = 0.5
    value_clip: float = 0.2
    lam: float = 0.95
    whiten: bool = True

    group_baseline: ClassVar[bool] = False

    @property
    def reads_rollout_policy(self) -> bool:
        return True  # GAE reads the critic's values

    def loss_config(self, max_new_tokens: int, value_coef: float = 0.0,
                    value_clip: float = 0.2) -> rl.PolicyLossConfig:
        return super().loss_config(max_new_tokens, self.value_coef, self.value_clip)

    def loss_inputs(self, s: RolloutStats, group_size: int, gamma: float) -> dict:
        """GAE advantages and returns of the token rewards, and the critic's old values."""
        token_rewards = rl.rewards_at_end(s.rewards_R, s.mask_RL)
        extra = self.token_rewards(s)
        if extra is not None:
            token_rewards = token_rewards + extra
        adv, returns = rl.gae(token_rewards, s.values_RL, s.mask_RL, gamma, self.lam)
        if self.whiten:
            adv = rl.whiten(adv, s.mask_RL)
        return {"advantages": adv, "returns": returns, "old_values": s.values_RL,
                **self.reference_inputs(s)}


@dataclasses.dataclass(frozen=True)
class PRIME(PolicyGradient):
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

    @property
    def reward_model(self) -> bool:
        return True

    def loss_inputs(self, s: RolloutStats, group_size: int, gamma: float) -> dict:
        adv = rl.prime_advantages(s.process_RL, s.rewards_R, s.mask_RL, group_size,
                                  process_coef=self.process_coef, gamma=gamma)
        return {"advantages": self.with_token_returns(adv, s, gamma),
                **self.reference_inputs(s)}


@dataclasses.dataclass(frozen=True)
class OREAL(PolicyGradient):
    """OREAL (:mod:`reasonjax.train.oreal`): per sample, 1 when correct and
    -negative_coef x p / (1 - p) when not (p: the group's pass rate; tied groups 0), times
    the token weights; tokens with a positive weight are behaviour-cloned, the others go
    through the clipped objective.

    negative_coef: eta, the negatives' weight (0.5 as released). token_weights:
    ``threshold`` / ``topk`` from the online token-level RM (a second copy of the policy
    whose value head gives w_t, trained on the outcome labels, one step per iteration),
    or ``none`` (every token 1, no RM). weight_threshold: tau of ``threshold``;
    topk_ratio: the fraction of a row's tokens ``topk`` keeps. KL: k3 in the loss, 0.01,
    as released; the token-mean loss."""

    name: Literal["oreal"] = "oreal"
    kl_coef: float = 0.01
    aggregation: rl.Aggregation = "token-mean"
    negative_coef: float = 0.5
    token_weights: oreal.TokenWeights = "threshold"
    weight_threshold: float = 0.5
    topk_ratio: float = 0.5

    @property
    def reward_model(self) -> bool:
        return self.token_weights != "none"

    def loss_config(self, max_new_tokens: int, value_coef: float = 0.0,
                    value_clip: float = 0.2) -> rl.PolicyLossConfig:
        return dataclasses.replace(super().loss_config(max_new_tokens), clone_positive=True)

    def loss_inputs(self, s: RolloutStats, group_size: int, gamma: float) -> dict:
        """Signed advantages: the reshaped sample weight times each token's weight (from
        the RM's scores in ``process_RL``), plus the token rewards' return-to-go."""
        per_row = oreal.reshaped_rewards(s.correct_R, group_size, self.negative_coef)
        if self.token_weights == "none":
            weights = s.mask_RL
        else:
            weights = oreal.token_weights(s.process_RL, s.mask_RL, s.correct_R,
                                          self.token_weights, self.weight_threshold,
                                          self.topk_ratio)
        adv = self.with_token_returns(per_row[:, None] * weights, s, gamma)
        return {"advantages": adv, **self.reference_inputs(s)}


Algorithm = Union[GRPO, DrGRPO, RLOO, DAPO, GSPO, CISPO, ReinforcePP, ReinforcePPBaseline,
                  PPO, PRIME, OREAL]

# The ``reasonjax train KIND`` names.
ALGORITHMS: dict[str, type] = {c.name: c for c in (
    GRPO, DrGRPO, RLOO, DAPO, GSPO, CISPO, ReinforcePP, ReinforcePPBaseline, PPO, PRIME,
    OREAL)}

_POSITIVE = ("clip_high", "beta", "topk_ratio")
_NON_NEGATIVE = ("kl_coef", "value_coef", "value_clip", "process_coef", "overlong_penalty",
                 "max_resamples", "negative_coef")
_UNIT_INTERVAL = ("lam", "topk_ratio")


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
    if not 0 < algorithm.clip_low <= 1:
        out.append(f"rl.algorithm.clip_low must lie in (0, 1] (the ratio's floor is "
                   f"1 - clip_low), got {algorithm.clip_low}")
    if not 0 <= getattr(algorithm, "weight_threshold", 0) < 1:
        out.append(f"rl.algorithm.weight_threshold must lie in [0, 1), got "
                   f"{algorithm.weight_threshold}")
    if not 0 <= algorithm.overlong_buffer < 1:
        out.append(f"rl.algorithm.overlong_buffer is a fraction of max_new_tokens in [0, 1), "
                   f"got {algorithm.overlong_buffer}")
    return out
