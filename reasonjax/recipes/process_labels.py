"""Monte Carlo process labels: rollouts from step prefixes, Math-Shepherd per-prefix labels,
OmegaPRM's binary search for the first error and PAV's advantage targets. Shared by the
``prm``, ``step_dpo`` and ``pav`` recipes.

A solution is a list of steps. Its prefix ``m`` is its first ``m`` steps; the label of
step ``j`` (0-based) is the label of prefix ``j + 1``. The exact label a Monte Carlo
label approximates is :attr:`reasonjax.data.task.StepCheck.prefix_correct`.

Labelers never call the model themselves: they ask an ``oracle(queries, k)`` for the
number of correct completions among ``k`` rollouts from each queried prefix, ALL the
queries of one labelling round in one call (so the model samples them as one batch; see
:func:`prefix_oracle`). Unit tests pass a toy oracle.

- Math-Shepherd (Wang et al., 2024, "Math-Shepherd: Verify and Reinforce LLMs Step-by-step
  without Human Annotations"): ``k`` rollouts from every prefix; hard label = any rollout
  correct, soft label = fraction correct. The last step of a finished solution needs no
  rollouts: its prefix IS a finished solution, labelled by its own outcome.
- OmegaPRM (Luo et al., 2024, "Improve Mathematical Reasoning in Language Models by
  Automated Process Supervision"): for a wrong solution, binary search for the first error:
  roll out from the middle prefix between the last prefix known good (initially the empty
  one) and the first known bad (initially the whole solution); if any rollout is correct
  the first error is later, else it is at or before the middle. O(log n) rollout batches
  per solution; steps before the first error are labelled 1, the rest 0. A correct
  solution needs no search (all its prefixes lead to a correct answer: itself). Soft
  labels are the Monte Carlo estimates at the probed prefixes and the inferred 0/1
  elsewhere. We run the search on the policy's own samples rather than OmegaPRM's
  tree of rollouts reused across solutions (its MCTS over a question's rollouts); the
  search and its labels are the paper's.
- PAV (Setlur et al., 2024, "Rewarding Progress: Scaling Automated Process Verifiers for
  LLM Reasoning"): the process reward of a step is its advantage under a prover policy mu,
  A_mu(s, a) = Q_mu(s, a) - V_mu(s): mu's success rate after the step minus before it
  (:func:`pav_targets` on :func:`prefix_counts`, the prompt's value included); search
  ranks steps by Q_pi + alpha * A_mu (:func:`effective_rewards`). With mu = best-of-k of
  pi (:func:`best_of_k_values`) one set of pi's rollouts gives both Q_pi and A_mu.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Sequence

import jax
import numpy as np

from reasonjax.data.task import Problem
from reasonjax.driver import completion_text, run_batches
from reasonjax.eval.passk import pass_at_k
from reasonjax.recipes.common import RecipeEnv
from reasonjax.search.sampler import SampleConfig

# (solution index, prefix length m) queries and k -> correct rollouts per query [Q].
Oracle = Callable[[Sequence[tuple[int, int]], int], np.ndarray]


@dataclasses.dataclass
class Labels:
    """Process labels of S solutions.

    hard: per solution, one 0/1 label per step. soft: per solution, one label in [0, 1] per
    step. rollouts: per solution, rollouts spent on it. rounds: oracle calls made.
    """

    hard: list[list[float]]
    soft: list[list[float]]
    rollouts: list[int]
    rounds: int

    @property
    def rollouts_per_label(self) -> float:
        n = sum(len(h) for h in self.hard)
        return sum(self.rollouts) / n if n else 0.0


def math_shepherd_labels(n_steps: Sequence[int], outcome: Sequence[Optional[bool]],
                         oracle: Oracle, k: int) -> Labels:
    """Math-Shepherd labels for solutions of ``n_steps`` steps; ``outcome``: whether each
    finished solution's answer is correct (None: unfinished, its last prefix is rolled out
    too). One oracle call for every prefix of every solution."""
    queries = []
    for i, (n, out) in enumerate(zip(n_steps, outcome)):
        last = n - 1 if out is not None else n
        queries += [(i, m) for m in range(1, last + 1)]
    counts = np.asarray(oracle(queries, k)) if queries else np.zeros(0, int)
    by = {q: int(c) for q, c in zip(queries, counts)}
    hard, soft, spent = [], [], []
    for i, (n, out) in enumerate(zip(n_steps, outcome)):
        s = [by[(i, m)] / k if (i, m) in by else float(bool(out)) for m in range(1, n + 1)]
        soft.append(s)
        hard.append([float(x > 0) for x in s])
        spent.append(k * sum((i, m) in by for m in range(1, n + 1)))
    return Labels(hard=hard, soft=soft, rollouts=spent, rounds=int(bool(queries)))


def omegaprm_labels(n_steps: Sequence[int], outcome: Sequence[bool], oracle: Oracle,
                    k: int) -> Labels:
    """OmegaPRM binary-search labels (see the module docstring); every round probes the
    middle prefix of every wrong solution still being searched, in one oracle call."""
    S = len(n_steps)
    lo = [0] * S  # longest prefix known to reach a correct answer
    hi = [n if not ok else n + 1 for n, ok in zip(n_steps, outcome)]  # shortest known bad
    probed: list[dict[int, float]] = [{} for _ in range(S)]
    rounds = 0
    while True:
        active = [i for i in range(S) if not outcome[i] and hi[i] - lo[i] > 1]
        if not active:
            break
        queries = [(i, (lo[i] + hi[i]) // 2) for i in active]
        counts = np.asarray(oracle(queries, k))
        rounds += 1
        for (i, m), c in zip(queries, counts):
            probed[i][m] = int(c) / k
            if c > 0:
                lo[i] = m
            else:
                hi[i] = m
    hard, soft = [], []
    for i, n in enumerate(n_steps):
        h = [float(m < hi[i]) for m in range(1, n + 1)]
        hard.append(h)
        soft.append([probed[i].get(m, h[m - 1]) for m in range(1, n + 1)])
    return Labels(hard=hard, soft=soft, rollouts=[k * len(p) for p in probed], rounds=rounds)


@dataclasses.dataclass
class PrefixCounts:
    """Monte Carlo success counts of every prefix of S solutions.

    correct: per solution i, n_i + 1 counts: correct rollouts among ``k`` from prefix
    m = 0 .. n_i (0: the prompt alone). A finished solution's full prefix is not rolled
    out: it IS an answer, counted as k (right) or 0 (wrong). rollouts: per solution,
    rollouts spent on it (a prompt's rollouts are charged to the first solution of its
    group). rounds: oracle calls made.
    """

    correct: list[list[int]]
    k: int
    rollouts: list[int]
    rounds: int


def prefix_counts(n_steps: Sequence[int], outcome: Sequence[Optional[bool]], oracle: Oracle,
                  k: int, group: Optional[Sequence[int]] = None) -> PrefixCounts:
    """``k`` rollouts from every prefix m = 0 .. n of every solution (the finished ones'
    last prefix excepted: ``outcome`` True / False counts it as k / 0; None: unfinished,
    rolled out too), in one oracle call. Solutions of one ``group`` (the same problem)
    share their prompt's rollouts (prefix 0, queried on the group's first solution);
    default: every solution is its own group."""
    group = list(range(len(n_steps))) if group is None else list(group)
    first: dict[int, int] = {}
    for i, g in enumerate(group):
        first.setdefault(g, i)
    queries = [(i, 0) for i in sorted(first.values())]
    for i, (n, out) in enumerate(zip(n_steps, outcome)):
        last = n - 1 if out is not None else n
        queries += [(i, m) for m in range(1, last + 1)]
    counts = np.asarray(oracle(queries, k)) if queries else np.zeros(0, int)
    by = {q: int(c) for q, c in zip(queries, counts)}
    correct, spent = [], [0] * len(n_steps)
    for q in queries:
        spent[q[0]] += k
    for i, (n, out) in enumerate(zip(n_steps, outcome)):
        row = [by[(first[group[i]], 0)]]
        row += [by[(i, m)] if (i, m) in by else k * int(bool(out)) for m in range(1, n + 1)]
        correct.append(row)
    return PrefixCounts(correct=correct, k=k, rollouts=spent, rounds=int(bool(queries)))


def best_of_k_values(correct: Sequence[int], n: int, k: int) -> list[float]:
    """Success rate of the best-of-``k`` policy Bo-k(pi) (sample k completions of pi, keep a
    correct one if any: 1 - (1 - p)^k from a prefix where pi succeeds with p) from each
    prefix, estimated without bias from ``n`` >= k rollouts of pi with ``correct[m]`` right
    (pass@k, :func:`reasonjax.eval.passk.pass_at_k`). k = 1 is pi itself: c / n."""
    return [pass_at_k(n, int(c), k) for c in correct]


def pav_targets(q_values: Sequence[float], mu_values: Sequence[float]
                ) -> tuple[list[float], list[float]]:
    """Per-step PAV targets (Setlur et al., 2024) of one solution of n steps from its
    prefix values m = 0 .. n: success rates under the base policy pi (``q_values``) and
    under the prover mu (``mu_values``), each of length n + 1. Step j (0-based) leads from
    prefix s_j = first j steps to s_{j+1}, so

        Q_pi(s_j, a_j) = q_values[j + 1]
        A_mu(s_j, a_j) = Q_mu(s_j, a_j) - V_mu(s_j) = mu_values[j + 1] - mu_values[j].

    Returns (Q [n], A [n])."""
    if len(q_values) != len(mu_values) or not q_values:
        raise ValueError(f"pav_targets: need equal-length prefix values (n + 1 >= 1 each), "
                         f"got {len(q_values)} and {len(mu_values)}")
    q = [float(x) for x in q_values[1:]]
    a = [float(mu_values[j + 1]) - float(mu_values[j]) for j in range(len(mu_values) - 1)]
    return q, a


def effective_rewards(q: Sequence[float], a: Sequence[float], alpha: float) -> list[float]:
    """PAV's effective step reward Q_pi + alpha * A_mu, per step (what its search ranks)."""
    return [float(x) + alpha * float(y) for x, y in zip(q, a)]


def first_error(hard: Sequence[float]) -> Optional[int]:
    """Index of the first step labelled 0, None when all are 1."""
    return next((j for j, h in enumerate(hard) if h < 0.5), None)


def agreement(labels: Sequence[Sequence[float]], exact: Sequence[Sequence[bool]]) -> float:
    """Fraction of steps whose hard label equals the exact one."""
    pairs = [(h >= 0.5, bool(e)) for hs, es in zip(labels, exact) for h, e in zip(hs, es)]
    return float(np.mean([a == b for a, b in pairs])) if pairs else float("nan")


# ---------------------------------------------------------------------------------------
# Rollouts with the policy


@dataclasses.dataclass(frozen=True)
class RolloutSpec(SampleConfig):
    """Rollouts from step prefixes: a :class:`~reasonjax.search.sampler.SampleConfig`
    (``n`` = k completions per prefix) plus ``batch_size`` prefixes per driver call."""

    n: int = 4
    max_new_tokens: int = 48
    batch_size: int = 64


@dataclasses.dataclass
class Samples:
    """k completions of each of P prefixes: texts [P][k] (the continuations), correct
    [P][k] (prefix + continuation verifies), tokens generated in all."""

    texts: list[list[str]]
    correct: list[list[bool]]
    tokens_generated: int


def prefix_text(env: RecipeEnv, problem: Problem, steps: Sequence[str]) -> str:
    """The prompt followed by ``steps``, each ended by the step delimiter."""
    return env.task.prompt(problem) + "".join(s + env.delimiter for s in steps)


def rollouts_from_prefixes(env: RecipeEnv, params,
                           prefixes: Sequence[tuple[Problem, Sequence[str]]],
                           rng: jax.Array, spec: RolloutSpec) -> Samples:
    """``spec.n`` completions of each (problem, prefix steps), continuing after the prefix
    (:func:`reasonjax.driver.run_batches` on the prefix texts, left-padded to the env's
    prompt length plus ``max_new_tokens``, so every call reuses one compiled sampler)."""
    problems = [p for p, _ in prefixes]
    heads = ["".join(s + env.delimiter for s in steps) for _, steps in prefixes]
    longer = dataclasses.replace(env, prompt_len=env.prompt_len + spec.max_new_tokens)
    texts, correct, spent = [], [], 0
    if not prefixes:
        return Samples(texts=texts, correct=correct, tokens_generated=spent)
    for batch in run_batches(longer, params, problems, spec, rng, batch_size=spec.batch_size,
                             texts=[env.task.prompt(p) + h for p, h in zip(problems, heads)]):
        c = batch.candidates
        for b in range(batch.real):
            i = int(batch.rows[b])
            row = [completion_text(env.tokenizer, c.tokens[b, k], int(c.lengths[b, k]))
                   for k in range(spec.n)]
            spent += int(np.sum(c.lengths[b]))
            texts.append(row)
            correct.append([env.task.verify(problems[i], heads[i] + t) for t in row])
    return Samples(texts=texts, correct=correct, tokens_generated=spent)


def prefix_oracle(env: RecipeEnv, params, problems: Sequence[Problem],
                  steps: Sequence[Sequence[str]], rng: jax.Array, spec: RolloutSpec,
                  spent: Optional[list] = None, store: Optional[dict] = None) -> Oracle:
    """An :data:`Oracle` over solutions (``problems[i]``, ``steps[i]``) rolling out the
    policy; each call draws fresh randomness and appends its tokens generated to ``spent``.
    With ``store`` it also keeps what it sampled: ``store[(i, m)]`` = (texts [k], correct
    [k]) of the rollouts from prefix m of solution i, so the rollouts that measured a
    prefix's value can serve as its continuations (a prompt's rollouts are stored under
    the solution :func:`prefix_counts` queried them on: its group's first). The oracle's
    ``k`` must equal ``spec.n``."""
    calls = [0]

    def oracle(queries, k):
        if k != spec.n:
            raise ValueError(f"oracle called with k={k}, but its RolloutSpec has n={spec.n}")
        calls[0] += 1
        s = rollouts_from_prefixes(env, params, [(problems[i], steps[i][:m]) for i, m in queries],
                                   jax.random.fold_in(rng, calls[0]), spec)
        if spent is not None:
            spent.append(s.tokens_generated)
        if store is not None:
            for q, texts, ok in zip(queries, s.texts, s.correct):
                store[tuple(q)] = (list(texts), [bool(c) for c in ok])
        return np.asarray([sum(c) for c in s.correct], np.int64)

    return oracle


# ---------------------------------------------------------------------------------------
# Tree-PLV's best-first reasoning trees (He et al., 2024; the loss and the sibling pairs:
# reasonjax.train.tree_plv)

# (problem index, steps of a node) queries and k -> per query, k sampled next steps (None
# where a sample holds no complete step); all of one round's queries in one call.
Proposer = Callable[[Sequence[tuple[int, tuple[str, ...]]], int], list]
# The same queries and k -> correct completions among k rollouts from each [Q].
PathOracle = Callable[[Sequence[tuple[int, tuple[str, ...]]], int], np.ndarray]
# (problem index, steps) -> None when the last step does not end the solution, else
# whether the finished solution is correct.
Outcome = Callable[[int, tuple[str, ...]], Optional[bool]]


@dataclasses.dataclass(frozen=True)
class TreeSpec:
    """A best-first tree per problem: ``expansions`` nodes expanded, ``children`` sampled
    next steps per expansion, nodes deeper than ``max_depth`` steps never expanded."""

    children: int = 4
    expansions: int = 8
    max_depth: int = 8

    def __post_init__(self):
        from reasonjax.config import check_fields

        check_fields(self, children=">= 2", expansions=">= 1", max_depth=">= 1")


@dataclasses.dataclass(frozen=True)
class StepTree:
    """One problem's reasoning tree of N nodes; node 0 is the root (the question alone).

    parent: [N] int64 parent node (-1 at the root). depth: [N] int64 steps from the root.
    value: [N] float64 the node's step value: the fraction of k rollouts from its prefix
    that reach the right answer, or 1 / 0 for a finished solution (NaN at the root).
    final: [N] bool the node's step ends the solution. steps: the node's own step text
    ("" at the root); its prefix is the steps along the path (:func:`path_steps`)."""

    parent: np.ndarray
    depth: np.ndarray
    value: np.ndarray
    final: np.ndarray
    steps: tuple[str, ...]


def path_steps(tree: StepTree, node: int) -> list[str]:
    """The steps from the root to ``node`` (empty for the root)."""
    out = []
    while node > 0:
        out.append(tree.steps[node])
        node = int(tree.parent[node])
    return out[::-1]


def _frontier_best(parent, value, final, expanded, depth, max_depth) -> Optional[int]:
    """The node to expand next: the highest-valued node not yet expanded, unfinished and
    within ``max_depth`` (the root first; ties to the deeper, then the earlier node)."""
    open_ = [n for n in range(len(parent))
             if not expanded[n] and not final[n] and depth[n] < max_depth]
    if not open_:
        return None
    return max(open_, key=lambda n: (np.inf if n == 0 else value[n], depth[n], -n))


def best_first_trees(n_problems: int, propose: Proposer, oracle: PathOracle,
                     outcome: Outcome, spec: TreeSpec, k: int) -> list[StepTree]:
    """Tree-PLV's trees for ``n_problems`` problems, grown together: each round expands
    the best frontier node of every problem (one ``propose`` call for all), adds its
    distinct complete sampled steps as children, values the finished ones by ``outcome``
    and the others by ``k`` rollouts each (one ``oracle`` call for all).

    Departure: the paper's figure grows the tree from the best child of the node just
    expanded; we expand the best node of the whole frontier, which is that child
    whenever it is at least as good as every node still open (ties go deeper), and
    otherwise backtracks to an earlier, better branch."""
    parent = [[-1] for _ in range(n_problems)]
    depth = [[0] for _ in range(n_problems)]
    value = [[np.nan] for _ in range(n_problems)]
    final = [[False] for _ in range(n_problems)]
    steps: list[list[tuple[str, ...]]] = [[()] for _ in range(n_problems)]
    expanded = [[False] for _ in range(n_problems)]
    for _ in range(spec.expansions):
        picks = [(i, _frontier_best(parent[i], value[i], final[i], expanded[i], depth[i],
                                    spec.max_depth)) for i in range(n_problems)]
        picks = [(i, n) for i, n in picks if n is not None]
        if not picks:
            break
        proposals = propose([(i, steps[i][n]) for i, n in picks], spec.children)
        rollout: list[tuple[int, int]] = []
        for (i, n), sampled in zip(picks, proposals):
            expanded[i][n] = True
            for step in dict.fromkeys(s for s in sampled if s):
                path = steps[i][n] + (step,)
                done = outcome(i, path)
                parent[i].append(n)
                depth[i].append(depth[i][n] + 1)
                value[i].append(np.nan if done is None else float(done))
                final[i].append(done is not None)
                steps[i].append(path)
                expanded[i].append(False)
                if done is None:
                    rollout.append((i, len(parent[i]) - 1))
        if rollout:
            counts = np.asarray(oracle([(i, steps[i][n]) for i, n in rollout], k))
            for (i, n), c in zip(rollout, counts):
                value[i][n] = int(c) / k
    return [StepTree(parent=np.asarray(parent[i], np.int64),
                     depth=np.asarray(depth[i], np.int64),
                     value=np.asarray(value[i], np.float64),
                     final=np.asarray(final[i], bool),
                     steps=tuple(p[-1] if p else "" for p in steps[i]))
            for i in range(n_problems)]


def first_step(delimiter: str, text: str, is_final: Callable[[str], bool]) -> Optional[str]:
    """The first complete step of a sampled continuation: the text before the first
    delimiter, or the whole text when it is a final (answer) step; None otherwise (the
    sample stopped inside its first step)."""
    if delimiter in text:
        return text.split(delimiter, 1)[0] or None
    return text if text and is_final(text) else None


def tree_oracles(env: RecipeEnv, params, problems: Sequence[Problem], rng: jax.Array,
                 spec: RolloutSpec, spent: Optional[list] = None
                 ) -> tuple[Proposer, PathOracle, Outcome]:
    """The policy behind :func:`best_first_trees` on ``problems``: next steps are the
    first steps of continuations sampled from a node's prefix
    (:func:`rollouts_from_prefixes` with ``n`` = the children asked for), values come from
    :func:`prefix_oracle` (``spec.n`` rollouts per prefix), finished solutions are judged
    by the task. Each call draws fresh randomness; tokens generated go to ``spent``."""
    task, calls = env.task, [0]
    propose_rng, value_rng = jax.random.split(rng)

    def propose(queries, k):
        calls[0] += 1
        s = rollouts_from_prefixes(env, params, [(problems[i], list(p)) for i, p in queries],
                                   jax.random.fold_in(propose_rng, calls[0]),
                                   dataclasses.replace(spec, n=k))
        if spent is not None:
            spent.append(s.tokens_generated)
        return [[first_step(env.delimiter, t, task.is_final_step) for t in row]
                for row in s.texts]

    def oracle(queries, k):
        calls[0] += 1
        paths = [list(p) for _, p in queries]
        ask = prefix_oracle(env, params, [problems[i] for i, _ in queries], paths,
                            jax.random.fold_in(value_rng, calls[0]), spec, spent)
        return ask([(j, len(p)) for j, p in enumerate(paths)], k)

    def outcome(i, path):
        if not task.is_final_step(path[-1]):
            return None
        return task.verify(problems[i], env.delimiter.join(path))

    return propose, oracle, outcome


def tree_pairs(env: RecipeEnv, params, problems: Sequence[Problem], rng: jax.Array,
               tree: TreeSpec, rollouts: RolloutSpec, margin: float,
               spent: Optional[list] = None) -> list[dict]:
    """Tree-PLV's step-level pairs from a best-first tree per problem grown with ``params``
    (:func:`tree_oracles`, :func:`best_first_trees`; ``rollouts.n`` rollouts value each
    step): [{problem, prefix, chosen, rejected, chosen_final, rejected_final, gap}], one
    per pair of siblings whose values differ by more than ``margin``
    (:func:`reasonjax.train.tree_plv.sibling_pairs`). Tokens generated go to ``spent``."""
    from reasonjax.train.tree_plv import sibling_pairs

    propose, oracle, outcome = tree_oracles(env, params, problems, rng, rollouts, spent)
    trees = best_first_trees(len(problems), propose, oracle, outcome, tree, rollouts.n)
    records = []
    for problem, t in zip(problems, trees):
        for p, c, r in zip(*sibling_pairs(t.parent, t.value, margin)):
            records.append({"problem": problem, "prefix": path_steps(t, int(p)),
                            "chosen": t.steps[c], "rejected": t.steps[r],
                            "chosen_final": bool(t.final[c]),
                            "rejected_final": bool(t.final[r]),
                            "gap": float(t.value[c] - t.value[r])})
    return records


# ---------------------------------------------------------------------------------------
# Critical steps of negative responses (Setlur et al., 2024, "RL on Incorrect Synthetic
# Data Scales the Efficiency of LLM Math Reasoning by Eight-Fold"; the ``rl_incorrect``
# recipe): per-step advantages of a wrong solution from the Monte Carlo success rates of
# its consecutive prefixes (:func:`prefix_counts`), and its critical step: the first step
# whose advantage is strongly negative (Self-Explore's "first pit", Hwang et al., 2024,
# when the threshold is the whole value before the step).


def step_advantages(correct: Sequence[int], k: int) -> list[float]:
    """Per-step advantages of one solution of n steps from its :class:`PrefixCounts` row
    (``correct[m]`` right among ``k`` rollouts from prefix m = 0 .. n): with
    V(s_m) = correct[m] / k, step j (0-based) has A(s_j, a_j) = V(s_{j+1}) - V(s_j)
    (:func:`pav_targets` with the policy as its own prover). Returns A [n]."""
    values = [int(c) / k for c in correct]
    return pav_targets(values, values)[1]


def critical_step(advantages: Sequence[float], threshold: float) -> Optional[int]:
    """The first step j with A(s_j, a_j) <= -``threshold`` (the step where the success rate
    falls by at least ``threshold``), None when no step does. ``threshold`` > 0."""
    if not threshold > 0:
        raise ValueError(f"critical_step: threshold must be > 0, got {threshold}")
    return next((j for j, a in enumerate(advantages) if a <= -threshold), None)
