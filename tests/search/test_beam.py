"""Step beam search and DVTS: kept beams are the best-scoring ones, subtrees independent."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reasonjax.search.beam import BeamConfig, beam_search, dvts, select_groups
from reasonjax.search.best_of_n import BestOfNConfig, best_of_n
from reasonjax.search.sampler import (STOP_EOS, SamplingConfig, SearchError, sample,
                                      stop_tokens)
from reasonjax.search.scoring import StepScorer

from search_helpers import CFG, TOK, search_state

STOP = stop_tokens(CFG.vocab_size, eos_ids=[TOK.eos_id], delimiter_ids=TOK.encode(" "))
N, M, STEP = 8, 2, 6
SCORER = StepScorer(transform="identity")


def first_steps(result):
    """[B][N] the first step of every candidate, as tuples."""
    toks, ends = np.asarray(result.tokens), np.asarray(result.step_ends)
    return [[tuple(toks[b, i, :ends[b, i, 0]]) for i in range(toks.shape[1])]
            for b in range(toks.shape[0])]


@pytest.fixture(scope="module")
def round_one(params, prompts):
    """The N first-round candidates and scores (best-of-N with one step draws exactly the
    same first round as the beam searches: same keys, same rows)."""
    tokens, mask = prompts
    cfg = BestOfNConfig(n=N, max_steps=1, step_tokens=STEP, scorer=SCORER)
    res = best_of_n(CFG, params, tokens, mask, jax.random.key(4), cfg, STOP)
    return first_steps(res), np.asarray(res.scores)


def test_beam_search_keeps_the_highest_scoring_beams(params, prompts, round_one):
    tokens, mask = prompts
    cfg = BeamConfig(n=N, beam_width=M, max_steps=2, step_tokens=STEP, scorer=SCORER)
    res = beam_search(CFG, params, tokens, mask, jax.random.key(4), cfg, STOP)
    steps1, scores1 = round_one
    got = first_steps(res)
    for b in range(2):
        kept = np.argsort(-scores1[b], kind="stable")[:N // M]
        best = [steps1[b][i] for i in kept]
        # Every final candidate descends from one of the N/M best first steps. A kept beam
        # that ended with EOS keeps one row; the unfinished ones share the other rows (M
        # each when none finished).
        assert all(s in best for s in got[b])
        finished = [s for s in best if s[-1] == TOK.eos_id]
        unfinished = [s for s in best if s[-1] != TOK.eos_id]
        assert all(got[b].count(s) == finished.count(s) for s in set(finished))
        share = (N - len(finished)) / len(unfinished)
        for s in set(unfinished):
            copies = unfinished.count(s)
            assert np.floor(share) * copies <= got[b].count(s) <= np.ceil(share) * copies
        if not finished:
            assert all(got[b].count(s) == M * unfinished.count(s) for s in set(unfinished))
    assert bool(jnp.all(res.valid))


def test_beam_compute_counts_discarded_candidates(params, prompts, round_one):
    tokens, mask = prompts
    cfg = BeamConfig(n=N, beam_width=M, max_steps=2, step_tokens=STEP, scorer=SCORER)
    res = beam_search(CFG, params, tokens, mask, jax.random.key(4), cfg, STOP)
    steps1, _ = round_one
    first_round = sum(len(s) for row in steps1 for s in row)
    # Final rows hold their first step (shared copies) plus a second step each.
    second = int(np.asarray(res.lengths).sum()) - sum(len(s) for row in first_steps(res)
                                                      for s in row)
    c = res.compute.to_dict()
    assert c["tokens_generated"] == first_round + second
    assert c["tokens_prefilled"] == mask.sum()  # prompts prefilled once, never per step


def test_dvts_subtrees_stay_independent(params, prompts, round_one):
    tokens, mask = prompts
    cfg = BeamConfig(n=N, beam_width=M, max_steps=2, step_tokens=STEP, scorer=SCORER)
    res = dvts(CFG, params, tokens, mask, jax.random.key(4), cfg, STOP)
    steps1, scores1 = round_one
    got = first_steps(res)
    for b in range(2):
        for g in range(N // M):
            rows = range(g * M, (g + 1) * M)
            best = steps1[b][g * M + int(np.argmax(scores1[b, g * M:(g + 1) * M]))]
            for i in rows:
                if res.valid[b, i]:
                    assert got[b][i] == best  # only the subtree's own best first step


def test_select_groups_by_hand():
    # One group of 6 rows, keep 3, expand 2 ways: rows 4, 1, 5 are best; row 1 finished.
    st = search_state([0.1, 0.9, 0.2, 0.3, 0.95, 0.5], [0, 1, 0, 0, 0, 0], [1] * 6)
    rows, alive = select_groups(st, group_size=6, keep=3, max_steps=5)
    # The finished beam keeps one row; the two unfinished share the other five.
    assert rows.tolist() == [1, 4, 5, 4, 5, 4]
    assert alive.tolist() == [True] * 6
    # Two groups of 3 (DVTS, keep 1): group 0's best finished -> group done (one row kept).
    st = search_state([0.9, 0.1, 0.2, 0.3, 0.8, 0.5], [1, 0, 0, 0, 0, 0], [1] * 6)
    rows, alive = select_groups(st, group_size=3, keep=1, max_steps=5)
    assert rows.tolist()[:1] == [0] and alive.tolist() == [True, False, False, True, True, True]
    assert rows.tolist()[3:] == [4, 4, 4]
    # Emptied rows are never selected.
    st = search_state([0.9, 0.1, 0.2], [0, 0, 0], [0, 1, 1])
    rows, _ = select_groups(st, group_size=3, keep=1, max_steps=5)
    assert rows.tolist() == [2, 2, 2]


def test_beam_width_must_divide_n():
    with pytest.raises(SearchError, match="beam_width 3 does not divide n 8"):
        BeamConfig(n=8, beam_width=3)
    with pytest.raises(SearchError, match="n must be a positive integer"):
        BeamConfig(n=0, beam_width=1)


# Lookahead search: N rows, k steps of greedy rollout, up to 3 steps per solution.
LN, LK, LSTEPS = 4, 2, 3


def lookahead_reference(params, prompts, result, k, max_steps):
    """What lookahead search should have recorded, from the plain sampler alone.

    For every recorded step j of every final candidate: the greedy continuation of the
    candidate's prefix (prompt + steps 0..j) by up to k steps, one ``sample`` call
    (temperature 0, stop at the step delimiter) per step, stopping at EOS and after step
    ``max_steps``. Returns (scores [B, N, M]: the value head (identity) after the last
    token of the rollout, or after the step itself when nothing rolls; rollout token
    counts [B, N, M, k])."""
    tokens, mask = prompts
    toks, ends = np.asarray(result.tokens), np.asarray(result.step_ends)
    steps = np.asarray(result.n_steps)
    B, N, M = ends.shape
    keys = [(b, i, j) for b in range(B) for i in range(N) for j in range(steps[b, i])]
    prefix = {key: list(tokens[key[0]][mask[key[0]] == 1]) + list(toks[key[:2]][:ends[key]])
              for key in keys}
    rolling = {key: prefix[key][-1] != TOK.eos_id for key in keys}
    scores = np.zeros((B, N, M), np.float32)
    rolled = np.zeros((B, N, M, k), np.int64)
    width = 8 + (max_steps + k) * STEP
    for d in range(max(k, 1)):  # k = 0 still reads the value at each step's end
        ids, pad = [prefix[key] for key in keys], np.zeros((len(keys), width), np.int32)
        pmask = np.zeros_like(pad)
        for r, row in enumerate(ids):
            pad[r, width - len(row):], pmask[r, width - len(row):] = row, 1
        out = sample(CFG, params, pad, pmask, jax.random.key(0), max_new_tokens=STEP,
                     sampling=SamplingConfig(0.0), stop=STOP, stop_at_delimiter=True)
        lengths, values = np.asarray(out.lengths[:, 0]), np.asarray(out.values[:, 0])
        for r, key in enumerate(keys):
            if d == 0:
                scores[key] = out.prompt_value[r]
            if not (d < k and rolling[key] and key[2] + 1 + d < max_steps and lengths[r]):
                rolling[key] = False
                continue
            scores[key] = values[r, lengths[r] - 1]
            rolled[key + (d,)] = lengths[r]
            prefix[key] = prefix[key] + list(np.asarray(out.tokens[r, 0, :lengths[r]]))
            rolling[key] = int(out.stop_reason[r, 0]) != STOP_EOS
    return scores, rolled


@pytest.fixture(scope="module")
def lookahead_all_kept(params, prompts):
    """Lookahead beam search with beam width 1: every row is kept each round (a
    permutation), so every step generated and every rollout made is in the result."""
    tokens, mask = prompts
    cfg = BeamConfig(n=LN, beam_width=1, max_steps=LSTEPS, step_tokens=STEP, scorer=SCORER,
                     lookahead=LK)
    res = beam_search(CFG, params, tokens, mask, jax.random.key(4), cfg, STOP)
    return res, lookahead_reference(params, prompts, res, LK, LSTEPS)


def test_lookahead_scores_equal_an_independent_greedy_rollout(lookahead_all_kept):
    res, (want, rolled) = lookahead_all_kept
    steps = np.asarray(res.n_steps)
    assert steps.max() == LSTEPS and rolled[..., 0].any() and rolled[..., 1].any()
    for b, i in np.ndindex(steps.shape):
        np.testing.assert_allclose(res.step_scores[b, i, :steps[b, i]],
                                   want[b, i, :steps[b, i]], rtol=1e-5, atol=1e-5)


def test_lookahead_compute_counts_the_rollouts(lookahead_all_kept, prompts):
    res, (_, rolled) = lookahead_all_kept
    ends, steps = np.asarray(res.step_ends), np.asarray(res.n_steps)
    c = res.compute.to_dict()
    assert c["tokens_generated"] == int(np.asarray(res.lengths).sum()) + rolled.sum()
    assert c["tokens_prefilled"] == prompts[1].sum() and c["tokens_scored"] == 0
    # One pass per prefill and per decode iteration: a round decodes as long as its longest
    # step, then each rollout depth as long as its longest rollout step.
    step_len = np.diff(ends, axis=-1, prepend=0)
    passes = 1
    for r in range(steps.max()):
        passes += max(step_len[b, i, r] for b, i in np.ndindex(steps.shape) if steps[b, i] > r)
        passes += sum(rolled[:, :, r, d].max() for d in range(LK))
    assert c["forward_passes"] == passes


def test_lookahead_beams_are_the_best_by_lookahead_score(params, prompts,
                                                         lookahead_all_kept):
    """Beam width 2 draws the same first round as beam width 1: its kept first steps are
    the N/M best of those by lookahead score, and its own recorded scores match the
    reference too."""
    tokens, mask = prompts
    all_kept, _ = lookahead_all_kept
    cfg = BeamConfig(n=LN, beam_width=2, max_steps=LSTEPS, step_tokens=STEP, scorer=SCORER,
                     lookahead=LK)
    res = beam_search(CFG, params, tokens, mask, jax.random.key(4), cfg, STOP)
    steps1, scores1 = first_steps(all_kept), np.asarray(all_kept.step_scores[:, :, 0])
    for b, got in enumerate(first_steps(res)):
        best = [steps1[b][i] for i in np.argsort(-scores1[b], kind="stable")[:LN // 2]]
        assert all(s in best for s in got)
    want, _ = lookahead_reference(params, prompts, res, LK, LSTEPS)
    steps = np.asarray(res.n_steps)
    for b, i in np.ndindex(steps.shape):
        np.testing.assert_allclose(res.step_scores[b, i, :steps[b, i]],
                                   want[b, i, :steps[b, i]], rtol=1e-5, atol=1e-5)


def test_lookahead_zero_is_plain_beam_search(params, prompts):
    """lookahead 0: each step is scored at its own end and no rollout is paid for (the
    same program as before the option existed: nothing of the rollout is traced)."""
    tokens, mask = prompts
    cfg = BeamConfig(n=LN, beam_width=1, max_steps=LSTEPS, step_tokens=STEP, scorer=SCORER)
    assert cfg.lookahead == 0
    res = beam_search(CFG, params, tokens, mask, jax.random.key(4), cfg, STOP)
    want, _ = lookahead_reference(params, prompts, res, 0, LSTEPS)
    steps = np.asarray(res.n_steps)
    for b, i in np.ndindex(steps.shape):
        np.testing.assert_allclose(res.step_scores[b, i, :steps[b, i]],
                                   want[b, i, :steps[b, i]], rtol=1e-5, atol=1e-5)
    assert res.compute.to_dict()["tokens_generated"] == int(np.asarray(res.lengths).sum())


def test_lookahead_must_leave_room_for_a_step():
    for bad in (-1, 3, 1.5, True):
        with pytest.raises(SearchError, match=r"lookahead must be an integer in \[0, "
                                              r"max_steps=3\)"):
            BeamConfig(n=4, beam_width=2, max_steps=3, lookahead=bad)
