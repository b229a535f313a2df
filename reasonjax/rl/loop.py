"""The RL loop: it only sequences (pick problems, sample, update), checkpoints, evaluates
and reports; the work is the learner's pure update (:mod:`reasonjax.rl.update`).

::

    learner = make_learner(model_config, sft_params, RLConfig(algorithm=GRPO(kl_coef=0.04)))
    params, history = rl_train(learner, Env(task, tok, model_config), problems,
                               eval_problems=held_out, run_dir="runs/grpo")

Iteration i takes the i-th ``prompts_per_iteration`` problems of a seeded stream of
permutations of ``problems`` (:func:`problem_order`) and samples ``samples_per_prompt``
completions each through the driver (:func:`iteration_rollouts`), with the key
``fold_in(key(seed), i)`` that the update then shuffles minibatches with. So iteration i
depends only on (seed, i) and the state, and a run resumed from a checkpoint continues
exactly as an uninterrupted one would.

Two of DAPO's pieces act here, on the sampled rollouts before the update (Yu et al., 2025):
the soft overlong penalty is added to the rewards (:func:`overlong_shaped`), and with
dynamic sampling the groups whose rewards are all equal are dropped and the batch refilled
from further draws (:func:`dynamic_sample`). Draw k >= 1 of iteration i takes its prompts
from the k-th extra stream of permutations and its key from ``fold_in(key_i, 2**20 + k)``,
so it too depends only on (seed, i).

With ``RLConfig.curriculum`` the self-evolving curriculum's bandit picks iteration i's
problems instead (:mod:`reasonjax.rl.curriculum`): from (seed, i) and the categories'
values, which are updated from each iteration's advantages and saved with every
checkpoint, so a resumed run still continues exactly.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import jax
import numpy as np

from reasonjax import checkpoint
from reasonjax.data.task import Problem
from reasonjax.driver.env import Env, longest_prompt
from reasonjax.driver.records import greedy_accuracy
from reasonjax.driver.rollouts import Rollouts, collect, concat, take
from reasonjax.models.tokenizer import check_vocab
from reasonjax.search.sampler import SampleConfig
from reasonjax.rl import curriculum
from reasonjax.rl.update import Learner, RLState
from reasonjax.train import lora, rl
from reasonjax.train.loop import CHECKPOINTS, MetricsWriter, check_finite, progress_bar

# Shown per iteration on the console (everything goes to metrics.jsonl).
SHOWN = ("iteration", "reward", "accuracy", "loss", "kl_ref", "eval/greedy_accuracy")


def problem_order(n_problems: int, iteration: int, per_iteration: int, seed: int,
                  stream: int = 0) -> list[int]:
    """Indices of the problems of ``iteration``: consecutive slices of a stream of seeded
    permutations (a fresh one every pass), so iteration i's problems depend only on i.
    ``stream`` k >= 1: another such stream (dynamic sampling's k-th refill)."""
    out = []
    for k in range(iteration * per_iteration, (iteration + 1) * per_iteration):
        epoch, pos = divmod(k, n_problems)
        rng_seed = [seed, epoch] if stream == 0 else [seed, epoch, stream]
        out.append(int(np.random.default_rng(rng_seed).permutation(n_problems)[pos]))
    return out


def run_env(learner: Learner, env: Env, problems: Sequence[Problem]) -> Env:
    """``env`` on the learner's mesh with the run's prompt padding: its longest prompt over
    every problem it samples or evaluates, so every sampling call has one shape (one
    compile)."""
    env = dataclasses.replace(env, mesh=learner.mesh, prompt_len=None)
    return dataclasses.replace(env, prompt_len=longest_prompt(env, list(problems)))


# Keys of dynamic sampling's extra draws: fold_in(iteration key, RESAMPLE_KEYS + k), far
# from the update's fold_in(key, 1 + epoch).
RESAMPLE_KEYS = 2 ** 20


def overlong_shaped(learner: Learner, ro: Rollouts) -> Rollouts:
    """``ro`` with DAPO's soft overlong penalty added to its rewards (unchanged when the
    algorithm's ``overlong_buffer`` is 0)."""
    cfg = learner.config
    if cfg.overlong_tokens == 0:
        return ro
    penalty = np.asarray(rl.overlong_penalty(ro.lengths, cfg.max_new_tokens,
                                             cfg.overlong_tokens,
                                             cfg.algorithm.overlong_penalty))
    return dataclasses.replace(ro, rewards=(ro.rewards + penalty).astype(np.float32))


def dynamic_sample(draw, n: int, groups: int, max_resamples: int
                   ) -> tuple[Rollouts, dict]:
    """DAPO's dynamic sampling: ``draw(k)`` (k = 0, 1, ...) gives rollouts of ``groups``
    prompts x ``n`` samples; groups whose rewards are all equal are dropped and draws
    continue until ``groups`` informative ones are found or ``max_resamples`` extra draws
    are spent. Returns (the first ``groups`` informative groups, in draw order, topped up
    with tied ones when too few were found so the batch keeps its shape (their baselined
    advantages are 0); metrics ``dynamic/informative_fraction`` (of the groups kept) and
    ``dynamic/draws``)."""
    parts, informative, tied = [], [], []
    for k in range(max_resamples + 1):
        ro = draw(k)
        offset = sum(len(p.rewards) for p in parts)
        parts.append(ro)
        keep = np.asarray(rl.informative_groups(ro.rewards, n))
        for g, ok in enumerate(keep):
            (informative if ok else tied).append(offset + g * n)
        if len(informative) >= groups:
            break
    starts = (informative + tied)[:groups]
    rows = [s + j for s in starts for j in range(n)]
    return take(concat(parts), rows), {
        "dynamic/informative_fraction": min(len(informative), groups) / groups,
        "dynamic/draws": float(len(parts))}


def iteration_rollouts(learner: Learner, env: Env, params, problems: Sequence[Problem],
                       iteration: int, order: Optional[Sequence[int]] = None
                       ) -> tuple[Rollouts, jax.Array, dict]:
    """(rollouts of ``iteration`` from the policy ``params``, the iteration's key, sampling
    metrics): the loop's only call of the driver's sampling, with the algorithm's overlong
    penalty and dynamic sampling (module docstring). ``order``: the indices of the
    problems to sample (the curriculum's draw; None: :func:`problem_order`'s)."""
    cfg = learner.config
    key = jax.random.fold_in(jax.random.key(cfg.seed), iteration)
    sample = SampleConfig(n=cfg.samples_per_prompt, max_new_tokens=cfg.max_new_tokens,
                          sampling=cfg.sampling)

    def draw(k: int) -> Rollouts:
        chosen = [problems[i] for i in (order if order is not None and k == 0 else
                                        problem_order(len(problems), iteration,
                                                      cfg.prompts_per_iteration, cfg.seed,
                                                      stream=k))]
        draw_key = key if k == 0 else jax.random.fold_in(key, RESAMPLE_KEYS + k)
        return overlong_shaped(learner, collect(env, params, chosen, sample, draw_key,
                                                cfg.partial_reward))

    if not cfg.algorithm.dynamic_sampling:
        return draw(0), key, {}
    ro, metrics = dynamic_sample(draw, cfg.samples_per_prompt, cfg.prompts_per_iteration,
                                 cfg.algorithm.max_resamples)
    return ro, key, metrics


def evaluate(learner: Learner, env: Env, params, problems: Sequence[Problem]) -> float:
    """Greedy accuracy of ``params`` on ``problems``: the loop's only evaluation call."""
    cfg = learner.config
    return greedy_accuracy(env, params, problems, cfg.max_new_tokens, batch_size=cfg.rows)


def resume(learner: Learner, run_dir: Optional[str]) -> tuple[RLState, dict, Any]:
    """(state, the loop's saved host state (``iteration``: iterations done; with a
    curriculum, ``curriculum_q``: the categories' values), checkpoint manager or None): the
    newest intact checkpoint under ``run_dir/checkpoints`` restored onto the learner's
    shardings (unreadable newer ones moved aside with a warning), else its start."""
    if run_dir is None:
        return learner.state, {"iteration": 0}, None
    path = Path(run_dir)
    path.mkdir(parents=True, exist_ok=True)
    manager = checkpoint.make_manager(path / CHECKPOINTS, async_save=False)
    restored = checkpoint.restore_intact(
        manager, checkpoint.abstract_tree(learner.state, learner.shardings))
    if restored is None:
        return learner.state, {"iteration": 0}, manager
    state, data_state, _ = restored
    return state, dict(data_state), manager


@dataclasses.dataclass
class Curriculum:
    """The loop's self-evolving curriculum: the config, each problem's category [N], the
    categories' labels and values q [C] (host state, saved in checkpoints)."""

    config: curriculum.CurriculumConfig
    category: np.ndarray
    labels: list
    q: np.ndarray

    @classmethod
    def start(cls, config: curriculum.CurriculumConfig, problems: Sequence[Problem],
              saved: dict) -> "Curriculum":
        category, labels = curriculum.categories(problems, config.key)
        q = np.asarray(saved.get("curriculum_q", np.zeros(len(labels))), np.float64)
        if q.shape != (len(labels),):
            raise ValueError(f"the checkpoint's curriculum has {q.shape[0]} categories, the "
                             f"problems have {len(labels)}; resume with the same problems")
        return cls(config, category, labels, q)

    def draw(self, n: int, seed: int, iteration: int) -> list[int]:
        return curriculum.draw(self.category, self.q, self.config.temperature, n, seed,
                               iteration)

    def learn(self, learner: Learner, ro: Rollouts, order: Sequence[int]) -> dict:
        """Updates q from the iteration's rollouts of problems ``order``; its metrics."""
        alg = learner.config.algorithm
        adv = curriculum.group_abs_advantages(
            ro.rewards, learner.config.samples_per_prompt, getattr(alg, "baseline", "mean"),
            getattr(alg, "scale", "group"))
        reward, drawn = curriculum.rewards(adv, self.category[np.asarray(order)],
                                           len(self.labels))
        self.q = curriculum.update(self.q, reward, drawn, self.config.lr)
        p = curriculum.probabilities(self.q, self.config.temperature)
        return {**{f"curriculum/q{c}": float(v) for c, v in enumerate(self.q)},
                **{f"curriculum/p{c}": float(v) for c, v in enumerate(p)}}


def rl_train(learner: Learner, env: Env, problems: Sequence[Problem], *,
             eval_problems: Optional[Sequence[Problem]] = None,
             run_dir: Optional[str] = None, progress: bool = True) -> tuple[Any, list[dict]]:
    """RL of the learner's policy on ``env.task`` (module docstring), sampling through the
    driver on ``env`` (placed on the learner's mesh). Returns (params, history).

    eval_problems: held-out problems whose greedy accuracy is logged at the start, every
    ``eval_every`` iterations and at the end. history: one dict per iteration
    (``iteration``, ``reward``, ``accuracy`` of the samples, ``length``, the loss metrics
    averaged over the last epoch, PRIME's ``prm/`` metrics, ``seconds``, and
    ``eval/greedy_accuracy`` when evaluated); also written to ``run_dir/metrics.jsonl``.
    With ``run_dir`` the state is checkpointed every ``checkpoint_every`` iterations and at
    the end (under LoRA the adapters alone, also written to ``run_dir/adapters``), and a
    rerun resumes after the latest saved iteration (history then holds the
    iterations run by this call). A non-finite loss stops the run before its state is saved.
    """
    check_vocab(learner.model_config.vocab_size, env.tokenizer)
    if not problems:
        raise ValueError("rl_train: no problems")
    cfg = learner.config
    env = run_env(learner, env, list(problems) + list(eval_problems or []))
    state, saved, manager = resume(learner, run_dir)
    start = int(saved["iteration"])
    bandit = None if cfg.curriculum is None else Curriculum.start(cfg.curriculum, problems,
                                                                    saved)
    writer = MetricsWriter(None if run_dir is None else Path(run_dir), start)
    history: list[dict] = []

    def log(record: dict) -> None:
        history.append(record)
        writer.write(record["iteration"], record)

    try:
        with progress_bar(progress) as bar:
            task_id = bar.add_task(cfg.algorithm.name, total=cfg.iterations, completed=start,
                                   info="")
            if eval_problems and cfg.eval_every and start == 0:
                log({"iteration": 0, "eval/greedy_accuracy": evaluate(
                    learner, env, learner.model_params(state), eval_problems)})
            for it in range(start, cfg.iterations):
                t0 = time.perf_counter()
                order = None if bandit is None else bandit.draw(cfg.prompts_per_iteration,
                                                                cfg.seed, it)
                ro, key, sampled = iteration_rollouts(learner, env, learner.model_params(state),
                                                      problems, it, order)
                state, metrics = learner.update(state, ro, key)
                if bandit is not None:
                    sampled = {**sampled, **bandit.learn(learner, ro, order)}
                metrics = {**metrics, **sampled}
                check_finite(metrics, it + 1, manager, unit="iteration")
                record = {"iteration": it + 1, **metrics, "seconds": time.perf_counter() - t0}
                done = it + 1 == cfg.iterations
                if eval_problems and cfg.eval_every and ((it + 1) % cfg.eval_every == 0 or done):
                    record["eval/greedy_accuracy"] = evaluate(
                        learner, env, learner.model_params(state), eval_problems)
                log(record)
                if manager is not None and ((it + 1) % cfg.checkpoint_every == 0 or done):
                    saved = {"iteration": it + 1}
                    if bandit is not None:
                        saved["curriculum_q"] = [float(v) for v in bandit.q]
                    checkpoint.save_state(manager, it + 1, state, saved)
                _report(bar, task_id, cfg.algorithm.name, record, progress)
    finally:
        writer.close()
        if manager is not None:
            manager.close()
    if cfg.lora is not None and run_dir is not None:
        lora.save_adapters(Path(run_dir) / lora.ADAPTERS_DIR, state.policy.params, cfg.lora)
    return learner.model_params(state), history


def _report(bar, task_id, name: str, record: dict, enabled: bool) -> None:
    """Advances the progress bar and prints the iteration's headline numbers on its
    console."""
    bar.update(task_id, completed=record["iteration"], info=(
        f"reward {record['reward']:.3f}  loss {record['loss']:.4f}"))
    if enabled:
        shown = {k: round(v, 4) for k, v in record.items() if k in SHOWN}
        bar.console.print(f"{name} {shown}")
