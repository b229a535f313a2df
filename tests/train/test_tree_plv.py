"""Tree-PLV: sibling pairs by hand, the ranking loss against hand values and the model's
value head, and where its gradient goes."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reasonjax.data import formatting
from reasonjax.models.tokenizer import CharTokenizer
from reasonjax.train import tree_plv as T

NAN = float("nan")


def _pairs(parent, value, margin):
    return [tuple(int(x) for x in t) for t in zip(*T.sibling_pairs(parent, value, margin))]


def test_sibling_pairs_take_siblings_whose_values_differ_by_more_than_the_margin():
    #            root  a     b     c    a1   a2   a3   unvalued child of the root
    parent = [-1, 0, 0, 0, 1, 1, 1, 0]
    value = [NAN, 0.75, 0.25, 0.5, 1.0, 0.0, 1.0, NAN]
    # margin 0.25: a > b by 0.5; a - c and c - b are 0.25, not more. a1, a3 > a2 by 1;
    # a1 and a3 tie. The unvalued node pairs with nothing; the root has no siblings.
    assert _pairs(parent, value, 0.25) == [(0, 1, 2), (1, 4, 5), (1, 6, 5)]
    assert _pairs(parent, value, 0.0) == [(0, 1, 2), (0, 1, 3), (0, 3, 2), (1, 4, 5),
                                          (1, 6, 5)]
    assert _pairs(parent, value, 0.9) == [(1, 4, 5), (1, 6, 5)]
    assert _pairs([-1], [NAN], 0.0) == []


def test_sibling_pairs_refuse_bad_input():
    with pytest.raises(ValueError, match="margin"):
        T.sibling_pairs([-1, 0], [NAN, 0.5], -0.1)
    with pytest.raises(ValueError, match="parent and value"):
        T.sibling_pairs([-1, 0], [NAN], 0.0)


def test_ranking_loss_and_its_gradient_by_hand():
    r_c, r_r = jnp.array([2.0, -1.0, 0.0]), jnp.array([0.5, 1.0, 0.0])
    expect = [math.log1p(math.exp(-1.5)), math.log1p(math.exp(2.0)), math.log(2.0)]
    np.testing.assert_allclose(T.ranking_loss(r_c, r_r), expect, rtol=1e-6)
    # d/d r_chosen of -log sigmoid(d) = -sigmoid(-d); the rejected score gets the opposite.
    g_c, g_r = jax.grad(lambda a, b: jnp.sum(T.ranking_loss(a, b)), argnums=(0, 1))(r_c, r_r)
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    np.testing.assert_allclose(g_c, [-sig(-1.5), -sig(2.0), -0.5], rtol=1e-6)
    np.testing.assert_allclose(g_r, -g_c, rtol=1e-6)


def test_last_masked_finds_each_rows_last_masked_token():
    mask = jnp.array([[0, 1, 1, 0], [0, 0, 0, 0], [1, 0, 0, 1]], jnp.float32)
    np.testing.assert_array_equal(T.last_masked(mask), [2, 0, 3])


def test_the_score_is_read_where_a_prm_value_target_sits():
    """A step pair's scored token (last loss-masked) is the step end where ``value``
    batches put a PRM's target: the delimiter after a step, the eos after a final one."""
    tok = CharTokenizer()
    for final in (False, True):
        pair = formatting.encode_step_preference(tok, "Q:", ["1+1"], "2", "3", "\n",
                                                 chosen_final=final)
        steps = formatting.encode_steps(tok, "Q:", ["1+1", "2"], [1.0, 1.0], "\n",
                                        complete=final)
        at = int(T.last_masked(jnp.asarray(pair["chosen_loss_mask"])[None])[0])
        assert at == int(np.nonzero(steps["value_mask"])[0][-1])
        np.testing.assert_array_equal(pair["chosen_tokens"], steps["tokens"])


def _pair_batch(rows):
    chosen = rows([[1, 2, 3], [4, 5], [6, 7]], [[8, 9], [10, 11, 12], [13]], T=8)
    rejected = rows([[1, 2, 3], [4, 5], [6, 7]], [[14], [15, 16], []], T=8)
    return {**{f"chosen_{k}": v for k, v in chosen.items()},
            **{f"rejected_{k}": v for k, v in rejected.items()}}


def test_loss_on_model_reads_the_value_head_at_each_step_end(tiny_config, tiny_params, rows,
                                                             apply_fn):
    batch = _pair_batch(rows)
    scores = {}
    for side, ends in (("chosen", [4, 4, 2]), ("rejected", [3, 3, None])):
        out = apply_fn(tiny_config, tiny_params, batch[f"{side}_tokens"],
                       batch[f"{side}_positions"], batch[f"{side}_segment_ids"])
        scores[side] = [float(out.values[b, t]) for b, t in enumerate(ends) if t is not None]
    # The third pair's rejected row has no step (e.g. cut off): it counts for nothing.
    d = np.subtract(scores["chosen"][:2], scores["rejected"])
    loss, metrics = jax.jit(T.tree_plv_loss(tiny_config).fn)(tiny_params, batch, None, None)
    np.testing.assert_allclose(loss, np.mean(np.log1p(np.exp(-d))), rtol=1e-5)
    np.testing.assert_allclose(metrics["score_margin"], np.mean(d), rtol=1e-5)
    np.testing.assert_allclose(metrics["ranking_accuracy"], np.mean(d > 0))
    assert float(metrics["pairs"]) == 2
    T.tree_plv_loss(tiny_config).check(batch, has_ref_params=False)


def test_gradient_reaches_the_value_head_and_trunk_but_not_the_lm_head(tiny_config,
                                                                      tiny_params, rows):
    batch = _pair_batch(rows)
    fn = T.tree_plv_loss(tiny_config).fn
    g = jax.jit(jax.grad(lambda p: fn(p, batch, None, None)[0]))(tiny_params)
    norm = lambda tree: sum(float(jnp.abs(x).sum()) for x in jax.tree.leaves(tree))  # noqa
    assert norm(g["lm_head"]) == 0.0
    assert norm(g["value_head"]) > 0
    trunk = {k: v for k, v in g.items() if k not in ("lm_head", "value_head")}
    assert trunk and norm(trunk) > 0
