"""Best-of-N selection and votes against hand-computed references."""

from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reasonjax.errors import ConfigError
from reasonjax.search.best_of_n import BestOfNConfig, best_of_n, kept_counts, prune_keep_mask
from reasonjax.search.compute import Compute
from reasonjax.search.sampler import SearchError, stop_tokens
from reasonjax.search.scoring import StepScorer
from reasonjax.search.stepping import SearchResult
from reasonjax.search.voting import (VotingConfig, answer_ids, extract_answers, most_steps,
                                     tally, vote, voting)

from search_helpers import CFG, TOK

STOP = stop_tokens(CFG.vocab_size, eos_ids=TOK.encode("xyz"), delimiter_ids=TOK.encode(" "))


@pytest.mark.parametrize("select_by", ["score", "logprob", "mean_logprob"])
def test_best_of_n_picks_the_best_candidate(params, prompts, select_by):
    tokens, mask = prompts
    cfg = BestOfNConfig(n=6, max_steps=2, step_tokens=5, select_by=select_by)
    res = best_of_n(CFG, params, tokens, mask, jax.random.key(3), cfg, STOP)
    lp = np.asarray(res.logprobs).sum(-1)
    key = {"score": np.asarray(res.scores), "logprob": lp,
           "mean_logprob": lp / np.maximum(np.asarray(res.lengths), 1)}[select_by]
    fin = np.asarray(res.finished)
    for b in range(2):
        cands = np.flatnonzero(fin[b]) if fin[b].any() else np.arange(6)
        assert int(res.chosen[b]) == cands[np.argmax(key[b, cands])]
    c = res.compute.to_dict()
    assert c["tokens_generated"] == int(np.asarray(res.lengths).sum())
    assert c["tokens_prefilled"] == mask.sum()


def test_vote_counts_by_hand():
    answers = [["4", "5", "4", None, "5", "4"], [None, None, "7", "7", "8", "8"]]
    ids = jnp.asarray(answer_ids(answers))
    winner, totals = vote(ids, jnp.ones((2, 6)))
    assert winner.tolist() == [0, 2]  # "4" x3; tie "7"/"8" -> first candidate holding one
    np.testing.assert_allclose(totals[0], [3, 2, 3, -np.inf, 2, 3])
    w = jnp.asarray([[0.1, 0.9, 0.1, 5.0, 0.9, 0.1], [1, 1, 0.2, 0.2, 0.3, 0.3]])
    winner, totals = vote(ids, w)
    assert winner.tolist() == [1, 4]  # "5": 1.8 > "4": 0.3 (None never counts); "8" 0.6
    np.testing.assert_allclose(totals[1, 2:], [0.4, 0.4, 0.6, 0.6], rtol=1e-6)
    winner, _ = vote(jnp.full((1, 3), -1), jnp.ones((1, 3)))
    assert winner.tolist() == [-1]


def test_voting_end_to_end_matches_counter(params, prompts):
    tokens, mask = prompts
    first_char = lambda t: TOK.decode(t)[:1] or None
    cfg = VotingConfig(n=12, max_steps=1, step_tokens=2, weighting="majority")
    out = voting(CFG, params, tokens, mask, jax.random.key(0), cfg, STOP, first_char)
    for b in range(2):
        counts = Counter(a for a in out.answers[b] if a is not None)
        top = max(counts.values())
        assert out.winners[b] in {a for a, c in counts.items() if c == top}
        assert out.answers[b][int(out.search.chosen[b])] == out.winners[b]
    # Perplexity weights: each candidate votes with exp(mean log-prob).
    ppl = tally(out.search, out.answers, "perplexity")
    w = np.exp(np.asarray(out.search.logprobs).sum(-1) / np.asarray(out.search.lengths))
    for b in range(2):
        totals = Counter()
        for a, wi in zip(out.answers[b], w[b]):
            if a is not None:
                totals[a] += wi
        assert totals[ppl.winners[b]] == pytest.approx(max(totals.values()), rel=1e-5)
    with pytest.raises(SearchError, match="weighting"):
        VotingConfig(weighting="borda")


def test_most_steps_keeps_the_k_most_complex_by_hand():
    n_steps = jnp.asarray([[3, 5, 5, 1, 4, 9], [2, 2, 2, 2, 0, 7]])
    valid = jnp.asarray([[True] * 5 + [False], [True] * 6])
    keep = most_steps(n_steps, valid, 3)
    # Row 0: 5, 5, 4 steps (the emptied slot with 9 never counts); row 1: 7, then the
    # first two of the four tied at 2.
    np.testing.assert_array_equal(keep, [[False, True, True, False, True, False],
                                         [True, True, False, False, False, True]])
    np.testing.assert_array_equal(most_steps(n_steps, valid, 6), valid)


def _result(n_steps):
    """A SearchResult with only what a majority vote reads: step counts, all valid."""
    B, N = len(n_steps), len(n_steps[0])
    zeros = jnp.zeros((B, N, 1))
    return SearchResult(
        tokens=zeros.astype(jnp.int32), logprobs=zeros, lengths=jnp.ones((B, N), jnp.int32),
        n_steps=jnp.asarray(n_steps, jnp.int32), step_scores=zeros,
        step_ends=zeros.astype(jnp.int32), scores=jnp.zeros((B, N)),
        finished=jnp.ones((B, N), bool), valid=jnp.ones((B, N), bool),
        chosen=jnp.zeros(B, jnp.int32), compute=Compute.zero())


def test_complexity_vote_counts_by_hand():
    answers = [["4", "5", "4", "4", "5", "4"], ["8", "7", "7", "8", None, "7"]]
    result = _result([[1, 5, 2, 1, 4, 3], [2, 2, 2, 2, 9, 1]])
    assert tally(result, answers).winners == ["4", "7"]  # every candidate: 4 x4, 7 x3
    top3 = tally(result, answers, complexity_top_k=3)
    # Row 0 keeps candidates 1, 4, 5: "5" x2 beats "4" x1. Row 1 keeps 4 (no answer), 0 and
    # 1 (lower index among the tied 2-step ones): "8" and "7" tie, the first holder wins.
    assert top3.winners == ["5", "8"]
    assert top3.search.chosen.tolist() == [1, 0]
    np.testing.assert_allclose(top3.totals[0, [1, 4, 5]], [2, 2, 1])
    assert np.isneginf(np.asarray(top3.totals[0, [0, 2, 3]])).all()
    with pytest.raises(ConfigError, match="complexity_top_k: must be >= 1"):
        VotingConfig(complexity_top_k=0)
    with pytest.raises(ConfigError, match=r"complexity_top_k: must be <= n \(4\), got 5"):
        VotingConfig(n=4, complexity_top_k=5)


# Early pruning's self-evaluation: P("+") / (P("+") + P("-")) after "=?", read on the
# policy's own cache.
SELF_EVAL = StepScorer(kind="token_prob", template=tuple(TOK.encode("=?")),
                       good_ids=tuple(TOK.encode("+")), bad_ids=tuple(TOK.encode("-")))


def test_prune_keep_mask_keeps_the_top_fraction_by_hand():
    nan = float("nan")
    score = jnp.asarray([[0.2, 0.9, 0.5, 0.9, 0.1, 0.7],
                         [0.3, nan, 0.8, 0.6, 0.4, 0.95]])
    running = jnp.asarray([[True, True, True, True, True, True],
                           [True, True, False, True, True, False]])
    keep = prune_keep_mask(score, running, 0.5)
    # Row 0: 6 running, keep 3: 0.9 (index 1), 0.9 (index 3, tie to the lower index
    # first), 0.7. Row 1: 4 running (2 and 5 finished: kept as they are), keep 2: 0.6
    # and 0.4 (NaN ranks last).
    np.testing.assert_array_equal(keep, [[False, True, False, True, False, True],
                                         [False, False, True, True, True, True]])
    # ceil(0.3 * U): one of 1-3 running, two of 4-6; ties of equal scores go by index.
    keep = prune_keep_mask(jnp.full((1, 6), 0.5), jnp.ones((1, 6), bool), 0.3)
    np.testing.assert_array_equal(keep, [[True, True, False, False, False, False]])
    assert kept_counts(10, 0.3) == (0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 3)
    assert kept_counts(4, 1.0) == (0, 1, 2, 3, 4)


@pytest.fixture(scope="module")
def unpruned(params, prompts):
    tokens, mask = prompts
    cfg = BestOfNConfig(n=6, max_steps=2, step_tokens=5, scorer=SELF_EVAL)
    return best_of_n(CFG, params, tokens, mask, jax.random.key(3), cfg, STOP)


def test_early_pruning_keeps_the_top_self_evaluated_samples(params, prompts, unpruned):
    """prune_after 1, keep half: the first round is the unpruned run's; of the samples
    still generating after it, the ceil(U / 2) with the best self-evaluation continue
    exactly as in the unpruned run, the others stop with their first step, emptied, and
    the tokens they would have generated are not spent."""
    tokens, mask = prompts
    cfg = BestOfNConfig(n=6, max_steps=2, step_tokens=5, scorer=SELF_EVAL, prune_after=1,
                        prune_keep=0.5)
    res = best_of_n(CFG, params, tokens, mask, jax.random.key(3), cfg, STOP)
    full = {k: np.asarray(getattr(unpruned, k)) for k in
            ("tokens", "lengths", "n_steps", "step_scores", "step_ends", "finished")}
    first_end = full["step_ends"][:, :, 0]
    running = ~(full["finished"] & (full["n_steps"] == 1))  # no EOS in step 1
    assert running.sum() > 1 and not running.all()
    kept = ~running
    for b in range(2):
        rows = np.flatnonzero(running[b])
        order = rows[np.argsort(-full["step_scores"][b, rows, 0], kind="stable")]
        kept[b, order[:int(np.ceil(len(rows) / 2))]] = True
    np.testing.assert_array_equal(res.valid, kept)
    pruned = ~kept
    assert pruned.sum() == sum(len(np.flatnonzero(running[b])) // 2 for b in range(2))
    lengths, toks = np.asarray(res.lengths), np.asarray(res.tokens)
    np.testing.assert_array_equal(lengths[kept], full["lengths"][kept])
    np.testing.assert_array_equal(toks[kept], full["tokens"][kept])
    np.testing.assert_array_equal(lengths[pruned], first_end[pruned])
    np.testing.assert_array_equal(np.asarray(res.n_steps)[pruned], 1)
    np.testing.assert_array_equal(toks[pruned], np.where(
        np.arange(toks.shape[-1]) < first_end[pruned][:, None], full["tokens"][pruned], 0))
    saved = int((full["lengths"] - first_end)[pruned].sum())
    assert saved > 0
    assert res.compute.to_dict()["tokens_generated"] == \
        unpruned.compute.to_dict()["tokens_generated"] - saved
    assert np.asarray(res.valid)[np.arange(2), np.asarray(res.chosen)].all()
    # Pruned samples are no answer, so they never vote.
    answers = extract_answers(res, lambda t: "a")
    assert [[a is not None for a in row] for row in answers] == kept.tolist()


def test_pruning_that_keeps_everything_changes_nothing(params, prompts, unpruned):
    tokens, mask = prompts
    cfg = BestOfNConfig(n=6, max_steps=2, step_tokens=5, scorer=SELF_EVAL, prune_after=1,
                        prune_keep=1.0)
    res = best_of_n(CFG, params, tokens, mask, jax.random.key(3), cfg, STOP)
    for got, want in zip(jax.tree.leaves(res), jax.tree.leaves(unpruned)):
        np.testing.assert_array_equal(got, want)


def test_pruning_settings_are_checked():
    assert BestOfNConfig().prune_after is None  # off by default
    with pytest.raises(ConfigError, match=r"prune_after: must be < max_steps \(3\), got 3"):
        BestOfNConfig(max_steps=3, prune_after=3)
    with pytest.raises(SearchError, match="prune_after must be a positive integer"):
        VotingConfig(max_steps=3, prune_after=0)
    for keep in (0.0, 1.5):
        with pytest.raises(ConfigError, match=r"prune_keep: must be in \(0, 1\]"):
            BestOfNConfig(max_steps=3, prune_after=1, prune_keep=keep)
