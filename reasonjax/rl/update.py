"""The per-iteration RL update: rollouts in, new state and metrics out.

``update(state, rollouts, key) -> (state, metrics)`` (built once by :func:`make_learner`):

1. one forward of the policy (and of the frozen reference when the algorithm needs it)
   gives the old log-probs, the critic's old values and the reference log-probs;
2. with a step-reward function, the PRM's shaped step rewards (:mod:`.shaping`);
3. PRIME and OREAL: the second trained model (PRIME's implicit PRM, OREAL's token-level
   RM) takes one step on the batch's outcome labels and then scores its tokens
   (:func:`make_prime_prm_update`, :func:`make_token_rm_update`);
4. the algorithm's config turns these into the policy batch's advantages
   (:mod:`.algorithms`);
5. ``epochs`` passes over the rollouts in shuffled minibatches through the sharded train
   step with :func:`reasonjax.train.rl.policy_gradient_loss` (:func:`run_epochs`).

It is a pure function of its inputs (same state, rollouts and key -> same outputs): the
minibatch order comes from ``key`` and the state's own rng. Like the train step it donates
the state it is given. Every jitted piece keeps one shape across iterations, so nothing
recompiles after the first.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple, Optional

import flax
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from reasonjax import parallel
from reasonjax.config import ConfigError
from reasonjax.driver.rollouts import Rollouts
from reasonjax.models.config import ModelConfig
from reasonjax.rl.algorithms import PRIME, RolloutStats
from reasonjax.rl.config import RLConfig
from reasonjax.rl.shaping import StepRewardFn
from reasonjax.train import oreal, rl
from reasonjax.train.fit import Setup, setup
from reasonjax.train.logprobs import forward, shift_values, token_logprobs
from reasonjax.train.state import TrainState, make_schedule
from reasonjax.train.step import make_train_step, place_batch


@flax.struct.dataclass
class RLState:
    """Everything an RL run trains (one pytree: jitted, sharded, checkpointed whole).

    policy: the policy's TrainState (params with the value head, Adam moments, step, rng).
    prm:    the second trained model's TrainState: PRIME's implicit PRM, OREAL's
            token-level RM; None for the other algorithms."""

    policy: TrainState
    prm: Optional[TrainState] = None


# (state, rollouts, key) -> (new state, metrics): see the module docstring.
Update = Callable[[RLState, Rollouts, jax.Array], tuple[RLState, dict]]

# (prm state, rollouts, the rollouts placed on the mesh, reference log-probs [R, L]) ->
# (new prm state, process rewards [R, L], metrics)
PRMUpdate = Callable[[TrainState, Rollouts, dict, jax.Array],
                     tuple[TrainState, jax.Array, dict]]


class Learner(NamedTuple):
    """An RL run's fixed parts and starting state (:func:`make_learner`).

    model_config / config: the model and the RL settings. mesh: where everything runs.
    state: the starting :class:`RLState`. shardings: an RLState of its shardings (to
    restore checkpoints onto). update: the per-iteration :data:`Update`. model_params:
    state -> the policy's params as the model runs them (under LoRA the base with the
    adapters merged; else the state's own)."""

    model_config: ModelConfig
    config: RLConfig
    mesh: Mesh
    state: RLState
    shardings: RLState
    update: Update
    model_params: Callable[[RLState], Any]


def make_stats_fn(model_config: ModelConfig) -> Callable:
    """Jitted (params, rollout batch) -> (token log-probs [R, L], values [R, L] aligned with
    the tokens)."""
    @jax.jit
    def stats(params, batch):
        out = forward(model_config, params, batch)
        return token_logprobs(out.logits, batch["tokens"]), shift_values(out.values)

    return stats


def make_prime_prm_update(model_config: ModelConfig, algorithm: PRIME, prm: Setup,
                          stats: Callable) -> PRMUpdate:
    """PRIME's implicit-PRM step (Cui et al., 2025): one optimizer step of phi on the
    rollouts' outcome labels (cross-entropy on sigmoid(beta * sum_t log pi_phi / pi_ref),
    :func:`reasonjax.train.rl.prime_prm_loss`), then the batch's process rewards
    beta * (log pi_phi - log pi_ref) from the updated phi. ``stats``: :func:`make_stats_fn`."""
    step = make_train_step(rl.prime_prm_loss(model_config, algorithm.beta), prm.optimizer,
                           prm.mesh, prm.shardings)

    def prm_update(prm_state: TrainState, ro: Rollouts, placed: dict, ref_logps_RL):
        mask_RL = placed["loss_mask"]
        labelled = {**ro.batch, "desirable": ro.correct.astype(np.float32),
                    "ref_logps": jax.device_get(jnp.sum(ref_logps_RL * mask_RL, -1))}
        prm_state, metrics = step(prm_state, labelled)
        with parallel.activate(prm.mesh):
            phi_logps_RL = stats(prm_state.params, placed)[0]
        process_RL = rl.prime_process_rewards(phi_logps_RL, ref_logps_RL, mask_RL,
                                              algorithm.beta)
        return prm_state, process_RL, {f"prm/{k}": float(v)
                                       for k, v in jax.device_get(metrics).items()}

    return prm_update


def make_token_rm_update(model_config: ModelConfig, rm: Setup) -> PRMUpdate:
    """OREAL's token-level RM step: one optimizer step on the rollouts' outcome labels
    (cross-entropy on sigmoid(mean_t w_t), :func:`reasonjax.train.oreal.token_rm_loss`),
    then the batch's token scores w_t [R, L] (the value head at each completion token,
    0 elsewhere) from the updated model. The reference log-probs go unused."""
    step = make_train_step(oreal.token_rm_loss(model_config), rm.optimizer, rm.mesh,
                           rm.shardings)

    @jax.jit
    def scores(params, batch):
        return forward(model_config, params, batch).values * batch["loss_mask"]

    def rm_update(rm_state: TrainState, ro: Rollouts, placed: dict, ref_logps_RL):
        labelled = {**ro.batch, "desirable": ro.correct.astype(np.float32)}
        rm_state, metrics = step(rm_state, labelled)
        with parallel.activate(rm.mesh):
            scores_RL = scores(rm_state.params, placed)
        return rm_state, scores_RL, {f"rm/{k}": float(v)
                                     for k, v in jax.device_get(metrics).items()}

    return rm_update


def run_epochs(step_fn: Callable, state: TrainState, batch: dict, key: jax.Array,
               epochs: int, minibatch: int) -> tuple[TrainState, dict]:
    """``epochs`` passes over the R rows of ``batch`` (arrays [R, ...]) in minibatches of
    ``minibatch`` rows, reshuffled each epoch by ``fold_in(key, 1 + epoch)``. Returns (state,
    the step metrics averaged over the last epoch, on the host)."""
    rows = batch["tokens"].shape[0]
    for epoch in range(epochs):
        perm = jax.random.permutation(jax.random.fold_in(key, 1 + epoch), rows)
        epoch_metrics = []
        for j in range(rows // minibatch):
            idx = perm[j * minibatch:(j + 1) * minibatch]
            state, metrics = step_fn(state, {k: v[idx] for k, v in batch.items()})
            epoch_metrics.append(metrics)
    host = jax.device_get(epoch_metrics)
    return state, {k: float(np.mean([float(m[k]) for m in host])) for k in host[0]}


def rollout_metrics(ro: Rollouts) -> dict:
    """Mean outcome reward, fraction verified and mean completion length of the rollouts."""
    return {"reward": float(ro.rewards.mean()), "accuracy": float(ro.correct.mean()),
            "length": float(ro.lengths.mean())}


def trained_to_model_params(policy: Setup) -> Callable[[Any], Any]:
    """The policy's trained params -> the params the model runs with: identity, or under
    LoRA the jitted merge of the adapters into the frozen base."""
    if policy.lora is None:
        return lambda trained: trained
    return jax.jit(policy.model_params)


def make_update(model_config: ModelConfig, cfg: RLConfig, policy: Setup,
                prm: Optional[Setup] = None, ref_params: Any = None,
                step_rewards: Optional[StepRewardFn] = None, *,
                model_params: Callable[[Any], Any]) -> Update:
    """The :data:`Update` of ``cfg`` (module docstring). policy / prm: the policy's and
    PRIME's PRM's setups (optimizer, mesh, shardings; under LoRA the policy's frozen base).
    ref_params: the frozen reference on the mesh (None when the algorithm needs none).
    step_rewards: PRM shaping or None. model_params: :func:`trained_to_model_params` of
    ``policy`` (the learner's own, so the merge compiles once)."""
    alg, mesh = cfg.algorithm, policy.mesh
    loss = rl.policy_gradient_loss(model_config, alg.loss_config(cfg.max_new_tokens))
    train_step = make_train_step(policy.loss(loss), policy.optimizer, mesh, policy.shardings,
                                 ref_shardings=policy.param_shardings,
                                 lr_schedule=make_schedule(cfg.optim))

    def step_fn(state, batch):  # under LoRA the base goes in as the reference params
        return train_step(state, batch, policy.frozen)

    stats = make_stats_fn(model_config)
    prm_update = None
    if isinstance(alg, PRIME):
        prm_update = make_prime_prm_update(model_config, alg, prm, stats)
    elif prm is not None:
        prm_update = make_token_rm_update(model_config, prm)

    def update(state: RLState, ro: Rollouts, key: jax.Array) -> tuple[RLState, dict]:
        placed = place_batch(ro.batch, mesh)
        logps = values = None
        with parallel.activate(mesh):
            if cfg.rollout_forward:
                logps, values = stats(model_params(state.policy.params), placed)
            ref_logps = stats(ref_params, placed)[0] if ref_params is not None else None
            shaped = step_rewards(ro.batch, placed) if step_rewards is not None else None
        metrics, prm_state, process = {}, state.prm, None
        if shaped is not None:  # the PRM's shaped step rewards, summed per sample
            metrics["prm/step_reward"] = float(jnp.mean(jnp.sum(shaped, axis=-1)))
        if prm_update is not None:
            prm_state, process, prm_metrics = prm_update(state.prm, ro, placed, ref_logps)
            metrics.update(prm_metrics)
        s = RolloutStats(jnp.asarray(ro.rewards), placed["loss_mask"], logps, values,
                         ref_logps, shaped, process,
                         jnp.asarray(ro.correct, jnp.float32))
        batch = {**placed, **alg.loss_inputs(s, cfg.samples_per_prompt, cfg.gamma)}
        if logps is not None:  # else on-policy: the loss holds its own log-probs fixed
            batch["old_logps"] = logps
        policy_state, loss_metrics = run_epochs(step_fn, state.policy, batch, key,
                                                cfg.epochs, cfg.minibatch)
        return (RLState(policy_state, prm_state),
                {**metrics, **loss_metrics, **rollout_metrics(ro)})

    return update


def make_learner(model_config: ModelConfig, params, cfg: RLConfig, *, ref_params=None,
                 step_rewards: Optional[StepRewardFn] = None,
                 mesh: Optional[Mesh] = None) -> Learner:
    """The :class:`Learner` of an RL run of ``params`` (None: a fresh init from
    ``cfg.seed``) under ``cfg``.

    ref_params: the frozen reference for the KL term and PRIME (default: a copy of
    ``params``, i.e. the SFT model; under ``cfg.lora`` the frozen base itself, no copy).
    step_rewards: PRM shaping
    (:func:`reasonjax.rl.shaping.make_step_rewards`), required with ``cfg.prm_shaping``.
    PRIME's PRM starts as a copy of the reference, OREAL's token-level RM as a copy of the
    start params (the released trainer initialises it from the policy). mesh: default one
    device. An unset ``optim.decay_steps`` spans the run: the policy's steps (held in the
    learner's config) and, for PRIME's PRM and OREAL's token RM, one step per iteration."""
    if (cfg.prm_shaping is None) != (step_rewards is None):
        raise ConfigError("rl.prm_shaping and step_rewards go together: set rl.prm_shaping "
                          "(clip / delta / clip_delta) and pass step_rewards "
                          "(reasonjax.rl.shaping.make_step_rewards), or neither")
    if cfg.lora is not None and isinstance(cfg.algorithm, PRIME):
        raise ConfigError("rl.lora with prime: PRIME's implicit PRM is a second full model; "
                          "train it without lora")
    if cfg.lora is not None and cfg.algorithm.reward_model:
        raise ConfigError(f"rl.lora with {cfg.algorithm.name}: its token-level RM is a "
                          "second full model; train it without lora or set "
                          "rl.algorithm.token_weights=none")
    prm_optim = cfg.optim.for_steps(cfg.iterations)
    cfg = dataclasses.replace(cfg, optim=cfg.optim.for_steps(cfg.policy_steps))
    policy = setup(model_config, params, cfg.optim, seed=cfg.seed, mesh=mesh, lora=cfg.lora)
    parallel.validate_batch(cfg.prompts_per_iteration, policy.mesh,
                            what="rl.prompts_per_iteration")
    parallel.validate_batch(cfg.minibatch, policy.mesh, what="rl.minibatch_size")
    ref = None
    if policy.lora is not None:
        ref = policy.reference(ref_params, params)
    elif cfg.algorithm.needs_reference:
        ref = (parallel.shard_params(ref_params, model_config, policy.mesh)
               if ref_params is not None else jax.tree.map(jnp.copy, policy.state.params))
    prm = None
    if cfg.algorithm.reward_model:
        # A copy: the PRM's step donates its params, the reference / policy must stay.
        start = ref if isinstance(cfg.algorithm, PRIME) else policy.state.params
        prm = setup(model_config, jax.tree.map(jnp.copy, start), prm_optim,
                    seed=cfg.seed + 1, mesh=policy.mesh)
    model_params = trained_to_model_params(policy)
    update = make_update(model_config, cfg, policy, prm,
                         ref if cfg.algorithm.needs_reference else None, step_rewards,
                         model_params=model_params)
    return Learner(model_config, cfg, policy.mesh,
                   RLState(policy.state, prm.state if prm else None),
                   RLState(policy.shardings, prm.shardings if prm else None), update,
                   lambda state: model_params(state.policy.params))
