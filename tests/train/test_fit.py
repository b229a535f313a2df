"""fit and its shared step: make_fit_step builds no state (shapes only) and trains exactly
as the step fit builds itself."""

import jax
import numpy as np

from reasonjax import parallel
from reasonjax.train import fit as fit_module
from reasonjax.train.fit import FitConfig, fit, make_fit_step
from reasonjax.train.sft import sft_loss
from reasonjax.train.state import OptimConfig


def test_make_fit_step_builds_no_state_and_trains_like_fit(tiny_config, tiny_params,
                                                           random_batch, monkeypatch):
    rows = random_batch(np.random.default_rng(3), 16, 12)
    cfg = FitConfig(steps=2, batch_size=8, progress=False,
                    optim=OptimConfig(lr=1e-3, warmup_steps=1))
    params = jax.device_get(tiny_params)  # host copies: the fits' states are donated
    own, own_metrics = fit(sft_loss(tiny_config), tiny_config, params, rows, cfg)

    def no_state(*args, **kwargs):
        raise AssertionError("make_fit_step built a TrainState")

    def shapes_only(*args, **kwargs):  # traced under jax.eval_shape: tracers, no arrays
        out = init_params(*args, **kwargs)
        assert all(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(out)), \
            "make_fit_step initialised params"
        return out

    init_params = parallel.init_params
    with monkeypatch.context() as m:
        m.setattr(fit_module, "create_train_state", no_state)
        m.setattr(parallel, "init_params", shapes_only)
        step = make_fit_step(sft_loss(tiny_config), tiny_config, None,
                             cfg.optim.for_steps(cfg.steps))
    shared, shared_metrics = fit(sft_loss(tiny_config), tiny_config, params, rows, cfg,
                                 step_fn=step)
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(own), jax.device_get(shared))
    assert shared_metrics["loss"] == own_metrics["loss"]
    assert shared_metrics["lr"] == own_metrics["lr"]
