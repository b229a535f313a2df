"""Ahead-of-time plans for TPU slices (libtpu's topology descriptions, the real TPU
compiler, on this CPU-only machine): slice names, batch layouts, model FLOPs, the cost
extrapolation over layers, every paper preset's training programs fitting their slice, and
the message for a program that does not fit."""

import dataclasses

import numpy as np
import pytest

pytest.importorskip("libtpu", reason="needs libtpu (pip install 'jax[tpu]')")

from reasonjax import parallel  # noqa: E402
from reasonjax.config import ConfigError  # noqa: E402
from reasonjax.data.formats import batch_layout  # noqa: E402
from reasonjax.models.config import ModelConfig, get_config  # noqa: E402
from reasonjax.recipes import plan  # noqa: E402
from reasonjax.recipes.replicate import load_config, recipe_module  # noqa: E402
from reasonjax.train.sft import sft_loss  # noqa: E402
from reasonjax.train.state import OptimConfig  # noqa: E402

# The slice each paper preset is sized for (named in the preset file's header).
PAPER_SLICES = {"alphamath": "v5p-8", "mcts_dpo": "v5p-8", "step_dpo": "v5p-8",
                "prm": "v5p-8", "scaling": "v5e-8", "coverage": "v5e-16"}
# Each TPU compile of a paper-size train step takes 1-3 minutes on 2 cores: `-m slow`
# compiles every program of every preset below (the RL recipes' policy updates included);
# so does the "too large" decode step below; the default suite compiles only small TPU
# programs.
SLOW_PAPER_SLICES = {**PAPER_SLICES, "reft": "v5p-8", "countdown_rl": "v5p-8", "pav": "v5e-8",
                     "dualformer": "v5e-8", "rl_incorrect": "v5p-8", "lora": "v5p-8"}
# What a preset needs set to be planned at all (dualformer's paper preset names no shape).
PAPER_OVERRIDES = {"dualformer": ["model.preset=tiny-25m"]}


def test_slice_names_follow_cloud_tpu_naming():
    """v4 / v5p names count TensorCores (2 per chip), v5e / v6e count chips; libtpu lists
    v4's two cores as two devices."""
    t = plan.topology("v5p-8")
    assert (t.layout, t.chips, len(t.devices)) == ("2x2x1", 4, 4)
    assert t.hbm_per_device == 95 * plan.GIB
    t = plan.topology("v4-32")
    assert (t.layout, t.chips, len(t.devices), t.hosts) == ("2x2x4", 16, 32, 4)
    assert t.hbm_per_device == 16 * plan.GIB and t.peak_per_device == 275e12 / 2
    assert plan.topology("v5e-16").layout == "4x4"
    assert plan.topology("v5e:2x4").chips == 8
    with pytest.raises(ConfigError, match="v5p-8, v5p-16"):
        plan.topology("v5p-6")
    with pytest.raises(ConfigError, match="give a slice like"):
        plan.topology("tpu-8")


def test_batch_layout_matches_the_batch_kinds():
    layout = batch_layout("preference", 4, 16, ("label_smoothing",))
    assert layout["chosen_tokens"] == ((4, 16), np.dtype(np.int32))
    assert layout["rejected_loss_mask"] == ((4, 16), np.dtype(np.float32))
    assert layout["label_smoothing"] == ((4,), np.dtype(np.float32))
    assert len(layout) == 9
    with pytest.raises(ValueError, match="no optional key"):
        batch_layout("sft", 4, 16, ("advantages",))


def test_forward_flops_by_hand():
    cfg = ModelConfig(vocab_size=10, d_model=8, n_layers=2, n_heads=2, n_kv_heads=1,
                      head_dim=4, d_ff=16)
    # per layer: q, o 8x8 each (128) + k, v 8x4 each (64) + MLP 3 x 8x16 (384) = 576;
    # 2 layers + the LM head 10x8
    matmul = 2 * 576 + 80
    assert plan.forward_flops(cfg, 3, 5) == 2 * matmul * 3 + 4 * 2 * 2 * 4 * 3 * 5


def test_roofline_time_and_mfu_by_hand():
    """A train step's model FLOPs and the bytes it must move give its time on the
    roofline; the plan's row for a tiny model equals the hand computation."""
    topo = plan.topology("v5e-4")
    mesh = parallel.make_mesh(parallel.MeshConfig(data=-1), topo.devices)
    cfg = get_config("tiny-1m", vocab_size=256)
    program = plan.train_program("train: sft", sft_loss, 8, 64, OptimConfig(decay_steps=10))
    (row,) = plan.rows_for(program, cfg, topo, mesh)
    (m,) = plan.measure(program, cfg, mesh)
    flops = 3 * plan.forward_flops(cfg, 8 * 64, 32) / 4  # per device
    seconds = max(flops / 197e12, m.io_bytes / 0.819e12)
    assert row.flops == pytest.approx(flops) and row.seconds == pytest.approx(seconds)
    assert row.mfu == pytest.approx(flops / 197e12 / seconds)
    assert row.tokens_per_s == pytest.approx(8 * 64 / seconds)
    # fp32 params + Adam moments (3 copies) are read and written back every step.
    assert m.io_bytes > 2 * 3 * 4 * cfg.num_params() and m.hbm > 3 * 4 * cfg.num_params()


def test_recipe_programs_cover_training_search_and_decoding():
    cfg = load_config("alphamath", "paper")
    mc = plan.plan_model_config(cfg)
    assert mc.n_layers == 30 and mc.remat == "full"  # deepseek-math-7b, preset overrides
    programs = plan.recipe_programs(recipe_module("alphamath"), cfg, mc, 512)
    names = [p.name for p in programs]
    assert names == ["train: joint (train)", "mcts (search)", "sample (eval.greedy)",
                     "voting (eval.majority)", "beam (eval.sbs)", "mcts (eval.mcts)",
                     "prefill", "decode step"]
    train = programs[0]
    assert (train.rows, train.seq_len, train.accum_steps) == (64, 1024, 16)
    decode = programs[-1]
    # 5 actions / beams per problem; the longest call: 10 steps of 128 tokens (SBS)
    assert decode.rows == 32 * 5 and decode.seq_len == 512 + 10 * 128


def test_advice_tries_the_whole_kv_cache_before_fewer_rows():
    """A sampling call that grows its KV cache in chunks is first retried with the whole
    budget's cache up front (the same rows; the growing copies are what overflowed
    coverage's v5e-16 chips), then with fewer samples per call on top of that."""
    cfg = load_config("coverage", "paper", ["sampling.decode_chunks=4"])
    mc = plan.plan_model_config(cfg)
    program = next(p for p in plan.recipe_programs(recipe_module("coverage"), cfg, mc, 512)
                   if p.name == "sample (sampling)")
    assert program.method.decode_chunks == 4
    variants = plan._variants(program, mc, cfg.mesh)
    what, _, _, whole = variants[0]
    assert what == "sampling.decode_chunks=1"
    assert whole.method.decode_chunks == 1 and whole.method.chunk == program.method.chunk
    assert (whole.rows, whole.per_prompt, whole.seq_len) == (
        program.rows, program.per_prompt, program.seq_len)
    assert all(w.startswith("sampling.decode_chunks=1 ") for w, *_ in variants[1:])
    assert f"{program.chunk_key}={program.per_prompt // 2}" in variants[-1][0]
    one = plan.recipe_programs(recipe_module("coverage"), load_config("coverage", "paper"),
                               mc, 512)
    one = next(p for p in one if p.name == "sample (sampling)")
    assert one.method.decode_chunks == 1     # the preset's own setting: nothing to retry
    assert not any("decode_chunks" in w for w, *_ in plan._variants(one, mc, cfg.mesh))


def test_rl_recipes_plan_their_policy_updates_and_rollouts():
    cfg = load_config("reft", "paper")
    mc = plan.plan_model_config(cfg)
    programs = plan.recipe_programs(recipe_module("reft"), cfg, mc, 300)
    assert [p.name for p in programs] == ["train: rollout (rl, ppo)", "prefill",
                                          "decode step"]
    train, _, decode = programs
    # 32 rollouts per update of a 300-token prompt + 700 sampled tokens; the reference
    # (KL in the reward) is resident beside the state.
    assert (train.rows, train.seq_len, train.ref) == (32, 1000, True)
    assert train.batch_key == "rl.minibatch_size"
    assert (decode.rows, decode.seq_len, decode.per_prompt) == (32, 1000, 1)
    cfg = load_config("countdown_rl", "paper")
    programs = plan.recipe_programs(recipe_module("countdown_rl"), cfg,
                                    plan.plan_model_config(cfg), 32)
    train = [p for p in programs if p.kind == "train"]
    # One update per distinct loss: RLOO's is GRPO's (they differ in advantages only).
    assert [p.name.split(", ")[1][:-1] for p in train] == ["grpo", "dr_grpo", "dapo",
                                                           "gspo", "reinforce_pp"]
    # 64 prompts x 5 samples per update, as 2 accumulated micro-batches of 160 rows.
    assert {(p.rows, p.accum_steps) for p in train} == {(160, 2)}
    decode = programs[-1]
    assert (decode.rows, decode.per_prompt) == (128 * 5, 5)


@pytest.mark.slow
def test_too_large_names_the_program_the_bytes_and_a_change_that_fits(capsys):
    """`reasonjax plan` of a decode step over its slice's HBM: exit code 3, the table says
    NO, and one line names the program, the HBM and a setting that fits (two TPU compiles
    of a 1B decode step, minutes on 2 cores: `-m slow`)."""
    from reasonjax.cli import main

    rc = main(["plan", "--topology", "v5e-4", "coverage", "model.preset=llama-3.2-1b",
               "batch_size=8", "sampling.chunk=250", "--programs", "decode"])
    out, err = capsys.readouterr()
    assert rc == 3
    assert "decode step" in out and "NO" in out
    assert "decode step needs more than 16 GiB: fits with sampling.chunk=125" in out
    assert err.strip().splitlines()[-1] == ("reasonjax plan: error: decode step does not "
                                            "fit v5e-4; see above")


def test_override_into_free_form_dicts():
    cfg = load_config("coverage", "paper", ["model.overrides.remat=dots"])
    assert cfg.model.overrides == {"param_dtype": "bfloat16", "remat": "dots"}  # merged
    with pytest.raises(ConfigError, match="unknown key 'model.overide'"):
        load_config("coverage", "paper", ["model.overide.remat=dots"])
    assert dataclasses.is_dataclass(cfg)


@pytest.mark.slow
@pytest.mark.parametrize("recipe", sorted(SLOW_PAPER_SLICES))
def test_every_paper_program_fits_its_slice(recipe):
    """All programs of every paper preset (train steps and RL policy updates, searches,
    prefill, decode step) compile for the preset's slice and fit its HBM (minutes per
    preset: `-m slow`)."""
    p = plan.plan(recipe, "paper", PAPER_OVERRIDES.get(recipe, []), SLOW_PAPER_SLICES[recipe])
    assert p.fits, plan.format_plan(p)
