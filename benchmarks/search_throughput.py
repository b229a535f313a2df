"""Search throughput: reasonjax's batched, jitted step beam search and MCTS vs a plain
Python loop of per-node calls to transformers' ``generate`` (the way llm-reasoners-style
libraries run search), on the same weights and at the same budget.

A tiny Llama (``tiny-3m``, ~2.9M parameters, vocabulary 128) is initialised with a random
(non-zero) value head, written with ``save_pretrained`` and loaded into transformers'
``LlamaForCausalLM`` (PyTorch, CPU, float32). Prompts are 16 random tokens. A step ends at
any of ten delimiter ids, at EOS, or after ``--step-tokens`` tokens; tokens are sampled at
temperature 1 with no top-k / top-p on both sides. A step's score (beam search) and a
node's value (MCTS) is tanh(value head) at its last token; the baseline computes it from
transformers' last hidden state with the same value-head weights.

- Step beam search: N candidates per problem, beam width M, ``--steps`` rounds. Round 1
  samples N steps from the prompt; each later round keeps the N/M best candidates by score;
  a kept finished one keeps one row, the kept unfinished ones share the other rows
  round-robin and each samples that many next steps. Baseline: per problem, per round, one
  ``generate`` call per kept beam (``num_return_sequences`` = its rows) from prompt + path,
  then one forward over those children for their scores.
- MCTS (PUCT, mctx's muzero constants, no Dirichlet noise): K candidate steps per node,
  ``--sims`` simulations per move, moves until a terminal node (EOS or ``--depth`` steps).
  Expanding a node reads prompt + path once for its value and samples its K candidates;
  priors are the candidates' mean log-probs. Baseline: the same search in Python, one
  forward + one ``generate`` call per expanded node. Without a verifier terminal nodes are
  scored by the value head on both sides.

reasonjax runs all ``--problems`` problems as one batch; the baseline handles problems one
after another, so it runs ``--baseline-problems`` of the same problems and its rate per
problem does not depend on how many it runs. Compile time is reported separately and
excluded from reasonjax's rate (it is paid once per shape). After that first call both
sides run ``--repeats`` times, interleaved, and the rates come from the medians. Both
sides sample, so their solutions differ; generated-token counts show the budgets match.

    python benchmarks/search_throughput.py [--problems 64] [--baseline-problems 4]

Prints one table; figures depend on the machine and on whatever else runs on it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from reasonjax.models import Transformer, get_config, init_params, save_pretrained  # noqa: E402
from reasonjax.search.beam import BeamConfig, beam_search  # noqa: E402
from reasonjax.search.mcts import MCTSConfig, mcts  # noqa: E402
from reasonjax.search.sampler import stop_tokens  # noqa: E402
from reasonjax.search.scoring import StepScorer  # noqa: E402
from timing import load_average, median_times, timed  # noqa: E402

PROMPT_LEN = 16
EOS_ID = 2
DELIMITER_IDS = tuple(range(5, 15))


class HFStepper:
    """Per-node calls to transformers: sample steps from one context, score contexts."""

    def __init__(self, hf, value_kernel, value_bias, step_tokens: int):
        import torch
        self.torch, self.hf, self.step_tokens = torch, hf, step_tokens
        self.w = torch.tensor(np.asarray(value_kernel, np.float32)[:, 0])
        self.b = float(np.asarray(value_bias)[0])
        self.stops = {EOS_ID, *DELIMITER_IDS}
        self.generated = 0

    def sample_steps(self, context: list[int], n: int):
        """n steps from one context (one generate call): [(tokens, mean log-prob, eos)]."""
        torch = self.torch
        ids = torch.tensor([context], dtype=torch.long)
        with torch.no_grad():
            out = self.hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True,
                                   temperature=1.0, top_k=0, top_p=1.0,
                                   max_new_tokens=self.step_tokens, num_return_sequences=n,
                                   eos_token_id=sorted(self.stops), pad_token_id=0,
                                   output_scores=True, return_dict_in_generate=True)
        new = out.sequences[:, len(context):]
        logp = torch.stack([torch.log_softmax(s, -1) for s in out.scores], 1)
        tok_lp = torch.gather(logp, 2, new[:, :, None])[..., 0]
        steps = []
        for row, lp in zip(new.tolist(), tok_lp):
            end = next((i + 1 for i, t in enumerate(row) if t in self.stops), len(row))
            self.generated += end
            steps.append((row[:end], float(lp[:end].mean()), row[end - 1] == EOS_ID))
        return steps

    def values(self, contexts: list[list[int]]) -> list[float]:
        """tanh(value head) at the last token of each context (one forward, right-padded)."""
        torch = self.torch
        T = max(len(c) for c in contexts)
        ids = torch.zeros((len(contexts), T), dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, c in enumerate(contexts):
            ids[i, :len(c)] = torch.tensor(c)
            mask[i, :len(c)] = 1
        with torch.no_grad():
            h = self.hf.model(input_ids=ids, attention_mask=mask).last_hidden_state
        last = h[torch.arange(len(contexts)), mask.sum(1) - 1]
        return torch.tanh(last @ self.w + self.b).tolist()


def beam_loop(hf: HFStepper, prompt: list[int], n: int, m: int, steps: int):
    """Step beam search for one problem with per-node calls. Returns the best path."""
    cands = []  # (path, score, finished)
    for st in hf.sample_steps(prompt, n):
        cands.append((st[0], st[2]))
    scores = hf.values([prompt + p for p, _ in cands])
    cands = [(p, s, eos or steps == 1) for (p, eos), s in zip(cands, scores)]
    for rnd in range(1, steps):
        kept = sorted(cands, key=lambda c: -c[1])[:n // m]
        fin = [c for c in kept if c[2]]
        unf = [c for c in kept if not c[2]]
        if not unf:
            cands = fin
            break
        shares = [(n - len(fin)) // len(unf) + (i < (n - len(fin)) % len(unf))
                  for i in range(len(unf))]
        cands = list(fin)
        for (path, _, _), k in zip(unf, shares):
            kids = hf.sample_steps(prompt + path, k)
            vals = hf.values([prompt + path + s for s, _, _ in kids])
            cands += [(path + s, v, eos or rnd == steps - 1)
                      for (s, _, eos), v in zip(kids, vals)]
    return max(cands, key=lambda c: c[1])[0]


class PyNode:
    """A Python MCTS node: its path, value, K candidate steps and per-child statistics."""

    def __init__(self, path, depth, terminal, value, cands):
        self.path, self.depth, self.terminal, self.value = path, depth, terminal, value
        self.cands = cands  # [(step tokens, mean log-prob, eos)]
        lp = np.asarray([c[1] for c in cands]) if cands else np.zeros(0)
        self.prior = np.exp(lp - lp.max()) / np.exp(lp - lp.max()).sum() if cands else lp
        self.children: dict[int, PyNode] = {}
        self.visits, self.value_sum = 1, value


def mcts_expand(hf: HFStepper, prompt, path, depth, terminal, k: int) -> PyNode:
    value = hf.values([prompt + path])[0]
    cands = [] if terminal else hf.sample_steps(prompt + path, k)
    return PyNode(path, depth, terminal, value, cands)


def mcts_loop(hf: HFStepper, prompt: list[int], k: int, sims: int, max_depth: int,
              pb_c_init=1.25, pb_c_base=19652.0):
    """MCTS for one problem with per-node calls (PUCT, min-max normalised Q as in mctx's
    muzero_policy); plays moves to the most visited child until a terminal node."""
    node = mcts_expand(hf, prompt, [], 0, False, k)
    while not node.terminal:
        root = PyNode(node.path, node.depth, False, node.value, node.cands)
        for _ in range(sims):
            trail, cur = [root], root
            while True:
                qs = [c.value_sum / c.visits for c in cur.children.values()] + [cur.value]
                lo, hi = min(qs), max(qs)
                c_puct = pb_c_init + math.log((cur.visits + pb_c_base + 1) / pb_c_base)
                best, best_score = 0, -np.inf
                for a in range(k):
                    ch = cur.children.get(a)
                    q = 0.0 if ch is None else (ch.value_sum / ch.visits - lo) / max(hi - lo,
                                                                                        1e-8)
                    u = c_puct * cur.prior[a] * math.sqrt(cur.visits) / (
                        1 + (0 if ch is None else ch.visits))
                    if q + u > best_score:
                        best, best_score = a, q + u
                if best not in cur.children:
                    step, _, eos = cur.cands[best]
                    child = mcts_expand(hf, prompt, cur.path + step, cur.depth + 1,
                                        eos or cur.depth + 1 >= max_depth, k)
                    cur.children[best] = child  # born with its own visit and value
                    leaf_value = child.value
                    break
                cur = cur.children[best]
                trail.append(cur)
                if cur.terminal:
                    leaf_value = cur.value
                    break
            for n in trail:
                n.visits += 1
                n.value_sum += leaf_value
        a = max(root.children, key=lambda a: root.children[a].visits)
        node = root.children[a]
    return node.path


def reasonjax_value(cfg, params, prompt) -> float:
    """tanh(value head) at the last prompt token, by reasonjax's full forward."""
    out = Transformer(cfg).apply({"params": params}, jnp.asarray(prompt, jnp.int32))
    return float(jnp.tanh(out.values[0, -1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny-3m")
    ap.add_argument("--problems", type=int, default=64)
    ap.add_argument("--baseline-problems", type=int, default=4)
    ap.add_argument("--n", type=int, default=8, help="beam search candidates per problem")
    ap.add_argument("--beam-width", type=int, default=2)
    ap.add_argument("--steps", type=int, default=4, help="beam search rounds")
    ap.add_argument("--actions", type=int, default=3, help="MCTS candidates per node")
    ap.add_argument("--sims", type=int, default=8, help="MCTS simulations per move")
    ap.add_argument("--depth", type=int, default=3, help="MCTS steps per solution")
    ap.add_argument("--step-tokens", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3,
                    help="interleaved timed runs of each side; rates from the medians")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    load_before = load_average()

    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    cfg = get_config(args.preset, vocab_size=128)
    params = init_params(cfg, jax.random.key(0))
    vh = params["value_head"]
    params = {**params, "value_head": {**vh, "kernel": jax.random.normal(
        jax.random.key(1), vh["kernel"].shape) / math.sqrt(cfg.d_model)}}
    hf_dir = save_pretrained(cfg, params, os.path.join(tempfile.mkdtemp(prefix="rj_bench_"),
                                                       "hf"))
    hf = LlamaForCausalLM.from_pretrained(hf_dir, torch_dtype=torch.float32).eval()
    stepper = HFStepper(hf, params["value_head"]["kernel"], params["value_head"]["bias"],
                        args.step_tokens)
    stop = stop_tokens(cfg.vocab_size, eos_ids=[EOS_ID], delimiter_ids=DELIMITER_IDS)

    B = args.problems
    prompts = np.random.default_rng(0).integers(15, cfg.vocab_size, (B, PROMPT_LEN))
    prompts[:, 0] = 1  # BOS
    tokens, mask = jnp.asarray(prompts, jnp.int32), jnp.ones((B, PROMPT_LEN), jnp.int32)
    base = [p.tolist() for p in prompts[:args.baseline_problems]]

    # The two implementations read the same value head: check on one context.
    ours_v = reasonjax_value(cfg, params, prompts[:1])
    theirs_v = stepper.values([base[0]])[0]
    print(f"model {args.preset}: {cfg.num_params() / 1e6:.2f}M params; {jax.device_count()} "
          f"jax devices, torch threads {torch.get_num_threads()}, load average "
          f"{load_average():.1f}; value head agrees: |{ours_v:.5f} - {theirs_v:.5f}| = "
          f"{abs(ours_v - theirs_v):.1e}")

    print(f"step tokens <= {args.step_tokens}; reasonjax: {B} problems in one batch; "
          f"transformers loop: {len(base)} problems one by one")
    print(f"{'method':<28} {'compile s':>9} {'rj prob/s':>9} {'rj tok/s':>9} {'rj tok/prob':>11} "
          f"{'hf prob/s':>9} {'hf tok/s':>9} {'hf tok/prob':>11} {'prob/s ratio':>12}",
          flush=True)

    rows = []

    def report(name, comp, rp, rt, rtp, hp, ht, htp):
        rows.append({"method": name, "compile_s": comp, "ours_problems_s": rp,
                     "ours_tok_s": rt, "ours_tok_per_problem": rtp, "loop_problems_s": hp,
                     "loop_tok_s": ht, "loop_tok_per_problem": htp, "ratio": rp / hp})
        print(f"{name:<28} {comp:>9.1f} {rp:>9.2f} {rt:>9,.0f} {rtp:>11.0f} {hp:>9.2f} "
              f"{ht:>9,.0f} {htp:>11.0f} {rp / hp:>11.1f}x", flush=True)

    beam_cfg = BeamConfig(n=args.n, beam_width=args.beam_width, max_steps=args.steps,
                          step_tokens=args.step_tokens, scorer=StepScorer(transform="tanh"))
    def side_by_side(name, ours_fn, loop_fn):
        """Ours once (compile + run), then ours and the loop interleaved ``--repeats``
        times; rates from the medians."""
        res, first = timed(ours_fn)
        stepper.generated = 0
        med = median_times({"ours": ours_fn, "loop": loop_fn}, args.repeats, warmup=False)
        t, t_hf = med["ours"], med["loop"]
        gen = res.compute.to_dict()["tokens_generated"]
        hf_gen = stepper.generated / args.repeats
        report(name, first - t, B / t, gen / t, gen / B, len(base) / t_hf, hf_gen / t_hf,
               hf_gen / len(base))

    side_by_side(f"beam N={args.n} M={args.beam_width} steps={args.steps}",
                 lambda: jax.block_until_ready(
                     beam_search(cfg, params, tokens, mask, jax.random.key(0), beam_cfg, stop)),
                 lambda: [beam_loop(stepper, p, args.n, args.beam_width, args.steps)
                          for p in base])

    mcts_cfg = MCTSConfig(num_actions=args.actions, num_simulations=args.sims,
                          max_steps=args.depth, step_tokens=args.step_tokens,
                          value_transform="tanh")
    side_by_side(f"mcts K={args.actions} sims={args.sims} depth={args.depth}",
                 lambda: jax.block_until_ready(
                     mcts(cfg, params, tokens, mask, jax.random.key(0), mcts_cfg, stop)),
                 lambda: [mcts_loop(stepper, p, args.actions, args.sims, args.depth)
                          for p in base])
    load_after = load_average()
    print(f"load average {load_before:.1f} before, {load_after:.1f} after")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"preset": args.preset, "problems": B, "baseline_problems": len(base),
                       "load": [load_before, load_after], "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
