"""PRM step rewards for RL (Gao et al., 2024, "On Designing Effective RL Reward at Training
Time for LLM Reasoning"): a PRM scores every prefix, the scores at step ends are bounded
(``clip`` / ``delta`` / ``clip_delta``, :func:`reasonjax.train.rl.shape_prm_rewards`) and
scaled by ``prm_coef``; :mod:`reasonjax.rl.algorithms` says where each algorithm adds them.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import numpy as np

from reasonjax.config import ConfigError
from reasonjax.models.config import ModelConfig
from reasonjax.models.tokenizer import Tokenizer, delimiter_automaton
from reasonjax.rl.config import RLConfig
from reasonjax.train import rl
from reasonjax.train.logprobs import forward
from reasonjax.train.step import put_batch
from reasonjax.train.value import TRANSFORMS, Transform

# (tokens [R, L], positions [R, L], segment_ids [R, L]) -> per-token step score [R, L]: the
# PRM's score of the prefix ending at each token (read at step ends).
StepScoreFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]

# (host rollout rows, the same rows placed on the mesh) -> [R, L] step rewards (x prm_coef)
# on the step-end tokens.
StepRewardFn = Callable[[dict, dict], jax.Array]


def step_end_mask(tok: Tokenizer, delimiter: str, tokens_RL: np.ndarray,
                  loss_mask_RL: np.ndarray) -> np.ndarray:
    """[R, L] 1 on completion tokens that end a step: the token completing the delimiter,
    and each row's last completion token (the final step ends at EOS or the budget)."""
    auto = delimiter_automaton(tok, delimiter)
    out = np.zeros(tokens_RL.shape, np.float32)
    for r in range(tokens_RL.shape[0]):
        state = 0
        cols = np.flatnonzero(loss_mask_RL[r] > 0)
        for t in cols:
            tid = int(tokens_RL[r, t])
            if tid < auto.completes.shape[1]:
                if auto.completes[state, tid]:
                    out[r, t] = 1.0
                state = auto.next_state[state, tid]
        if len(cols):
            out[r, cols[-1]] = 1.0
    return out


def value_head_scorer(model_config: ModelConfig, prm_params,
                      transform: Transform = "sigmoid") -> StepScoreFn:
    """A :data:`StepScoreFn` from a value-head PRM (:mod:`reasonjax.train.value`):
    transform(value head) at every token."""
    def score(tokens, positions, segment_ids):
        out = forward(model_config, prm_params, {"tokens": tokens, "positions": positions,
                                                  "segment_ids": segment_ids})
        return TRANSFORMS[transform](out.values)

    return score


def make_step_rewards(score_fn: StepScoreFn, tok: Tokenizer, delimiter: str,
                      cfg: RLConfig) -> StepRewardFn:
    """The :data:`StepRewardFn` of ``cfg.prm_shaping`` / ``prm_eta`` / ``prm_coef`` over
    ``score_fn``'s scores at the steps ``delimiter`` ends (run it under the mesh)."""
    if cfg.prm_shaping is None:
        raise ConfigError("make_step_rewards: set rl.prm_shaping (clip / delta / clip_delta)")
    score = jax.jit(score_fn)
    shape = jax.jit(functools.partial(rl.shape_prm_rewards, mode=cfg.prm_shaping,
                                      eta=cfg.prm_eta))

    def step_rewards(host: dict, placed: dict) -> jax.Array:
        ends = step_end_mask(tok, delimiter, host["tokens"], host["loss_mask"])
        # The ends are rows like the tokens: placed the same way, on the same sharding.
        ends = put_batch({"ends": ends}, {"ends": placed["tokens"].sharding})["ends"]
        scores = score(placed["tokens"], placed["positions"], placed["segment_ids"])
        return cfg.prm_coef * shape(scores, ends)

    return step_rewards
