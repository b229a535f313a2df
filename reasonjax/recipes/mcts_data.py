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
from typing import Any, Optional, Sequence

import jax
import numpy as np

from reasonjax.data.task import Problem
from reasonjax.recipes import common
from reasonjax.recipes.common import Env, on_mesh, prompts_of
from reasonjax.recipes.rundir import Run
from reasonjax.search.mcts import MCTSConfig, mcts, sibling_pairs, tree_paths, value_targets
from reasonjax.search.sampler import SamplingConfig


@dataclasses.dataclass(frozen=True)
class SearchSpec:
    """MCTS settings of a recipe (see :class:`reasonjax.search.mcts.MCTSConfig`):
    ``problems`` training problems searched per round (the first ones of a per-round
    shuffle), ``batch_size`` problems per search call."""

    problems: int = 128
    batch_size: int = 64
    num_actions: int = 4
    num_simulations: int = 8
    max_steps: int = 4
    step_tokens: int = 16
    temperature: float = 1.0
    policy: str = "muzero"
    prior: str = "mean_logprob"
    pb_c_init: float = 1.25
    dirichlet_fraction: float = 0.0

    def mcts_config(self, pad_id: int) -> MCTSConfig:
        return MCTSConfig(num_actions=self.num_actions, num_simulations=self.num_simulations,
                          max_steps=self.max_steps, step_tokens=self.step_tokens,
                          sampling=SamplingConfig(temperature=self.temperature),
                          policy=self.policy, prior=self.prior, value_transform="tanh",
                          pb_c_init=self.pb_c_init,
                          dirichlet_fraction=self.dirichlet_fraction, pad_id=pad_id)


def warm_start(run: Run, cfg) -> tuple[Env, Any, "ProblemVerifier"]:
    """:func:`common.warm_start` with the verifier over the problems the rounds search."""
    env, params, search_problems = common.warm_start(run, cfg)
    return env, params, ProblemVerifier(env, search_problems)


class ProblemVerifier:
    """The MCTS verifier over a fixed list of problems: row ``problem_ids[b]`` of a batch
    is ``problems[problem_ids[b]]``; reward +1 when the path's text verifies, else -1.
    One object per problem list, so the search compiles once for every batch and round
    (jit keys static arguments by identity)."""

    def __init__(self, env: Env, problems: Sequence[Problem]):
        self.env, self.problems = env, list(problems)

    def __call__(self, problem_ids: np.ndarray, paths: np.ndarray,
                 lengths: np.ndarray) -> np.ndarray:
        out = np.empty(len(problem_ids), np.float32)
        for b, (i, p, n) in enumerate(zip(problem_ids, paths, lengths)):
            text = path_text(self.env, p[:n])[0]
            out[b] = 1.0 if self.env.task.verify(self.problems[int(i)], text) else -1.0
        return out


def path_text(env: Env, ids: np.ndarray) -> tuple[str, bool]:
    """(text, ended with EOS) of generated token ids."""
    ids = [int(t) for t in ids]
    eos = bool(ids) and ids[-1] == env.tokenizer.eos_id
    return env.tokenizer.decode(ids[:-1] if eos else ids), eos


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
    built verified; ``tokens_generated`` spent."""

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
               children_values=tree.children_values, hi=hi, lo=lo, pair_valid=valid)
    return {k: np.asarray(v) for k, v in out.items()}


def search(env: Env, params, problem_ids: Sequence[int], spec: SearchSpec,
           verifier: ProblemVerifier, rng: jax.Array) -> SearchRound:
    """MCTS (verifier rewards at terminal nodes) over ``verifier.problems[i]`` for each
    ``i`` in ``problem_ids``, ``spec.batch_size`` at a time. The last batch is filled up
    with repeats of its first problem so every call has the same shape (one compile);
    the repeats are dropped."""
    cfg = spec.mcts_config(env.tokenizer.pad_id or 0)
    trees, solved, spent = [], [], 0
    prompt_len = env.prompt_len
    for start in range(0, len(problem_ids), spec.batch_size):
        ids = list(problem_ids[start:start + spec.batch_size])
        real = len(ids)
        ids += [ids[0]] * (spec.batch_size - real)
        batch = prompts_of(env, [verifier.problems[i] for i in ids])
        tokens, mask = _left_pad(batch, prompt_len, env.tokenizer.pad_id or 0)
        result = on_mesh(env, mcts, params, tokens, mask, jax.random.fold_in(rng, start),
                         cfg, env.stop, verifier=verifier,
                         problem_ids=np.asarray(ids, np.int32))
        for tree in result.trees:
            t = _numpy_tree(tree)
            trees.append((np.asarray(ids[:real]), {k: v[:real] for k, v in t.items()}))
        solved += list(np.asarray(result.value)[:real] > 0)
        spent += int(result.compute.tokens_generated)
    return SearchRound(trees=trees, solved=np.asarray(solved, bool), tokens_generated=spent)


def _left_pad(batch: dict, length: int, pad_id: int):
    """Prompts left-padded to ``length`` (the longest prompt of the env), so every search
    call sees one prompt shape."""
    tokens, mask = batch["prompt_tokens"], batch["prompt_mask"]
    extra = length - tokens.shape[1]
    return (np.pad(tokens, ((0, 0), (extra, 0)), constant_values=pad_id),
            np.pad(mask, ((0, 0), (extra, 0))))


def value_records(env: Env, rnd: SearchRound) -> list[dict]:
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


def pair_records(env: Env, rnd: SearchRound) -> list[dict]:
    """MCTS-DPO's step-level pairs from a round's trees: at every node with two or more
    visited children of different Q, the highest-Q child's step (chosen) against the
    lowest-Q child's (rejected), after the node's path (the shared prefix). A node seen in
    several trees keeps the pair from the tree where it had the most visits; pairs of
    identical step text are dropped."""
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
                              float(t["children_values"][b, n, a])))
            (chosen, c_final, q_c), (rejected, r_final, q_r) = steps
            if chosen is None or rejected is None or (chosen, c_final) == (rejected, r_final):
                continue
            key = (int(ids[b]), tuple(prefix))
            visits = int(t["visits"][b, n])
            if key not in best or visits > best[key][0]:
                best[key] = (visits, {
                    "problem": key[0], "prefix": list(prefix), "chosen": chosen,
                    "rejected": rejected, "chosen_final": c_final, "rejected_final": r_final,
                    "q_chosen": q_c, "q_rejected": q_r})
    return [rec for _, (_, rec) in sorted(best.items())]
