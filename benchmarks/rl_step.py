"""RL-iteration throughput: reasonjax's GRPO vs TRL's ``GRPOTrainer``, same model and batch.

One RL iteration = sample ``group`` completions of each of ``prompts`` arithmetic problems,
score them with the task's verifier, and take one GRPO update (one epoch, one minibatch
holding every rollout, no KL term, no reference model). In one process, on CPU, float32:

- ours: ``make_learner`` + ``iteration_rollouts`` + ``learner.update`` (what ``rl_train``
  runs per iteration) on a one-device mesh;
- TRL: ``trl.GRPOTrainer`` (``use_vllm=False``: ``transformers``' ``generate``) on a
  ``transformers.LlamaForCausalLM`` holding the same initial weights (ours written with
  ``save_pretrained``), with a ``PreTrainedTokenizerFast`` built locally with our character
  vocabulary (same ids, BOS added the same way), a local ``datasets.Dataset`` of the same
  prompts in the same per-iteration order, and the same reward (``outcome_rewards`` of the
  task).

Both use a tiny Llama (``tiny-3m`` by default, vocabulary = the char tokenizer's), temperature
1 with no top-k / top-p, ``max_new_tokens`` per completion (stopping at EOS), GRPO's
group-std-scaled advantages, the sequence-mean-token-mean clipped loss (TRL
``loss_type="grpo"``, epsilon 0.2), beta / kl_coef 0, and AdamW (lr 1e-5 constant, betas
0.9 / 0.95, no weight decay, global-norm clip 1.0). TRL step i and our iteration i see the
same prompts; our iteration i runs right after TRL's step i (from a ``TrainerCallback``), so
the two sides share the machine's load over time.

Tokens per iteration, counted alike on both sides: over the ``prompts x group`` rollouts,
each rollout's real prompt tokens (BOS included, padding excluded; every rollout counts its
prompt, as the update processes it) plus its sampled completion tokens (the EOS included).
tokens/s is the median over the timed iterations of tokens / seconds (the best is shown
too), after ``--warmup`` iterations (JAX compilation; TRL's first steps). A TRL iteration is
timed from the Trainer's ``on_step_begin`` to ``on_step_end`` (generation, rewards, loss,
backward, clip, optimizer step); ours from sampling to the update's metrics on the host.

On a machine whose cores other work is using, PyTorch's OpenMP threads can stall (each
parallel region waits for a descheduled thread): TRL's first steps then take seconds instead
of a fraction of one, and the ratio says nothing. The run warns when the load average is
already high; ``--torch-threads 1`` avoids the stalls (at a cost on an idle machine).

Run: ``python benchmarks/rl_step.py [--iterations 8] [--prompts 8] [--group 8]
[--max-new-tokens 32]`` (needs ``pip install -e '.[bench]'`` for TRL). The figures depend
on the machine and on what else runs on it; the ratio is what to read.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings

import numpy as np

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is built locally
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from timing import matmul_peak  # noqa: E402

CHAR_SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")


def hf_char_tokenizer(tok):
    """A ``PreTrainedTokenizerFast`` with ``tok``'s ids (a CharTokenizer): a BPE with no
    merges over its alphabet splits text into characters; BOS is prepended as ours does."""
    from tokenizers import Tokenizer, decoders, models, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {s: i for i, s in enumerate(CHAR_SPECIALS)}
    vocab.update({c: i + len(CHAR_SPECIALS) for i, c in enumerate(tok.alphabet)})
    t = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    t.add_special_tokens(list(CHAR_SPECIALS))
    t.decoder = decoders.Fuse()
    t.post_processor = processors.TemplateProcessing(
        single="<bos> $A", special_tokens=[("<bos>", tok.bos_id)])
    hf = PreTrainedTokenizerFast(tokenizer_object=t, pad_token="<pad>", bos_token="<bos>",
                                 eos_token="<eos>", unk_token="<unk>",
                                 clean_up_tokenization_spaces=False)
    probe = "12*3-4\nanswer: 5 "
    if hf(text=[probe])["input_ids"][0] != tok.encode(probe, add_bos=True):
        raise RuntimeError("the HF char tokenizer does not reproduce CharTokenizer's ids")
    return hf


class Ours:
    """reasonjax's RL iteration, one call per iteration (as ``rl_train`` runs it)."""

    def __init__(self, cfg, params, env, problems, rl_cfg):
        from reasonjax.rl.loop import run_env
        from reasonjax.rl.update import make_learner

        self.learner = make_learner(cfg, params, rl_cfg)
        self.env = run_env(self.learner, env, problems)
        self.state = self.learner.state
        self.problems = problems

    def iteration(self, it: int) -> dict:
        from reasonjax.rl.loop import iteration_rollouts

        t0 = time.perf_counter()
        ro, key, _ = iteration_rollouts(self.learner, self.env,
                                        self.learner.model_params(self.state), self.problems, it)
        t1 = time.perf_counter()
        self.state, metrics = self.learner.update(self.state, ro, key)  # floats: synced
        t2 = time.perf_counter()
        return {"seconds": t2 - t0, "rollout_s": t1 - t0, "update_s": t2 - t1,
                "tokens": int(ro.batch["segment_ids"].sum()),
                "completion_len": float(ro.lengths.mean()), "reward": metrics["reward"],
                "loss": metrics["loss"]}


def same_weights(cfg, params, model, tok, prompts) -> float:
    """Max |our logits - transformers' logits| on ``prompts`` (one at a time, no padding)."""
    import jax.numpy as jnp
    import torch

    from reasonjax.models import Transformer

    worst = 0.0
    for text in prompts:
        ids = tok.encode(text, add_bos=True)
        ours = np.asarray(Transformer(cfg).apply({"params": params},
                                                 jnp.asarray([ids], jnp.int32)).logits)
        with torch.no_grad():
            theirs = model(input_ids=torch.tensor([ids])).logits.numpy()
        worst = max(worst, float(np.abs(ours - theirs).max()))
    return worst


def trl_trainer(model, hf_tok, task, problems, order, args, steps, out_dir, on_step):
    """A ``GRPOTrainer`` set up like ours; ``on_step(i, record)`` is called after each of
    its ``steps`` steps with that step's timing and token counts."""
    from datasets import Dataset
    from transformers import PrinterCallback, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from reasonjax.data import formatting
    from reasonjax.driver.rollouts import outcome_rewards
    from reasonjax.models.tokenizer import CharTokenizer

    task_tok = CharTokenizer()
    rows = args.prompts * args.group
    current: dict = {}

    def reward(prompts, completions, completion_ids, index, **_):
        probs = [problems[i] for i in index]
        current["index"] = sorted(set(index))
        current["tokens"] = sum(len(c) for c in completion_ids) + sum(
            len(formatting.encode_prompt(task_tok, task.prompt(p))["prompt_tokens"])
            for p in probs)
        current["completion_len"] = float(np.mean([len(c) for c in completion_ids]))
        rewards, _ = outcome_rewards(task, probs, completions, 0.0)
        current["reward"] = float(rewards.mean())
        return rewards.tolist()

    data = Dataset.from_list([{"prompt": task.prompt(problems[i]), "index": i}
                              for i in order])
    config = GRPOConfig(
        output_dir=out_dir, use_cpu=True, bf16=False, gradient_checkpointing=False,
        report_to="none", save_strategy="no", logging_steps=10 ** 9, disable_tqdm=True,
        log_completions=False, seed=0, dataloader_num_workers=0, remove_unused_columns=False,
        max_steps=steps, per_device_train_batch_size=rows, gradient_accumulation_steps=1,
        steps_per_generation=1, num_iterations=1, shuffle_dataset=False,
        num_generations=args.group, max_completion_length=args.max_new_tokens,
        temperature=1.0, top_p=1.0, top_k=0, use_vllm=False,
        beta=0.0, epsilon=0.2, loss_type="grpo", scale_rewards="group",
        learning_rate=args.lr, lr_scheduler_type="constant", warmup_steps=0,
        weight_decay=0.0, adam_beta1=0.9, adam_beta2=0.95, adam_epsilon=1e-8,
        max_grad_norm=1.0)

    class Timer(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            current.clear()
            current["t0"] = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            t2 = time.perf_counter()
            rec = {"index": current["index"], "seconds": t2 - current["t0"],
                   "rollout_s": current["t1"] - current["t0"], "update_s": t2 - current["t1"],
                   "tokens": current["tokens"], "completion_len": current["completion_len"],
                   "reward": current["reward"]}
            on_step(state.global_step - 1, rec)

    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=config, train_dataset=data,
                          processing_class=hf_tok, callbacks=[Timer()])
    trainer.remove_callback(PrinterCallback)  # its end-of-training log dict
    generate = trainer._generate_and_score_completions

    def timed_generate(inputs):  # the rollout: generate, decode, reward, advantages
        out = generate(inputs)
        current["t1"] = time.perf_counter()
        return out

    trainer._generate_and_score_completions = timed_generate
    return trainer


def summary(records: list[dict]) -> dict:
    tok_s = [r["tokens"] / r["seconds"] for r in records]
    return {"tok_s": float(np.median(tok_s)), "best_tok_s": float(np.max(tok_s)),
            "seconds": float(np.median([r["seconds"] for r in records])),
            "rollout_s": float(np.median([r["rollout_s"] for r in records])),
            "update_s": float(np.median([r["update_s"] for r in records])),
            "tokens": float(np.mean([r["tokens"] for r in records])),
            "completion_len": float(np.mean([r["completion_len"] for r in records]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="tiny-3m")
    parser.add_argument("--iterations", type=int, default=8, help="timed iterations")
    parser.add_argument("--warmup", type=int, default=2, help="untimed first iterations")
    parser.add_argument("--prompts", type=int, default=8, help="prompts per iteration")
    parser.add_argument("--group", type=int, default=8, help="completions per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--torch-threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    import jax
    import torch
    import transformers
    import trl
    from transformers import LlamaForCausalLM

    from reasonjax.data.task import get_task
    from reasonjax.driver import Env
    from reasonjax.models import get_config, init_params, save_pretrained
    from reasonjax.models.tokenizer import CharTokenizer
    from reasonjax.rl.algorithms import GRPO
    from reasonjax.rl.config import RLConfig
    from reasonjax.rl.loop import problem_order
    from reasonjax.search.sampler import SamplingConfig
    from reasonjax.train.state import OptimConfig

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)
    torch.set_num_threads(args.torch_threads)
    load_before = os.getloadavg()
    peak = matmul_peak()
    tok = CharTokenizer()
    task = get_task("arithmetic")
    cfg = get_config(args.preset, vocab_size=tok.vocab_size)
    problems = task.generate(512, seed="rl")
    steps = args.warmup + args.iterations
    rl_cfg = RLConfig(algorithm=GRPO(), iterations=steps, prompts_per_iteration=args.prompts,
                      samples_per_prompt=args.group, max_new_tokens=args.max_new_tokens,
                      sampling=SamplingConfig(temperature=1.0), epochs=1, minibatch_size=None,
                      optim=OptimConfig(lr=args.lr, schedule="constant", warmup_steps=0,
                                        b1=0.9, b2=0.95, weight_decay=0.0, clip_norm=1.0),
                      seed=0)
    # The problems of iteration i, as the RL loop picks them: TRL gets them in this order.
    order = [j for i in range(steps)
             for j in problem_order(len(problems), i, args.prompts, rl_cfg.seed)]

    print(f"RL iteration (GRPO): {args.preset} ({cfg.num_params() / 1e6:.2f}M params, vocab "
          f"{cfg.vocab_size}), {args.prompts} prompts x {args.group} samples, up to "
          f"{args.max_new_tokens} new tokens, temperature 1; {args.warmup} warm-up + "
          f"{args.iterations} timed iterations")
    print(f"jax {jax.__version__}, torch {torch.__version__}, transformers "
          f"{transformers.__version__}, trl {trl.__version__}; {os.cpu_count()} cores, torch "
          f"threads {torch.get_num_threads()}; fp32 matmul peak: JAX {peak['jax']:.0f} "
          f"GFLOP/s, PyTorch {peak['torch']:.0f} GFLOP/s; load average before "
          f"{load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}", flush=True)
    if load_before[0] > 0.5:
        print(f"warning: load average {load_before[0]:.2f} before the run: other work shares "
              "these cores, and PyTorch's OpenMP threads stall when they do (see the module "
              "docstring); the figures may not be representative", flush=True)

    params = init_params(cfg, jax.random.key(0))
    with tempfile.TemporaryDirectory(prefix="rj_rl_bench_") as tmp:
        hf_dir = save_pretrained(cfg, params, os.path.join(tmp, "hf"))
        model = LlamaForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
        diff = same_weights(cfg, params, model, tok, [task.prompt(problems[i])
                                                       for i in order[:args.prompts]])
        print(f"same weights: max |logits ours - transformers| = {diff:.1e} on the first "
              "iteration's prompts", flush=True)
        ours = Ours(cfg, params, Env(task, tok, cfg), problems, rl_cfg)
        records: dict = {"ours": [], "trl": []}

        def on_step(i: int, theirs: dict) -> None:
            mine = ours.iteration(i)  # our iteration i, right after TRL's step i
            if theirs.pop("index") != sorted(set(order[i * args.prompts:(i + 1) * args.prompts])):
                raise RuntimeError(f"TRL's step {i} did not get our iteration {i}'s prompts")
            records["ours"].append(mine)
            records["trl"].append(theirs)
            tag = "warm-up" if i < args.warmup else "timed"
            print(f"iter {i:2d} {tag:7s}  ours {mine['seconds']:6.2f} s ({mine['rollout_s']:5.2f}"
                  f" rollout + {mine['update_s']:5.2f} update) {mine['tokens']:6d} tok "
                  f"{mine['tokens'] / mine['seconds']:7.0f} tok/s   TRL {theirs['seconds']:6.2f} "
                  f"s ({theirs['rollout_s']:5.2f} + {theirs['update_s']:5.2f}) "
                  f"{theirs['tokens']:6d} tok {theirs['tokens'] / theirs['seconds']:7.0f} tok/s",
                  flush=True)

        trainer = trl_trainer(model, hf_char_tokenizer(tok), task, problems, order, args,
                              steps, os.path.join(tmp, "trl"), on_step)
        trainer.train()

    load_after = os.getloadavg()
    if len(records["ours"]) != steps:
        raise RuntimeError(f"ran {len(records['ours'])} iterations, expected {steps}")
    rows = {side: summary(r[args.warmup:]) for side, r in records.items()}
    ratio = rows["ours"]["tok_s"] / rows["trl"]["tok_s"]
    for side, name in (("ours", "reasonjax"), ("trl", f"TRL {trl.__version__}")):
        r = rows[side]
        print(f"{name:10s} {r['tok_s']:8.0f} tok/s (best {r['best_tok_s']:.0f})  median "
              f"{r['seconds']:6.2f} s/iteration "
              f"({r['rollout_s']:.2f} rollout + {r['update_s']:.2f} update), "
              f"{r['tokens']:.0f} tokens/iteration, mean completion {r['completion_len']:.1f} "
              "tokens")
    print(f"ratio ours/TRL: {ratio:.2f}x tokens/s (medians; best/best "
          f"{rows['ours']['best_tok_s'] / rows['trl']['best_tok_s']:.2f}x); load average after "
          f"{load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "matmul_peak_gflops": peak,
                       "load_before": load_before, "load_after": load_after,
                       "iterations": records, "summary": rows, "ratio": ratio}, f, indent=2)


if __name__ == "__main__":
    main()
