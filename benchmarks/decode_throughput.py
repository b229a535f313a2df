"""Decode throughput: reasonjax's sampler vs transformers' ``generate`` on the same weights.

A tiny Llama (``tiny-3m``, ~2.9M parameters) is initialised, written with
``save_pretrained`` and loaded into transformers' ``LlamaForCausalLM`` (PyTorch, CPU,
float32). Both decode 128 new tokens greedily after a 16-token prompt, never stopping
early, at batch 1 / 16 / 64 / 256. In the same run a large fp32 matmul measures the
machine's peak (the better of JAX and PyTorch); the roofline is that peak divided by the
model's FLOPs per generated token (2 x matmul parameters + attention over the average
context), and each throughput is also reported as a fraction of it, and of the memory
roofline: the measured copy bandwidth over the bytes a step reads (weights plus the batch's
cached keys and values). reasonjax decodes
twice: on a cache allocated for the whole budget (``decode_chunks=1``) and on a
prompt-sized cache grown before each of ``--chunks`` chunks of the budget (default: the
sampler's default). Each row is timed ``--repeats`` times, the three sides interleaved,
and the table shows medians. On the CPU in float32 a fourth side decodes chunked with XLA's
attention instead of the CPU decode kernel (``ModelConfig.attention="xla"``), for the
kernel's speed-up in the same run.

    python benchmarks/decode_throughput.py [--batches 1,16,64,256] [--repeats 3] [--json F]

Prints one table and the load average before and after; figures depend on the machine
and on whatever else runs on it.

On a GPU (JAX's default backend and ``torch.cuda``) both sides decode there; ``--dtype
bfloat16`` stores and runs both in bf16 (the peak is then the bf16 matmul's), ``--vocab 0``
keeps the preset's vocabulary (default: 128, as the tiny presets).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from timing import (copy_bandwidth, load_average, matmul_peak, median_times,  # noqa: E402
                    torch_device)

from reasonjax.models import cpu_kernels, get_config, init_params, save_pretrained  # noqa: E402
from reasonjax.search.sampler import (DECODE_CHUNKS, SamplingConfig, sample,  # noqa: E402
                                      stop_tokens)

PROMPT_LEN = 16
NEW_TOKENS = 128


def flops_per_token(cfg, context: float) -> float:
    """Forward FLOPs to generate one token: every matmul weight once (the embedding lookup
    is not a matmul) plus attention scores and mixing over ``context`` cached slots."""
    matmul_params = cfg.num_params(include_embeddings=False) + cfg.d_model * cfg.vocab_size
    attention = 4 * cfg.n_layers * cfg.n_heads * cfg.dim_per_head * context
    return 2 * matmul_params + attention


def bytes_per_step(cfg, batch: int, context: float) -> float:
    """Bytes one decode step must read: every weight once plus each row's keys and values
    over ``context`` cached slots (the memory roofline's numerator)."""
    item = np.dtype(cfg.param_dtype).itemsize
    kv = 2 * cfg.n_layers * cfg.n_kv_heads * cfg.dim_per_head * context * item
    return cfg.num_params() * item + batch * kv


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", default="1,16,64,256")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--preset", default="tiny-3m")
    ap.add_argument("--chunks", type=int, default=DECODE_CHUNKS,
                    help="the chunked side's decode_chunks")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                    help="weights and compute dtype of both sides")
    ap.add_argument("--vocab", type=int, default=128,
                    help="vocabulary size (0: the preset's own)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    batches = [int(b) for b in args.batches.split(",")]

    import torch
    from transformers import LlamaForCausalLM

    load_before = load_average()
    device = torch_device()
    vocab = {"vocab_size": args.vocab} if args.vocab else {}
    cfg = get_config(args.preset, dtype=args.dtype, param_dtype=args.dtype, **vocab)
    params = init_params(cfg, jax.random.key(0))
    tmp = tempfile.mkdtemp(prefix="rj_bench_")
    hf_dir = save_pretrained(cfg, params, os.path.join(tmp, "hf"))
    hf = LlamaForCausalLM.from_pretrained(hf_dir, torch_dtype=getattr(torch, args.dtype))
    hf = hf.to(device).eval()
    no_stop = stop_tokens(cfg.vocab_size)  # no EOS: every row decodes all 128 tokens
    greedy = SamplingConfig(temperature=0.0)

    peak = matmul_peak(dtype=args.dtype)["peak"] * 1e9
    context = PROMPT_LEN + NEW_TOKENS / 2
    roofline = peak / flops_per_token(cfg, context)
    # The memory roofline only where the weights outgrow the caches (a GPU's HBM); the
    # tiny CPU models live in L2.
    bandwidth = copy_bandwidth() * 1e9 if device == "cuda" else None
    bw_text = f"{bandwidth / 1e9:.0f} GB/s" if bandwidth else "-"
    print(f"model {args.preset}: {cfg.num_params() / 1e6:.2f}M params; {args.dtype} matmul "
          f"peak on {device} {peak / 1e9:.0f} GFLOP/s -> roofline {roofline:,.0f} tok/s; "
          f"{jax.device_count()} jax devices, torch threads {torch.get_num_threads()}, "
          f"load average {load_before:.1f}; copy bandwidth {bw_text}; medians of "
          f"{args.repeats}")
    # Where the CPU decode kernel serves the sampler, a fourth side decodes chunked with XLA's
    # attention instead (ModelConfig.attention="xla"): the kernel's speed-up in the same run.
    kernel = (device == "cpu" and args.dtype == "float32" and jax.default_backend() == "cpu"
              and cpu_kernels.available())
    print(f"{'batch':>5} {'transformers tok/s':>19} {'rj whole-cache':>14} {'rj chunked':>10} "
          f"{'ratio':>6} {'% roofline':>10} {'% bandwidth':>11} {'same tokens':>11} "
          f"{'kernel x':>9}")
    rng = np.random.default_rng(0)
    rows = []
    for B in batches:
        prompt = rng.integers(4, cfg.vocab_size, (B, PROMPT_LEN)).astype(np.int32)
        mask = np.ones_like(prompt)
        tokens_j, mask_j = jnp.asarray(prompt), jnp.asarray(mask)

        def ours(chunk, cfg=cfg):
            return lambda: sample(cfg, params, tokens_j, mask_j, jax.random.key(0),
                                  max_new_tokens=NEW_TOKENS, sampling=greedy, stop=no_stop,
                                  decode_chunks=chunk).tokens.block_until_ready()

        ids = torch.from_numpy(prompt.astype(np.int64)).to(device)
        attn = torch.ones_like(ids)

        def theirs():
            with torch.no_grad():
                return hf.generate(ids, attention_mask=attn, max_new_tokens=NEW_TOKENS,
                                   min_new_tokens=NEW_TOKENS, do_sample=False,
                                   pad_token_id=0, eos_token_id=None).cpu()

        fns = {"transformers": theirs, "whole": ours(1), "chunked": ours(args.chunks)}
        if kernel:
            fns["chunked_xla"] = ours(args.chunks, cfg.replace(attention="xla"))
        med = median_times(fns, args.repeats)
        hf_tokens = theirs()[:, PROMPT_LEN:].numpy()
        same = min(np.mean(np.asarray(fns[side]())[:, 0] == hf_tokens)
                   for side in ("whole", "chunked"))
        tps = {side: B * NEW_TOKENS / t for side, t in med.items()}
        best = max(tps["whole"], tps["chunked"])
        row = {"batch": B, "tok_s": tps, "ratio": best / tps["transformers"],
               "ratio_whole_cache": tps["whole"] / tps["transformers"],
               "ratio_chunked": tps["chunked"] / tps["transformers"],
               "roofline_frac": best / roofline, "same_tokens": float(same),
               "kernel_speedup": (tps["chunked"] / tps["chunked_xla"]) if kernel else None,
               "bandwidth_frac": (best / (B * bandwidth / bytes_per_step(cfg, B, context))
                                  if bandwidth else None)}
        rows.append(row)
        frac_bw = f"{100 * row['bandwidth_frac']:.1f}%" if bandwidth else "-"
        kernel_x = f"{row['kernel_speedup']:.2f}x" if kernel else "-"
        print(f"{B:>5} {tps['transformers']:>19,.0f} {tps['whole']:>14,.0f} "
              f"{tps['chunked']:>10,.0f} {row['ratio']:>5.1f}x "
              f"{100 * row['roofline_frac']:>9.1f}% {frac_bw:>11} "
              f"{same:>10.1%} {kernel_x:>9}", flush=True)
    load_after = load_average()
    print(f"load average {load_before:.1f} before, {load_after:.1f} after; ratio = the "
          f"better reasonjax side over transformers (chunked: decode_chunks={args.chunks}); "
          f"kernel x = chunked over chunked with XLA's attention (the CPU decode kernel's "
          f"speed-up)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"preset": args.preset, "new_tokens": NEW_TOKENS, "chunks": args.chunks,
                       "dtype": args.dtype, "device": device, "vocab_size": cfg.vocab_size,
                       "matmul_peak_gflops": peak / 1e9, "roofline_tok_s": roofline,
                       "copy_bandwidth_gb_s": bandwidth and bandwidth / 1e9,
                       "load": [load_before, load_after], "repeats": args.repeats,
                       "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
