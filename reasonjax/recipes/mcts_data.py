"""MCTS over a recipe's training problems, and the training data read from its trees.

Shared by :mod:`reasonjax.recipes.alphamath` (value targets: every visited prefix with its
tree Q-value) and :mod:`reasonjax.recipes.mcts_dpo` (step-level preference pairs: the
highest- and lowest-Q visited children of a node). Both are built on
:func:`reasonjax.search.mcts.mcts` with the task's verifier scoring terminal nodes (+1
correct, -1 otherwise, AlphaMath's reward), read back as text steps so the examples are
made by the one set of encoders in :mod:`reasonjax.data.formatting`.

Paths are re-split into steps at the task's step delimiter. A step the search cut at its
token budget (no delimiter, no EOS) cannot be re-encoded exactly, so prefixes ending in
one and pairs holding one are skipped (counted in the search summary).
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import jax
import numpy as np

from reasonjax.data.task import Problem
from reasonjax.driver import completion_text, run_batches
from reasonjax.recipes.common import RecipeEnv
from reasonjax.search.mcts import MCTSConfig, sibling_pairs, tree_paths, value_targets
from reasonjax.search.sampler import SearchError


def path_text(env: RecipeEnv, ids: np.ndarray) -> tuple[str, bool]:
    """(text, ended with EOS) of generated token ids."""
    ids = np.asarray(ids)
    eos = bool(len(ids)) and int(ids[-1]) == env.tokenizer.eos_id
    return completion_text(env.tokenizer, ids, len(ids)), eos


def split_path(text: str, complete: bool, delimiter: str) -> Optional[list[str]]:
    """The steps of a path's text: a complete path (ended with EOS) is every piece between
    delimiters, the last being the final step; an incomplete one must end with the
    delimiter (else its last step was cut at the token budget: None)."""
    parts = text.split(delimiter)
    if complete:
        return parts
    if parts[-1] != "":
        return None
    return parts[:-1]


def step_text(text: str, eos: bool, delimiter: str) -> Optional[str]:
    """One candidate step's text without its delimiter (None when cut at the budget)."""
    if eos:
        return text
    return text[:-len(delimiter)] if text.endswith(delimiter) else None


@dataclasses.dataclass
class SearchRound:
    """One round of MCTS over problems: ``trees`` is a list of (problem indices [B], tree
    as numpy arrays) per search call and move; ``solved`` [P] whether the path the moves
    built verified; ``tokens_generated`` spent (filler rows of the last call included)."""

    trees: list
    solved: np.ndarray
    tokens_generated: int


def _numpy_tree(tree) -> dict:
    paths, lengths = tree_paths(tree)
    q, visited = value_targets(tree)
    hi, lo, valid = sibling_pairs(tree)
    emb = tree.embeddings
    out = dict(path=paths, length=lengths, terminal=emb.terminal, q=q, visited=visited,
               visits=tree.node_visits, cand_tokens=emb.cand_tokens,
               cand_lengths=emb.cand_lengths, cand_eos=emb.cand_eos,
               children_values=tree.children_values, children_visits=tree.children_visits,
               hi=hi, lo=lo, pair_valid=valid)
    return {k: np.asarray(v) for k, v in out.items()}


def round_problems(seed: int, rnd: int, count: int, n_problems: int) -> list[int]:
    """The ``count`` problems (indices of ``n_problems``) searched in round ``rnd``: a
    fresh seeded shuffle per round."""
    order = np.random.default_rng([seed, rnd]).permutation(n_problems)
    return [int(i) for i in order[:min(count, n_problems)]]


def search(env: RecipeEnv, params, problems: Sequence[Problem], ids: Sequence[int],
           cfg: MCTSConfig, rng: jax.Array, batch_size: int) -> SearchRound:
    """MCTS over ``problems`` through the driver, terminal nodes judged by the task's
    verifier (``cfg.terminal_reward`` must be ``verifier``); ``ids`` (one per problem,
    e.g. its index in the recipe's problem list) are kept with each tree."""
    if cfg.terminal_reward != "verifier":
        raise SearchError("mcts_data.search reads Q-values backed up from the verifier's "
                          "rewards: set search.terminal_reward=verifier")
    ids = np.asarray(ids)
    trees, solved, spent = [], [], 0
    for batch in run_batches(env, params, problems, cfg, rng, batch_size=batch_size):
        rows = batch.rows[:batch.real]
        for tree in batch.output.trees:
            t = _numpy_tree(tree)
            trees.append((ids[rows], {k: v[:batch.real] for k, v in t.items()}))
        solved += list(np.asarray(batch.output.value)[:batch.real] > 0)
        spent += batch.compute["tokens_generated"]
    return SearchRound(trees=trees, solved=np.asarray(solved, bool), tokens_generated=spent)


def value_records(env: RecipeEnv, rnd: SearchRound) -> list[dict]:
    """AlphaMath's training data from a round's trees. Every visited node below a root
    prompt is a prefix with value target Q = its search value (the mean of the values
    backed up through it; a terminal node's is its reward). A prefix seen in several trees
    (the chosen child is the next move's root) keeps the Q with the most visits.

    Returns one record per maximal path (a prefix that extends no other): problem index,
    steps, targets (the Q of each of its prefixes), complete (ended with EOS), correct
    (complete with reward +1: the path is also an SFT target)."""
    best: dict[tuple, tuple[float, int, bool]] = {}
    for ids, t in rnd.trees:
        for b, n in zip(*np.nonzero(t["visited"])):
            text, eos = path_text(env, t["path"][b, n, :t["length"][b, n]])
            steps = split_path(text, eos, env.delimiter) if t["length"][b, n] else None
            if not steps:
                continue
            key = (int(ids[b]), tuple(steps))
            visits = int(t["visits"][b, n])
            if key not in best or visits > best[key][1]:
                best[key] = (float(t["q"][b, n]), visits, eos)
    return records_from_q(best)


def records_from_q(best: dict[tuple, tuple[float, int, bool]]) -> list[dict]:
    """One record per maximal prefix of ``best`` ((problem, steps) -> (Q, visits,
    complete)), with the Q of each of its prefixes as targets (see :func:`value_records`).
    Prefixes whose own prefixes were not all visited are dropped."""
    inner = {(p, s[:j]) for p, s in best for j in range(1, len(s))}
    out = []
    for (problem, steps), (q, _, complete) in sorted(best.items()):
        if (problem, steps) in inner:
            continue
        prefixes = [best.get((problem, steps[:j])) for j in range(1, len(steps) + 1)]
        if any(x is None for x in prefixes):
            continue
        out.append({"problem": problem, "steps": list(steps),
                    "targets": [x[0] for x in prefixes], "complete": complete,
                    "correct": bool(complete and q > 0)})
    return out


def pair_records(env: RecipeEnv, rnd: SearchRound) -> list[dict]:
    """MCTS-DPO's step-level pairs from a round's trees: at every node with two or more
    visited children of different Q, the highest-Q child's step (chosen) against the
    lowest-Q child's (rejected), after the node's path (the shared prefix), with both
    children's Q and visit counts. A node seen in several trees keeps the pair from the
    tree where it had the most visits; pairs of identical step text are dropped."""
    best: dict[tuple, tuple[int, dict]] = {}
    for ids, t in rnd.trees:
        for b, n in zip(*np.nonzero(t["pair_valid"] & t["visited"])):
            text, eos = path_text(env, t["path"][b, n, :t["length"][b, n]])
            if eos:
                continue
            prefix = split_path(text, False, env.delimiter)
            if prefix is None:
                continue
            steps = []
            for a in (t["hi"][b, n], t["lo"][b, n]):
                s, _ = path_text(env, t["cand_tokens"][b, n, a, :t["cand_lengths"][b, n, a]])
                final = bool(t["cand_eos"][b, n, a])
                steps.append((step_text(s, final, env.delimiter), final,
                              float(t["children_values"][b, n, a]),
                              int(t["children_visits"][b, n, a])))
            (chosen, c_final, q_c, n_c), (rejected, r_final, q_r, n_r) = steps
            if chosen is None or rejected is None or (chosen, c_final) == (rejected, r_final):
                continue
            key = (int(ids[b]), tuple(prefix))
            visits = int(t["visits"][b, n])
            if key not in best or visits > best[key][0]:
                best[key] = (visits, {
                    "problem": key[0], "prefix": list(prefix), "chosen": chosen,
                    "rejected": rejected, "chosen_final": c_final, "rejected_final": r_final,
                    "q_chosen": q_c, "q_rejected": q_r, "visits_chosen": n_c,
                    "visits_rejected": n_r})
    return [rec for _, (_, rec) in sorted(best.items())]
