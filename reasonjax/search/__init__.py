"""Sampler with KV cache, step scoring, and batched test-time search methods."""
