"""MCTS: the mctx adapter on a fixed toy tree, and valid trees on an LLM."""

import flax
import jax
import jax.numpy as jnp
import mctx
import numpy as np
import pytest

from reasonjax.search.mcts import (MCTSConfig, make_recurrent_fn, mcts, run_policy,
                                   sibling_pairs, value_targets)
from reasonjax.search.sampler import SearchError, stop_tokens

from search_helpers import CFG, TOK

K = 3


def toy_tree(seed=0):
    """A fixed tree: root 0, three levels of K children; some depth-2 nodes terminal.
    Returns children [n, K], values [n], priors [n, K], terminal [n]."""
    rng = np.random.default_rng(seed)
    n = 1 + K + K * K + K ** 3
    children = np.zeros((n, K), np.int32)
    nxt = 1
    for node in range(1 + K + K * K):
        children[node] = np.arange(nxt, nxt + K)
        nxt += K
    terminal = np.zeros(n, bool)
    terminal[1 + K + K * K:] = True
    terminal[[5, 9]] = True  # two early terminal nodes at depth 2
    values = rng.uniform(-1, 1, n).astype(np.float32)
    values[terminal] = np.sign(values[terminal])
    priors = rng.normal(size=(n, K)).astype(np.float32)
    return tuple(jnp.asarray(a) for a in (children, values, priors, terminal))


@flax.struct.dataclass
class ToyNode:
    node: jax.Array
    terminal: jax.Array
    value: jax.Array


@pytest.mark.parametrize("policy", ["muzero", "gumbel_muzero"])
def test_adapter_reproduces_mctx_on_a_fixed_tree(policy):
    children, values, priors, terminal = toy_tree()
    B = 2
    cfg = MCTSConfig(num_actions=K, num_simulations=40, policy=policy,
                     dirichlet_fraction=0.25, max_num_considered_actions=K)

    # The adapter under test: transition / evaluate over the table.
    transition = lambda node, a: children[node.node, a]
    evaluate = lambda p, key, c: (ToyNode(c, terminal[c], values[c]), priors[c])
    ours_fn = make_recurrent_fn(transition, evaluate)
    root_node = ToyNode(jnp.zeros(B, jnp.int32), jnp.zeros(B, bool), values[jnp.zeros(B, int)])
    root = mctx.RootFnOutput(prior_logits=priors[root_node.node], value=root_node.value,
                             embedding=root_node)
    ours = jax.jit(lambda key: run_policy(cfg, None, key, root, ours_fn))(jax.random.key(3))

    # Reference: mctx straight on the table, terminal nodes absorbing.
    def ref_fn(params, key, action, node):
        child = jnp.where(terminal[node], node, children[node, action])
        out = mctx.RecurrentFnOutput(
            reward=jnp.zeros(B), discount=jnp.ones(B),
            prior_logits=jnp.where(terminal[node][:, None], 0.0, priors[child]),
            value=values[child])
        return out, child

    ref_root = mctx.RootFnOutput(prior_logits=priors[jnp.zeros(B, int)],
                                 value=values[jnp.zeros(B, int)],
                                 embedding=jnp.zeros(B, jnp.int32))
    if policy == "muzero":
        ref = mctx.muzero_policy(None, jax.random.key(3), ref_root, ref_fn, 40,
                                 dirichlet_fraction=0.25)
    else:
        ref = mctx.gumbel_muzero_policy(None, jax.random.key(3), ref_root, ref_fn, 40,
                                        max_num_considered_actions=K)
    t, r = ours.search_tree, ref.search_tree
    np.testing.assert_array_equal(t.node_visits, r.node_visits)
    np.testing.assert_array_equal(t.children_visits, r.children_visits)
    np.testing.assert_allclose(t.node_values, r.node_values, rtol=1e-6)
    np.testing.assert_array_equal(t.embeddings.node, r.embeddings)
    np.testing.assert_array_equal(ours.action, ref.action)
    # Every simulation passes through the root.
    assert int(t.node_visits[0, 0]) == 41


def _reward(ids, paths, lengths):
    return np.where(lengths % 2 == 0, 1.0, -1.0).astype(np.float32)


@pytest.fixture(scope="module")
def llm_search(params, prompts):
    tokens, mask = prompts
    stop = stop_tokens(CFG.vocab_size, eos_ids=TOK.encode("xyzXYZ"),
                       delimiter_ids=TOK.encode(" "))
    cfg = MCTSConfig(num_actions=3, num_simulations=8, max_steps=2, step_tokens=4,
                     value_transform="tanh", terminal_reward="verifier")
    return cfg, mcts(CFG, params, tokens, mask, jax.random.key(0), cfg, stop,
                     verifier=_reward)


def test_llm_trees_are_valid_and_q_consistent(llm_search):
    cfg, res = llm_search
    assert 1 <= len(res.trees) <= cfg.max_steps
    for tree in res.trees:
        visits = np.asarray(tree.node_visits)
        values = np.asarray(tree.node_values)
        raw = np.asarray(tree.raw_values)
        cv = np.asarray(tree.children_visits)
        cval = np.asarray(tree.children_values)
        cidx = np.asarray(tree.children_index)
        emb = jax.tree.map(np.asarray, tree.embeddings)
        assert (visits[:, 0] == cfg.num_simulations + 1).all()
        for b in range(visits.shape[0]):
            for n in np.flatnonzero(visits[b] > 0):
                # Visits and values are the backed-up sums of the children (reward 0,
                # discount 1): N(n) V(n) = raw(n) + sum_k N(c_k) V(c_k); Q(n, k) = V(c_k).
                assert visits[b, n] == 1 + cv[b, n].sum()
                np.testing.assert_allclose(visits[b, n] * values[b, n],
                                           raw[b, n] + (cv[b, n] * cval[b, n]).sum(),
                                           rtol=1e-4, atol=1e-5)
                q = np.asarray(tree.qvalues(jnp.full((visits.shape[0],), n)))[b]
                for k in np.flatnonzero(cv[b, n] > 0):
                    c = cidx[b, n, k]
                    np.testing.assert_allclose(cval[b, n, k], values[b, c], rtol=1e-6)
                    np.testing.assert_allclose(q[k], values[b, c], rtol=1e-6)
                    # A child's path is its parent's path plus the k-th candidate step.
                    if not emb.terminal[b, n]:
                        L, step = emb.length[b, n], emb.cand_lengths[b, n, k]
                        assert emb.length[b, c] == L + step
                        np.testing.assert_array_equal(emb.path[b, c, :L], emb.path[b, n, :L])
                        np.testing.assert_array_equal(emb.path[b, c, L:L + step],
                                                      emb.cand_tokens[b, n, k, :step])
                if emb.terminal[b, n]:
                    assert raw[b, n] == _reward(None, None, emb.length[b, n:n + 1])[0]
        hi, lo, ok = (np.asarray(x) for x in sibling_pairs(tree))
        for b, n in zip(*np.nonzero(ok)):
            assert cval[b, n, hi[b, n]] > cval[b, n, lo[b, n]]
            assert (cv[b, n] > 0).sum() >= 2
        targets, visited = value_targets(tree)
        np.testing.assert_array_equal(np.asarray(visited), visits > 0)


def test_llm_moves_build_the_answer(llm_search):
    cfg, res = llm_search
    # The answer is the concatenation of the steps the moves chose from each root.
    for b in range(res.path.shape[0]):
        expected = []
        for m, tree in enumerate(res.trees):
            root = jax.tree.map(lambda x: np.asarray(x)[b, 0], tree.embeddings)
            if root.terminal:
                break
            a = int(res.actions[m, b])
            expected += root.cand_tokens[a, :root.cand_lengths[a]].tolist()
        n = int(res.length[b])
        assert np.asarray(res.path[b, :n]).tolist() == expected
        if res.finished[b]:
            assert float(res.value[b]) == _reward(None, None, np.asarray([n]))[0]
    c = res.compute.to_dict()
    assert c["tokens_generated"] > 0 and c["tokens_prefilled"] > 0


def test_mcts_config_errors():
    with pytest.raises(SearchError, match="policy"):
        MCTSConfig(policy="alphazero")
    with pytest.raises(SearchError, match="num_simulations"):
        MCTSConfig(num_simulations=0)
