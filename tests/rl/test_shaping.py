"""PRM step rewards: a value-head PRM's transformed scores, bounded at the step ends and
scaled, and their way into an update."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reasonjax import parallel
from reasonjax.config import ConfigError
from reasonjax.models import Transformer
from reasonjax.rl.algorithms import RLOO
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
