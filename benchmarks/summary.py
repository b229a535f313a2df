"""The README's benchmark table, from the JSON files the benchmarks wrote.

    python benchmarks/summary.py DIR

reads ``DIR/decode.json`` (decode_throughput.py), ``DIR/search.json``
(search_throughput.py), ``DIR/train_step.json`` and ``DIR/rl_step.json`` (each written by
its script's ``--json``; ``make bench`` writes all four to ``benchmarks/results``) and
prints one markdown row per measured comparison, with the load average of its run. A
file that is missing is skipped; nothing is typed in by hand.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _load(d: Path, name: str):
    path = d / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _load_text(load) -> str:
    return "-".join(f"{x:.1f}" for x in load)


def _where(r: dict) -> str:
    """", bf16 on cuda" for a run off the CPU's float32 default ("" for the default)."""
    dtype, device = r.get("dtype", "float32"), r.get("device", "cpu")
    if (dtype, device) == ("float32", "cpu"):
        return ""
    return f", {'bf16' if dtype == 'bfloat16' else dtype} on {device}"


def decode_rows(r: dict) -> list[list[str]]:
    def roofline(row):
        text = f"{100 * row['roofline_frac']:.0f}% of matmul roofline"
        if row.get("bandwidth_frac") is not None:
            text += f", {100 * row['bandwidth_frac']:.0f}% of memory roofline"
        if row.get("kernel_speedup") is not None:
            text += f"; CPU decode kernel {row['kernel_speedup']:.2f}x XLA's attention"
        return text + f"; {100 * row['same_tokens']:.0f}% same tokens"

    return [[f"decode, batch {row['batch']}, {r['new_tokens']} tokens ({r['preset']}"
             f"{_where(r)})", "transformers `generate`",
             f"{row['tok_s']['transformers']:,.0f} tok/s",
             f"{max(row['tok_s']['whole'], row['tok_s']['chunked']):,.0f} tok/s "
             f"({roofline(row)})", f"{row['ratio']:.1f}x", _load_text(r["load"])]
            for row in r["rows"]]


def search_rows(r: dict) -> list[list[str]]:
    return [[f"{row['method']} ({r['preset']}, {r['problems']} problems)",
             "per-node Python loop over transformers",
             f"{row['loop_problems_s']:.2f} problems/s",
             f"{row['ours_problems_s']:.2f} problems/s (+{row['compile_s']:.0f} s compile)",
             f"{row['ratio']:.1f}x", _load_text(r["load"])] for row in r["rows"]]


def train_rows(r: dict) -> list[list[str]]:
    def memory(row, side):
        gib = row.get(f"{side}_peak_gib")
        return "" if gib is None else f", {gib:.0f} GiB"

    return [[f"{row['kind'].upper()} train step ({row['preset']}{_where(row)}"
             + (f", {r['args']['batch']}x{r['args']['seq']} tokens" if "args" in r else "")
             + ")", "PyTorch + transformers",
             f"{row['torch_tok_s']:,.0f} tok/s ({100 * row['torch_peak_frac']:.0f}% of matmul "
             f"peak{memory(row, 'torch')})", f"{row['ours_tok_s']:,.0f} tok/s "
             f"({100 * row['ours_peak_frac']:.0f}% of matmul peak{memory(row, 'ours')})",
             f"{row['ratio']:.2f}x", _load_text(r.get("load", []))] for row in r["rows"]]


def rl_rows(r: dict) -> list[list[str]]:
    ours, trl = r["summary"]["ours"], r["summary"]["trl"]
    return [["GRPO iteration (rollouts + update)", "TRL `GRPOTrainer`",
             f"{trl['tok_s']:,.0f} tok/s", f"{ours['tok_s']:,.0f} tok/s", f"{r['ratio']:.2f}x",
             _load_text([r["load_before"][0], r["load_after"][0]])]]


def table(d: Path) -> str:
    rows = []
    for name, fn in (("decode", decode_rows), ("search", search_rows),
                     ("train_step", train_rows), ("rl_step", rl_rows)):
        r = _load(d, name)
        if r is not None:
            rows += fn(r)
    head = ["comparison", "baseline", "baseline speed", "reasonjax", "ratio", "load average"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python benchmarks/summary.py DIR (the benchmarks' --json files)")
    print(table(Path(sys.argv[1])))
