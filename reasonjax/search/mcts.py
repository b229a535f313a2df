"""MCTS over reasoning steps on mctx (AlphaMath, MCTS-DPO).

The tree search itself is mctx's (``muzero_policy``: PUCT; ``gumbel_muzero_policy``:
Gumbel MuZero with sequential halving); this module is the environment adapter:

- a node's embedding (:class:`Node`) holds token ids, never a KV cache: the path of steps
  from the prompt, and the K candidate next steps sampled when the node was expanded;
- action k = the node's k-th candidate step. ``recurrent_fn`` appends it to the path,
  reads the path in one batched forward on top of the prompts' KV cache (prefilled once
  per search; value head at the last token), and samples the new node's K candidates
  from that cache;
- prior logits over the K candidates: uniform, or their (mean) log-probs (default mean,
  AlphaMath's normalised step likelihood);
- rewards are 0 and discounts 1; a node's value mixes its value head and a step scorer
  (:func:`node_value`)::

      v(s) = value_weight * head(s) + scorer_weight * score(s)       (non-terminal)
      v(s) = reward(s)              + scorer_weight * score(s)       (terminal, verifier)

  head: the policy's value head at the node's last token (``value_transform``, tanh for
  AlphaMath's [-1, 1] value); score: ``cfg.scorer`` on the node's last step (absent
  without a scorer). A node is terminal when its last step ended with EOS or it is
  ``max_steps`` deep; with a verifier (training) its reward replaces the value head term,
  without one (inference) the non-terminal formula applies. The defaults (value weight
  1, no scorer) are AlphaMath's value head alone. A terminal node's children are
  absorbing: they repeat its value, so Q(parent, terminal child) is exactly its value.

Stepwise self-evaluation (MCTS-DPO, Xie et al., 2024, "Monte Carlo Tree Search Boosts
Reasoning via Iterative Preference Learning"): our reading of the paper is a step reward
R(s_t) = O(s_t) + lambda * C(s_t), O the outcome validation (the final answer checked
against the reference, +1 / -1 at the terminal step, nothing before it) and C the
model's confidence that the step is correct: the probability it gives the "correct"
option when asked to judge its own step. The authors' code (YuxiXie/MCTS-DPO,
``mcts_rl/algorithms/mcts/mcts/search_config.py``) scores a step by that confidence
(summed probability of the "correct" answer tokens; the sigmoid of an external reward
model's score when one is given) and adds the +-1 correctness at terminal steps. Here
that is ``value_weight=0``, ``terminal_reward="verifier"``, ``scorer=StepScorer(kind=
"token_prob", template=..., good_ids=..., bad_ids=...)`` and ``scorer_weight`` = lambda.
R goes into the node value (rewards stay 0), so Q(s, a) averages it over the evaluated
nodes below a. Not reproduced: the code's depth discount of the confidence (divided by
max(depth - 3, 1)) and its self-evaluation prompt holding the reference solution as a
hint; the template here is fixed tokens fed after the node's path.

A scorer reads each node right after its prefill (prompt + path): ``token_prob`` on the
policy's own cache feeds the template on a throw-away copy (self-evaluation); a separate
scorer model (``scorer_config`` / ``scorer_params``: a PRM) prefills the same sequence
itself and gives its value head (``scorer.transform``) or ``token_prob``. The root is
scored like every node (its last token is the prompt's).

Acting: ``mcts`` runs a search from the current root, moves to the most visited child
(muzero) or the Gumbel policy's action, and repeats from that child (whose candidates and
value the tree already holds) until every problem reached a terminal node. Every move's
``mctx.Tree`` is returned, its ``embeddings`` being the nodes' token content, so recipes
read Q-values (value targets), sibling pairs (preference pairs) and paths.

mctx serves everything here; no tree code of our own.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Literal, Optional

import flax
import jax
import jax.numpy as jnp
import mctx
import numpy as np

from reasonjax.models.config import ModelConfig
from reasonjax.models.transformer import Transformer, unstack_layers
from reasonjax.search.compute import Compute
from reasonjax.search.sampler import (STOP_EOS, DecodeState, SamplingConfig, SearchError,
                                      StopTokens, check_positive, check_prompts,
                                      check_sampling, expand, generate, prefill)
from reasonjax.search.scoring import (StepScorer, check_token_ids, read_template,
                                      transform_value)

# verifier(problem_ids [B], paths [B, L] int32, lengths [B] int32) -> rewards [B] float32,
# called on the host (numpy) for terminal nodes.
Verifier = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


@dataclasses.dataclass(frozen=True)
class MCTSConfig:
    """MCTS settings.

    num_actions K: candidate steps sampled per node; num_simulations: per move;
    max_steps / step_tokens: depth limit and token budget per step; policy: mctx policy;
    prior: prior logits over candidates; value_transform: value head -> node value;
    dirichlet_fraction / dirichlet_alpha / pb_c_init / pb_c_base: muzero_policy's;
    max_num_considered_actions / gumbel_scale: gumbel_muzero_policy's; max_moves: moves
    played (None: until terminal, at most max_steps); terminal_reward: what values a
    terminal node, its value head (inference) or the verifier passed to :func:`mcts`
    (training: AlphaMath's +1 / -1 outcome reward). Node values (module doc,
    :func:`node_value`): value_weight: the value head's weight; scorer: a step scorer
    (``kind`` value or token_prob; ``keep_template`` and ``aggregate`` do not apply: each
    node is scored once, the tree backs values up); scorer_weight: its weight (lambda).
    """

    num_actions: int = 4
    num_simulations: int = 16
    max_steps: int = 8
    step_tokens: int = 64
    sampling: SamplingConfig = SamplingConfig()
    policy: Literal["muzero", "gumbel_muzero"] = "muzero"
    prior: Literal["uniform", "logprob", "mean_logprob"] = "mean_logprob"
    value_transform: Literal["tanh", "sigmoid", "identity"] = "tanh"
    dirichlet_fraction: float = 0.0
    dirichlet_alpha: float = 0.3
    pb_c_init: float = 1.25
    pb_c_base: float = 19652.0
    max_num_considered_actions: int = 16
    gumbel_scale: float = 1.0
    max_moves: Optional[int] = None
    terminal_reward: Literal["value", "verifier"] = "value"
    value_weight: float = 1.0
    scorer: Optional[StepScorer] = None
    scorer_weight: float = 1.0

    def __post_init__(self):
        for name in ("num_actions", "num_simulations", "max_steps", "step_tokens"):
            check_positive(getattr(self, name), name)
        if self.policy not in ("muzero", "gumbel_muzero"):
            raise SearchError(f"policy must be 'muzero' or 'gumbel_muzero', got {self.policy!r}")
        if self.prior not in ("uniform", "logprob", "mean_logprob"):
            raise SearchError(f"prior must be uniform, logprob or mean_logprob, got "
                              f"{self.prior!r}")
        StepScorer(transform=self.value_transform)  # validates the name
        if self.max_moves is not None:
            check_positive(self.max_moves, "max_moves")
        if self.terminal_reward not in ("value", "verifier"):
            raise SearchError(f"terminal_reward must be 'value' or 'verifier', got "
                              f"{self.terminal_reward!r}")
        for name in ("value_weight", "scorer_weight"):
            if not np.isfinite(getattr(self, name)):
                raise SearchError(f"{name} must be a finite number, got "
                                  f"{getattr(self, name)!r}")
        if self.scorer is None:
            if self.scorer_weight != 1.0:
                raise SearchError("scorer_weight weights a step scorer, but scorer is None; "
                                  "set scorer or drop scorer_weight")
        elif self.scorer.keep_template or self.scorer.aggregate != "last":
            raise SearchError("scorer: MCTS scores each node once and backs values up "
                              "through the tree; keep_template must be False and "
                              "aggregate 'last'")


@flax.struct.dataclass
class Node:
    """A node's token content (leading batch axes [B] or, in a tree, [B, num_nodes]).

    path:          [.., L] int32 steps from the prompt to this node (L = max_steps *
                   step_tokens), 0 after ``length``.
    length:        [..] int32; depth: [..] int32 number of steps.
    terminal:      [..] bool; value: [..] float32 the node's value (terminal: its reward).
    cand_tokens:   [.., K, T] int32 the K candidate next steps; cand_lengths: [.., K];
    cand_logprobs: [.., K] summed model log-probs; cand_eos: [.., K] ended with EOS.
    """

    path: jax.Array
    length: jax.Array
    depth: jax.Array
    terminal: jax.Array
    value: jax.Array
    cand_tokens: jax.Array
    cand_lengths: jax.Array
    cand_logprobs: jax.Array
    cand_eos: jax.Array


def prior_logits(node: Node, prior: str) -> jax.Array:
    """[B, K] prior logits over a node's candidates."""
    if prior == "uniform":
        return jnp.zeros(node.cand_logprobs.shape)
    if prior == "logprob":
        return node.cand_logprobs
    return node.cand_logprobs / jnp.maximum(node.cand_lengths, 1)


def node_value(head_B, score_B, reward_B, terminal_B, cfg: MCTSConfig) -> jax.Array:
    """[B] node values (module doc): ``head_B`` the transformed value head, ``score_B``
    the scorer's score (None without a scorer), ``reward_B`` the verifier's reward (None
    without a verifier), ``terminal_B`` [B] bool."""
    value = cfg.value_weight * head_B
    if reward_B is not None:
        value = jnp.where(terminal_B, reward_B, value)
    if score_B is not None:
        value = value + cfg.scorer_weight * score_B
    return value


def template_len(cfg: MCTSConfig) -> int:
    """Tokens of the scorer's template (0 without a token_prob scorer)."""
    return len(cfg.scorer.template) if cfg.scorer is not None and \
        cfg.scorer.kind == "token_prob" else 0


def scoring_passes(cfg: MCTSConfig, separate: bool) -> int:
    """Forward passes one node's scoring costs: the separate scorer's prefill, and the
    template read of a token_prob scorer."""
    if cfg.scorer is None:
        return 0
    return int(separate) + int(cfg.scorer.kind == "token_prob")


def score_nodes(policy: Transformer, params, state, seq_BS, mask_BS, cfg: MCTSConfig,
                scorer_config: Optional[ModelConfig], scorer_params):
    """The scorer's score of B nodes (prompt + path ``seq_BS``, ``mask_BS`` 1 = real
    token), given the policy's prefill ``state`` of that sequence: [B] scores and the
    Compute they cost. Without ``scorer_config`` the policy scores itself (value head, or
    the template on a throw-away copy of its cache); otherwise the scorer model prefills
    the sequence first. ``params`` / ``scorer_params`` unstack_layers-ed."""
    scorer = cfg.scorer
    B = seq_BS.shape[0]
    Tt = template_len(cfg)
    compute = Compute.zero()
    model, model_params = policy, params
    if scorer_config is not None:
        model, model_params = Transformer(scorer_config), scorer_params
        state = prefill(model, model_params, seq_BS, mask_BS, seq_BS.shape[1] + Tt)
        compute = compute.add(tokens_scored=jnp.sum(mask_BS), forward_passes=1)
    if scorer.kind == "value":
        return transform_value(state.value, scorer), compute
    score, _ = read_template(scorer, model, model_params, state.cache, state.next_pos,
                             jnp.ones((B,), bool))
    return score, compute.add(tokens_scored=B * Tt, forward_passes=1)


def append_tokens(path_BL, length_B, step_BT, step_len_B):
    """Writes each row's step at its current length: (path, new length)."""
    L, T = path_BL.shape[1], step_BT.shape[1]
    src = jnp.arange(L)[None, :] - length_B[:, None]
    inside = (src >= 0) & (src < step_len_B[:, None])
    path = jnp.where(inside, jnp.take_along_axis(step_BT, jnp.clip(src, 0, T - 1), 1), path_BL)
    return path, length_B + step_len_B


def _verify(verifier: Verifier, problem_ids, path, length):
    def host(ids, p, n):
        out = verifier(np.asarray(ids), np.asarray(p), np.asarray(n))
        return np.asarray(out, np.float32).reshape(-1)
    return jax.pure_callback(host, jax.ShapeDtypeStruct(length.shape, jnp.float32),
                             problem_ids, path, length)


def expand_nodes(config: ModelConfig, params, prompt_state: DecodeState, prompt_tokens,
                 prompt_mask, problem_ids, path, length, depth, terminal, rng, cfg: MCTSConfig,
                 stop: StopTokens, verifier: Optional[Verifier],
                 scorer_config: Optional[ModelConfig] = None, scorer_params=None):
    """Reads B nodes' paths in one forward on top of their prompts' prefill
    ``prompt_state`` (the node's value head at its last token), scores their last step
    when ``cfg.scorer`` is set (:func:`score_nodes`), mixes the node values
    (:func:`node_value`) and samples K candidate steps for the non-terminal ones.
    ``params`` (and ``scorer_params``) unstack_layers-ed.
    Returns (Node, Compute of this call)."""
    B, P = prompt_tokens.shape
    L, K, T = path.shape[1], cfg.num_actions, cfg.step_tokens
    model = Transformer(config)
    path_mask = jnp.arange(L)[None, :] < length[:, None]
    seq = jnp.concatenate([prompt_tokens, path], axis=1)
    mask = jnp.concatenate([prompt_mask.astype(bool), path_mask], axis=1)
    # Self-evaluation feeds its template where the candidates will go.
    own_template = template_len(cfg) if scorer_config is None else 0
    state = prefill(model, params, path, path_mask, P + L + max(T, own_template),
                    prefix=prompt_state)
    head = transform_value(state.value, StepScorer(transform=cfg.value_transform))
    score, compute = None, Compute.zero()
    if cfg.scorer is not None:
        score, compute = score_nodes(model, params, state, seq, mask, cfg, scorer_config,
                                     scorer_params)
    reward = None if verifier is None else _verify(verifier, problem_ids, path, length)
    value = node_value(head, score, reward, terminal, cfg)
    state = expand(state.replace(done=terminal), K)
    state, chunk, n_iter = generate(model, params, state, rng, cfg.sampling, stop, T, True)
    compute = compute.add(tokens_prefilled=jnp.sum(path_mask),
                          tokens_generated=jnp.sum(chunk.lengths),
                          forward_passes=1 + n_iter)
    node = Node(
        path=path, length=length, depth=depth, terminal=terminal, value=value,
        cand_tokens=chunk.tokens.reshape(B, K, T), cand_lengths=chunk.lengths.reshape(B, K),
        cand_logprobs=jnp.sum(chunk.logprobs, -1).reshape(B, K),
        cand_eos=(chunk.stop_reason == STOP_EOS).reshape(B, K))
    return node, compute


def child_of(node: Node, action: jax.Array, max_steps: int):
    """The path, length, depth and terminal flag of each node's ``action``-th child (a
    terminal node's children repeat it)."""
    take = lambda x: jnp.take_along_axis(x, action.reshape((-1,) + (1,) * (x.ndim - 1)),
                                         1)[:, 0]
    step, step_len, eos = take(node.cand_tokens), take(node.cand_lengths), take(node.cand_eos)
    step_len = jnp.where(node.terminal, 0, step_len)
    path, length = append_tokens(node.path, node.length, step, step_len)
    depth = node.depth + ~node.terminal
    terminal = node.terminal | eos | (depth >= max_steps)
    return path, length, depth, terminal


def make_recurrent_fn(transition, evaluate):
    """mctx ``recurrent_fn`` from an environment: ``transition(node, action) -> child
    state`` and ``evaluate(params, rng, child_state) -> (child Node, prior logits [B, K])``.
    Terminal nodes are absorbing (see module doc; their children get uniform priors);
    rewards 0, discounts 1.

    The LLM environment and the fixed-tree test environment share this adapter."""
    def recurrent_fn(params, rng, action, node):
        child, logits = evaluate(params, rng, transition(node, action))
        absorbing = node.terminal
        child = jax.tree.map(
            lambda c, n: jnp.where(absorbing.reshape((-1,) + (1,) * (c.ndim - 1)), n, c),
            child, node)
        logits = jnp.where(absorbing[:, None], 0.0, logits)
        out = mctx.RecurrentFnOutput(
            reward=jnp.zeros_like(child.value), discount=jnp.ones_like(child.value),
            prior_logits=logits, value=child.value)
        return out, child
    return recurrent_fn


def run_policy(cfg: MCTSConfig, params, rng, root: mctx.RootFnOutput, recurrent_fn):
    """One search from ``root`` with the configured mctx policy."""
    if cfg.policy == "muzero":
        return mctx.muzero_policy(
            params, rng, root, recurrent_fn, cfg.num_simulations,
            dirichlet_fraction=cfg.dirichlet_fraction, dirichlet_alpha=cfg.dirichlet_alpha,
            pb_c_init=cfg.pb_c_init, pb_c_base=cfg.pb_c_base)
    return mctx.gumbel_muzero_policy(
        params, rng, root, recurrent_fn, cfg.num_simulations,
        max_num_considered_actions=cfg.max_num_considered_actions,
        gumbel_scale=cfg.gumbel_scale)


def chosen_action(cfg: MCTSConfig, output) -> jax.Array:
    """[B] the move: most visited child (muzero) or the Gumbel policy's action."""
    if cfg.policy == "muzero":
        return jnp.argmax(output.action_weights, axis=-1).astype(jnp.int32)
    return output.action.astype(jnp.int32)


def _unstack(scorer_params):
    return None if scorer_params is None else unstack_layers(scorer_params)


@functools.partial(jax.jit, static_argnames=("config", "cfg", "verifier", "scorer_config"))
def root_program(params, prompt_tokens, prompt_mask, problem_ids, rng, stop, scorer_params,
                 *, config, cfg, verifier, scorer_config):
    """The prompts' prefill (every expansion continues it) and the root nodes' expansion:
    (prompt state, Node, compute)."""
    B, P = prompt_tokens.shape
    L = cfg.max_steps * cfg.step_tokens
    zeros = jnp.zeros((B,), jnp.int32)
    params = unstack_layers(params)
    prompt_state = prefill(Transformer(config), params, prompt_tokens, prompt_mask, P)
    node, compute = expand_nodes(config, params, prompt_state, prompt_tokens, prompt_mask,
                                 problem_ids, jnp.zeros((B, L), jnp.int32), zeros, zeros,
                                 jnp.zeros((B,), bool), rng, cfg, stop, verifier,
                                 scorer_config, _unstack(scorer_params))
    compute = compute.add(tokens_prefilled=jnp.sum(prompt_mask), forward_passes=1)
    return prompt_state, node, compute


@functools.partial(jax.jit, static_argnames=("config", "cfg", "verifier", "scorer_config"))
def move_program(params, prompt_state, prompt_tokens, prompt_mask, problem_ids, root_node, rng,
                 stop, scorer_params, *, config, cfg, verifier, scorer_config):
    """One search from ``root_node`` and the move it picks: (tree, action, child, compute)."""
    params = unstack_layers(params)
    scorer_params = _unstack(scorer_params)

    def evaluate(p, key, child_state):
        path, length, depth, terminal = child_state
        node, _ = expand_nodes(config, p, prompt_state, prompt_tokens, prompt_mask,
                               problem_ids, path, length, depth, terminal, key, cfg, stop,
                               verifier, scorer_config, scorer_params)
        return node, prior_logits(node, cfg.prior)

    transition = lambda node, action: child_of(node, action, cfg.max_steps)
    recurrent_fn = make_recurrent_fn(transition, evaluate)
    root = mctx.RootFnOutput(prior_logits=prior_logits(root_node, cfg.prior),
                             value=root_node.value, embedding=root_node)
    output = run_policy(cfg, params, rng, root, recurrent_fn)
    tree = output.search_tree
    action = chosen_action(cfg, output)
    # The chosen child is already in the tree (it has at least one visit).
    child_index = tree.children_index[jnp.arange(action.shape[0]), 0, action]
    child = jax.tree.map(lambda x: x[jnp.arange(action.shape[0]), child_index], tree.embeddings)
    child = jax.tree.map(lambda c, r: jnp.where(
        root_node.terminal.reshape((-1,) + (1,) * (c.ndim - 1)), r, c), child, root_node)
    return tree, action, child, _simulation_compute(tree, prompt_mask, cfg,
                                                    scorer_config is not None)


def _simulation_compute(tree: mctx.Tree, prompt_mask, cfg: MCTSConfig,
                        separate: bool) -> Compute:
    """What the simulations of one search spent. mctx adds node i + 1 to every problem's
    tree at simulation i, each by one expansion (the path read on top of the prompt's
    cached prefill, scored when there is a scorer, K candidates sampled), all B problems
    in one batched prefill, the scoring passes (:func:`scoring_passes`) and one decode
    loop that runs as long as the longest candidate. A separate scorer model reads the
    whole prompt + path."""
    emb = tree.embeddings
    expanded = (jnp.arange(tree.node_visits.shape[1])[None, :] > 0) & (tree.node_visits > 0)
    prompt = jnp.sum(prompt_mask, axis=1)[:, None]
    prefilled = jnp.sum(jnp.where(expanded, emb.length, 0))
    generated = jnp.sum(jnp.where(expanded[..., None], emb.cand_lengths, 0))
    scored = jnp.sum(expanded) * template_len(cfg) + (
        jnp.sum(jnp.where(expanded, prompt + emb.length, 0))
        if separate and cfg.scorer is not None else 0)
    decode_iters = jnp.max(jnp.where(expanded[..., None], emb.cand_lengths, 0), axis=(0, 2))
    passes = jnp.sum(jnp.where(jnp.any(expanded, 0),
                               1 + scoring_passes(cfg, separate) + decode_iters, 0))
    return Compute.zero().add(tokens_generated=generated, tokens_prefilled=prefilled,
                              tokens_scored=scored, forward_passes=passes)


@flax.struct.dataclass
class MCTSResult:
    """MCTS over B problems.

    path: [B, L] int32 the solution the moves built; length: [B]; n_steps: [B];
    finished: [B] reached a terminal node; value: [B] the final node's value (its reward
    when a verifier was given); actions: [moves, B] the move played from each root;
    trees: one mctx.Tree per move (batch B; ``embeddings`` are :class:`Node`s);
    compute: what the search spent.
    """

    path: jax.Array
    length: jax.Array
    n_steps: jax.Array
    finished: jax.Array
    value: jax.Array
    actions: jax.Array
    trees: list = flax.struct.field(pytree_node=False)
    compute: Compute = None


def check_scorer(config: ModelConfig, cfg: MCTSConfig, prompt_len: int,
                 scorer_config: Optional[ModelConfig], scorer_params) -> None:
    """Host-side validation of the node scorer before any compile."""
    if scorer_config is None:
        if scorer_params is not None:
            raise SearchError("scorer_params given without scorer_config; pass both (a "
                              "separate scorer model) or neither")
    else:
        if scorer_params is None:
            raise SearchError("a separate scorer model needs scorer_params")
        if cfg.scorer is None:
            raise SearchError("a separate scorer model is given but MCTSConfig.scorer is "
                              "None; set scorer (kind 'value' or 'token_prob') and "
                              "scorer_weight")
        need = prompt_len + cfg.max_steps * cfg.step_tokens + template_len(cfg)
        if need > scorer_config.max_seq_len:
            raise SearchError(f"the scorer model needs {need} positions (prompt + steps + "
                              f"template) but its max_seq_len is {scorer_config.max_seq_len}")
    if cfg.scorer is not None:
        check_token_ids(cfg.scorer, (scorer_config or config).vocab_size)


def mcts(config: ModelConfig, params, prompt_tokens, prompt_mask, rng: jax.Array,
         cfg: MCTSConfig, stop: StopTokens, scorer_config: Optional[ModelConfig] = None,
         scorer_params=None, *, verifier: Optional[Verifier] = None,
         problem_ids=None) -> MCTSResult:
    """MCTS over B problems (prompts [B, P], mask 1 = real token); see the module doc.

    ``scorer_config`` / ``scorer_params``: a separate scorer model for ``cfg.scorer``
    (default: the policy scores its own nodes). ``verifier(problem_ids [B], paths [B, L],
    lengths [B]) -> rewards [B]`` (a host function on numpy arrays) scores terminal nodes
    when ``cfg.terminal_reward`` is ``verifier`` (training); otherwise the value head does
    (inference) and ``verifier`` must be None. ``problem_ids`` [B] (default 0..B-1) tell
    it which problems the rows are, so one verifier object serves every batch without
    recompiling."""
    if scorer_config is not None and not isinstance(scorer_config, ModelConfig):
        raise SearchError(f"scorer_config must be a ModelConfig, got "
                          f"{type(scorer_config).__name__}; the verifier is keyword-only "
                          f"(verifier=...)")
    if (verifier is not None) != (cfg.terminal_reward == "verifier"):
        raise SearchError(f"MCTSConfig.terminal_reward={cfg.terminal_reward!r} "
                          + ("needs a verifier" if verifier is None else
                             "takes no verifier; set terminal_reward='verifier' to use it"))
    own_template = template_len(cfg) if scorer_config is None else 0
    check_prompts(config, prompt_tokens, prompt_mask,
                  cfg.max_steps * cfg.step_tokens + own_template)
    check_scorer(config, cfg, np.shape(prompt_tokens)[1], scorer_config, scorer_params)
    check_sampling(config, cfg.sampling)
    if stop.completes.shape[-1] != config.vocab_size:
        raise SearchError(f"stop tables cover {stop.completes.shape[-1]} ids, the model has "
                          f"{config.vocab_size}; build them with stop_tokens(vocab_size)")
    if cfg.policy == "gumbel_muzero" and cfg.max_num_considered_actions < 1:
        raise SearchError("max_num_considered_actions must be >= 1")
    prompt_tokens = jnp.asarray(prompt_tokens, jnp.int32)
    prompt_mask = jnp.asarray(prompt_mask)
    B = prompt_tokens.shape[0]
    problem_ids = jnp.arange(B, dtype=jnp.int32) if problem_ids is None else jnp.asarray(
        problem_ids, jnp.int32)
    if problem_ids.shape != (B,):
        raise SearchError(f"problem_ids must have shape ({B},), got {problem_ids.shape}")
    key_root, key_moves = jax.random.split(rng)
    statics = dict(config=config, cfg=cfg, verifier=verifier, scorer_config=scorer_config)
    prompt_state, node, compute = root_program(params, prompt_tokens, prompt_mask, problem_ids,
                                               key_root, stop, scorer_params, **statics)
    trees, actions = [], []
    for move in range(cfg.max_moves or cfg.max_steps):
        if bool(jnp.all(node.terminal)):
            break
        tree, action, node, comp = move_program(
            params, prompt_state, prompt_tokens, prompt_mask, problem_ids, node,
            jax.random.fold_in(key_moves, move), stop, scorer_params, **statics)
        trees.append(tree)
        actions.append(action)
        compute = compute + comp
    actions = jnp.stack(actions) if actions else jnp.zeros((0, B), jnp.int32)
    return MCTSResult(path=node.path, length=node.length, n_steps=node.depth,
                      finished=node.terminal, value=node.value, actions=actions, trees=trees,
                      compute=compute)


def tree_paths(tree: mctx.Tree) -> tuple[jax.Array, jax.Array]:
    """Every node's path: tokens [B, num_nodes, L], lengths [B, num_nodes]."""
    return tree.embeddings.path, tree.embeddings.length


def value_targets(tree: mctx.Tree):
    """Value targets (AlphaMath): for every visited node its search value, the mean of the
    values backed up through it. Returns (targets [B, num_nodes], visited mask)."""
    return tree.node_values, tree.node_visits > 0


def sibling_pairs(tree: mctx.Tree, min_visits: int = 1):
    """Step-level preference pairs (MCTS-DPO): for every node, its visited children with
    the highest and lowest Q. Returns (chosen action [B, N], rejected action [B, N], valid
    [B, N]: at least two children with ``min_visits`` visits and different Q). The shared
    prefix is the node's path; the steps are ``embeddings.cand_tokens[.., action, :]``."""
    q = tree.children_values  # rewards are 0 and discounts 1: Q(s, a) = V(child)
    ok = tree.children_visits >= min_visits
    hi = jnp.argmax(jnp.where(ok, q, -jnp.inf), axis=-1)
    lo = jnp.argmin(jnp.where(ok, q, jnp.inf), axis=-1)
    q_hi = jnp.take_along_axis(q, hi[..., None], -1)[..., 0]
    q_lo = jnp.take_along_axis(q, lo[..., None], -1)[..., 0]
    valid = (jnp.sum(ok, axis=-1) >= 2) & (q_hi > q_lo)
    return hi.astype(jnp.int32), lo.astype(jnp.int32), valid
