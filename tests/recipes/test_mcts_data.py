"""Reading MCTS trees back as training data: steps, value records and sibling pairs,
against hand-built trees."""

import numpy as np
import pytest

from reasonjax.recipes import common, mcts_data


@pytest.fixture(scope="module")
def env():
    return common.make_env(common.TaskSpec(train_size=6, eval_size=2), common.ModelSpec(),
                           num_devices=1)


def test_split_path_and_step_text():
    assert mcts_data.split_path("1+2\nanswer: 3", True, "\n") == ["1+2", "answer: 3"]
    assert mcts_data.split_path("1+2\n", False, "\n") == ["1+2"]
    assert mcts_data.split_path("1+2\n", True, "\n") == ["1+2", ""]
    assert mcts_data.split_path("1+2", False, "\n") is None  # cut at the token budget
    assert mcts_data.step_text("1+2\n", False, "\n") == "1+2"
    assert mcts_data.step_text("answer: 3", True, "\n") == "answer: 3"
    assert mcts_data.step_text("1+2", False, "\n") is None


def test_records_from_q_gives_each_maximal_path_its_prefix_targets():
    best = {(0, ("a",)): (0.5, 9, False), (0, ("a", "b")): (1.0, 3, True),
            (0, ("a", "c")): (-1.0, 2, True), (1, ("x", "y")): (0.2, 1, False),
            (2, ("p",)): (-1.0, 1, True)}
    recs = mcts_data.records_from_q(best)
    assert recs == [
        {"problem": 0, "steps": ["a", "b"], "targets": [0.5, 1.0], "complete": True,
         "correct": True},
        {"problem": 0, "steps": ["a", "c"], "targets": [0.5, -1.0], "complete": True,
         "correct": False},
        {"problem": 2, "steps": ["p"], "targets": [-1.0], "complete": True,
         "correct": False}]  # problem 1 lacks its prefix ("x",): dropped


def _ids(env, text, eos=False, width=8):
    ids = env.tokenizer.encode(text) + ([env.tokenizer.eos_id] if eos else [])
    return ids + [0] * (width - len(ids)), len(ids)


def _tree(env):
    """One problem, two nodes: the root (empty path) and its child "1+2\\n". The root's
    candidates: "1+2\\n" (Q 0.5), "1+3\\n" (Q -1); the child's: "answer: 3"+eos (Q 1),
    "answer: 4"+eos (Q -1), a third unvisited."""
    K, T = 3, 12
    cand = np.zeros((1, 2, K, T), np.int32)
    clen = np.zeros((1, 2, K), np.int32)
    ceos = np.zeros((1, 2, K), bool)
    for n, k, text, eos in [(0, 0, "1+2\n", False), (0, 1, "1+3\n", False),
                            (1, 0, "answer: 3", True), (1, 1, "answer: 4", True),
                            (1, 2, "answer: 5", True)]:
        ids, length = _ids(env, text, eos, T)
        cand[0, n, k], clen[0, n, k], ceos[0, n, k] = ids, length, eos
    path = np.zeros((1, 2, 8), np.int32)
    plen = np.zeros((1, 2), np.int32)
    path[0, 1], plen[0, 1] = _ids(env, "1+2\n")
    t = dict(path=path, length=plen, terminal=np.zeros((1, 2), bool),
             q=np.array([[0.2, 0.5]], np.float32), visited=np.ones((1, 2), bool),
             visits=np.array([[5, 3]]), cand_tokens=cand, cand_lengths=clen, cand_eos=ceos,
             children_values=np.array([[[0.5, -1.0, 0.0], [1.0, -1.0, 0.0]]], np.float32),
             children_visits=np.array([[[3, 1, 0], [2, 1, 0]]]),
             hi=np.array([[0, 0]]), lo=np.array([[1, 1]]), pair_valid=np.ones((1, 2), bool))
    return mcts_data.SearchRound(trees=[(np.array([4]), t)], solved=np.array([True]),
                                 tokens_generated=0)


def test_pair_records_from_a_hand_built_tree(env):
    pairs = mcts_data.pair_records(env, _tree(env))
    assert pairs == [
        {"problem": 4, "prefix": [], "chosen": "1+2", "rejected": "1+3", "chosen_final": False,
         "rejected_final": False, "q_chosen": 0.5, "q_rejected": -1.0, "visits_chosen": 3,
         "visits_rejected": 1},
        {"problem": 4, "prefix": ["1+2"], "chosen": "answer: 3", "rejected": "answer: 4",
         "chosen_final": True, "rejected_final": True, "q_chosen": 1.0, "q_rejected": -1.0,
         "visits_chosen": 2, "visits_rejected": 1}]


def test_value_records_skip_the_root_and_keep_the_tree_q(env):
    recs = mcts_data.value_records(env, _tree(env))
    assert recs == [{"problem": 4, "steps": ["1+2"], "targets": [0.5], "complete": False,
                     "correct": False}]


def test_verifier_rewards_plus_minus_one(env):
    p = env.train[0]
    verifier = env.verifier
    ids = verifier.register(env.train)
    good, n_good = _ids(env, env.task.solution(p), eos=True, width=40)
    bad, n_bad = _ids(env, "1\nanswer: nope", eos=True, width=40)
    out = verifier(ids[[0, 0]], np.array([good, bad]), np.array([n_good, n_bad]))
    np.testing.assert_array_equal(out, [1.0, -1.0])
