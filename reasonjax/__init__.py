"""reasonjax: a JAX stack for research on reasoning with language models.

Subpackages: ``models`` (the transformer, HF checkpoints, tokenizers), ``data`` (tasks,
loaders, pipelines), ``train`` (losses, sharded steps, loops), ``search`` (sampler and
test-time search), ``recipes`` (paper pipelines), ``eval`` (metrics and reports).
"""

__version__ = "0.1.0"
