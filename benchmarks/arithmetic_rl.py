"""End to end on the built-in arithmetic task, on CPU: SFT from scratch, one round of DPO
on the model's own samples, then GRPO and PPO (value head as critic) from the SFT model.

Prints the greedy accuracy on held-out problems after each stage (and writes them as
JSON with ``--out``). The task is ``arithmetic`` with ``n_ops`` operations on operands up
to ``max_operand``; a character tokenizer and a ~0.4M-parameter transformer. SFT is
deliberately short so that the SFT model is partly right (room for RL to improve).

Run: ``python benchmarks/arithmetic_rl.py [--sft-steps 900] [--rl-iterations 30]``.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-ops", type=int, default=2)
    ap.add_argument("--max-operand", type=int, default=9)
    ap.add_argument("--sft-steps", type=int, default=900)
    ap.add_argument("--sft-lr", type=float, default=3e-3)
    ap.add_argument("--dpo-steps", type=int, default=60)
    ap.add_argument("--rl-iterations", type=int, default=30)
    ap.add_argument("--rl-lr", type=float, default=5e-5)
    ap.add_argument("--eval", type=int, default=256, help="held-out problems")
    ap.add_argument("--stages", default="sft,dpo,grpo,ppo")
    ap.add_argument("--out", default=None, help="write the figures as JSON here")
    ap.add_argument("--sft-cache", default=None,
                    help="orbax dir: reuse the SFT params saved there (or save them)")
    args = ap.parse_args()

    from reasonjax import checkpoint
    from reasonjax.data import formatting
    from reasonjax.data.task import get_task
    from reasonjax.models.config import ModelConfig
    from reasonjax.models.tokenizer import CharTokenizer
    from reasonjax.search.sampler import SampleConfig
    from reasonjax.train.fit import FitConfig, TaskSFTConfig, fit, sft_on_task
    from reasonjax.train.preference import PreferenceConfig, preference_loss
    from reasonjax.rl.algorithms import ALGORITHMS
    from reasonjax.rl.config import RLConfig
    from reasonjax.rl.loop import rl_train
    from reasonjax.rl.update import make_learner
    from reasonjax.driver import Env
    from reasonjax.driver.records import greedy_accuracy
    from reasonjax.driver.rollouts import collect, preference_pairs
    from reasonjax.train.state import OptimConfig

    tok = CharTokenizer()
    task = get_task("arithmetic", n_ops=args.n_ops, max_operand=args.max_operand)
    cfg = ModelConfig(vocab_size=tok.vocab_size, d_model=96, n_layers=3, n_heads=4,
                      n_kv_heads=4, d_ff=256, max_seq_len=96)
    eval_problems = task.generate(args.eval, seed="test")
    train_problems = task.generate(2048, seed="rl")
    max_new = 32
    figures: dict = {"task": task.knobs(), "params": cfg.num_params()}
    env = Env(task, tok, cfg)

    def accuracy(params) -> float:
        return greedy_accuracy(env, params, eval_problems, max_new, batch_size=128)

    stages = args.stages.split(",")
    t0 = time.perf_counter()
    sft_cfg = TaskSFTConfig(
        fit=FitConfig(steps=args.sft_steps, batch_size=32, progress=False,
                      optim=OptimConfig(lr=args.sft_lr, warmup_steps=50,
                                        decay_steps=args.sft_steps, weight_decay=0.01)),
        seq_len=40)
    if args.sft_cache and os.path.exists(args.sft_cache):
        sft_params = checkpoint.restore_params(args.sft_cache)
    else:
        sft_params, _ = sft_on_task(cfg, tok, task, sft_cfg)
        if args.sft_cache:
            checkpoint.save_params(args.sft_cache, sft_params)
    figures["sft"] = {"greedy_accuracy": accuracy(sft_params),
                      "seconds": time.perf_counter() - t0}
    print("sft", figures["sft"], flush=True)

    if "dpo" in stages:
        t0 = time.perf_counter()
        # One round: 8 samples of each of 256 problems; a pair = a correct and an incorrect
        # sample of the same problem.
        probs = train_problems[:256]
        ro = collect(env, sft_params, probs, SampleConfig(n=8, max_new_tokens=max_new),
                     jax.random.key(1))
        prompts, chosen, rejected = preference_pairs(task, probs, ro, 8)
        pairs = formatting.preference_batch(tok, prompts, chosen, rejected, seq_len=48,
                                            on_overflow="truncate")
        dpo_params, metrics = fit(
            preference_loss(cfg, PreferenceConfig(loss="dpo", beta=0.1)), cfg, sft_params,
            pairs, FitConfig(steps=args.dpo_steps, batch_size=32, progress=False,
                             optim=OptimConfig(lr=1e-4, schedule="constant")),
            ref_params=sft_params)
        figures["dpo"] = {"pairs": len(prompts), "greedy_accuracy": accuracy(dpo_params),
                          "reward_accuracy": metrics.get("reward_accuracy"),
                          "seconds": time.perf_counter() - t0}
        print("dpo", figures["dpo"], flush=True)

    for algo in ("grpo", "ppo"):
        if algo not in stages:
            continue
        t0 = time.perf_counter()
        rl_cfg = RLConfig(algorithm=ALGORITHMS[algo](kl_coef=0.01 if algo == "ppo" else 0.0),
                          iterations=args.rl_iterations, prompts_per_iteration=16,
                          samples_per_prompt=8, max_new_tokens=max_new, epochs=2,
                          minibatch_size=64,
                          optim=OptimConfig(lr=args.rl_lr, schedule="constant"),
                          eval_every=args.rl_iterations)
        params, history = rl_train(make_learner(cfg, sft_params, rl_cfg), env,
                                   train_problems, eval_problems=eval_problems, progress=True)
        figures[algo] = {"greedy_accuracy": accuracy(params),
                         "sample_accuracy_first": history[1]["accuracy"],
                         "sample_accuracy_last": float(np.mean(
                             [h["accuracy"] for h in history[-5:] if "accuracy" in h])),
                         "seconds": time.perf_counter() - t0}
        print(algo, figures[algo], flush=True)

    print(json.dumps(figures, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(figures, f, indent=1)


if __name__ == "__main__":
    main()
