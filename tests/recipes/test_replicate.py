"""What every recipe run promises: killed mid-run and rerun with the same directory, it
resumes from its last completed phase and ends exactly where an uninterrupted run ends;
`paper` presets run from a local HF checkpoint and a local data file."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from reasonjax.config import ConfigError
from reasonjax.models import get_config, init_params, save_pretrained
from reasonjax.models.tokenizer import CharTokenizer
from reasonjax.recipes import common
from reasonjax.recipes.replicate import RECIPES, load_config, replicate
from reasonjax.recipes.rundir import completed_phases, open_run

ROOT = Path(__file__).resolve().parents[2]

MICRO = ["task.train_size=8", "task.eval_size=4", "warmup.steps=3", "warmup.batch_size=4",
         "num_devices=1", "model.overrides={n_layers: 1}", "sampling.n=4",
         "sampling.max_new_tokens=8", "vote_trials=2"]


def _kill_after_phase(run_dir: Path, phase: str, timeout: float = 300.0,
                      overrides=tuple(MICRO)) -> None:
    """Runs the coverage recipe in a subprocess and SIGKILLs it as soon as ``phase`` has
    been written (the next phase is then still running)."""
    cmd = [sys.executable, "-m", "reasonjax.cli", "replicate", "coverage",
           "--run-dir", str(run_dir), *overrides]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    done = run_dir / "phases" / phase / "result.json"
    deadline = time.time() + timeout
    try:
        while not done.exists():
            if proc.poll() is not None:
                pytest.fail(f"recipe exited ({proc.returncode}) before phase {phase}: "
                            + proc.stderr.read().decode()[-2000:])
            if time.time() > deadline:
                pytest.fail(f"phase {phase} not written within {timeout}s")
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()


def test_killed_run_resumes_from_last_phase_and_matches_uninterrupted(tmp_path):
    killed, straight = tmp_path / "killed", tmp_path / "straight"
    _kill_after_phase(killed, "warmup")
    run = open_run(killed, load_config("coverage", "tiny", MICRO))
    assert completed_phases(run) == ["warmup"]  # samples was running when killed
    assert not any(p.name.startswith(".") for p in (killed / "phases").iterdir())
    warm = killed / "phases" / "warmup" / "result.json"
    written = warm.stat().st_mtime_ns

    resumed = replicate("coverage", "tiny", MICRO, killed)
    assert warm.stat().st_mtime_ns == written  # loaded, not retrained
    assert completed_phases(run) == ["samples", "warmup"]
    reference = replicate("coverage", "tiny", MICRO, straight)
    assert json.dumps(resumed.rows) == json.dumps(reference.rows)  # NaN-safe equality
    assert resumed.checks == reference.checks
    assert (json.loads((killed / "phases" / "samples" / "result.json").read_text())
            == json.loads((straight / "phases" / "samples" / "result.json").read_text()))


def test_resumed_phase_hands_on_params_placed_and_valued_as_a_fresh_one(tmp_path):
    """Killed after its warm-up on a 2-device mesh, a resumed run gives the next phase the
    warm-up params with the same shardings (on the mesh, not one device) and values as a
    run that trained them just now."""
    overrides = [o for o in MICRO if o != "num_devices=1"] + ["num_devices=2", "mesh.data=2",
                                                               "batch_size=2"]
    killed, straight = tmp_path / "killed", tmp_path / "straight"
    _kill_after_phase(killed, "warmup", overrides=overrides)
    cfg = load_config("coverage", "tiny", overrides)
    assert completed_phases(open_run(killed, cfg)) == ["warmup"]
    _, resumed, _ = common.warm_start(open_run(killed, cfg), cfg)      # loaded
    _, fresh, _ = common.warm_start(open_run(straight, cfg), cfg)      # trained here
    pairs = list(zip(jax.tree.leaves(resumed), jax.tree.leaves(fresh)))
    assert pairs and len(jax.tree.leaves(resumed)) == len(jax.tree.leaves(fresh))
    for a, b in pairs:
        assert len(a.sharding.device_set) == 2
        assert a.sharding.is_equivalent_to(b.sharding, a.ndim), (a.sharding, b.sharding)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _bosless_bpe(root: Path, texts) -> Path:
    """A byte-level BPE tokenizer.json with no BOS token (Qwen2-style), EOS and pad set."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    root.mkdir(parents=True, exist_ok=True)
    tk.save(str(root / "tokenizer.json"))
    (root / "tokenizer_config.json").write_text(json.dumps(
        {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "bos_token": None}))
    return root


def test_paper_step_dpo_runs_with_a_bosless_tokenizer_and_partial_batches(tmp_path):
    """The step_dpo paper preset on a HF checkpoint whose tokenizer has no BOS, with batch
    sizes that leave a partial last batch in every driver call (filler rows repeat a real
    prompt; an empty row would be rejected by the sampler)."""
    rows = [{"question": f"Tom has {3 + i} apples and buys {4 + 2 * i} more. How many?",
             "answer": str(7 + 3 * i),
             "solution": f"{3 + i} + {4 + 2 * i} = {7 + 3 * i}\n\\boxed{{{7 + 3 * i}}}"}
            for i in range(9)]
    data = tmp_path / "math.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tok_dir = _bosless_bpe(tmp_path / "tok", [r["question"] + r["solution"] for r in rows])
    from reasonjax.models.tokenizer import load_tokenizer

    tok = load_tokenizer(tok_dir)
    assert tok.bos_id is None
    cfg = get_config("tiny-100k", vocab_size=tok.vocab_size, n_layers=1)
    ckpt = Path(save_pretrained(cfg, init_params(cfg, jax.random.key(0)), tmp_path / "hf"))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (ckpt / name).write_bytes((tok_dir / name).read_bytes())
    res = replicate("step_dpo", "paper", [
        f"model.checkpoint={ckpt}", f"task.data_file={data}", "task.eval_size=3",
        "num_devices=1", "batch_size=2", "sampling.n=2", "sampling.max_new_tokens=8",
        "locate_rollouts.n=2", "locate_rollouts.max_new_tokens=8",
        "locate_rollouts.batch_size=4", "corrections.n=2", "corrections.max_new_tokens=8",
        "corrections.batch_size=4", "dpo.steps=1", "dpo.batch_size=2", "dpo.seq_len=64",
        "dpo.optim.accum_steps=1", "prompt.chat=false", "prompt.system=null"],
        tmp_path / "run")
    assert [r["stage"] for r in res.rows] == ["warm-up", "round 1"]
    assert res.rows[1]["samples"] == 6 * 2                # 6 training problems, 2 samples
    assert res.rows[1]["errors located"] == res.rows[1]["wrong"] > 0
    assert all(0.0 <= r["greedy accuracy"] <= 1.0 for r in res.rows)


@pytest.fixture(scope="module")
def local_paper_inputs(tmp_path_factory):
    """A tiny HF checkpoint (Llama layout, char tokenizer) and a GSM8K / MATH-style JSONL."""
    root = tmp_path_factory.mktemp("paper")
    tok = CharTokenizer()
    cfg = get_config("tiny-100k", vocab_size=tok.vocab_size, n_layers=1)
    ckpt = save_pretrained(cfg, init_params(cfg, jax.random.key(0)), root / "hf")
    tok.save(Path(ckpt) / "char_tokenizer.json")
    lines = []
    for i in range(12):
        a, b = 3 + i, 4 + 2 * i
        # fields both the gsm8k and the math format read
        lines.append(json.dumps({"question": f"Tom has {a} apples and buys {b} more. How many?",
                                 "answer": str(a + b),
                                 "solution": f"{a} + {b} = {a + b}\n\\boxed{{{a + b}}}"}))
    data = root / "gsm8k.jsonl"
    data.write_text("\n".join(lines) + "\n")
    return Path(ckpt), data


@pytest.mark.parametrize("name", RECIPES)
def test_paper_presets_name_the_paths_to_set_and_build_from_local_files(name,
                                                                       local_paper_inputs):
    cfg = load_config(name, "paper")
    with pytest.raises(ConfigError, match="model.checkpoint|task.data_file"):
        common.make_env(cfg.task, cfg.model, cfg.mesh, num_devices=1)
    ckpt, data = local_paper_inputs
    # the tiny checkpoint's character tokenizer has no chat template
    chat = ["prompt.chat=false", "prompt.system=null"] if cfg.prompt.chat else []
    generated = cfg.task.name in ("countdown", "arithmetic", "maze", "procbench")
    files = ["task.train_size=8"] if generated else [f"task.data_file={data}"]
    cfg = load_config(name, "paper", [f"model.checkpoint={ckpt}", *files,
                                      "task.eval_size=4", *chat])
    env = common.make_env(cfg.task, cfg.model, cfg.mesh, num_devices=1, prompt=cfg.prompt)
    assert env.init_params is not None and env.model_config.n_layers == 1
    assert len(env.eval) == 4 and len(env.train) == 8
    assert env.task.verify(env.eval[0], f"answer: {env.eval[0].answer}")


def test_paper_coverage_runs_on_a_local_checkpoint_and_file(tmp_path, local_paper_inputs):
    ckpt, data = local_paper_inputs
    res = replicate("coverage", "paper", [
        f"model.checkpoint={ckpt}", f"task.data_file={data}", "task.eval_size=4",
        "num_devices=1", "sampling.n=4", "sampling.chunk=0", "sampling.max_new_tokens=8",
        "batch_size=4", "prompt.few_shot=0",
        "vote_trials=2"], tmp_path)
    assert [r["k"] for r in res.rows] == [1, 2, 4]
    assert all(0.0 <= r["coverage"] <= 1.0 for r in res.rows)
    assert (tmp_path / "report.md").is_file() and (tmp_path / "coverage.png").is_file()


def test_seeds_run_apart_pool_in_one_report_and_random_weights_hold_nothing(tmp_path,
                                                                         capsys):
    """`--seeds 0,1` runs two resumable sub-runs and pools them; on an untrained (random
    weight) policy no coverage claim comes out held; `reasonjax report` regenerates the
    same verdicts and the README row from the run directories alone."""
    from reasonjax.cli import main
    from reasonjax.recipes.replicate import read_run, readme_row, report

    overrides = MICRO + ["warmup.steps=0", "task.eval_size=6", "sampling.n=4"]
    res = replicate("coverage", "tiny", overrides, tmp_path, seeds=[0, 1])
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["seed-0", "seed-1"]
    for s in (0, 1):
        info = json.loads((tmp_path / f"seed-{s}" / "run.json").read_text())
        assert info["seeds"] == [s] and info["seconds"] > 0 and "CPU cores" in info["machine"]
        assert (tmp_path / f"seed-{s}" / "outcomes.json").is_file()
    assert all(e.seeds == 2 and e.problems == 6 for e in res.effects)
    assert all(v != "held" for v in res.checks.values()), res.checks
    again = report(tmp_path)
    assert json.dumps([e.to_json() for e in again.effects]) == \
        json.dumps([e.to_json() for e in res.effects])  # NaN-safe equality
    assert read_run(tmp_path).recipe == "coverage" and len(read_run(tmp_path).runs) == 2
    row = readme_row(tmp_path)  # the recipe cell names the overrides the run used
    assert row["seeds"] == 2 and row["recipe"].startswith("`coverage` `")
    assert "`warmup.steps=0`" in row["recipe"] and "`sampling.n=4`" in row["recipe"]
    assert "`seed=" not in row["recipe"]
    assert main(["report", str(tmp_path), "--markdown"]) == 0
    assert "| `coverage` `" in capsys.readouterr().out
    assert main(["report", str(tmp_path)]) == 0
    shown = capsys.readouterr().out.splitlines()
    assert shown and all(len(line) <= 100 for line in shown)
    assert not any("\u2026" in line for line in shown)  # no truncated header or cell
    with pytest.raises(ConfigError, match="distinct seeds"):
        replicate("coverage", "tiny", overrides, tmp_path, seeds=[0, 0])
