"""Step beam search and DVTS: kept beams are the best-scoring ones, subtrees independent."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reasonjax.search.beam import BeamConfig, beam_search, dvts, select_groups
from reasonjax.search.best_of_n import BestOfNConfig, best_of_n
from reasonjax.search.sampler import SearchError, stop_tokens
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
