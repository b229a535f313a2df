"""``reasonjax train KIND`` end to end on a tiny model: runs, resumes, chains (the SFT
model feeds the later kinds), and rejects bad input with exit code 2."""

import json

import pytest

from reasonjax.cli import main
from reasonjax.train.loop import read_metrics

MODEL = ["--model", "tiny-1m"] + [x for kv in ("d_model=32", "n_layers=1", "n_heads=2",
                                              "n_kv_heads=2", "d_ff=64", "max_seq_len=64")
                                  for x in ("--model-set", kv)]
TASK = ["--task", "arithmetic", "n_ops=1", "--no-progress"]


def _run(capsys, argv):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _summary(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


SFT = ["train", "sft", *TASK, *MODEL, "--batch-size", "8", "--seq-len", "32", "--lr", "1e-3"]


@pytest.fixture(scope="module")
def sft_dir(tmp_path_factory):
    """A 2-step SFT run the later kinds start from (built here, not by another test: under
    xdist the tests of this module may run in different processes)."""
    path = tmp_path_factory.mktemp("sft")
    assert main(SFT + ["--run-dir", str(path), "--steps", "2"]) == 0
    return path


def test_sft_runs_then_a_rerun_resumes_and_continues(tmp_path, capsys):
    sft_dir = tmp_path
    argv = SFT + ["--run-dir", str(sft_dir)]
    code, out, _ = _run(capsys, argv + ["--steps", "2"])
    assert code == 0 and "from the start" in out
    first = read_metrics(sft_dir)
    code, out, _ = _run(capsys, argv + ["--steps", "4"])
    assert code == 0 and "resuming after step 2" in out
    metrics = read_metrics(sft_dir)
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]
    assert metrics[:2] == first  # steps 1-2 were not rerun
    assert _summary(out)["metrics"]["loss"] > 0
    assert (sft_dir / "model" / "model_config.json").is_file()
    assert (sft_dir / "model" / "char_tokenizer.json").is_file()


def test_grpo_from_the_sft_model_resumes_by_iteration(sft_dir, tmp_path, capsys):
    argv = ["train", "grpo", *TASK, "--model", str(sft_dir / "model"), "--run-dir",
            str(tmp_path), "--batch-size", "2", "--max-new-tokens", "8",
            "--set", "samples_per_prompt=2"]
    code, out, _ = _run(capsys, argv + ["--steps", "1"])
    assert code == 0 and "from the start" in out
    code, out, _ = _run(capsys, argv + ["--steps", "2"])
    assert code == 0 and "resuming after step 1" in out
    assert [m["iteration"] for m in read_metrics(tmp_path)] == [1, 2]
    assert _summary(out)["metrics"]["iteration"] == 2


def test_rl_with_prm_step_rewards_from_the_cli(sft_dir, tmp_path, capsys):
    """--prm with prm_shaping: the PRM's shaped step scores reach the reward (they were
    unreachable from the CLI); either one alone is refused before any work."""
    argv = ["train", "rloo", *TASK, "--model", str(sft_dir / "model"), "--batch-size", "2",
            "--max-new-tokens", "8", "--set", "samples_per_prompt=2", "--steps", "1"]
    code, _, err = _run(capsys, argv + ["--run-dir", str(tmp_path / "a"),
                                        "--set", "prm_shaping=clip"])
    assert code == 2 and "--prm CHECKPOINT" in err and not (tmp_path / "a").exists()
    code, _, err = _run(capsys, argv + ["--run-dir", str(tmp_path / "b"),
                                        "--prm", str(sft_dir / "model")])
    assert code == 2 and "prm_shaping=clip" in err and not (tmp_path / "b").exists()
    code, out, err = _run(capsys, argv + ["--run-dir", str(tmp_path / "c"), "--prm",
                                          str(sft_dir / "model"), "--set", "prm_shaping=clip",
                                          "--set", "prm_eta=0.9", "--set", "prm_coef=1.0"])
    assert code == 0, err
    # Clipped scores min(sigmoid(v) - 0.9, 0) are negative at every step end (an untrained
    # value head gives sigmoid(v) near 0.5).
    m = _summary(out)["metrics"]
    assert m["prm/step_reward"] < -0.1


def test_rl_kinds_pick_their_algorithm_config_and_reach_its_knobs(tmp_path, capsys):
    for kind, name in (("dr_grpo", "dr_grpo"), ("ppo", "ppo")):
        code, out, _ = _run(capsys, ["train", kind, *TASK, *MODEL, "--run-dir", str(tmp_path),
                                     "--show-config", "--set", "algorithm.kl_coef=0.04",
                                     "--set", "sampling.top_p=0.9", "--steps", "3"])
        config = json.loads(out)
        assert code == 0 and config["algorithm"]["name"] == name
        assert config["algorithm"]["kl_coef"] == 0.04 and config["sampling"]["top_p"] == 0.9
        assert config["iterations"] == 3
    assert "lam" in config["algorithm"]
    code, _, err = _run(capsys, ["train", "grpo", *TASK, *MODEL, "--run-dir", str(tmp_path),
                                 "--show-config", "--set", "algorithm.lam=0.9"])
    assert code == 2 and "algorithm.lam" in err


@pytest.mark.slow  # two more model compiles each; the library losses are tested directly
@pytest.mark.parametrize("kind,extra", [("dpo", ["--loss", "kto"]), ("value", [])])
def test_sample_based_kinds_keep_their_samples_for_resume(sft_dir, tmp_path, capsys, kind,
                                                          extra):
    argv = ["train", kind, *TASK, "--model", str(sft_dir / "model"), "--run-dir",
            str(tmp_path), "--steps", "1", "--batch-size", "4", "--seq-len", "40",
            "--max-new-tokens", "8", "--set", "samples.num_problems=2",
            "--set", "samples.sample.n=2", *extra]
    code, out, _ = _run(capsys, argv)
    assert code == 0, out
    head, *samples = (tmp_path / "samples.jsonl").read_text().splitlines()
    assert "_settings" in json.loads(head)
    assert len(samples) == 4 and _summary(out)["rows"] == 4
    assert [m["step"] for m in read_metrics(tmp_path)] == [1]


def test_tree_plv_trains_a_verifier_that_best_of_n_loads_as_scorer(sft_dir, tmp_path,
                                                                   monkeypatch, capsys):
    """train tree_plv end to end on the tiny model (trees grown through the driver,
    sibling pairs, two ranking steps); its model scores steps in `search --method
    best_of_n --scorer`. An untrained policy neither ends a step within 8 tokens nor
    answers right, so a sample's first 3 characters make its step and the task's verifier
    is the parity of the completion's length: mixed step values, every call still real."""
    from reasonjax.data.tasks.arithmetic import Arithmetic

    monkeypatch.setattr(Arithmetic, "verify", lambda self, problem, text: len(text) % 2 == 0)
    monkeypatch.setattr("reasonjax.recipes.process_labels.first_step",
                        lambda delimiter, text, is_final: text[:3] or None)
    run_dir = tmp_path / "plv"
    argv = ["train", "tree_plv", *TASK, "--model", str(sft_dir / "model"), "--run-dir",
            str(run_dir), "--batch-size", "2", "--seq-len", "64", "--max-new-tokens", "8",
            "--set", "samples.num_problems=2", "--set", "samples.rollouts.n=2",
            "--set", "samples.tree.children=2", "--set", "samples.tree.expansions=2",
            "--set", "samples.margin=0"]
    code, out, err = _run(capsys, argv + ["--steps", "2"])
    assert code == 0, err
    summary = _summary(out)
    assert summary["kind"] == "tree_plv" and summary["pairs"] >= 1 and summary["rows"] >= 1
    assert 0 < summary["mean_gap"] <= 1 and "greedy_accuracy" not in summary
    assert summary["metrics"]["loss"] > 0
    pairs = (run_dir / "samples.jsonl").read_text().splitlines()[1:]
    assert len(pairs) == summary["pairs"]
    # A rerun resumes on the cached pairs: no tree is grown again.
    monkeypatch.setattr("reasonjax.recipes.process_labels.best_first_trees", None)
    code, out, err = _run(capsys, argv + ["--steps", "3"])
    assert code == 0 and "resuming after step 2" in out, err
    assert [m["step"] for m in read_metrics(run_dir)] == [1, 2, 3]
    out_file = tmp_path / "bon.jsonl"
    assert main(["search", str(sft_dir / "model"), "--task", "arithmetic", "n_ops=1",
                 "--count", "2", "--method", "best_of_n", "--n", "2", "--scorer",
                 str(run_dir / "model"), "--max-steps", "2", "--step-tokens", "8",
                 "--batch-size", "2", "--no-progress", "--out", str(out_file)]) == 0
    searched = json.loads(out_file.with_name("bon.summary.json").read_text())
    assert searched["made_from"]["scorer"] is not None
    assert len(out_file.read_text().splitlines()) == 2


def test_cached_samples_drawn_with_other_settings_are_drawn_again(tmp_path, monkeypatch,
                                                                  capsys):
    """A failed dpo run left 1 sample per problem; a rerun asking for 4 must not regroup
    those as 4 problems x 4 samples (pairs across problems): the stamp differs, so the
    samples are drawn again."""
    from types import SimpleNamespace

    from reasonjax.data.task import get_task
    from reasonjax.search.sampler import SampleConfig
    from reasonjax.train import cli as train_cli

    task = get_task("arithmetic")
    problems = task.generate(8, seed=0)
    calls = []

    def fake_driver(env, params, chosen, sample, key, batch_size):
        calls.append(sample.n)
        return [SimpleNamespace(problem=p, candidates=[
            SimpleNamespace(completion=f"{p.question} #{k}", correct=k == 0)
            for k in range(sample.n)]) for p in chosen]

    monkeypatch.setattr("reasonjax.driver.run", fake_driver)
    made_from = {"model": {"preset": "tiny-1m"}, "data": {"task": "arithmetic"}}
    one = train_cli.SelfSamples(sample=SampleConfig(n=1), num_problems=8)
    four = train_cli.SelfSamples(sample=SampleConfig(n=4), num_problems=8)
    assert len(train_cli._samples(None, None, problems, one, tmp_path, made_from)) == 8
    assert len(train_cli._samples(None, None, problems, one, tmp_path, made_from)) == 8
    assert calls == [1]                                   # the same settings: read back
    records = train_cli._samples(None, None, problems, four, tmp_path, made_from)
    assert calls == [1, 4] and "drawn with other settings" in capsys.readouterr().err
    assert [r["problem"].question for r in records[::4]] == [p.question for p in problems]
    assert all(r["completion"].startswith(r["problem"].question) for r in records)
    assert len(train_cli._samples(None, None, problems, four, tmp_path,
                                  {**made_from, "model": {"preset": "tiny-3m"}})) == 32
    assert calls == [1, 4, 4]                             # another model: drawn again


def test_bad_input_is_a_clear_error(tmp_path, capsys):
    code, _, err = _run(capsys, ["train", "sft", *MODEL, "--run-dir", str(tmp_path)])
    assert code == 2 and "exactly one of --task" in err
    code, _, err = _run(capsys, ["train", "sft", *TASK, "--model", str(tmp_path / "nope"),
                                 "--run-dir", str(tmp_path)])
    assert code == 2 and "neither a preset" in err
    code, _, err = _run(capsys, ["train", "dpo", *TASK, *MODEL, "--run-dir", str(tmp_path),
                                 "--set", "fit.optim.nope=1"])
    assert code == 2 and "fit.optim.nope" in err


def test_every_kind_has_help(capsys):
    from reasonjax.rl.algorithms import ALGORITHMS

    for kind in ("sft", "dpo", "value", "tree_plv", *ALGORITHMS):
        with pytest.raises(SystemExit) as e:
            main(["train", kind, "--help"])
        assert e.value.code == 0
        assert "--run-dir" in capsys.readouterr().out
