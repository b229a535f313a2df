"""MCTS: the mctx adapter on a fixed toy tree, and valid trees on an LLM."""

import dataclasses

import flax
import jax
import jax.numpy as jnp
import mctx
import numpy as np
import pytest

from reasonjax.models import Transformer
from reasonjax.parallel import init_params
from reasonjax.search import mcts as mcts_module
from reasonjax.search.mcts import (MCTSConfig, depth_buckets, make_recurrent_fn, mcts,
                                   pass_order, run_policy, placement_platform, sibling_pairs,
                                   value_targets, with_rows_per_pass)
from reasonjax.search.sampler import SearchError, stop_tokens
from reasonjax.search.scoring import StepScorer

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


def test_rows_per_pass_defaults_to_the_platform():
    """A quarter of the batch on CPU, the whole batch on accelerators, as given when
    set."""
    cfg = MCTSConfig()
    assert with_rows_per_pass(cfg, 64, "cpu").rows_per_pass == 16
    assert with_rows_per_pass(cfg, 2, "cpu").rows_per_pass == 1
    assert with_rows_per_pass(cfg, 64, "tpu").rows_per_pass == 64
    assert with_rows_per_pass(MCTSConfig(rows_per_pass=8), 64, "tpu").rows_per_pass == 8
    with pytest.raises(SearchError, match="rows_per_pass"):
        MCTSConfig(rows_per_pass=0)
    # The platform comes from where the prompts are placed (abstract ones: the default).
    platform = jax.devices()[0].platform  # "cpu" in the suite
    assert placement_platform(jnp.zeros((2, 3))) == platform
    assert placement_platform(jax.ShapeDtypeStruct((2, 3), jnp.int32)) == platform


def test_mcts_config_errors():
    with pytest.raises(SearchError, match="policy"):
        MCTSConfig(policy="alphazero")
    with pytest.raises(SearchError, match="num_simulations"):
        MCTSConfig(num_simulations=0)


# --- node values: value head, verifier and step scorers ------------------------------

STOP = stop_tokens(CFG.vocab_size, eos_ids=TOK.encode("xyzXYZ"), delimiter_ids=TOK.encode(" "))
TEMPLATE = tuple(TOK.encode("=?"))
GOOD, BAD = tuple(TOK.encode("+")), tuple(TOK.encode("-"))
SELF_EVAL = StepScorer(kind="token_prob", template=TEMPLATE, good_ids=GOOD, bad_ids=BAD)
# Two search configurations (prompts and params of conftest.py, rng key 1), one row per
# expansion pass: the CPU's default for two rows, pinned so that the compute counts below
# hold on an accelerator too (whose default pass reads both rows, one of them idle).
CONFIGS = {
    "verifier": MCTSConfig(num_actions=3, num_simulations=8, max_steps=2, step_tokens=4,
                           value_transform="tanh", terminal_reward="verifier",
                           rows_per_pass=1),
    "value": MCTSConfig(num_actions=2, num_simulations=5, max_steps=3, step_tokens=4,
                        policy="gumbel_muzero", value_transform="sigmoid", prior="uniform",
                        rows_per_pass=1),
}
_FWD = jax.jit(lambda cfg, p, t: Transformer(cfg).apply({"params": p}, t), static_argnums=0)


def _run(params, prompts, cfg, scorer=(None, None)):
    tokens, mask = prompts
    return mcts(CFG, params, tokens, mask, jax.random.key(1), cfg, STOP, *scorer,
                verifier=_reward if cfg.terminal_reward == "verifier" else None)


def _tree_arrays(res):
    """{name: host array} of everything a search returns but its compute."""
    out = {k: np.asarray(getattr(res, k))
           for k in ("path", "length", "n_steps", "finished", "value", "actions")}
    for m, t in enumerate(res.trees):
        for k in ("node_visits", "node_values", "raw_values", "children_index",
                  "children_visits", "children_values", "parents", "action_from_parent"):
            out[f"tree{m}/{k}"] = np.asarray(getattr(t, k))
        for k in ("path", "length", "depth", "terminal", "value", "cand_tokens",
                  "cand_lengths", "cand_logprobs", "cand_eos"):
            out[f"tree{m}/emb_{k}"] = np.asarray(getattr(t.embeddings, k))
    return out


def _simulated_nodes(res):
    """Every node a simulation added, with its parent's terminal flag: {terminal, path
    length, depth, parent terminal, row, sim (the simulation that added it, numbered
    across moves)} as flat arrays over moves, rows and nodes 1..N-1."""
    cols = {"terminal": [], "length": [], "depth": [], "parent_terminal": [], "row": [],
            "sim": []}
    for tree in res.trees:
        emb = jax.tree.map(np.asarray, tree.embeddings)
        parents = np.maximum(np.asarray(tree.parents), 0)
        added = np.asarray(tree.node_visits)[:, 1:] > 0
        cols["row"].append(np.broadcast_to(np.arange(added.shape[0])[:, None],
                                           added.shape)[added])
        sim = len(cols["sim"]) * added.shape[1] + np.arange(added.shape[1])  # move, node
        cols["sim"].append(np.broadcast_to(sim[None, :], added.shape)[added])
        cols["terminal"].append(emb.terminal[:, 1:][added])
        cols["length"].append(emb.length[:, 1:][added])
        cols["depth"].append(emb.depth[:, 1:][added])
        cols["parent_terminal"].append(
            np.take_along_axis(emb.terminal, parents, 1)[:, 1:][added])
    return {k: np.concatenate(v) for k, v in cols.items()}


def test_zero_weight_scorer_changes_no_tree_and_counts_its_reads(params, prompts):
    """A self-evaluation scorer with weight 0 leaves every tree as it was (each row samples
    with its own key, whatever else a pass reads); its cost is one template read of every
    node a search builds but a terminal node's absorbing children, and the prefill of the
    terminal ones, which without a scorer need no forward (their value head came with
    their parent's candidates)."""
    base = _run(params, prompts, CONFIGS["verifier"])
    cfg = dataclasses.replace(CONFIGS["verifier"], scorer=SELF_EVAL, scorer_weight=0.0)
    res = _run(params, prompts, cfg)
    _assert_same_trees(res, base)  # exact on the CPU; a GPU fuses the two differently
    B = prompts[0].shape[0]
    nodes = _simulated_nodes(res)
    read = ~nodes["parent_terminal"]
    newly_terminal = read & nodes["terminal"]
    assert newly_terminal.any() and (read & ~nodes["terminal"]).any()
    # The roots are read in one pass; then, with rows_per_pass 1, one pass per row read.
    c, c0 = res.compute.to_dict(), base.compute.to_dict()
    assert c["tokens_scored"] == len(TEMPLATE) * (B + read.sum())
    assert c["forward_passes"] == c0["forward_passes"] + 1 + read.sum() + newly_terminal.sum()
    assert c["tokens_prefilled"] == c0["tokens_prefilled"] + nodes["length"][
        newly_terminal].sum()
    assert c["tokens_generated"] == c0["tokens_generated"]


def _assert_same_trees(res, ref):
    """Every tree array of ``res`` equals ``ref``'s (floats up to the rounding of a
    differently batched forward)."""
    want = _tree_arrays(ref)
    for k, v in _tree_arrays(res).items():
        if v.dtype.kind == "f":
            np.testing.assert_allclose(v, want[k], rtol=1e-5, atol=1e-6, err_msg=k)
        else:
            np.testing.assert_array_equal(v, want[k], err_msg=k)


def test_rows_per_pass_changes_no_tree_and_fewer_passes_cost_less(params, prompts):
    """The trees do not depend on how many rows an expansion reads at once (up to the
    float rounding of a differently batched forward); one pass over both rows in place
    costs fewer passes than one pass per row, and prefills every row of the batch."""
    one = _run(params, prompts, dataclasses.replace(CONFIGS["value"], rows_per_pass=1))
    both = _run(params, prompts, dataclasses.replace(CONFIGS["value"], rows_per_pass=2))
    _assert_same_trees(both, one)
    c1, c2 = one.compute.to_dict(), both.compute.to_dict()
    assert c2["forward_passes"] < c1["forward_passes"]
    assert c2["tokens_generated"] == c1["tokens_generated"]
    # In place, a simulation that reads any row prefills both rows' paths.
    nodes = _simulated_nodes(both)
    work = ~nodes["terminal"]
    prompt = int(np.sum(prompts[1]))
    sims = np.unique(nodes["sim"][work])
    assert c1["tokens_prefilled"] == prompt + nodes["length"][work].sum()
    assert c2["tokens_prefilled"] == prompt + sum(
        nodes["length"][nodes["sim"] == s].sum() for s in sims)


def _visited_nodes(res, prompts):
    """Every visited node of every move's tree: (prompt + path token lists, path lengths
    [S], terminal [S], the node values the search stored [S])."""
    tokens, mask = prompts
    seqs, lengths, terminal, values = [], [], [], []
    for tree in res.trees:
        emb = jax.tree.map(np.asarray, tree.embeddings)
        for b, n in zip(*np.nonzero(np.asarray(tree.node_visits) > 0)):
            n_path = emb.length[b, n]
            seqs.append(tokens[b][mask[b] == 1].tolist() + emb.path[b, n, :n_path].tolist())
            lengths.append(n_path)
            terminal.append(emb.terminal[b, n])
            values.append(emb.value[b, n])
    return seqs, np.asarray(lengths), np.asarray(terminal), np.asarray(values)


def _heads(model_cfg, params, seqs, width=64):
    """Cache-free forwards of every sequence (right-padded to ``width``): logits [S, V]
    and value head [S] at each one's last token."""
    toks = np.zeros((len(seqs), width), np.int32)
    for i, s in enumerate(seqs):
        toks[i, :len(s)] = s
    out = _FWD(model_cfg, params, jnp.asarray(toks))
    last = np.asarray([len(s) - 1 for s in seqs])
    rows = np.arange(len(seqs))
    return np.asarray(out.logits)[rows, last], np.asarray(out.values)[rows, last]


def _prob_good(logits_SV):
    p = np.exp(logits_SV - logits_SV.max(-1, keepdims=True))
    good, bad = p[:, list(GOOD)].sum(-1), p[:, list(BAD)].sum(-1)
    return good / (good + bad)


def test_self_evaluation_node_values_are_the_hand_computed_mix(params, prompts):
    """MCTS-DPO's node value with a value head term: 0.5 tanh(head) + 0.7 C before the end,
    reward + 0.7 C at terminal nodes, C = P(good) / (P(good) + P(bad)) after the template,
    all from independent full forwards of prompt + path (+ template)."""
    cfg = dataclasses.replace(CONFIGS["verifier"], value_weight=0.5, scorer=SELF_EVAL,
                              scorer_weight=0.7)
    res = _run(params, prompts, cfg)
    seqs, lengths, terminal, got = _visited_nodes(res, prompts)
    _, head = _heads(CFG, params, seqs)
    logits, _ = _heads(CFG, params, [s + list(TEMPLATE) for s in seqs])
    conf = _prob_good(logits)
    want = np.where(terminal, _reward(None, None, lengths), 0.5 * np.tanh(head)) + 0.7 * conf
    np.testing.assert_allclose(got, want, atol=3e-5)
    assert terminal.any() and (~terminal).any()
    assert np.ptp(conf) > 1e-3  # the self-evaluation tells nodes apart


@pytest.fixture(scope="module")
def prm():
    """A separate scorer model (smaller than the policy, same vocabulary) with a random
    value head."""
    prm_cfg = CFG.replace(d_model=16, n_heads=2, n_kv_heads=1, d_ff=32)
    p = init_params(prm_cfg, jax.random.key(5))
    kernel = jax.random.normal(jax.random.key(6), p["value_head"]["kernel"].shape)
    return prm_cfg, {**p, "value_head": {**p["value_head"], "kernel": kernel}}


@pytest.mark.parametrize("kind", ["value", "token_prob"])
def test_separate_scorer_node_values_are_its_own_forwards(params, prompts, prm, kind):
    """A separate scorer model values each node by its own forward over prompt + path: its
    value head (tanh), or P(good) after the template; mixed 0.25 policy head + 0.6
    scorer (no verifier: terminal nodes mix the same way). It reads what the policy
    prefills, plus the template."""
    prm_cfg, prm_params = prm
    scorer = StepScorer(transform="tanh") if kind == "value" else SELF_EVAL
    cfg = dataclasses.replace(CONFIGS["value"], value_weight=0.25, scorer=scorer,
                              scorer_weight=0.6)
    res = _run(params, prompts, cfg, scorer=prm)
    seqs, _, _, got = _visited_nodes(res, prompts)
    _, head = _heads(CFG, params, seqs)
    if kind == "value":
        score = np.tanh(_heads(prm_cfg, prm_params, seqs)[1])
    else:
        score = _prob_good(_heads(prm_cfg, prm_params, [s + list(TEMPLATE) for s in seqs])[0])
    want = 0.25 / (1 + np.exp(-head)) + 0.6 * score
    np.testing.assert_allclose(got, want, atol=3e-5)
    c = res.compute.to_dict()
    B = prompts[0].shape[0]
    template = len(TEMPLATE) if kind == "token_prob" else 0
    # The policy prefills each prompt once, then the paths of the nodes a simulation reads
    # (all but a terminal node's absorbing children); the scorer re-reads prompt + path
    # of those and of the roots.
    nodes = _simulated_nodes(res)
    read = ~nodes["parent_terminal"]
    prompt_len = np.sum(prompts[1], axis=1)
    assert c["tokens_scored"] == (c["tokens_prefilled"] + prompt_len[nodes["row"][read]].sum()
                                  + template * (B + read.sum()))


def test_scorer_settings_fail_clearly(params, prompts, prm):
    tokens, mask = prompts
    with pytest.raises(SearchError, match="scorer_weight weights a step scorer"):
        MCTSConfig(scorer_weight=0.5)
    with pytest.raises(SearchError, match="keep_template must be False"):
        MCTSConfig(scorer=dataclasses.replace(SELF_EVAL, keep_template=True))
    with pytest.raises(SearchError, match="value_weight must be a finite number"):
        MCTSConfig(value_weight=float("nan"))
    with pytest.raises(SearchError, match="MCTSConfig.scorer is None"):
        mcts(CFG, params, tokens, mask, jax.random.key(0), CONFIGS["value"], STOP, *prm)
    with pytest.raises(SearchError, match="scorer_config must be a ModelConfig"):
        mcts(CFG, params, tokens, mask, jax.random.key(0), CONFIGS["verifier"], STOP, _reward)
    outside = StepScorer(kind="token_prob", template=(CFG.vocab_size,), good_ids=GOOD)
    with pytest.raises(SearchError, match=r"outside the scorer's vocabulary"):
        mcts(CFG, params, tokens, mask, jax.random.key(0),
             dataclasses.replace(CONFIGS["value"], scorer=outside), STOP)


def test_driver_lowers_mcts_with_a_scorer(params, prompts, prm):
    """driver.batches.lower passes the scorer model to both MCTS programs as arguments."""
    from reasonjax.driver.batches import lower

    tokens, mask = (jnp.asarray(x) for x in prompts)
    cfg = dataclasses.replace(CONFIGS["value"], scorer=StepScorer(transform="tanh"))
    lowered = lower(CFG, params, cfg, tokens, mask, jax.random.key(0), STOP,
                    scorer_config=prm[0], scorer_params=prm[1])
    assert sorted(lowered) == ["mcts move", "mcts root"]
    # The scorer's parameters are traced inputs of both programs (after stop).
    for name, at in (("mcts root", 6), ("mcts move", 8)):
        arg = lowered[name].args_info[0][at]
        assert jax.tree.structure(arg) == jax.tree.structure(prm[1]), name


def test_depth_buckets_and_pass_order():
    assert depth_buckets(1) == (1,)
    assert depth_buckets(3) == (1, 2, 3)
    assert depth_buckets(8) == (1, 2, 4, 8)
    assert depth_buckets(10) == (1, 2, 4, 8, 10)
    work = jnp.asarray([True, False, True, True, True, False])
    depth = jnp.asarray([3, 0, 1, 3, 2, 1])
    # The working rows shallowest first, ties by row, then the idle rows.
    assert pass_order(work, depth).tolist() == [2, 4, 0, 3, 1, 5]


def test_depth_buckets_change_no_tree(params, prompts, monkeypatch):
    """Passes cut to their depth bucket build the trees that passes over the whole
    max_steps x step_tokens path build (up to float rounding), at the same compute."""
    cfg = dataclasses.replace(CONFIGS["value"], rows_per_pass=1)
    bucketed = _run(params, prompts, cfg)
    for program in (mcts_module.root_program, mcts_module.move_program):
        program.clear_cache()  # retrace with the patched buckets
    monkeypatch.setattr(mcts_module, "depth_buckets", lambda max_steps: (max_steps,))
    try:
        whole = _run(params, prompts, cfg)
    finally:
        for program in (mcts_module.root_program, mcts_module.move_program):
            program.clear_cache()
    nodes = _simulated_nodes(bucketed)
    assert len(np.unique(nodes["depth"][~nodes["terminal"]])) > 1  # several buckets read
    _assert_same_trees(bucketed, whole)
    assert bucketed.compute.to_dict() == whole.compute.to_dict()
