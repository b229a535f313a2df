"""Training-step throughput: reasonjax vs PyTorch (transformers) on the same model and batch.

For each preset (tiny-3m, tiny-25m) and objective (SFT, DPO with a frozen reference) this
times, in one process, one after the other (PyTorch first):

- ours: ``make_train_step`` (jit, AdamW + global-norm clipping) on a one-device mesh;
- PyTorch: ``transformers.LlamaForCausalLM`` with the same config and weights layout,
  ``torch.optim.AdamW``, ``clip_grad_norm_``, a plain loop (DPO: policy forward on the
  chosen + rejected rows, reference forward under ``no_grad``, the sigmoid loss).

and reports tokens/s, the ratio, achieved FLOP/s and its fraction of the measured matmul
peak in the compute dtype (the best of JAX and PyTorch on a large square matmul).
``--dtype bfloat16`` is mixed precision on both sides: fp32 master weights and AdamW, bf16
matmuls (ours: the config's ``dtype``; PyTorch: ``torch.autocast``). On a GPU (JAX's
default backend and ``torch.cuda``) both sides run there, PyTorch with transformers'
default attention (SDPA). FLOPs per token are
6 * (matmul params) + 12 * layers * d_model * T (attention scores and values, counted
in full), the same for both; a DPO step counts the policy forward+backward on both rows
plus the reference forward (2 * matmul params + 4 * layers * d_model * T per token).

Run: ``python benchmarks/train_step.py [--presets tiny-3m tiny-25m] [--steps 10]
[--dtype bfloat16] [--batch 8 --seq 256]``.
The figures depend on the machine and on what else runs on it; the ratio is what to read.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from timing import load_average, matmul_peak, median_step, torch_device  # noqa: E402


def flops_per_token(cfg, T: int, kind: str) -> float:
    matmul = cfg.num_params(include_embeddings=False) + cfg.vocab_size * cfg.d_model
    attn = cfg.n_layers * cfg.d_model * T
    train = 6 * matmul + 12 * attn
    if kind == "dpo":
        return train + 2 * matmul + 4 * attn
    return train


def make_batch(cfg, B: int, T: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, cfg.vocab_size, (B, T)).astype(np.int32)
    positions = np.tile(np.arange(T, dtype=np.int32), (B, 1))
    segment_ids = np.ones((B, T), np.int32)
    loss_mask = np.ones((B, T), np.float32)
    loss_mask[:, : T // 4] = 0  # a prompt
    return {"tokens": tokens, "positions": positions, "segment_ids": segment_ids,
            "loss_mask": loss_mask}


def ours(cfg, kind: str, batch: dict, steps: int):
    import jax

    from reasonjax import parallel
    from reasonjax.train import preference, sft, state as st
    from reasonjax.train.step import make_train_step

    mesh = parallel.make_mesh(parallel.MeshConfig(1, 1, 1), devices=jax.devices()[:1])
    ps = parallel.param_shardings(cfg, mesh)
    params = parallel.init_params(cfg, jax.random.key(0), mesh)
    optim = st.OptimConfig(lr=1e-4, decay_steps=1000, clip_norm=1.0)
    tx = st.make_optimizer(optim)
    state = st.create_train_state(params, tx, mesh=mesh, param_shardings=ps)
    if kind == "sft":
        loss, ref = sft.sft_loss(cfg), None
    else:
        loss = preference.preference_loss(cfg, preference.PreferenceConfig("dpo", beta=0.1))
        ref = parallel.init_params(cfg, jax.random.key(1), mesh)
    step = make_train_step(loss, tx, mesh, st.state_shardings(tx, params, ps, mesh))

    def run():
        nonlocal state
        state, metrics = step(state, batch, ref)
        return metrics["loss"]

    return run


def torch_model(cfg, device: str):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    hf = LlamaConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.d_model,
                     intermediate_size=cfg.d_ff, num_hidden_layers=cfg.n_layers,
                     num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_kv_heads,
                     head_dim=cfg.dim_per_head, max_position_embeddings=cfg.max_seq_len,
                     rms_norm_eps=cfg.rms_norm_eps, rope_theta=cfg.rope_theta,
                     tie_word_embeddings=cfg.tie_embeddings, attention_bias=cfg.qkv_bias)
    torch.manual_seed(0)
    return LlamaForCausalLM(hf).float().to(device)


def pytorch(cfg, kind: str, batch: dict, steps: int, device: str):
    import contextlib

    import torch
    import torch.nn.functional as F

    model = torch_model(cfg, device)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.0)
    ref = torch_model(cfg, device).eval() if kind == "dpo" else None
    mixed = cfg.dtype != "float32"

    def autocast():
        if not mixed:
            return contextlib.nullcontext()
        return torch.autocast(device, dtype=getattr(torch, cfg.dtype))

    def logps(m, tokens, mask):
        logits = m(input_ids=tokens).logits[:, :-1]
        lp = torch.gather(F.log_softmax(logits, -1), 2, tokens[:, 1:, None])[..., 0]
        return (lp * mask[:, 1:]).sum(-1)

    if kind == "sft":
        tokens = torch.from_numpy(batch["tokens"]).long()
        labels = tokens.clone()
        labels[torch.from_numpy(batch["loss_mask"]) == 0] = -100
        tokens, labels = tokens.to(device), labels.to(device)

        def run():
            with autocast():
                loss = model(input_ids=tokens, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            return float(loss)
    else:
        tokens = torch.from_numpy(np.concatenate([batch["chosen_tokens"],
                                                  batch["rejected_tokens"]])).long()
        mask = torch.from_numpy(np.concatenate([batch["chosen_loss_mask"],
                                                batch["rejected_loss_mask"]]))
        tokens, mask = tokens.to(device), mask.to(device)
        B = batch["chosen_tokens"].shape[0]

        def run():
            with autocast():
                pi = logps(model, tokens, mask)
                with torch.no_grad():
                    rf = logps(ref, tokens, mask)
            h = (pi[:B] - rf[:B]) - (pi[B:] - rf[B:])
            loss = -F.logsigmoid(0.1 * h).mean()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            return float(loss)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", nargs="+", default=["tiny-3m", "tiny-25m"])
    parser.add_argument("--kinds", nargs="+", default=["sft", "dpo"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                        help="matmul dtype of both sides (master weights stay fp32)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    import jax
    import torch

    from reasonjax.models import get_config

    torch.set_num_threads(os.cpu_count() or 1)
    device = torch_device()
    load_before = load_average()
    peak = matmul_peak(dtype=args.dtype)
    print(f"{args.dtype} matmul peak on {device}: JAX {peak['jax']:.0f} GFLOP/s, PyTorch "
          f"{peak['torch']:.0f} GFLOP/s ({os.cpu_count()} cores, torch threads "
          f"{torch.get_num_threads()})")
    rows = []
    for preset in args.presets:
        cfg = get_config(preset, dtype=args.dtype, param_dtype="float32")
        for kind in args.kinds:
            sft_batch = make_batch(cfg, args.batch, args.seq, 0)
            if kind == "sft":
                batch = sft_batch
            else:
                other = make_batch(cfg, args.batch, args.seq, 1)
                batch = {**{f"chosen_{k}": v for k, v in sft_batch.items()},
                         **{f"rejected_{k}": v for k, v in other.items()}}
            tokens = args.batch * args.seq * (1 if kind == "sft" else 2)
            # PyTorch first: its caching allocator gives its memory back on request, JAX's
            # keeps its pool for the rest of the process.
            torch_s = median_step(pytorch(cfg, kind, batch, args.steps, device), args.steps)
            if device == "cuda":
                torch.cuda.empty_cache()
            ours_s = median_step(ours(cfg, kind, batch, args.steps), args.steps)
            fpt = flops_per_token(cfg, args.seq, kind)
            row = {"preset": preset, "kind": kind, "params_M": cfg.num_params() / 1e6,
                   "dtype": args.dtype, "device": device,
                   "tokens_per_step": tokens,
                   "ours_tok_s": tokens / ours_s, "torch_tok_s": tokens / torch_s,
                   "ratio": torch_s / ours_s,
                   "ours_gflops": fpt * tokens / ours_s / 1e9,
                   "torch_gflops": fpt * tokens / torch_s / 1e9}
            row["ours_peak_frac"] = row["ours_gflops"] / peak["peak"]
            row["torch_peak_frac"] = row["torch_gflops"] / peak["peak"]
            if device == "cuda":
                row["ours_peak_gib"] = jax.devices()[0].memory_stats()["peak_bytes_in_use"] / 2**30
                row["torch_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
                print(f"  GPU memory peak: ours {row['ours_peak_gib']:.1f} GiB, torch "
                      f"{row['torch_peak_gib']:.1f} GiB")
            rows.append(row)
            print(f"{preset:9s} {kind:4s} {row['params_M']:5.1f}M  ours {row['ours_tok_s']:8.0f} "
                  f"tok/s ({row['ours_gflops']:5.0f} GFLOP/s, {row['ours_peak_frac']:.0%} of "
                  f"peak)  torch {row['torch_tok_s']:8.0f} tok/s ({row['torch_gflops']:5.0f} "
                  f"GFLOP/s, {row['torch_peak_frac']:.0%})  ratio {row['ratio']:.2f}x",
                  flush=True)
    load = [load_before, load_average()]
    print(f"load average {load[0]:.1f} before, {load[1]:.1f} after")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"matmul_peak_gflops": peak, "load": load, "args": vars(args),
                       "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
