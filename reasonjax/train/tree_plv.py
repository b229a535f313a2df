"""Tree-PLV: a step-level preference loss on the value head, and the sibling pairs it trains on.

He et al., 2024, "Advancing Process Verification for Large Language Models via Tree-Based
Preference Learning" (EMNLP 2024). Our reading of the method:

- Tree: a best-first search over reasoning steps from the question (the root). Expanding
  a node samples k candidate next steps from the policy; each child step y_i is valued
  by look-ahead rollouts, R(y_i) = (1/N) sum_j 1[answer of completion P_j = gold], the
  fraction of N completions from prefix + y_i that reach the right answer; the search
  keeps expanding the highest-valued node until the answer (or a depth limit). The
  model-calling builder is :func:`reasonjax.recipes.process_labels.best_first_trees`.
- Pairs: siblings (children of one node, so they share their prefix) whose values differ
  by more than a margin become step-level preferences: (prefix, y+, y-) with
  R(y+) - R(y-) > margin (:func:`sibling_pairs`). Siblings closer than that are too
  alike under N rollouts to rank.
- Loss: the verifier r is a scalar head; it is trained as a ranking (Bradley-Terry)
  model, not with BCE on labels: L = -log sigmoid(r(x, prefix + y+) - r(x, prefix + y-))
  (:func:`ranking_loss`). The paper's margin lives in the pair selection; the loss has
  none. At test time the verifier ranks N sampled solutions (best-of-N).

Batch: the ``preference`` format of step-level pairs
(:func:`reasonjax.data.formatting.encode_step_preference`): both rows hold the prompt and
the shared prefix steps, ``loss_mask`` is 1 on the one-step continuation only. A row's
score is the value head at its last loss-masked token, the chosen / rejected step's
delimiter (or eos for a final step): the position where a PRM's value target sits in a
``value`` batch and where :class:`reasonjax.search.scoring.StepScorer` ``kind="value"``
reads a step's score during search. The raw head is the score; a scorer's ``sigmoid``
transform is monotone, so ``last`` / ``min`` aggregation ranks solutions as the raw
score does (the sigmoid is not a calibrated probability after ranking training). Only the
value head and the trunk get gradient; the LM head is untouched (as for the PRM losses).
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from reasonjax.models.config import ModelConfig
from reasonjax.train.logprobs import concat_pair, forward, masked_mean
from reasonjax.train.loss import Loss


def sibling_pairs(parent_N, value_N, margin: float) -> tuple[np.ndarray, np.ndarray,
                                                              np.ndarray]:
    """Step-level preference pairs of one tree of N nodes.

    parent_N [N] int: each node's parent (-1 at the root). value_N [N] float: each node's
    step value in [0, 1] (NaN where unvalued, e.g. the root; such nodes pair with
    nothing). Every two children a, b of one node with value[a] - value[b] > margin give
    the pair (prefix = their parent, chosen = a, rejected = b).

    Returns (prefix [P], chosen [P], rejected [P]) int arrays, ordered by prefix node,
    then chosen, then rejected index."""
    parent = np.asarray(parent_N, np.int64)
    value = np.asarray(value_N, np.float64)
    if parent.ndim != 1 or parent.shape != value.shape:
        raise ValueError(f"sibling_pairs: parent and value must be [N] alike, got "
                         f"{parent.shape} and {value.shape}")
    if margin < 0:
        raise ValueError(f"margin: must be >= 0, got {margin}")
    siblings_NN = (parent[:, None] == parent[None, :]) & (parent[:, None] >= 0)
    better_NN = (value[:, None] - value[None, :]) > margin  # NaN compares False
    chosen, rejected = np.nonzero(siblings_NN & better_NN)
    order = np.lexsort((rejected, chosen, parent[chosen]))
    chosen, rejected = chosen[order], rejected[order]
    return parent[chosen], chosen, rejected


def ranking_loss(score_chosen_B: jax.Array, score_rejected_B: jax.Array) -> jax.Array:
    """Per-pair Bradley-Terry ranking loss [B]: -log sigmoid(r_chosen - r_rejected)."""
    return -jax.nn.log_sigmoid(score_chosen_B - score_rejected_B)


def last_masked(mask_BT: jax.Array) -> jax.Array:
    """[B] index of the last position with mask > 0 (0 for an empty row)."""
    T = mask_BT.shape[-1]
    return jnp.max(jnp.where(mask_BT > 0, jnp.arange(T)[None, :], 0), axis=-1)


def step_scores(model_config: ModelConfig, params, batch: Mapping) -> tuple:
    """(chosen [B], rejected [B]) value-head scores at each row's step end (its last
    loss-masked token), and valid [B] (both rows have a masked step), one forward."""
    both = concat_pair(batch, "chosen", "rejected")
    values_BT = forward(model_config, params, both).values
    at = last_masked(both["loss_mask"])
    scores = jnp.take_along_axis(values_BT, at[:, None], axis=-1)[:, 0]
    has_step = jnp.sum(both["loss_mask"], axis=-1) > 0
    B = batch["chosen_tokens"].shape[0]
    return scores[:B], scores[B:], (has_step[:B] & has_step[B:]).astype(jnp.float32)


def tree_plv_loss(model_config: ModelConfig) -> Loss:
    """The Tree-PLV :class:`Loss` on ``preference`` batches of step-level pairs: the mean
    :func:`ranking_loss` over pairs whose rows both hold a step (a pair cut off before its
    step by truncation counts for nothing)."""

    def fn(params, batch, rng, ref_params=None):
        r_c, r_r, valid = step_scores(model_config, params, batch)
        loss = masked_mean(ranking_loss(r_c, r_r), valid)
        return loss, {"loss": loss, "score_chosen": masked_mean(r_c, valid),
                      "score_rejected": masked_mean(r_r, valid),
                      "score_margin": masked_mean(r_c - r_r, valid),
                      "ranking_accuracy": masked_mean((r_c > r_r).astype(jnp.float32), valid),
                      "pairs": jnp.sum(valid)}

    return Loss(name="tree_plv", kind="preference", fn=fn)
