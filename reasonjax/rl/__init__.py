"""On-policy RL of a policy on a task's verifier rewards, above the driver layer.

- :mod:`.algorithms`: one small config per algorithm (GRPO, Dr. GRPO, RLOO, PPO, PRIME):
  its own knobs, the advantages it puts in the policy batch, its policy-loss config;
- :mod:`.config`: :class:`~reasonjax.rl.config.RLConfig`, the settings every algorithm
  shares, with the algorithm's config as its ``algorithm`` field;
- :mod:`.shaping`: PRM step rewards (a step-score function, step ends, bounded shaping);
- :mod:`.update`: the pure per-iteration update (rollouts in, new state and metrics out)
  and PRIME's implicit-PRM step;
- :mod:`.loop`: :func:`~reasonjax.rl.loop.rl_train`, which only sequences (pick problems,
  sample, update), checkpoints, evaluates and reports.

The math (advantages, losses, KL, GAE, PRIME rewards, PRM shaping) is the pure jit core in
:mod:`reasonjax.train.rl`; rollouts and evaluation come from :mod:`reasonjax.driver`.
"""
