"""Tree-PLV's best-first trees (recipes.process_labels) grown with toy proposers and
oracles: the expansion order, the values, the depth limit and batching by round, by hand."""

import numpy as np
import pytest

from reasonjax.config import ConfigError
from reasonjax.recipes import process_labels as pl
from reasonjax.train.tree_plv import sibling_pairs

NEXT = {  # (problem, path) -> the steps the toy policy samples there (None: incomplete)
    (0, ()): ["a", "b", None, "a"],
    (0, ("b",)): ["b1", "ans ok", "ans bad", "b1"],
    (0, ("a",)): ["x", "y", None, None],
    (1, ()): [None, None, None, None],
}
CORRECT = {("a",): 1, ("b",): 3, ("b", "b1"): 2, ("a", "x"): 4, ("a", "y"): 0}  # of 4


def _toys(log):
    def propose(queries, k):
        assert k == 4
        log.append(("propose", list(queries)))
        return [NEXT[q] for q in queries]

    def oracle(queries, k):
        assert k == 4
        log.append(("oracle", list(queries)))
        return np.asarray([CORRECT[p] for _, p in queries])

    def outcome(i, path):
        return ("ok" in path[-1]) if path[-1].startswith("ans") else None

    return propose, oracle, outcome


def test_best_first_trees_expand_the_best_open_node_and_value_children_by_rollouts():
    log = []
    trees = pl.best_first_trees(2, *_toys(log), pl.TreeSpec(children=4, expansions=4,
                                                            max_depth=2), k=4)
    # Round 1: both roots. Problem 0 gets a (1/4) and b (3/4): duplicates and incomplete
    # samples are dropped; problem 1 gets nothing. Round 2: b, the best open node; its
    # finished children are judged, not rolled out. Round 3: b1 (1/2) is at max_depth, so
    # the search backtracks to a. Round 4: nothing open is left in either tree.
    assert log == [
        ("propose", [(0, ()), (1, ())]), ("oracle", [(0, ("a",)), (0, ("b",))]),
        ("propose", [(0, ("b",))]), ("oracle", [(0, ("b", "b1"))]),
        ("propose", [(0, ("a",))]), ("oracle", [(0, ("a", "x")), (0, ("a", "y"))]),
    ]
    t = trees[0]
    assert t.steps == ("", "a", "b", "b1", "ans ok", "ans bad", "x", "y")
    np.testing.assert_array_equal(t.parent, [-1, 0, 0, 2, 2, 2, 1, 1])
    np.testing.assert_array_equal(t.depth, [0, 1, 1, 2, 2, 2, 2, 2])
    np.testing.assert_array_equal(t.value, [np.nan, 0.25, 0.75, 0.5, 1.0, 0.0, 1.0, 0.0])
    np.testing.assert_array_equal(t.final, [0, 0, 0, 0, 1, 1, 0, 0])
    assert pl.path_steps(t, 3) == ["b", "b1"] and pl.path_steps(t, 0) == []
    assert len(trees[1].steps) == 1 and trees[1].parent.tolist() == [-1]
    pairs = list(zip(*[x.tolist() for x in sibling_pairs(t.parent, t.value, 0.25)]))
    assert pairs == [(0, 2, 1), (1, 6, 7), (2, 3, 5), (2, 4, 3), (2, 4, 5)]


def test_expansions_bound_the_rounds_and_ties_go_deeper():
    log = []
    # One expansion: only the root.
    trees = pl.best_first_trees(1, *_toys(log), pl.TreeSpec(expansions=1), k=4)
    assert [entry[0] for entry in log] == ["propose", "oracle"] and len(trees[0].steps) == 3
    # Ties: a before b (the earlier node at one depth), then x before b (the deeper).
    values = {("a",): 2, ("b",): 2, ("a", "x"): 2, ("a", "y"): 0}
    calls = []

    def propose(queries, k):
        calls.append([p for _, p in queries])
        return [{(): ["a", "b"], ("a",): ["x", "y"]}.get(p, [None, None]) for _, p in queries]

    pl.best_first_trees(1, propose, lambda q, k: np.asarray([values[p] for _, p in q]),
                        lambda i, p: None, pl.TreeSpec(children=2, expansions=3), k=4)
    assert calls == [[()], [("a",)], [("a", "x")]]


def test_first_step_of_a_sampled_continuation():
    final = lambda s: s.startswith("answer:")  # noqa: E731
    assert pl.first_step("\n", "3+4\n7\nanswer: 7", final) == "3+4"
    assert pl.first_step("\n", "answer: 7", final) == "answer: 7"
    assert pl.first_step("\n", "3+", final) is None          # stopped inside the step
    assert pl.first_step("\n", "\nanswer: 7", final) is None  # an empty step


def test_tree_spec_checks_its_fields():
    with pytest.raises(ConfigError, match="children"):
        pl.TreeSpec(children=1)
    with pytest.raises(ConfigError, match="max_depth"):
        pl.TreeSpec(max_depth=0)
