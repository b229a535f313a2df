"""What a search spent, so methods can be compared at equal compute.

Every method returns a :class:`Compute` record next to its answers. Records add up
(``a + b``), so a run over many batches reports one total.
"""

from __future__ import annotations

import dataclasses

import flax
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class Compute:
    """Model work of one search call, summed over the batch of problems.

    tokens_generated: [] int32 tokens sampled by the policy, including candidates that
      the search later discarded (the policy paid for them).
    tokens_prefilled: [] int32 context tokens run through the policy without being
      sampled: prompts, and MCTS node paths re-read at each expansion.
    tokens_scored:    [] int32 tokens run through a scorer only: score templates, and the
      prompts and steps a separate scorer model reads.
    forward_passes:   [] int32 batched model calls (each decode step, prefill or scoring
      call counts once, whatever its batch size): the sequential depth of the search.
    """

    tokens_generated: jax.Array
    tokens_prefilled: jax.Array
    tokens_scored: jax.Array
    forward_passes: jax.Array

    @classmethod
    def zero(cls) -> "Compute":
        z = jnp.zeros((), jnp.int32)
        return cls(z, z, z, z)

    def add(self, tokens_generated=0, tokens_prefilled=0, tokens_scored=0,
            forward_passes=0) -> "Compute":
        return Compute(
            self.tokens_generated + jnp.asarray(tokens_generated, jnp.int32),
            self.tokens_prefilled + jnp.asarray(tokens_prefilled, jnp.int32),
            self.tokens_scored + jnp.asarray(tokens_scored, jnp.int32),
            self.forward_passes + jnp.asarray(forward_passes, jnp.int32))

    def __add__(self, other: "Compute") -> "Compute":
        return jax.tree.map(lambda a, b: a + b, self, other)

    def to_dict(self) -> dict:
        return {f.name: int(getattr(self, f.name)) for f in dataclasses.fields(self)}
