"""The settings every RL algorithm shares, with the algorithm's own config inside.

::

    RLConfig(algorithm=PPO(kl_coef=0.05), iterations=30, sampling=SamplingConfig(top_p=0.9))
    override(RLConfig(algorithm=GRPO()), ["algorithm.kl_coef=0.04", "sampling.temperature=0.8"])
"""

from __future__ import annotations

import dataclasses
from typing import Literal, Optional

from reasonjax.config import ConfigError
from reasonjax.rl.algorithms import ALGORITHMS, GRPO, Algorithm, algorithm_problems
from reasonjax.rl.curriculum import CurriculumConfig
from reasonjax.search.sampler import SamplingConfig
from reasonjax.train.lora import LoRAConfig
from reasonjax.train.state import OptimConfig

Shaping = Literal["clip", "delta", "clip_delta"]


@dataclasses.dataclass(frozen=True)
class RLConfig:
    """algorithm: one of :mod:`reasonjax.rl.algorithms`' configs (``ALGORITHMS``: GRPO,
    Dr. GRPO, RLOO, DAPO, GSPO, CISPO, REINFORCE++(-baseline), PPO, PRIME). iterations:
    sample-and-update rounds. prompts_per_iteration x samples_per_prompt rollouts per
    round, up to max_new_tokens each, drawn with ``sampling``; epochs passes over them in
    minibatches of ``minibatch_size`` rows (None: all rows in one step; must divide the
    rollouts and the data axes). partial_reward:
    ReFT's reward for a readable but wrong answer. gamma: discount of token-level returns
    (PPO's GAE, PRIME's process returns, PRM step rewards). prm_shaping / prm_eta /
    prm_coef: PRM step rewards (needs a step-reward function, :mod:`reasonjax.rl.shaping`).
    optim: the policy's (and PRIME's PRM's) optimizer. eval_every: greedy accuracy on the
    eval problems every k iterations (and at the start and end). checkpoint_every: with a
    run dir, save the state every k iterations and at the end. seed: problem order,
    sampling, minibatch order and init. lora: train LoRA adapters on the frozen start
    params, which are also the reference (None: full fine-tuning). curriculum: choose
    each iteration's problems by the self-evolving curriculum's bandit over problem
    categories (:mod:`reasonjax.rl.curriculum`; None: the seeded permutation stream)."""

    algorithm: Algorithm = GRPO()
    iterations: int = 20
    prompts_per_iteration: int = 16
    samples_per_prompt: int = 8
    max_new_tokens: int = 48
    sampling: SamplingConfig = SamplingConfig()
    epochs: int = 1
    minibatch_size: Optional[int] = None
    partial_reward: float = 0.0
    gamma: float = 1.0
    prm_shaping: Optional[Shaping] = None
    prm_eta: float = 0.0
    prm_coef: float = 1.0
    optim: OptimConfig = OptimConfig(lr=1e-5, schedule="constant", warmup_steps=0)
    eval_every: int = 0
    checkpoint_every: int = 10
    seed: int = 0
    lora: Optional[LoRAConfig] = None
    curriculum: Optional[CurriculumConfig] = None

    def __post_init__(self):
        problems = []
        if not isinstance(self.algorithm, tuple(ALGORITHMS.values())):
            problems.append(f"rl.algorithm must be one of the configs "
                            f"{[c.__name__ for c in ALGORITHMS.values()]} of "
                            f"reasonjax.rl.algorithms, got {self.algorithm!r}")
        else:
            problems += algorithm_problems(self.algorithm)
        for name in ("iterations", "prompts_per_iteration", "samples_per_prompt",
                     "max_new_tokens", "epochs", "checkpoint_every"):
            if getattr(self, name) < 1:
                problems.append(f"rl.{name} must be >= 1, got {getattr(self, name)}")
        alg = self.algorithm
        if getattr(alg, "group_baseline", False) and getattr(alg, "baseline", "") != "none" \
                and self.samples_per_prompt < 2:
            problems.append(f"rl.samples_per_prompt must be >= 2 for {alg.name} "
                            f"(group baselines), got {self.samples_per_prompt}")
        if getattr(alg, "dynamic_sampling", False) and self.samples_per_prompt < 2:
            problems.append("rl.samples_per_prompt must be >= 2 with "
                            "rl.algorithm.dynamic_sampling (a group of one is always tied)")
        if self.curriculum is not None and getattr(alg, "dynamic_sampling", False):
            problems.append("rl.curriculum and rl.algorithm.dynamic_sampling both choose "
                            "an iteration's problems; set one of them")
        if getattr(alg, "overlong_buffer", 0) > 0 and self.overlong_tokens < 1:
            problems.append(f"rl.algorithm.overlong_buffer={alg.overlong_buffer} x "
                            f"max_new_tokens={self.max_new_tokens} is under one token")
        rows = self.rows
        if self.minibatch_size is not None and (self.minibatch_size < 1
                                                or rows % self.minibatch_size):
            problems.append(f"rl.minibatch_size={self.minibatch_size} must divide the "
                            f"{rows} rollouts of an iteration (prompts_per_iteration x "
                            "samples_per_prompt)")
        if not 0 <= self.gamma <= 1:
            problems.append(f"rl.gamma must lie in [0, 1], got {self.gamma}")
        if problems:
            raise ConfigError("; ".join(problems))

    @property
    def overlong_tokens(self) -> int:
        """DAPO's soft overlong buffer in tokens (0: no overlong penalty)."""
        return int(round(getattr(self.algorithm, "overlong_buffer", 0.0) * self.max_new_tokens))

    @property
    def rows(self) -> int:
        """Rollouts per iteration."""
        return self.prompts_per_iteration * self.samples_per_prompt

    @property
    def minibatch(self) -> int:
        """Rows per policy step."""
        return self.minibatch_size or self.rows

    @property
    def rollout_forward(self) -> bool:
        """Whether an update first runs the policy over its rollouts for their old log-probs
        and values. It is skipped when the update is one step over every row (on-policy:
        the old log-probs are the loss's own, held constant) and the algorithm reads
        neither (no KL in the reward, no critic), as TRL's GRPOTrainer does."""
        one_step = self.epochs == 1 and self.minibatch == self.rows
        return not one_step or self.algorithm.reads_rollout_policy

    @property
    def policy_steps(self) -> int:
        """Policy train steps of the whole run."""
        return self.iterations * self.epochs * (self.rows // self.minibatch)
