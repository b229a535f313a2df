"""The orchestration driver: problems in, batched search or sampling on the mesh, decoded
and judged per-problem records (and RL rollout rows) out.

::

    env = Env(task, tokenizer, model_config, mesh)
    records = run(env, params, problems, BeamConfig(n=8, beam_width=2), rng, batch_size=64)
    summarize(records)["accuracy"]

See docs/architecture.md for where it sits between search / train and the recipes.
"""

from reasonjax.driver.batches import Batch, Candidates, Method, run_batches
from reasonjax.driver.env import Env, longest_prompt
from reasonjax.driver.prompts import completion_text, encode_prompts
from reasonjax.driver.records import Candidate, Record, accuracy, run, summarize, vote

__all__ = ["Batch", "Candidate", "Candidates", "Env", "Method", "Record", "accuracy",
           "completion_text", "encode_prompts", "longest_prompt", "run", "run_batches",
           "summarize", "vote"]
