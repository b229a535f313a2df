"""The RL recipes (ReFT, Countdown RL) and LoRA vs full fine-tuning at a micro size end to
end: phases, the report's tables and effect checks, per-arm settings, resumption inside
the RL phase, and config errors."""

import numpy as np
import pytest

from reasonjax.config import ConfigError
from reasonjax.recipes import countdown_rl
from reasonjax.recipes.replicate import load_config, replicate
from reasonjax.recipes.rl_phase import reward_rise
from reasonjax.recipes.rundir import completed_phases, open_run

MICRO = ["task.train_size=12", "warmup_problems=6", "task.eval_size=8", "warmup.steps=2",
         "warmup.batch_size=4", "model.overrides={n_layers: 1}", "num_devices=1",
         "batch_size=8", "rl.iterations=2", "rl.prompts_per_iteration=2",
         "rl.samples_per_prompt=2", "rl.max_new_tokens=8", "rl.checkpoint_every=1"]


def test_reward_rise_pairs_the_last_and_first_fifths():
    history = [{"reward": r} for r in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)]
    np.testing.assert_allclose(reward_rise(history), [0.8, 0.8])   # [0.9, 1] - [0.1, 0.2]
    np.testing.assert_allclose(reward_rise(history[:3]), [0.2])    # one iteration each


def test_reft_micro_end_to_end_and_resume(tmp_path):
    overrides = MICRO + ["rl.minibatch_size=null"]
    result = replicate("reft", "tiny", overrides, tmp_path)
    run = open_run(tmp_path, load_config("reft", "tiny", overrides))
    assert completed_phases(run) == ["eval-sft", "ppo", "warmup"]
    assert [r["model"] for r in result.rows] == ["SFT warm-up", "ReFT (PPO)"]
    assert all(0.0 <= r["greedy accuracy"] <= 1.0 for r in result.rows)
    assert set(result.checks) == {"ReFT raises greedy accuracy over the SFT model",
                                  "the sampled reward rises during PPO"}
    assert (tmp_path / "rl" / "ppo" / "checkpoints").is_dir()  # resumable inside the phase
    assert (tmp_path / "reward_vs_iteration.png").is_file()
    text = result.report.read_text()
    assert "| model | greedy accuracy |" in text and "2 iterations x 4 rollouts" in text
    with pytest.raises(ConfigError, match="ReFT is PPO"):
        load_config("reft", "tiny", ["rl.algorithm={name: grpo}"])
    # The name alone would keep PPO's values: refused, saying what to give instead.
    with pytest.raises(ConfigError, match=r"the name picks the config's class.*"
                                          r"rl.algorithm=\{name: grpo\}"):
        load_config("reft", "tiny", ["rl.algorithm.name=grpo"])


def test_countdown_rl_arms_share_the_settings_and_keep_their_algorithms():
    cfg = load_config("countdown_rl", "tiny", ["arms=[grpo, dapo, grpo+lora]",
                                               "algorithm_overrides={dapo: {clip_high: 0.3}}",
                                               "lora_lr=0.001"])
    grpo, dapo, lora = (countdown_rl.arm_config(cfg, a) for a in cfg.arms)
    assert (grpo.algorithm.name, dapo.algorithm.name) == ("grpo", "dapo")
    assert dapo.algorithm.clip_high == 0.3 and dapo.algorithm.dynamic_sampling
    assert grpo.iterations == dapo.iterations == cfg.rl.iterations
    assert grpo.lora is None and lora.lora == cfg.lora and lora.optim.lr == 0.001
    assert grpo.optim.lr == cfg.rl.optim.lr
    with pytest.raises(ConfigError, match="'ppo2' is not an algorithm"):
        load_config("countdown_rl", "tiny", ["arms=[grpo, ppo2]"])
    with pytest.raises(ConfigError, match="not arms"):
        load_config("countdown_rl", "tiny", ["algorithm_overrides={rloo: {kl_coef: 0.1}}",
                                             "arms=[grpo]"])


def test_countdown_rl_micro_end_to_end(tmp_path):
    overrides = MICRO + ["arms=[grpo, dapo, grpo+lora]", "rl.max_new_tokens=12",
                         "lora.rank=2"]
    result = replicate("countdown_rl", "tiny", overrides, tmp_path)
    assert [r["arm"] for r in result.rows] == ["SFT warm-up", "grpo", "dapo", "grpo+lora"]
    grpo = result.rows[1]
    assert grpo["rollouts drawn"] == 2 * 4  # 2 iterations x 4 rollouts
    assert result.rows[2]["rollouts drawn"] >= 2 * 4  # DAPO may draw more
    assert result.rows[2]["vs grpo"].startswith(("+", "-", "0"))
    assert "grpo raises greedy accuracy over the SFT model" in result.checks
    assert "dapo raises greedy accuracy over the SFT model" in result.checks
    assert (tmp_path / "rl" / "rl-grpo+lora" / "adapters").is_dir()


def test_lora_recipe_grpo_takes_its_own_lora_plus_ratio():
    from reasonjax.recipes import lora

    cfg = load_config("lora", "tiny")
    assert cfg.lora.b_lr_ratio == 16.0 and cfg.rl_b_lr_ratio == 1.0
    rl = lora._lora_rl(cfg)
    assert rl.lora.b_lr_ratio == 1.0 and rl.lora.rank == cfg.lora.rank
    assert rl.optim.lr == cfg.rl_lora_lr
    same = load_config("lora", "tiny", ["rl_b_lr_ratio=null"])
    assert lora._lora_rl(same).lora == same.lora  # None: the SFT's adapters and ratio
    with pytest.raises(ConfigError, match="rl_b_lr_ratio"):
        load_config("lora", "tiny", ["rl_b_lr_ratio=0"])


def test_lora_recipe_micro_end_to_end(tmp_path):
    overrides = MICRO + ["sft.steps=2", "sft.batch_size=4", "sft.seq_len=32",
                         "lora.rank=2", "rl.checkpoint_every=2", "adapt.train_size=6",
                         "adapt.eval_size=8"]
    result = replicate("lora", "tiny", overrides, tmp_path)
    rows = {r["run"]: r for r in result.rows}
    assert list(rows) == ["base", "sft-full", "sft-lora", "grpo-full", "grpo-lora"]
    assert rows["sft-lora"]["trainable parameters"] < rows["sft-full"]["trainable parameters"]
    assert rows["sft-lora"]["optimizer state MiB"] < 0.5 * rows["sft-full"]["optimizer state MiB"]
    assert set(result.checks) == {"LoRA SFT is within 0.03 of full fine-tuning",
                                  "full SFT raises greedy accuracy over its start",
                                  "LoRA GRPO is within 0.03 of full fine-tuning",
                                  "full GRPO raises greedy accuracy over its start"}
    assert (tmp_path / "rl" / "grpo-lora" / "adapters").is_dir()
    assert "adapted to arithmetic" in result.report.read_text()
