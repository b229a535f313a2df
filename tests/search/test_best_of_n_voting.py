"""Best-of-N selection and votes against hand-computed references."""

from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reasonjax.search.best_of_n import BestOfNConfig, best_of_n
from reasonjax.search.sampler import SearchError, stop_tokens
from reasonjax.search.voting import VotingConfig, answer_ids, tally, vote, voting

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
