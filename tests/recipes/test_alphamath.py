"""AlphaMath end to end at a micro size: report structure, checks and plots."""

import math

from reasonjax.recipes import alphamath
from reasonjax.recipes.replicate import replicate

MICRO = ["task.train_size=24", "task.eval_size=4", "warmup_problems=16", "warmup.steps=5",
         "warmup.batch_size=4", "num_devices=1", "rounds=1", "search.problems=4",
         "search.batch_size=4", "search.num_actions=2", "search.num_simulations=2",
         "search.max_steps=2", "search.step_tokens=8", "train.steps=2", "train.batch_size=4",
         "eval.batch_size=4", "eval.vote_n=2", "eval.beams=1", "eval.expansions=2",
         "eval.mcts_simulations=2", "eval.mcts_actions=2", "eval.max_steps=2",
         "eval.step_tokens=8"]


def test_alphamath_micro_run_writes_the_report(tmp_path):
    result = replicate("alphamath", "tiny", MICRO, tmp_path)
    assert [r["method"].split(" (")[0] for r in result.rows] == [
        "greedy", "majority vote", "value-guided step beam search", "MCTS, value head"]
    for row in result.rows:
        assert 0.0 <= row["accuracy"] <= 1.0
        assert math.isfinite(row["tokens / problem"]) and row["tokens / problem"] > 0
    # Greedy decodes one sequence; the searches sample several per problem.
    greedy, vote = result.rows[0]["tokens / problem"], result.rows[1]["tokens / problem"]
    assert greedy <= 2 * 8 and vote > greedy
    assert list(result.checks) == ["value-guided step beam search beats greedy at equal model"]
    text = result.report.read_text()
    for heading in ("Final model: accuracy by inference method", "Effect checks",
                    "Per round (round 0 = after warm-up)"):
        assert f"## {heading}" in text
    assert text.index("| method | accuracy | tokens / problem |") < text.index("Effect checks")
    for png in ("accuracy_vs_round.png", "accuracy_vs_compute.png"):
        assert (tmp_path / png).stat().st_size > 0
    phases = sorted(p.name for p in (tmp_path / "phases").iterdir())
    assert phases == ["eval-methods", "eval-round-0", "eval-round-1", "mcts-round-1",
                      "train-round-1", "warmup"]


def test_round_problems_are_a_seeded_shuffle_per_round():
    cfg = alphamath.Config()
    a, b = alphamath.round_problems(cfg, 1000, 1), alphamath.round_problems(cfg, 1000, 2)
    assert len(a) == cfg.search.problems and len(set(a)) == len(a)
    assert a == alphamath.round_problems(cfg, 1000, 1) and a != b
    assert sorted(alphamath.round_problems(cfg, 5, 1)) == [0, 1, 2, 3, 4]
