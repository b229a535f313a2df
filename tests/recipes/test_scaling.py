"""scaling recipe: label, bin and comparison logic against hand-computed values,
and a micro end-to-end run asserting the report's structure."""

import math

import pytest

from reasonjax.config import ConfigError
from reasonjax.data.task import get_task
from reasonjax.recipes import scaling as tts
from reasonjax.recipes.replicate import load_config, replicate


def test_step_labels_exact_and_outcome():
    task = get_task("arithmetic")
    problem = task.from_instance("2+3*4")           # 2+12 -> answer: 14
    steps, targets, complete = tts.step_labels(task, problem, "2+12\nanswer: 15", "exact")
    assert steps == ["2+12", "answer: 15"] and targets == [1.0, 0.0] and complete
    _, targets, _ = tts.step_labels(task, problem, "5*4\nanswer: 20", "exact")
    assert targets == [0.0, 0.0]                    # precedence error, then wrong from there
    _, targets, complete = tts.step_labels(task, problem, "2+12\nanswer: 14", "outcome")
    assert targets == [1.0, 1.0] and complete
    _, targets, complete = tts.step_labels(task, problem, "2+12\n14", "outcome")
    assert targets == [0.0, 0.0] and not complete
    assert tts.step_labels(task, problem, "", "exact") == ([], [], False)


def test_difficulty_bins_are_equal_quantiles_of_pass_rate():
    rates = [0.5, 1.0, 0.0, 0.25, 1.0, 0.75]
    assert tts.difficulty_bins(rates, 3) == [[1, 4], [0, 5], [2, 3]]
    assert tts.difficulty_bins(rates, 1) == [[0, 1, 2, 3, 4, 5]]
    with pytest.raises(ValueError, match="equal bins"):
        tts.difficulty_bins(rates, 4)


def test_equal_compute_interpolates_in_log_tokens_and_clamps():
    ref_tokens, ref_acc = [100.0, 400.0], [0.2, 0.6]
    assert tts.accuracy_at_equal_compute(200.0, ref_tokens, ref_acc) == pytest.approx(0.4)
    assert tts.accuracy_at_equal_compute(50.0, ref_tokens, ref_acc) == pytest.approx(0.2)
    assert tts.accuracy_at_equal_compute(800.0, ref_tokens[::-1], ref_acc[::-1]) == \
        pytest.approx(0.6)


def test_compute_optimal_prefers_accuracy_then_fewer_tokens():
    acc = {"a": 0.5, "b": 0.7, "c": 0.7}
    assert tts.compute_optimal(acc, {"a": 1, "b": 20, "c": 10}) == "c"
    assert tts.compute_optimal({"a": 0.9, "b": 0.1}, {"a": 50, "b": 1}) == "a"


def test_effect_checks_on_hand_made_curves():
    budgets = [4, 8]
    n_bins = 2
    acc = {b: {m: {4: 0.5, 8: 0.5} for m in tts.METHODS} for b in range(3)}
    tok = {b: {m: {4: 100.0, 8: 200.0} for m in tts.METHODS} for b in range(3)}
    acc[2]["prm-vote"][8], acc[2]["majority"][8] = 0.6, 0.55
    acc[1]["beam"] = {4: 0.5, 8: 0.7}               # hardest bin: +0.2 at N=8, mean +0.1
    acc[1]["particles"] = {4: 0.4, 8: 0.5}          # mean -0.05
    prm_check, search_check = tts.effect_checks(acc, tok, budgets, n_bins)
    assert prm_check["held"] and "0.600" in prm_check["ours"]
    assert search_check["held"] and "beam +0.100" in search_check["ours"]
    assert "particles -0.050" in search_check["ours"]
    acc[1]["beam"] = {4: 0.5, 8: 0.5}
    assert not tts.effect_checks(acc, tok, budgets, n_bins)[1]["held"]


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="search.budgets"):
        tts.check_config(load_config("scaling", "tiny", ["search.budgets=[6]"]))
    with pytest.raises(ConfigError, match="difficulty.bins"):
        tts.check_config(load_config("scaling", "tiny",
                                     ["task.eval_size=5", "difficulty.bins=3"]))


def test_micro_run_writes_report_and_plots(tmp_path):
    res = replicate("scaling", "tiny", [
        "task.train_size=8", "warmup_problems=4", "task.eval_size=4", "warmup.steps=3",
        "warmup.batch_size=4", "num_devices=1", "model.overrides={n_layers: 1}", "prm.fit.steps=2",
        "prm.fit.batch_size=4", "prm.sample.n=1", "prm.sample.max_new_tokens=16",
        "difficulty.sample.n=2", "difficulty.sample.max_new_tokens=16", "difficulty.bins=2",
        "search.budgets=[4]",
        *[f"search.{m}.{k}={v}" for m in ("best_of_n", "beam", "dvts", "particles")
          for k, v in (("max_steps", 2), ("step_tokens", 8))]], tmp_path)
    assert len(res.rows) == 3                       # 2 bins + all, one budget
    for row in res.rows:
        assert set(row) == {"bin", "N", *tts.METHODS, "compute-optimal"}
        assert row["compute-optimal"] in tts.METHODS
        assert all(0.0 <= row[m] <= 1.0 for m in tts.METHODS)
    assert [r["bin"] for r in res.rows] == ["1 (easiest)", "2 (hardest)", "all"]
    assert len(res.checks) == 2
    text = res.report.read_text()
    assert text.index("| bin | N | best-of-n |") < text.index("## Effect checks")
    for name in ("bin1", "bin2", "all"):
        assert (tmp_path / f"accuracy_vs_compute_{name}.png").stat().st_size > 0
    all_row = next(line for line in text.split("## Generated tokens")[1].splitlines()
                   if line.startswith("| all | 4 |"))
    tokens = [float(x) for x in all_row.strip("| ").split(" | ")[2:]]
    assert len(tokens) == len(tts.SEARCHES) and all(math.isfinite(t) and t > 0 for t in tokens)
    assert (tmp_path / "phases" / "prm-train" / "model").is_dir()
    # prm-samples, prm-train, difficulty, then one search phase per method
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 3 + len(tts.SEARCHES)
