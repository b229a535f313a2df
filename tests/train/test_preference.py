"""Preference losses against hand-computed values, their gradients, step-level masking
and the two ways of supplying the reference model."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reasonjax.train import preference as pref
from reasonjax.train.logprobs import sequence_logprobs as _sequence_logprobs

sequence_logprobs = jax.jit(_sequence_logprobs, static_argnums=0)


def _log_sigmoid(x):
    return -math.log1p(math.exp(-x))


# pi_c, pi_r, ref_c, ref_r: h = (-3 + 4) - (-5 + 4.5) = 1.5
PI_C, PI_R, REF_C, REF_R = -3.0, -5.0, -4.0, -4.5
H = 1.5


@pytest.mark.parametrize("name,cfg,expected", [
    ("dpo", pref.PreferenceConfig("dpo", beta=0.1), -_log_sigmoid(0.15)),
    ("cdpo", pref.PreferenceConfig("cdpo", beta=0.1, label_smoothing=0.2),
     -0.8 * _log_sigmoid(0.15) - 0.2 * _log_sigmoid(-0.15)),
    ("robust", pref.PreferenceConfig("robust", beta=0.1, label_smoothing=0.2),
     (-0.8 * _log_sigmoid(0.15) + 0.2 * _log_sigmoid(-0.15)) / 0.6),
    ("ipo", pref.PreferenceConfig("ipo", beta=0.5), (1.5 - 1.0) ** 2),
    ("hinge", pref.PreferenceConfig("hinge", beta=0.5), 1 - 0.75),
    # RPO: DPO + nll_weight * mean NLL of the chosen response (-(-3) / 3 tokens = 1).
    ("dpo+nll", pref.PreferenceConfig("dpo", beta=0.1, nll_weight=0.5),
     -_log_sigmoid(0.15) + 0.5 * 1.0),
    ("ipo+nll", pref.PreferenceConfig("ipo", beta=0.5, nll_weight=2.0), 0.25 + 2.0),
])
def test_reference_losses_match_hand_values(name, cfg, expected):
    loss, rc, rr = pref.paired_loss(cfg, jnp.array([PI_C]), jnp.array([PI_R]),
                                    jnp.array([REF_C]), jnp.array([REF_R]),
                                    jnp.array([3.0]), jnp.array([5.0]))
    np.testing.assert_allclose(loss, [expected], rtol=1e-6)
    np.testing.assert_allclose([rc[0], rr[0]], [cfg.beta * 1.0, cfg.beta * -0.5], rtol=1e-6)


def test_cdpo_and_robust_smooth_by_default_and_differ_from_dpo():
    """Unset, eps is 0.1 for cdpo / robust: by default they are not plain DPO."""
    args = [jnp.array([x]) for x in (PI_C, PI_R, REF_C, REF_R, 3.0, 5.0)]
    dpo, _, _ = pref.paired_loss(pref.PreferenceConfig("dpo", beta=0.1), *args)
    cdpo, _, _ = pref.paired_loss(pref.PreferenceConfig("cdpo", beta=0.1), *args)
    robust, _, _ = pref.paired_loss(pref.PreferenceConfig("robust", beta=0.1), *args)
    np.testing.assert_allclose(cdpo, [-0.9 * _log_sigmoid(0.15) - 0.1 * _log_sigmoid(-0.15)],
                               rtol=1e-6)
    np.testing.assert_allclose(
        robust, [(-0.9 * _log_sigmoid(0.15) + 0.1 * _log_sigmoid(-0.15)) / 0.8], rtol=1e-6)
    assert abs(float(cdpo[0] - dpo[0])) > 1e-3 and abs(float(robust[0] - dpo[0])) > 1e-3
    assert pref.PreferenceConfig("cdpo", label_smoothing=0.0).eps == 0.0   # explicit: kept
    assert pref.PreferenceConfig("ipo").eps == 0.0


def test_per_pair_label_smoothing_replaces_the_configs():
    """cdpo with a batch's label_smoothing [B]: each pair's own eps (MCTS-DPO's visit
    confidence); eps 0 is plain DPO, eps 0.5 gives no gradient direction (log 2)."""
    cfg = pref.PreferenceConfig("cdpo", beta=0.1, label_smoothing=0.2)
    two = lambda x: jnp.array([x, x])
    loss, _, _ = pref.paired_loss(cfg, two(PI_C), two(PI_R), two(REF_C), two(REF_R),
                                  two(3.0), two(5.0), jnp.array([0.0, 0.5]))
    np.testing.assert_allclose(loss, [-_log_sigmoid(0.15),
                                      -0.5 * _log_sigmoid(0.15) - 0.5 * _log_sigmoid(-0.15)],
                               rtol=1e-6)


def test_reference_free_losses_match_hand_values():
    # chosen: 3 tokens, sum -3 -> mean -1; rejected: 5 tokens, sum -5 -> mean -1 ... make
    # them differ: rejected sum -10 -> mean -2.
    args = (jnp.array([-3.0]), jnp.array([-10.0]), jnp.zeros(1), jnp.zeros(1),
            jnp.array([3.0]), jnp.array([5.0]))
    simpo, _, _ = pref.paired_loss(pref.PreferenceConfig("simpo", beta=2.0, simpo_gamma=0.5),
                                   *args)
    np.testing.assert_allclose(simpo, [-_log_sigmoid(2.0 * (-1 + 2) - 0.5)], rtol=1e-6)
    orpo, _, _ = pref.paired_loss(pref.PreferenceConfig("orpo", orpo_lambda=0.1), *args)

    def log_odds(m):
        p = math.exp(m)
        return math.log(p / (1 - p))

    expected = 1.0 - 0.1 * _log_sigmoid(log_odds(-1.0) - log_odds(-2.0))
    np.testing.assert_allclose(orpo, [expected], rtol=1e-6)
    # log odds stays finite as P -> 1.
    assert np.isfinite(pref.log_odds(jnp.array(-1e-9)))


def test_kto_matches_hand_values_with_detached_reference_point():
    pi = jnp.array([-2.0, -3.0, -1.0])
    ref = jnp.array([-2.5, -2.0, -1.5])        # r = [0.5, -1.0, 0.5], mean 0 -> z0 = 0
    desirable = jnp.array([1.0, 0.0, 0.0])
    loss, z0 = pref.kto_loss(pi, ref, desirable, beta=2.0, desirable_weight=1.0,
                             undesirable_weight=0.5)
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    np.testing.assert_allclose(z0, 0.0)
    np.testing.assert_allclose(loss, [1 - sig(1.0), 0.5 * (1 - sig(2.0)), 0.5 * (1 - sig(-1.0))],
                               rtol=1e-6)
    # z0 is clamped at 0 from below and positive when the batch drifted up.
    _, z0 = pref.kto_loss(pi + 1.0, ref, desirable, beta=2.0)
    np.testing.assert_allclose(z0, 1.0, rtol=1e-6)
    # No gradient flows through z0: d loss_0 / d pi_1 = 0.
    g = jax.grad(lambda p: pref.kto_loss(p, ref, desirable, 2.0)[0][0])(pi + 1.0)
    np.testing.assert_allclose(g[1:], 0.0)


def test_dpo_gradient_matches_closed_form():
    # d/d pi_c [-log sigmoid(beta h)] = -beta sigmoid(-beta h); d/d pi_r = +beta sigmoid(-beta h)
    beta = 0.3

    def f(pc, pr):
        return pref.paired_loss(pref.PreferenceConfig("dpo", beta=beta), pc, pr,
                                jnp.float32(REF_C), jnp.float32(REF_R), 1.0, 1.0)[0]

    gc, gr = jax.grad(f, argnums=(0, 1))(jnp.float32(PI_C), jnp.float32(PI_R))
    s = 1 / (1 + math.exp(beta * H))
    np.testing.assert_allclose([gc, gr], [-beta * s, beta * s], rtol=1e-5)
    # IPO: d/dh (h - 1/(2b))^2 = 2 (h - 1/(2b))
    g = jax.grad(lambda pc: pref.paired_loss(pref.PreferenceConfig("ipo", beta=0.5), pc,
                                             jnp.float32(PI_R), jnp.float32(REF_C),
                                             jnp.float32(REF_R), 1.0, 1.0)[0])(
        jnp.float32(PI_C))
    np.testing.assert_allclose(g, 2 * (H - 1.0), rtol=1e-5)


def _pair_batch(rows):
    # A shared 4-token prefix; chosen and rejected differ only in the one-step
    # continuation, which alone carries loss_mask (step-level DPO); different lengths.
    prefix = [3, 4, 5, 6]
    chosen = rows([prefix, prefix], [[7, 8], [9, 10, 11]], T=8)
    rejected = rows([prefix, prefix], [[12, 13, 14, 15], [16]], T=10)
    batch = {f"chosen_{k}": v for k, v in chosen.items()}
    batch.update({f"rejected_{k}": v for k, v in rejected.items()})
    return batch


def test_dpo_on_model_reads_only_step_tokens_and_both_reference_sources_agree(
        tiny_config, tiny_params, ref_params, rows):
    batch = _pair_batch(rows)
    loss_def = pref.preference_loss(tiny_config, pref.PreferenceConfig("dpo", beta=0.2))
    fn = jax.jit(loss_def.fn)
    loss, metrics = fn(tiny_params, batch, jax.random.key(0), ref_params)

    def seq(params, side):
        return np.asarray(sequence_logprobs(
            tiny_config, params, {k[len(side) + 1:]: v for k, v in batch.items()
                                  if k.startswith(side)}))

    pc, pr = seq(tiny_params, "chosen"), seq(tiny_params, "rejected")
    rc, rr = seq(ref_params, "chosen"), seq(ref_params, "rejected")
    h = (pc - rc) - (pr - rr)
    expected = np.mean([-_log_sigmoid(0.2 * x) for x in h])
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    np.testing.assert_allclose(metrics["reward_margin"], np.mean(0.2 * h), rtol=1e-5)
    # Precomputed reference log-probs in the batch give the same loss without ref params.
    with_ref = pref.add_reference_logps(tiny_config, ref_params, batch)
    np.testing.assert_allclose(with_ref["ref_chosen_logps"], rc, rtol=1e-5)
    loss2, _ = jax.jit(loss_def.fn)(tiny_params, with_ref, jax.random.key(0), None)
    np.testing.assert_allclose(loss2, loss, rtol=1e-5)
    # Tokens after the step (padding) change nothing: the loss reads only the step.
    edited = {k: v.copy() for k, v in batch.items()}
    edited["rejected_tokens"][1, 5:] = 21
    loss3, _ = fn(tiny_params, edited, jax.random.key(0), ref_params)
    np.testing.assert_allclose(loss3, loss, rtol=1e-6)


def test_kto_on_model_matches_sequence_logprobs(tiny_config, tiny_params, ref_params, rows):
    batch = rows([[1, 2], [3, 4, 5], [6]], [[7, 8, 9], [10], [11, 12]], T=6)
    batch["desirable"] = np.array([1.0, 0.0, 1.0], np.float32)
    loss, _ = jax.jit(pref.kto(tiny_config, pref.KTOConfig(beta=0.5)).fn)(
        tiny_params, batch, jax.random.key(0), ref_params)
    quad = {k: v for k, v in batch.items() if k != "desirable"}
    pi = sequence_logprobs(tiny_config, tiny_params, quad)
    ref = sequence_logprobs(tiny_config, ref_params, quad)
    expected, _ = pref.kto_loss(pi, ref, jnp.asarray(batch["desirable"]), 0.5)
    np.testing.assert_allclose(loss, jnp.mean(expected), rtol=1e-5)


def test_bad_preference_configs_are_rejected(tiny_config):
    with pytest.raises(ValueError, match="beta"):
        pref.preference_loss(tiny_config, pref.PreferenceConfig(beta=0.0))
    with pytest.raises(ValueError, match="label_smoothing"):
        pref.preference_loss(tiny_config, pref.PreferenceConfig("robust", label_smoothing=0.5))
    with pytest.raises(ValueError, match="nll_weight must be >= 0"):
        pref.preference_loss(tiny_config, pref.PreferenceConfig(nll_weight=-1.0))
    with pytest.raises(ValueError, match="orpo already adds the NLL"):
        pref.preference_loss(tiny_config, pref.PreferenceConfig("orpo", nll_weight=1.0))
    assert not pref.preference_loss(tiny_config, pref.PreferenceConfig("simpo")).needs_reference
