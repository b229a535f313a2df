"""MCTS over reasoning steps on mctx (AlphaMath, MCTS-DPO).

The tree search itself is mctx's (``muzero_policy``: PUCT; ``gumbel_muzero_policy``:
Gumbel MuZero with sequential halving); this module is the environment adapter:

- a node's embedding (:class:`Node`) holds token ids, never a KV cache: the path of steps
  from the prompt, and the K candidate next steps sampled when the node was expanded;
- action k = the node's k-th candidate step. ``recurrent_fn`` appends it to the path;
  the new node's value head is the one its parent's decode read after the step's last
  token. Unless the node is terminal, it reads the path in one batched forward on top of
  the prompts' KV cache (prefilled once per search) and samples its K candidates from
  that cache. Only the rows that need this pass are read, ``rows_per_pass`` at a time,
  shallowest first, each pass cut to the depth of its deepest path (a simulation whose
  new nodes are all terminal costs no forward), and each row samples with its own key,
  so a problem's tree does not depend on which problems share its batch or pass;
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
from jax import lax

from reasonjax.models.config import ModelConfig
from reasonjax.models.transformer import Transformer, grow_cache, unstack_layers
from reasonjax.search.compute import Compute
from reasonjax.search.sampler import (STOP_EOS, DecodeState, SamplingConfig, SearchError,
                                      StopTokens, check_positive, check_step_prompts,
                                      check_sampling, expand, generate, prefill, take)
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
    max_num_considered_actions / gumbel_scale: gumbel_muzero_policy's; rows_per_pass:
    rows an expansion reads in one batched forward (None: :func:`with_rows_per_pass`'s
    default for the platform; the trees are the same for any value); max_moves: moves
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
    rows_per_pass: Optional[int] = None
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
        for name in ("max_moves", "rows_per_pass"):
            if getattr(self, name) is not None:
                check_positive(getattr(self, name), name)
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
    cand_logprobs: [.., K] summed model log-probs; cand_eos: [.., K] ended with EOS;
    cand_heads:    [.., K] float32 raw value head after each candidate's last token (the
                   value head of the child it leads to).
    Candidates are zeros for a terminal node.
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
    cand_heads: jax.Array


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
    return 0 if cfg.scorer is None else cfg.scorer.template_len


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


def with_rows_per_pass(cfg: MCTSConfig, batch: int, platform: str) -> MCTSConfig:
    """``cfg`` with ``rows_per_pass`` set when it is None: on CPU a quarter of the batch
    (a pass costs about its rows there; fastest of B, B/2, B/4, B/8 on the benchmark's
    search), elsewhere the whole batch (an accelerator reads idle rows almost for free,
    and gathering rows across a sharded batch would move them between devices)."""
    if cfg.rows_per_pass is not None:
        return cfg
    return dataclasses.replace(cfg, rows_per_pass=max(1, -(-batch // 4))
                               if platform == "cpu" else batch)


def placement_platform(x) -> str:
    """The platform of the devices array ``x`` (or an abstract one with a sharding) is
    placed on; JAX's default backend when it has no placement."""
    sharding = getattr(x, "sharding", None)
    if sharding is None:
        return jax.default_backend()
    return next(iter(sharding.device_set)).platform


def rows_per_pass(cfg: MCTSConfig, batch: int, root: bool = False) -> int:
    """Rows one expansion pass reads: ``cfg.rows_per_pass`` (None: the whole batch), at
    most the batch; the roots' expansion reads the whole batch (every root needs its
    candidates)."""
    return batch if root else min(batch, cfg.rows_per_pass or batch)


def expansion_rows(terminal, absorbed, cfg: MCTSConfig):
    """[..] bool: the nodes an expansion must read: not absorbed (a terminal node's child
    repeats it), and not terminal unless a scorer scores every node."""
    return ~absorbed & (~terminal if cfg.scorer is None else True)


def depth_buckets(max_steps: int) -> tuple[int, ...]:
    """The path depths an expansion pass is compiled for: 1, 2, 4, .. and ``max_steps``. A
    pass whose deepest node is d steps deep runs the smallest bucket >= d, prefilling
    bucket x ``step_tokens`` path tokens and decoding on a cache that size (not the
    whole ``max_steps x step_tokens``)."""
    return tuple(sorted({min(1 << i, max_steps) for i in range(max_steps.bit_length() + 1)}))


def pass_order(work, depth):
    """[B] the rows in the order the passes read them: the working rows, shallowest first
    (ties by row), then the others; a pass then holds paths of similar depth."""
    return jnp.argsort(jnp.where(work, depth, jnp.iinfo(jnp.int32).max), stable=True)


def expand_nodes(config: ModelConfig, params, prompt_state: DecodeState, prompt_tokens,
                 prompt_mask, problem_ids, path, length, depth, terminal, absorbed, head, rng,
                 cfg: MCTSConfig, stop: StopTokens, verifier: Optional[Verifier],
                 scorer_config: Optional[ModelConfig] = None, scorer_params=None, *,
                 root: bool = False):
    """Builds B nodes from their paths (``head`` [B]: the raw value head after each path's
    last token, ``absorbed`` [B]: children of terminal nodes, which the caller replaces).
    The rows :func:`expansion_rows` selects are read ``rows_per_pass`` at a time,
    shallowest first (:func:`pass_order`): each pass prefills their paths, cut to its
    depth bucket (:func:`depth_buckets`), on top of the prompts' prefill ``prompt_state``
    (``root``: the paths are empty, the prompt state is read as it is, in one pass),
    scores them when ``cfg.scorer`` is set (:func:`score_nodes`) and samples K candidate
    steps for the non-terminal ones, each row with its own key. Node values mix the head,
    the scorer and the verifier (:func:`node_value`). ``params`` (and ``scorer_params``)
    unstack_layers-ed. Returns the Node."""
    B, P = prompt_tokens.shape
    L, K, T = path.shape[1], cfg.num_actions, cfg.step_tokens
    R = rows_per_pass(cfg, B, root)
    model = Transformer(config)
    path_mask = jnp.arange(L)[None, :] < length[:, None]
    seq = jnp.concatenate([prompt_tokens, path], axis=1)
    mask = jnp.concatenate([prompt_mask.astype(bool), path_mask], axis=1)
    # Self-evaluation feeds its template where the candidates will go.
    own_template = template_len(cfg) if scorer_config is None else 0
    work = expansion_rows(terminal, absorbed, cfg)
    if R < B:  # the rows to read, in order, then B (no row) up to the end of the last pass
        order = pass_order(work, depth)
        order = jnp.concatenate([jnp.where(work[order], order, B), jnp.full((R,), B)])
    n_pass = (jnp.sum(work) + R - 1) // R
    zeros = lambda shape, dtype=jnp.float32: jnp.zeros((B,) + shape, dtype)
    init = dict(tokens=zeros((K, T), jnp.int32), lengths=zeros((K,), jnp.int32),
                logprobs=zeros((K,)), eos=zeros((K,), bool), heads=zeros((K,)),
                score=zeros(()))
    buckets = (0,) if root else depth_buckets(cfg.max_steps)

    def read(steps, rows, idx, state):
        """Prefills ``rows``' paths (at most ``steps`` deep), scores them and samples
        their candidates."""
        Lb = steps * T
        cache_len = P + Lb + max(T, own_template)
        if root:
            state = state.replace(cache=grow_cache(state.cache,
                                                   cache_len - state.cache.max_len))
        else:
            state = prefill(model, params, path[rows, :Lb], path_mask[rows, :Lb],
                            cache_len, prefix=state)
        score = jnp.zeros((R,))
        if cfg.scorer is not None:
            score, _ = score_nodes(model, params, state, seq[rows, :P + Lb],
                                   mask[rows, :P + Lb], cfg, scorer_config, scorer_params)
        state = expand(state.replace(done=terminal[rows] | (idx == B)), K)
        keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(
            rng, (rows[:, None] * K + jnp.arange(K)[None, :]).reshape(-1))
        _, chunk, _ = generate(model, params, state, keys, cfg.sampling, stop, T, True)
        last = jnp.maximum(chunk.lengths - 1, 0)[:, None]
        return dict(tokens=chunk.tokens, lengths=chunk.lengths,
                    logprobs=jnp.sum(chunk.logprobs, -1), eos=chunk.stop_reason == STOP_EOS,
                    heads=jnp.take_along_axis(chunk.values, last, 1)[:, 0], score=score)

    def one_pass(i, out):
        if R == B:  # one pass over the batch in place: no gather, no scatter
            idx, rows = jnp.where(work, jnp.arange(B), B), jnp.arange(B)
            state = prompt_state
        else:
            idx = lax.dynamic_slice(order, (i * R,), (R,))
            rows = jnp.minimum(idx, B - 1)
            state = take(prompt_state, rows)
        deepest = jnp.max(jnp.where(idx < B, depth[rows], 0))
        bucket = jnp.searchsorted(jnp.asarray(buckets), deepest)
        new = lax.switch(bucket, [functools.partial(read, steps) for steps in buckets],
                         rows, idx, state)
        new = {name: x.reshape((R,) + out[name].shape[1:]) for name, x in new.items()}
        if R == B:
            return {name: jnp.where(work.reshape((B,) + (1,) * (x.ndim - 1)), x, out[name])
                    for name, x in new.items()}
        return {name: out[name].at[idx].set(x, mode="drop")  # idx B: dropped
                for name, x in new.items()}

    out = lax.fori_loop(0, n_pass, one_pass, init)
    head = transform_value(head, StepScorer(transform=cfg.value_transform))
    score = out["score"] if cfg.scorer is not None else None
    reward = None if verifier is None else _verify(verifier, problem_ids, path, length)
    return Node(path=path, length=length, depth=depth, terminal=terminal,
                value=node_value(head, score, reward, terminal, cfg),
                cand_tokens=out["tokens"], cand_lengths=out["lengths"],
                cand_logprobs=out["logprobs"], cand_eos=out["eos"], cand_heads=out["heads"])


def child_of(node: Node, action: jax.Array, max_steps: int):
    """The path, length, depth, terminal and absorbed flags and raw value head of each
    node's ``action``-th child (a terminal node's children repeat it: absorbed)."""
    take_k = lambda x: jnp.take_along_axis(
        x, action.reshape((-1,) + (1,) * (x.ndim - 1)), 1)[:, 0]
    step, step_len, eos = take_k(node.cand_tokens), take_k(node.cand_lengths), \
        take_k(node.cand_eos)
    step_len = jnp.where(node.terminal, 0, step_len)
    path, length = append_tokens(node.path, node.length, step, step_len)
    depth = node.depth + ~node.terminal
    terminal = node.terminal | eos | (depth >= max_steps)
    return path, length, depth, terminal, node.terminal, take_k(node.cand_heads)


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
    zeros, no = jnp.zeros((B,), jnp.int32), jnp.zeros((B,), bool)
    params = unstack_layers(params)
    prompt_state = prefill(Transformer(config), params, prompt_tokens, prompt_mask, P)
    node = expand_nodes(config, params, prompt_state, prompt_tokens, prompt_mask, problem_ids,
                        jnp.zeros((B, L), jnp.int32), zeros, zeros, no, no,
                        prompt_state.value, rng, cfg, stop, verifier, scorer_config,
                        _unstack(scorer_params), root=True)
    compute = expansion_compute(node, expansion_rows(no, no, cfg), prompt_mask, cfg,
                                scorer_config is not None, root=True)
    return prompt_state, node, compute.add(tokens_prefilled=jnp.sum(prompt_mask),
                                           forward_passes=1)


@functools.partial(jax.jit, static_argnames=("config", "cfg", "verifier", "scorer_config"))
def move_program(params, prompt_state, prompt_tokens, prompt_mask, problem_ids, root_node, rng,
                 stop, scorer_params, *, config, cfg, verifier, scorer_config):
    """One search from ``root_node`` and the move it picks: (tree, action, child, compute)."""
    params = unstack_layers(params)
    scorer_params = _unstack(scorer_params)

    def evaluate(p, key, child_state):
        node = expand_nodes(config, p, prompt_state, prompt_tokens, prompt_mask, problem_ids,
                            *child_state, key, cfg, stop, verifier, scorer_config,
                            scorer_params)
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


def expansion_compute(node: Node, work, prompt_mask, cfg: MCTSConfig, separate: bool,
                      root: bool = False) -> Compute:
    """What one :func:`expand_nodes` call that built ``node`` (batch B) spent, ``work`` [B]
    the rows that needed a forward: ceil(|work| / rows_per_pass) passes in
    :func:`pass_order`, each a prefill of its rows' paths on top of the prompts' (none for
    the roots), the scoring passes (:func:`scoring_passes`) and a decode loop as long as
    its longest candidate. Tokens are the real ones (not a bucket's padding). A pass over
    the whole batch reads every row; a separate scorer model reads the whole prompt +
    path."""
    B = work.shape[0]
    R = rows_per_pass(cfg, B, root)
    n_work = jnp.sum(work)
    n_pass = (n_work + R - 1) // R
    read = work if R < B else jnp.broadcast_to(n_work > 0, (B,))
    longest = jnp.where(work, jnp.max(node.cand_lengths, axis=-1), 0)
    rank = jnp.zeros((B,), jnp.int32).at[pass_order(work, node.depth)].set(jnp.arange(B))
    pass_of = jnp.where(work, rank // R, B)  # B: dropped
    decode_iters = jnp.sum(jnp.maximum(
        jax.ops.segment_max(longest, pass_of, num_segments=-(-B // R)), 0))
    scored = jnp.sum(read) * template_len(cfg)
    if separate and cfg.scorer is not None:
        scored += jnp.sum(jnp.where(read, jnp.sum(prompt_mask, axis=1) + node.length, 0))
    passes = n_pass * (int(not root) + scoring_passes(cfg, separate)) + decode_iters
    return Compute.zero().add(
        tokens_generated=jnp.sum(jnp.where(work[:, None], node.cand_lengths, 0)),
        tokens_prefilled=0 if root else jnp.sum(jnp.where(read, node.length, 0)),
        tokens_scored=scored, forward_passes=passes)


def _simulation_compute(tree: mctx.Tree, prompt_mask, cfg: MCTSConfig,
                        separate: bool) -> Compute:
    """What the simulations of one search spent: mctx adds node i + 1 to every problem's
    tree at simulation i, by one :func:`expand_nodes` call over the batch."""
    emb = tree.embeddings
    parent_terminal = jnp.take_along_axis(emb.terminal, jnp.maximum(tree.parents, 0), 1)
    work = expansion_rows(emb.terminal, parent_terminal, cfg) & (tree.node_visits > 0)
    by_node = lambda x: jnp.moveaxis(x[:, 1:], 1, 0)  # [B, N, ..] -> [N - 1, B, ..]
    per_simulation = jax.vmap(
        lambda node, w: expansion_compute(node, w, prompt_mask, cfg, separate))(
        jax.tree.map(by_node, emb), by_node(work))
    return jax.tree.map(jnp.sum, per_simulation)


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
    check_step_prompts(config, prompt_tokens, prompt_mask, cfg.max_steps, cfg.step_tokens,
                       own_template)
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
    cfg = with_rows_per_pass(cfg, B, placement_platform(prompt_mask))
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
