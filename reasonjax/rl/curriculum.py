"""Self-evolving curriculum (Chen et al., 2025, "Self-Evolving Curriculum for LLM
Reasoning"): which problems an RL iteration trains on, chosen by a non-stationary
multi-armed bandit over problem categories (difficulty levels).

Each category c (an arm) holds a value Q(c), 0 at the start. An iteration draws the
category of each of its prompts from the Boltzmann distribution softmax(Q / temperature)
and a problem of that category uniformly; after sampling, the reward of every category
drawn is the mean absolute advantage of its rollouts (the policy gradient's "learning
gain": 0 for problems always or never solved), and TD(0) moves its value towards it:
Q(c) <- lr * r(c) + (1 - lr) * Q(c). Categories not drawn keep their value.

A problem's category is the JSON of ``problem.meta`` at ``CurriculumConfig.key`` (a dotted
path; the default ``knobs`` groups generated problems by the task settings that made them,
e.g. arithmetic's easy / medium / hard; a local file's ``level`` field works the same).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Sequence

import numpy as np

from reasonjax.config import ConfigError, check_fields
from reasonjax.data.task import Problem
from reasonjax.train import rl

# The stream of iteration i's curriculum draws: default_rng([seed, i, STREAM]), apart from
# problem_order's [seed, epoch] and [seed, epoch, k] streams (k: dynamic sampling's refills).
STREAM = 7919


@dataclasses.dataclass(frozen=True)
class CurriculumConfig:
    """key: dotted path into ``problem.meta`` naming a problem's category. temperature:
    of the Boltzmann distribution over the categories' values. lr: TD(0) step size
    (the paper's alpha)."""

    key: str = "knobs"
    temperature: float = 1.0
    lr: float = 0.5

    def __post_init__(self):
        check_fields(self, temperature="> 0")
        if not 0 < self.lr <= 1:
            raise ConfigError(f"lr must lie in (0, 1], got {self.lr}")
        if not self.key:
            raise ConfigError("key must name a field of problem.meta, e.g. 'knobs' or 'level'")


def _lookup(meta: Any, key: str) -> Any:
    for part in key.split("."):
        if not isinstance(meta, dict) or part not in meta:
            raise KeyError(part)
        meta = meta[part]
    return meta


def categories(problems: Sequence[Problem], key: str) -> tuple[np.ndarray, list[str]]:
    """(category of each problem [N] int32, the categories' labels in order of first
    appearance)."""
    labels: dict[str, int] = {}
    out = np.zeros((len(problems),), np.int32)
    for i, p in enumerate(problems):
        try:
            value = _lookup(dict(p.meta), key)
        except KeyError:
            raise ConfigError(f"curriculum.key={key!r}: problem {i} has no meta field "
                              f"{key!r} (its meta keys: {sorted(p.meta)}); set "
                              "rl.curriculum.key to a field every problem has") from None
        out[i] = labels.setdefault(json.dumps(value, sort_keys=True), len(labels))
    return out, list(labels)


def probabilities(q_C: np.ndarray, temperature: float) -> np.ndarray:
    """[C] softmax(Q / temperature)."""
    z = np.asarray(q_C, np.float64) / temperature
    e = np.exp(z - z.max())
    return e / e.sum()


def draw(category_N: np.ndarray, q_C: np.ndarray, temperature: float, n: int, seed: int,
         iteration: int) -> list[int]:
    """Indices of iteration ``iteration``'s ``n`` problems: each prompt's category from
    softmax(Q / temperature), then a problem of it uniformly; depends only on (seed,
    iteration, Q)."""
    rng = np.random.default_rng([seed, iteration, STREAM])
    chosen = rng.choice(len(q_C), size=n, p=probabilities(q_C, temperature))
    members = [np.flatnonzero(category_N == c) for c in range(len(q_C))]
    return [int(members[c][rng.integers(len(members[c]))]) for c in chosen]


def group_abs_advantages(rewards_R: np.ndarray, group_size: int, baseline: rl.Baseline,
                         scale: rl.Scale) -> np.ndarray:
    """[G] each prompt group's mean absolute outcome advantage (rows grouped consecutively;
    :func:`reasonjax.train.rl.outcome_advantages` with the algorithm's baseline and
    scale)."""
    adv = np.asarray(rl.outcome_advantages(np.asarray(rewards_R, np.float32), group_size,
                                           baseline, "none" if scale == "batch" else scale))
    return np.abs(adv).reshape(-1, group_size).mean(axis=1)


def rewards(abs_advantage_G: np.ndarray, category_G: np.ndarray, n_categories: int
            ) -> tuple[np.ndarray, np.ndarray]:
    """(reward [C]: mean over the groups of each category of their mean absolute
    advantage, drawn [C] bool: the category had a group this iteration). Inputs: one
    entry per prompt group [G]."""
    total = np.bincount(category_G, weights=abs_advantage_G, minlength=n_categories)
    count = np.bincount(category_G, minlength=n_categories)
    return np.where(count > 0, total / np.maximum(count, 1), 0.0), count > 0


def update(q_C: np.ndarray, reward_C: np.ndarray, drawn_C: np.ndarray, lr: float) -> np.ndarray:
    """TD(0): Q(c) <- lr * r(c) + (1 - lr) * Q(c) for the categories drawn. [C]"""
    return np.where(drawn_C, lr * reward_C + (1 - lr) * q_C, q_C)
