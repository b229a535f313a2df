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


def _outcome(n_problems: int, correct: dict, tokens: dict) -> dict:
    """One seed's outcomes on 2 bins of n_problems each: correct[(search, N, method)] ->
    per-problem 0/1 in the hardest bin (the easy bin is all right), tokens[(search, N)]."""
    searches = {}
    for search in tts.SEARCHES:
        for n in (4, 8):
            methods = ("best-of-n", "majority", "prm-vote") if search == "best-of-n" \
                else (search,)
            bins = [{"correct": {m: [1] * n_problems for m in methods},
                     "tokens_per_problem": tokens[(search, n)]},
                    {"correct": {m: list(correct.get((search, n, m), [0] * n_problems))
                                 for m in methods}, "tokens_per_problem": tokens[(search, n)]}]
            searches[f"{search}-n{n}"] = {"bins": bins}
    return {"bins": [list(range(n_problems)), list(range(n_problems, 2 * n_problems))],
            "pass_rates": [0.5] * (2 * n_problems), "searches": searches}


def test_effects_on_hand_made_outcomes():
    cfg = load_config("scaling", "tiny", ["search.budgets=[4, 8]"])
    tokens = {(s, n): 100.0 * n / 4 for s in tts.SEARCHES for n in (4, 8)}
    P = 200
    half, fifth = [1] * (P // 2) + [0] * (P // 2), [1] * (P // 5) + [0] * (4 * P // 5)
    correct = {("best-of-n", 4, "best-of-n"): half, ("best-of-n", 8, "best-of-n"): half,
               ("best-of-n", 8, "prm-vote"): [1] * (3 * P // 5) + [0] * (2 * P // 5),
               ("best-of-n", 8, "majority"): half,
               ("beam", 4, "beam"): half, ("beam", 8, "beam"): [1] * (9 * P // 10)
               + [0] * (P // 10), ("particles", 4, "particles"): fifth,
               ("particles", 8, "particles"): fifth}
    prm_vote, beam, particles = tts.effects([_outcome(P, correct, tokens)], cfg)
    # PRM vote vs majority at N=8, both bins: (0.6 - 0.5) / 2 = +0.05 over 2P problems
    assert prm_vote.value.estimate == pytest.approx(0.05) and prm_vote.problems == 2 * P
    # hardest bin, equal tokens: beam +0.0 at N=4, +0.4 at N=8 -> +0.2; particles -0.3
    assert beam.value.estimate == pytest.approx(0.2) and beam.verdict == "held"
    assert particles.value.estimate == pytest.approx(-0.3)
    assert particles.verdict == "contradicted"
    same = {k: half for k in correct}  # every method equally right: nothing held
    assert all(e.verdict != "held" for e in tts.effects([_outcome(P, same, tokens)], cfg))


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
    assert len(res.checks) == 3  # PRM vote vs majority; beam, particles vs best-of-N
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
