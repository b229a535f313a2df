"""What a training objective is: a pure loss function plus the batch it consumes.

Every loss in :mod:`reasonjax.train` is built as a :class:`Loss`; the step factory
(:mod:`reasonjax.train.step`) checks a batch and the reference model against it before
anything is compiled, so a wrong batch or a missing reference fails with a message that
names the keys and the fix.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

from reasonjax.data.formats import BatchError, check_batch

# fn(params, batch, rng, ref_params) -> (scalar loss, {name: scalar metric})
LossFn = Callable[[Any, Mapping, Any, Any], tuple[Any, dict]]


class ReferenceError(ValueError):
    """A loss needs a reference model and got neither reference params nor precomputed
    reference log-probs."""


@dataclasses.dataclass(frozen=True)
class Loss:
    """A training objective.

    name: what it is (shown in metrics and errors).
    kind: the batch kind it consumes (``reasonjax.data.formats.KINDS``).
    fn: ``fn(params, batch, rng, ref_params) -> (loss, metrics)``, pure and jittable;
        ``ref_params`` is None when the reference comes from the batch (or is not needed).
    needs_reference: True when the loss compares against a frozen reference policy.
    reference_keys: batch keys that carry precomputed reference log-probs; when all are in
        the batch, no reference params are needed.
    extra_keys: optional keys of ``kind`` that this configuration of the loss requires
        (e.g. ``returns`` for a PPO critic).
    """

    name: str
    kind: str
    fn: LossFn
    needs_reference: bool = False
    reference_keys: tuple[str, ...] = ()
    extra_keys: tuple[str, ...] = ()

    def check(self, batch: Mapping, has_ref_params: bool) -> None:
        """Raises BatchError / ReferenceError when ``batch`` cannot feed this loss."""
        check_batch(batch, self.kind)
        missing = [k for k in self.extra_keys if k not in batch]
        if missing:
            raise BatchError(f"{self.name} needs batch key(s) {missing} (optional in a "
                             f"{self.kind} batch, required by this loss); it has "
                             f"{sorted(batch)}")
        if self.needs_reference and not has_ref_params and not self.uses_batch_reference(batch):
            keys = " and ".join(self.reference_keys)
            raise ReferenceError(
                f"{self.name} needs a reference model: pass ref_params (the frozen reference, "
                f"e.g. the SFT params) to the train step, or precompute {keys} into the batch "
                "(reasonjax.train.preference.add_reference_logps)")

    def uses_batch_reference(self, batch: Mapping) -> bool:
        return bool(self.reference_keys) and all(k in batch for k in self.reference_keys)

