"""PRM step rewards: a value-head PRM's transformed scores, bounded at the step ends and
scaled, and their way into an update."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reasonjax import parallel
from reasonjax.config import ConfigError
from reasonjax.models import Transformer
from reasonjax.rl.algorithms import GRPO, RLOO, RolloutStats
from reasonjax.rl.config import RLConfig
from reasonjax.rl.shaping import make_step_rewards, step_end_mask, value_head_scorer
from reasonjax.rl.update import make_learner
from reasonjax.train.fit import single_device_mesh
from reasonjax.train.state import OptimConfig
from reasonjax.train.step import place_batch
from rl_helpers import CFG, PROBLEMS, TASK, TOK, rollouts


def test_step_rewards_are_clipped_prm_scores_at_step_ends_and_feed_an_update(init_params):
    cfg = RLConfig(algorithm=RLOO(), prompts_per_iteration=2, samples_per_prompt=2,
                   max_new_tokens=4, prm_shaping="clip", prm_eta=0.6, prm_coef=2.0,
                   optim=OptimConfig(lr=1e-2, schedule="constant"))
    step_rewards = make_step_rewards(value_head_scorer(CFG, init_params, "sigmoid"), TOK,
                                     TASK.step_delimiter, cfg)
    ro = rollouts(init_params, PROBLEMS[:2], jax.random.key(1), n=2, max_new_tokens=4)
    mesh = single_device_mesh()
    with parallel.activate(mesh):
        got = step_rewards(ro.batch, place_batch(ro.batch, mesh))
    b = ro.batch
    values = Transformer(CFG).apply({"params": init_params}, jnp.asarray(b["tokens"]),
                                    positions=jnp.asarray(b["positions"]),
                                    segment_ids=jnp.asarray(b["segment_ids"])).values
    ends = step_end_mask(TOK, TASK.step_delimiter, b["tokens"], b["loss_mask"])
    want = 2.0 * np.minimum(jax.nn.sigmoid(np.asarray(values)) - 0.6, 0.0) * ends
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert ends.sum() >= len(ends)  # every row ends a step at its last token

    learner = make_learner(CFG, init_params, cfg, step_rewards=step_rewards)
    _, metrics = learner.update(learner.state, ro, jax.random.key(1))
    assert np.isfinite(metrics["loss"])
    with pytest.raises(ConfigError, match="prm_shaping"):
        make_learner(CFG, init_params, RLConfig(algorithm=RLOO()), step_rewards=step_rewards)


def test_delta_shaped_advantage_scores_credit_each_step_with_its_own_score():
    """PAVs as dense rewards (Setlur et al., 2024; the pav recipe's rl-pav run): under
    ``delta`` shaping every token of step k gets GRPO's outcome advantage plus
    prm_coef x the head's score at step k's end, not the sum of the later steps'."""
    cfg = RLConfig(algorithm=GRPO(), prompts_per_iteration=1, samples_per_prompt=2,
                   max_new_tokens=6, prm_shaping="delta", prm_coef=0.5)
    # Row 0: prompt token, then steps [t1 t2 \n] [t4 t5]; row 1: one step [t1..t4], pad.
    nl = TOK.encode("\n")[-1]
    a = TOK.encode("1")[-1]
    tokens = np.array([[a, a, a, nl, a, a], [a, a, a, a, a, 0]], np.int32)
    mask = np.array([[0, 1, 1, 1, 1, 1], [0, 1, 1, 1, 1, 0]], np.float32)
    scores = jnp.array([[9, 9, 9, .3, 9, -.2], [9, 9, 9, 9, .4, 9]])
    batch = {"tokens": tokens, "loss_mask": mask,
             "positions": np.tile(np.arange(6, dtype=np.int32), (2, 1)),
             "segment_ids": np.ones((2, 6), np.int32)}
    step_rewards = make_step_rewards(lambda t, p, s: scores, TOK, "\n", cfg)
    mesh = single_device_mesh()
    with parallel.activate(mesh):
        shaped = step_rewards(batch, place_batch(batch, mesh))
    stats = RolloutStats(jnp.array([1.0, 0.0]), jnp.asarray(mask), jnp.zeros((2, 6)),
                         jnp.zeros((2, 6)), step_rewards_RL=shaped)
    adv = np.asarray(GRPO().loss_inputs(stats, group_size=2, gamma=1.0)["advantages"])
    # GRPO's outcome advantage (r - mean) / (std + eps) of rewards [1, 0]: +-1 per row.
    want = (np.array([[0, 1, 1, 1, 1, 1], [0, -1, -1, -1, -1, 0]])
            + 0.5 * np.array([[0, .3, .3, .3, -.2, -.2], [0, .4, .4, .4, .4, 0]]))
    np.testing.assert_allclose(adv, want, atol=1e-4)
