"""The orchestration driver: problems in, batched search or sampling on the mesh, decoded
and judged per-problem records (and RL rollout rows) out. See docs/architecture.md."""
