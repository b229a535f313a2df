"""Particle filtering: resampling follows the weights; finished particles carry over."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from reasonjax.search.particles import (ParticleConfig, particle_filter, resample,
                                        select_particles)
from reasonjax.search.sampler import SearchError, stop_tokens
from reasonjax.search.scoring import StepScorer

from search_helpers import CFG, TOK, search_state

WEIGHTS = np.asarray([0.05, 0.4, 0.0, 0.15, 0.3, 0.1])


@pytest.mark.parametrize("method", ["multinomial", "systematic"])
def test_resampling_proportions_match_weights(method):
    """Over many draws each particle's share of offspring matches its weight (chi-square),
    zero-weight particles are never drawn, and systematic resampling gives every particle
    floor(N w) or ceil(N w) copies."""
    N, draws = len(WEIGHTS), 4000
    logits = jnp.log(jnp.asarray(WEIGHTS))[None].repeat(draws, 0)
    idx = np.asarray(jax.jit(resample, static_argnums=2)(jax.random.key(0), logits, method))
    counts = np.stack([np.bincount(r, minlength=N) for r in idx])     # [draws, N]
    assert counts[:, 2].sum() == 0
    total = counts.sum(0)
    expected = WEIGHTS * draws * N
    nz = WEIGHTS > 0
    chi2 = (((total - expected) ** 2)[nz] / expected[nz]).sum()
    assert chi2 < 20.5  # chi-square 99.9% quantile with 4 degrees of freedom is 18.5
    if method == "systematic":
        assert (counts >= np.floor(N * WEIGHTS)).all() and (counts <= np.ceil(N * WEIGHTS)).all()


@pytest.mark.parametrize("method", ["multinomial", "systematic"])
def test_particle_selection_follows_softmax_of_scores_over_temperature(method):
    """select_particles on two problems of 4 particles: each problem's offspring follow
    softmax(score / T) over its own live particles only (chi-square), never cross into the
    other problem, never come from an emptied particle, and carry the parent's alive flag."""
    n, T, draws = 4, 0.5, 3000
    scores = np.asarray([0.2, 0.9, 0.5, 3.0, -0.3, 0.1, 0.4, 0.0], np.float32)
    alive = np.asarray([1, 1, 1, 0, 1, 1, 1, 1], bool)
    state = search_state(scores, np.zeros(8, bool), alive)
    rows, kept = jax.jit(jax.vmap(lambda k: select_particles(k, state, n, T, method)))(
        jax.random.split(jax.random.key(1), draws))
    rows, kept = np.asarray(rows), np.asarray(kept)
    np.testing.assert_array_equal(kept, alive[rows])
    assert (rows[:, :n] < n).all() and (rows[:, n:] >= n).all()
    counts = np.bincount(rows.ravel(), minlength=8)
    assert counts[3] == 0  # emptied, despite the best score
    for g in range(2):
        s = np.where(alive, scores / T, -np.inf)[g * n:(g + 1) * n]
        w = np.exp(s - s.max()) / np.exp(s - s.max()).sum()
        expected = w * draws * n
        got = counts[g * n:(g + 1) * n]
        nz = w > 0
        chi2 = (((got - expected) ** 2)[nz] / expected[nz]).sum()
        assert chi2 < stats.chi2.ppf(0.999, nz.sum() - 1)


def test_particle_filter_carries_finished_particles(params, prompts):
    """After one resampling round every particle is either a first-round particle that had
    finished (carried over unchanged) or a first-round unfinished one extended by a step."""
    tokens, mask = prompts
    eos = TOK.encode("xyzXYZ")
    stop = stop_tokens(CFG.vocab_size, eos_ids=eos, delimiter_ids=TOK.encode(" "))
    run = lambda steps: particle_filter(
        CFG, params, tokens, mask, jax.random.key(2),
        ParticleConfig(n=8, max_steps=steps, step_tokens=5, temperature=0.5,
                       scorer=StepScorer(transform="sigmoid")), stop)
    one, two = run(1), run(2)
    assert bool(jnp.any(one.finished))
    for b in range(2):
        first = {}
        for i in range(8):
            n = int(one.lengths[b, i])
            first[tuple(np.asarray(one.tokens[b, i, :n]))] = (bool(one.finished[b, i]),
                                                             float(one.scores[b, i]))
        for i in range(8):
            n1 = int(two.step_ends[b, i, 0])
            root = tuple(np.asarray(two.tokens[b, i, :n1]))
            assert root in first
            was_finished, score = first[root]
            if was_finished:
                assert int(two.n_steps[b, i]) == 1 and int(two.lengths[b, i]) == n1
                assert float(two.scores[b, i]) == pytest.approx(score, rel=1e-5)
                assert bool(two.finished[b, i])
            else:
                assert int(two.n_steps[b, i]) == 2
    # The answer is the best finished particle.
    fin, scores = np.asarray(two.finished), np.asarray(two.scores)
    for b in range(2):
        cands = np.flatnonzero(fin[b]) if fin[b].any() else np.arange(8)
        assert scores[b, int(two.chosen[b])] == scores[b, cands].max()


def test_particle_config_errors():
    with pytest.raises(SearchError, match="temperature"):
        ParticleConfig(temperature=0.0)
    with pytest.raises(SearchError, match="resampling"):
        ParticleConfig(resampling="stratified")
