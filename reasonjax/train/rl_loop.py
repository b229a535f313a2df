"""On-policy RL on a task: sample, judge, compute advantages, several clipped-PG epochs.

One iteration of :func:`rl_train`:

1. take the next ``prompts_per_iteration`` problems (a seeded shuffle of ``problems``,
   reshuffled every pass) and sample ``samples_per_prompt`` completions each with the
   search sampler (:func:`reasonjax.train.rollout.generate`: one prefill per prompt,
   batched and jitted);
2. rewards from the task's verifier (ReFT's partial reward optional);
3. one forward of the policy (and of the frozen reference when a KL term or PRIME needs
   it) gives ``old_logps``, the critic's ``old_values`` and ``ref_logps``;
4. advantages by ``algorithm`` (:mod:`reasonjax.train.rl` has the math and papers):

   - ``grpo``: group-normalised outcome rewards, loss averaged per sequence, KL to the
     reference (k3) in the loss (DeepSeekMath);
   - ``dr_grpo``: mean-centred only, token sum over a constant (Dr. GRPO);
   - ``rloo``: leave-one-out baseline (RLOO);
   - ``ppo``: the outcome reward at the last token minus kl_coef x k1 per token, GAE with
     the value head as critic, whitened advantages, critic loss (ReFT);
   - ``prime``: PRIME's implicit process rewards from an online implicit PRM (its own
     params, initialised like the policy and trained on the outcome labels of each batch
     before scoring it) plus leave-one-out outcome advantages;

   with a ``step_scorer`` the PRM step scores are shaped (``clip`` / ``delta``) and added:
   as token rewards before GAE for ``ppo``, as their return-to-go otherwise;
5. ``epochs`` passes over the rollouts in shuffled minibatches through the sharded step
   with :func:`reasonjax.train.rl.policy_gradient_loss`.

Every jitted piece (sampler, scoring forward, train step) keeps one shape across
iterations, so nothing recompiles after the first iteration.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable, Literal, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from reasonjax import checkpoint, parallel
from reasonjax.config import ConfigError
from reasonjax.data.task import Problem, Task
from reasonjax.models.config import ModelConfig
from reasonjax.models.tokenizer import Tokenizer, check_vocab, delimiter_automaton
from reasonjax.search.sampler import SamplingConfig
from reasonjax.train import rl
from reasonjax.train.fit import setup
from reasonjax.train.logprobs import forward, shift_values, token_logprobs
from reasonjax.train.loop import CHECKPOINTS, MetricsWriter, NonFiniteLossError
from reasonjax.driver.env import Env, longest_prompt
from reasonjax.driver.rollouts import Rollouts, generate, greedy_accuracy
from reasonjax.train.state import OptimConfig, make_schedule
from reasonjax.train.step import make_train_step, place_batch

Algorithm = Literal["grpo", "dr_grpo", "rloo", "ppo", "prime"]
ALGORITHMS = ("grpo", "dr_grpo", "rloo", "ppo", "prime")

# (tokens [R, L], positions [R, L], segment_ids [R, L]) -> per-token step score [R, L]: the
# PRM's score of the prefix ending at each token (read at step ends).
StepScorer = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class RLConfig:
    """iterations: sample-and-update rounds. prompts_per_iteration x samples_per_prompt
    rollouts per round; epochs passes over them in minibatches of ``minibatch_size`` rows
    (None: all rows in one step; must divide the rollouts and the data axes). temperature / top_p: sampling.
    kl_coef: KL to the frozen reference (grpo / dr_grpo / rloo / prime: k3 in the loss; ppo:
    k1 subtracted from the token rewards). partial_reward: ReFT's reward for a readable but
    wrong answer. value_coef / value_clip / gamma / lam / whiten: the PPO critic and GAE.
    prm_shaping / prm_eta / prm_coef: PRM step rewards (needs a step_scorer).
    prime_beta / prime_process_coef: PRIME. eval_every: greedy accuracy on the eval
    problems every k iterations (and at the start and end). checkpoint_every: with a run
    dir, save the policy (and PRIME's PRM) every k iterations and at the end."""

    algorithm: Algorithm = "grpo"
    iterations: int = 20
    prompts_per_iteration: int = 16
    samples_per_prompt: int = 8
    max_new_tokens: int = 48
    temperature: float = 1.0
    top_p: float = 1.0
    epochs: int = 1
    minibatch_size: Optional[int] = None
    clip_eps: float = 0.2
    kl_coef: float = 0.0
    partial_reward: float = 0.0
    value_coef: float = 0.5
    value_clip: float = 0.2
    gamma: float = 1.0
    lam: float = 0.95
    whiten: bool = True
    prm_shaping: Optional[Literal["clip", "delta", "clip_delta"]] = None
    prm_eta: float = 0.0
    prm_coef: float = 1.0
    prime_beta: float = 0.05
    prime_process_coef: float = 1.0
    optim: OptimConfig = OptimConfig(lr=1e-5, schedule="constant", warmup_steps=0)
    eval_every: int = 0
    checkpoint_every: int = 10
    seed: int = 0

    def __post_init__(self):
        problems = []
        if self.algorithm not in ALGORITHMS:
            problems.append(f"rl.algorithm must be one of {ALGORITHMS}, got {self.algorithm!r}")
        for name in ("iterations", "prompts_per_iteration", "samples_per_prompt",
                     "max_new_tokens", "epochs", "checkpoint_every"):
            if getattr(self, name) < 1:
                problems.append(f"rl.{name} must be >= 1, got {getattr(self, name)}")
        if self.algorithm in ("grpo", "dr_grpo", "rloo", "prime") and self.samples_per_prompt < 2:
            problems.append(f"rl.samples_per_prompt must be >= 2 for {self.algorithm} (group "
                            f"baselines), got {self.samples_per_prompt}")
        rows = self.prompts_per_iteration * self.samples_per_prompt
        if self.minibatch_size is not None and (self.minibatch_size < 1
                                                or rows % self.minibatch_size):
            problems.append(f"rl.minibatch_size={self.minibatch_size} must divide the "
                            f"{rows} rollouts of an iteration (prompts_per_iteration x "
                            "samples_per_prompt)")
        if self.kl_coef < 0 or self.value_coef < 0:
            problems.append("rl.kl_coef and rl.value_coef must be >= 0")
        if problems:
            raise ConfigError("; ".join(problems))


def problem_order(n_problems: int, iteration: int, per_iteration: int, seed: int) -> list[int]:
    """Indices of the problems of ``iteration``: consecutive slices of a stream of seeded
    permutations (a fresh one every pass), so iteration i's problems depend only on i."""
    out = []
    for k in range(iteration * per_iteration, (iteration + 1) * per_iteration):
        epoch, pos = divmod(k, n_problems)
        out.append(int(np.random.default_rng([seed, epoch]).permutation(n_problems)[pos]))
    return out


def step_end_mask(tok: Tokenizer, delimiter: str, tokens_RL: np.ndarray,
                  loss_mask_RL: np.ndarray) -> np.ndarray:
    """[R, L] 1 on completion tokens that end a step: the token completing the delimiter,
    and each row's last completion token (the final step ends at EOS or the budget)."""
    auto = delimiter_automaton(tok, delimiter)
    out = np.zeros(tokens_RL.shape, np.float32)
    for r in range(tokens_RL.shape[0]):
        state = 0
        cols = np.flatnonzero(loss_mask_RL[r] > 0)
        for t in cols:
            tid = int(tokens_RL[r, t])
            if tid < auto.completes.shape[1]:
                if auto.completes[state, tid]:
                    out[r, t] = 1.0
                state = auto.next_state[state, tid]
        if len(cols):
            out[r, cols[-1]] = 1.0
    return out


def value_head_scorer(model_config: ModelConfig, prm_params,
                      transform: Literal["sigmoid", "tanh", "none"] = "sigmoid") -> StepScorer:
    """A StepScorer from a value-head PRM (``reasonjax.train.value``): transform(value)."""
    from reasonjax.train.value import TRANSFORMS

    def score(tokens, positions, segment_ids):
        out = forward(model_config, prm_params, {"tokens": tokens, "positions": positions,
                                                  "segment_ids": segment_ids})
        return TRANSFORMS[transform](out.values)

    return score


def _loss_config(cfg: RLConfig) -> rl.PolicyLossConfig:
    if cfg.algorithm == "ppo":
        return rl.PolicyLossConfig(clip_eps=cfg.clip_eps, aggregation="token",
                                   value_coef=cfg.value_coef, value_clip=cfg.value_clip)
    aggregation = "constant" if cfg.algorithm == "dr_grpo" else "sequence"
    return rl.PolicyLossConfig(clip_eps=cfg.clip_eps, kl_coef=cfg.kl_coef,
                               kl_estimator="k3", aggregation=aggregation,
                               max_tokens=cfg.max_new_tokens if aggregation == "constant"
                               else None)


def _make_stats_fn(model_config: ModelConfig):
    """Jitted (params, batch) -> (token log-probs [R, L], values aligned with tokens)."""
    @jax.jit
    def stats(params, batch):
        out = forward(model_config, params, batch)
        return token_logprobs(out.logits, batch["tokens"]), shift_values(out.values)
    return stats


def compute_advantages(cfg: RLConfig, rewards_R, mask_RL, logps_RL, ref_logps_RL,
                       values_RL, shaped_RL=None, prime_process_RL=None) -> dict:
    """Rollout-batch extras for ``cfg.algorithm``: ``advantages`` [R, L] (+ ``returns``
    for ppo). shaped_RL: PRM step rewards (:func:`rl.shape_prm_rewards`) or None."""
    n = cfg.samples_per_prompt
    r = jnp.asarray(rewards_R)
    if cfg.algorithm == "ppo":
        token_rewards = rl.rewards_at_end(r, mask_RL)
        if cfg.kl_coef > 0:
            token_rewards -= cfg.kl_coef * rl.kl_penalty(logps_RL, ref_logps_RL, "k1") * mask_RL
        if shaped_RL is not None:
            token_rewards += cfg.prm_coef * shaped_RL
        adv, returns = rl.gae(token_rewards, values_RL, mask_RL, cfg.gamma, cfg.lam)
        if cfg.whiten:
            adv = rl.whiten(adv, mask_RL)
        return {"advantages": adv, "returns": returns}
    if cfg.algorithm == "prime":
        adv = rl.prime_advantages(prime_process_RL, r, mask_RL, n,
                                  process_coef=cfg.prime_process_coef, gamma=cfg.gamma)
    elif cfg.algorithm == "rloo":
        adv = rl.broadcast_to_tokens(rl.leave_one_out_advantages(r, n), mask_RL)
    else:
        adv = rl.broadcast_to_tokens(
            rl.group_advantages(r, n, scale_by_std=cfg.algorithm == "grpo"), mask_RL)
    if shaped_RL is not None:
        adv = adv + cfg.prm_coef * rl.discounted_returns(shaped_RL, mask_RL, cfg.gamma)
    return {"advantages": adv}


def _mean_metrics(metrics: Sequence[dict]) -> dict:
    host = jax.device_get(list(metrics))
    return {k: float(np.mean([float(m[k]) for m in host])) for k in host[0]}


def rl_train(model_config: ModelConfig, params, tok: Tokenizer, task: Task,
             problems: Sequence[Problem], cfg: RLConfig = RLConfig(), *, ref_params=None,
             eval_problems: Optional[Sequence[Problem]] = None,
             step_scorer: Optional[StepScorer] = None, mesh: Optional[Mesh] = None,
             run_dir: Optional[str] = None, progress: bool = True) -> tuple[Any, list[dict]]:
    """RL of ``params`` on ``task`` (module docstring). Returns (params, history).

    ref_params: the frozen reference for the KL term and PRIME (default: a copy of
    ``params``, i.e. the SFT model). eval_problems: held-out problems whose greedy accuracy
    is logged at the start, every ``cfg.eval_every`` iterations and at the end.
    step_scorer: a PRM (e.g. :func:`value_head_scorer`) for ``cfg.prm_shaping``.
    history: one dict per iteration (``iteration``, ``reward``, ``accuracy`` of the
    samples, ``length``, the loss metrics averaged over the last epoch, and
    ``eval/greedy_accuracy`` when evaluated); also written to ``run_dir/metrics.jsonl``.

    With ``run_dir`` the policy state (and PRIME's PRM state) is checkpointed under
    ``run_dir/checkpoints`` every ``cfg.checkpoint_every`` iterations; a rerun resumes
    after the latest saved iteration. Iteration k's problems and sampling key depend only
    on (seed, k), so a resumed run continues exactly as an uninterrupted one would; the
    returned history then holds the iterations run by this call.
    """
    check_vocab(model_config.vocab_size, tok)
    if (cfg.prm_shaping is None) != (step_scorer is None):
        raise ConfigError("rl.prm_shaping and step_scorer go together: set rl.prm_shaping "
                          "(clip / delta / clip_delta) and pass a step_scorer, or neither")
    if not problems:
        raise ValueError("rl_train: no problems")
    s = setup(model_config, params, cfg.optim, seed=cfg.seed, mesh=mesh)
    mesh, state = s.mesh, s.state
    rows = cfg.prompts_per_iteration * cfg.samples_per_prompt
    minibatch = cfg.minibatch_size or rows
    parallel.validate_batch(cfg.prompts_per_iteration, mesh, what="rl.prompts_per_iteration")
    parallel.validate_batch(minibatch, mesh, what="rl.minibatch_size")
    loss_cfg = _loss_config(cfg)
    needs_ref = cfg.kl_coef > 0 or cfg.algorithm == "prime"
    if needs_ref:
        ref = (parallel.shard_params(ref_params, model_config, mesh) if ref_params is not None
               else jax.tree.map(jnp.copy, state.params))
    step_fn = make_train_step(rl.policy_gradient_loss(model_config, loss_cfg), s.optimizer,
                              mesh, s.shardings, lr_schedule=make_schedule(cfg.optim))
    if cfg.algorithm == "prime":
        prm = setup(model_config, jax.device_get(ref), cfg.optim, seed=cfg.seed + 1, mesh=mesh)
        prm_state = prm.state
        prm_step = make_train_step(rl.prime_prm_loss(model_config, cfg.prime_beta),
                                   prm.optimizer, mesh, prm.shardings)
    stats = _make_stats_fn(model_config)
    scorer = jax.jit(step_scorer) if step_scorer is not None else None
    sampling = SamplingConfig(temperature=cfg.temperature, top_p=cfg.top_p)
    prompt_len = longest_prompt(Env(task, tok, model_config), list(problems)
                                + list(eval_problems or []))

    def evaluate(params) -> float:
        return greedy_accuracy(model_config, params, tok, task, eval_problems,
                               max_new_tokens=cfg.max_new_tokens, batch_size=rows,
                               prompt_len=prompt_len, mesh=mesh)

    def saved() -> dict:
        return {"policy": state, "prm": prm_state} if cfg.algorithm == "prime" else \
            {"policy": state}

    manager, start = None, 0
    if run_dir is not None:
        manager = checkpoint.make_manager(_run_path(run_dir) / CHECKPOINTS, async_save=False)
        shardings = {"policy": s.shardings, **({"prm": prm.shardings}
                                               if cfg.algorithm == "prime" else {})}
        restored = checkpoint.restore_state(manager, checkpoint.abstract_tree(saved(), shardings))
        if restored is not None:
            tree, data_state = restored
            state, start = tree["policy"], int(data_state["iteration"])
            if cfg.algorithm == "prime":
                prm_state = tree["prm"]
    writer = MetricsWriter(None if run_dir is None else _run_path(run_dir), start)
    history: list[dict] = []
    base_key = jax.random.key(cfg.seed)
    try:
        if eval_problems and cfg.eval_every and start == 0:
            record = {"iteration": 0, "eval/greedy_accuracy": evaluate(state.params)}
            history.append(record)
            writer.write(0, record)
        for it in range(start, cfg.iterations):
            t0 = time.perf_counter()
            key = jax.random.fold_in(base_key, it)
            chosen = [problems[i] for i in problem_order(len(problems), it,
                                                          cfg.prompts_per_iteration, cfg.seed)]
            ro: Rollouts = generate(model_config, state.params, tok, task, chosen, key,
                                    n=cfg.samples_per_prompt, max_new_tokens=cfg.max_new_tokens,
                                    sampling=sampling, prompt_len=prompt_len,
                                    partial_reward=cfg.partial_reward, mesh=mesh)
            quad = place_batch(ro.batch, mesh)
            mask = quad["loss_mask"]
            with parallel.activate(mesh):
                logps, values = stats(state.params, quad)
                ref_logps = stats(ref, quad)[0] if needs_ref else None
                shaped = None
                if scorer is not None:
                    ends = place_batch({"e": step_end_mask(
                        tok, task.step_delimiter, ro.batch["tokens"], ro.batch["loss_mask"])},
                        mesh)["e"]
                    scores = scorer(quad["tokens"], quad["positions"], quad["segment_ids"])
                    shaped = rl.shape_prm_rewards(scores, ends, cfg.prm_shaping, cfg.prm_eta)
            record: dict = {}
            process = None
            if cfg.algorithm == "prime":
                labelled = {**ro.batch, "desirable": ro.correct.astype(np.float32),
                            "ref_logps": jax.device_get(jnp.sum(ref_logps * mask, -1))}
                prm_state, prm_metrics = prm_step(prm_state, labelled)
                record.update({f"prm/{k}": float(v) for k, v in
                               jax.device_get(prm_metrics).items()})
                with parallel.activate(mesh):
                    phi_logps = stats(prm_state.params, quad)[0]
                process = rl.prime_process_rewards(phi_logps, ref_logps, mask, cfg.prime_beta)
            extras = compute_advantages(cfg, ro.rewards, mask, logps, ref_logps, values,
                                        shaped, process)
            batch = {**quad, "old_logps": logps, **extras}
            if cfg.algorithm == "ppo":
                batch["old_values"] = values
            elif cfg.kl_coef > 0:
                batch["ref_logps"] = ref_logps
            for epoch in range(cfg.epochs):
                perm = jax.random.permutation(jax.random.fold_in(key, 1 + epoch), rows)
                epoch_metrics = []
                for j in range(rows // minibatch):
                    idx = perm[j * minibatch:(j + 1) * minibatch]
                    state, metrics = step_fn(state, {k: v[idx] for k, v in batch.items()})
                    epoch_metrics.append(metrics)
            record.update(_mean_metrics(epoch_metrics))
            if not np.isfinite(record["loss"]):
                raise NonFiniteLossError(f"non-finite loss {record['loss']} at RL iteration "
                                         f"{it + 1}; lower rl.optim.lr or enable clip_norm")
            record.update({"iteration": it + 1, "reward": float(ro.rewards.mean()),
                           "accuracy": float(ro.correct.mean()),
                           "length": float(ro.lengths.mean()),
                           "seconds": time.perf_counter() - t0})
            last = it + 1 == cfg.iterations
            if eval_problems and cfg.eval_every and ((it + 1) % cfg.eval_every == 0 or last):
                record["eval/greedy_accuracy"] = evaluate(state.params)
            history.append(record)
            writer.write(it + 1, record)
            if manager is not None and ((it + 1) % cfg.checkpoint_every == 0 or last):
                checkpoint.save_state(manager, it + 1, saved(), {"iteration": it + 1})
            if progress:
                shown = {k: round(v, 4) for k, v in record.items()
                         if k in ("iteration", "reward", "accuracy", "loss", "kl_ref",
                                  "eval/greedy_accuracy")}
                print(f"{cfg.algorithm} {shown}", flush=True)
    finally:
        writer.close()
        if manager is not None:
            manager.close()
    return state.params, history


def _run_path(run_dir: str) -> Path:
    path = Path(run_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path
