"""Tasks (generators, verifiers, step checks), answer checking, loaders, TFDS and grain.

- :mod:`.task`: the Problem / StepCheck types, the Task protocol, ``get_task``;
- :mod:`.tasks`: arithmetic, countdown, procbench, maze (exact steps); gsm8k, math, mc;
- :mod:`.answers`: final-answer extraction and equivalence;
- :mod:`.local`: JSONL / JSON / Parquet loaders with file:line error reports;
- :mod:`.formatting`: texts -> examples and fixed-shape batches of :mod:`.formats`;
- :mod:`.pipeline`: grain pipelines (shard, shuffle, pad or pack, batch, checkpointable);
- :mod:`.tfds_builders`: TFDS ArrayRecord datasets without TensorFlow;
- :mod:`.cli`: ``reasonjax data``.

Submodules are imported explicitly (``from reasonjax.data.task import get_task``) so that
importing :mod:`.formats` stays cheap for training code.
"""
