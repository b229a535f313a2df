"""Step scores against full forwards of prompt + steps (+ template), and aggregation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reasonjax.models import Transformer
from reasonjax.search.best_of_n import BestOfNConfig, best_of_n
from reasonjax.search.sampler import SearchError, stop_tokens
from reasonjax.search.scoring import StepScorer, aggregate_scores

from search_helpers import CFG, TOK

STOP = stop_tokens(CFG.vocab_size, eos_ids=[TOK.eos_id], delimiter_ids=TOK.encode(" "))
TAG = tuple(TOK.encode("#"))
GOOD, BAD = tuple(TOK.encode("+")), tuple(TOK.encode("-"))


_FWD = jax.jit(lambda p, t: Transformer(CFG).apply({"params": p}, t))


def full_logits_values(params, seq):
    """Heads at the last token of a cache-free forward over ``seq`` (padded to a fixed
    length so the forward compiles once)."""
    toks = np.zeros((1, 64), np.int32)
    toks[0, :len(seq)] = seq
    out = _FWD(params, jnp.asarray(toks))
    return np.asarray(out.logits[0, len(seq) - 1]), float(out.values[0, len(seq) - 1])


def steps_of(result, b, i):
    """Prompt-free token lists of each step of candidate (b, i)."""
    toks = np.asarray(result.tokens[b, i])
    ends = np.asarray(result.step_ends[b, i])[:int(result.n_steps[b, i])]
    starts = np.concatenate([[0], ends[:-1]])
    return [toks[s:e].tolist() for s, e in zip(starts, ends)]


def prob_good(logits_row):
    p = np.exp(logits_row - logits_row.max())
    p /= p.sum()
    return p[list(GOOD)].sum() / (p[list(GOOD)].sum() + p[list(BAD)].sum())


@pytest.mark.parametrize("scorer", [
    StepScorer(kind="value", transform="sigmoid", aggregate="min"),
    StepScorer(kind="token_prob", template=TAG, good_ids=GOOD, bad_ids=BAD),
    StepScorer(kind="token_prob", template=TAG, good_ids=GOOD, bad_ids=BAD,
               keep_template=True, aggregate="product"),
], ids=["value", "self-eval", "step-tags"])
def test_step_scores_match_full_forwards(params, prompts, scorer):
    tokens, mask = prompts
    cfg = BestOfNConfig(n=2, max_steps=3, step_tokens=6, scorer=scorer)
    res = best_of_n(CFG, params, tokens, mask, jax.random.key(0), cfg, STOP)
    for b in range(2):
        prompt = tokens[b][mask[b] == 1].tolist()
        for i in range(2):
            steps = steps_of(res, b, i)
            want = []
            for k in range(len(steps)):
                if scorer.kind == "value":
                    seq = prompt + sum(steps[:k + 1], [])
                    _, value = full_logits_values(params, seq)
                    want.append(1 / (1 + np.exp(-value)))
                else:
                    # Math-Shepherd step tags stay after every earlier step; self-evaluation
                    # templates are read once, after the current step only.
                    prefix = sum(((s + list(TAG)) if scorer.keep_template else s
                                  for s in steps[:k]), [])
                    seq = prompt + prefix + steps[k] + list(TAG)
                    logits, _ = full_logits_values(params, seq)
                    want.append(prob_good(logits))
            got = np.asarray(res.step_scores[b, i, :len(steps)])
            np.testing.assert_allclose(got, want, atol=2e-5)
            agg = {"last": want[-1], "min": min(want), "product": np.prod(want)}
            np.testing.assert_allclose(res.scores[b, i], agg[scorer.aggregate], rtol=1e-5)


def test_separate_scorer_model_reads_prompt_and_steps(params, prompts):
    """A PRM with its own weights scores the policy's steps as a full forward would."""
    tokens, mask = prompts
    from reasonjax.parallel import init_params
    prm_cfg = CFG.replace(d_model=16, n_heads=2, n_kv_heads=1, d_ff=32)
    prm = init_params(prm_cfg, jax.random.key(5))
    prm["value_head"]["kernel"] = jax.random.normal(jax.random.key(6),
                                                    prm["value_head"]["kernel"].shape)
    cfg = BestOfNConfig(n=2, max_steps=2, step_tokens=6,
                        scorer=StepScorer(transform="tanh"))
    res = best_of_n(CFG, params, tokens, mask, jax.random.key(1), cfg, STOP,
                    scorer_config=prm_cfg, scorer_params=prm)
    fwd = jax.jit(lambda p, t, m: Transformer(prm_cfg).apply({"params": p}, t,
                                                              attention_mask=m).values)
    for b in range(2):
        prompt = tokens[b][mask[b] == 1].tolist()
        steps = steps_of(res, b, 0)
        for k in range(len(steps)):
            seq = prompt + sum(steps[:k + 1], [])
            toks = np.zeros((1, 32), np.int32)
            toks[0, :len(seq)] = seq
            v = fwd(prm, jnp.asarray(toks), jnp.asarray(np.arange(32)[None] < len(seq)))
            np.testing.assert_allclose(res.step_scores[b, 0, k], np.tanh(v[0, len(seq) - 1]),
                                       atol=2e-5)
    c = res.compute.to_dict()
    assert c["tokens_scored"] == mask.sum() + int(np.asarray(res.lengths).sum())


def test_aggregations_against_hand_values():
    s = jnp.asarray([[0.5, 0.2, 0.9, 7.0], [0.3, 0.0, 0.0, 0.0]])
    n = jnp.asarray([3, 1])
    np.testing.assert_allclose(aggregate_scores(s, n, "last"), [0.9, 0.3])
    np.testing.assert_allclose(aggregate_scores(s, n, "min"), [0.2, 0.3])
    np.testing.assert_allclose(aggregate_scores(s, n, "product"), [0.09, 0.3], rtol=1e-6)
    with pytest.raises(SearchError, match="aggregate"):
        StepScorer(aggregate="mean")
    with pytest.raises(SearchError, match="template"):
        StepScorer(kind="token_prob")


def test_template_len_and_cache_len_by_hand():
    """The one rule for the tokens a scorer feeds after a step (searches, MCTS and the
    CLI's budget fitting all read it): a token_prob scorer's template, none for the value
    head, even when a stray template is set."""
    judge = StepScorer(kind="token_prob", template=(5, 6, 7), good_ids=(1,))
    assert judge.template_len == 3
    assert StepScorer(kind="value", template=(5, 6)).template_len == 0
    assert judge.cache_len(False, 10, 4, 8) == 0                   # reads the policy's
    assert judge.cache_len(True, 10, 4, 8) == 10 + 4 * 8           # its own model
    kept = StepScorer(kind="token_prob", template=(5, 6, 7), good_ids=(1,), keep_template=True)
    assert kept.cache_len(False, 10, 4, 8) == 10 + 4 * (8 + 3)
