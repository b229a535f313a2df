"""AlphaMath end to end at a micro size: report structure, checks and plots."""

import math

from reasonjax.recipes import alphamath, mcts_data
from reasonjax.recipes.replicate import replicate

# A 1-layer model, two problems, one of everything: each phase compiles once.
MODEL = "model.overrides={n_layers: 1, d_model: 16, n_heads: 2, n_kv_heads: 1, d_ff: 32}"
STEPS, STEP_TOKENS = 2, 12
MICRO = [MODEL, "task.train_size=10", "task.eval_size=2", "warmup_problems=6",
         "warmup.steps=2", "warmup.batch_size=2", "num_devices=1", "rounds=1",
         "search_problems=2", "batch_size=2", "search.num_actions=2",
         "search.num_simulations=2", f"search.max_steps={STEPS}",
         f"search.step_tokens={STEP_TOKENS}", "train.steps=1", "train.batch_size=2",
         "value_holdout=0.5", "eval.majority.n=2", "eval.sbs.n=2",
         "eval.sbs.beam_width=2", "eval.mcts.num_simulations=2", "eval.mcts.num_actions=2",
         f"eval.greedy.max_new_tokens={STEPS * STEP_TOKENS}", "eval.curve=[2]",
         *[f"eval.{m}.{k}={v}" for m in ("majority", "sbs", "mcts")
           for k, v in (("max_steps", STEPS), ("step_tokens", STEP_TOKENS))]]


def test_alphamath_micro_run_writes_the_report(tmp_path):
    result = replicate("alphamath", "tiny", MICRO, tmp_path)
    assert [r["method"].split(" (")[0] for r in result.rows] == [
        "greedy", "majority vote", "value-guided step beam search", "MCTS, value head"]
    for row in result.rows:
        assert 0.0 <= row["accuracy"] <= 1.0
        assert math.isfinite(row["tokens / problem"]) and row["tokens / problem"] > 0
    # Greedy decodes one sequence; the searches sample several per problem.
    greedy, vote = result.rows[0]["tokens / problem"], result.rows[1]["tokens / problem"]
    assert greedy <= STEPS * STEP_TOKENS and vote > greedy
    assert list(result.checks) == ["value-guided step beam search beats greedy at equal model",
                                   "MCTS with the value head beats greedy at equal model",
                                   "joint training raises greedy accuracy (round 1 vs round 0)"]
    text = result.report.read_text()
    for heading in ("Final model: accuracy by inference method", "Effect checks",
                    "Per round (round 0 = after warm-up)"):
        assert f"## {heading}" in text
    assert text.index("| method | accuracy | 95% interval | tokens / problem |") < \
        text.index("Effect checks")
    for png in ("accuracy_vs_round.png", "accuracy_vs_compute.png"):
        assert (tmp_path / png).stat().st_size > 0
    phases = sorted(p.name for p in (tmp_path / "phases").iterdir())
    assert phases == ["eval-curves", "eval-methods", "eval-round-0", "eval-round-1",
                      "mcts-round-1", "train-round-1", "warmup"]
    assert "value MAE" in text and "correct>wrong, same problem" in text


def test_round_problems_are_a_seeded_shuffle_per_round():
    cfg = alphamath.Config()
    rounds = lambda n, r: mcts_data.round_problems(cfg.seed, r, cfg.search_problems, n)
    a, b = rounds(1000, 1), rounds(1000, 2)
    assert len(a) == cfg.search_problems and len(set(a)) == len(a)
    assert a == rounds(1000, 1) and a != b
    assert sorted(rounds(5, 1)) == [0, 1, 2, 3, 4]


def test_split_records_holds_out_whole_problems():
    recs = [{"problem": p, "i": i} for i, p in enumerate([0, 0, 1, 2, 2, 3])]
    train, held = alphamath.split_records(recs, 0.5, seed=0)
    held_problems = {r["problem"] for r in held}
    assert len(held_problems) == 2 and not held_problems & {r["problem"] for r in train}
    assert sorted(r["i"] for r in train + held) == list(range(6))
    assert alphamath.split_records(recs, 0.5, seed=0) == (train, held)
    assert alphamath.split_records(recs, 0.0, seed=0) == (recs, [])
    # never the whole round: at least one problem stays for training
    assert len({r["problem"] for r in alphamath.split_records(recs, 1.0, 0)[0]}) == 1


def test_ranking_counts_correct_over_wrong_pairs():
    final = [(0, True, 0.9), (0, False, 0.1), (0, False, 0.9), (1, True, -0.5),
             (1, False, 0.0)]
    out = alphamath.ranking(final)
    # all pairs: 0.9 beats 0.1, ties 0.9, beats 0.0; -0.5 loses to all three
    assert out["final_auc"] == (1 + 0.5 + 1) / 6
    # same problem: (0.9 vs 0.1) win, (0.9 vs 0.9) tie, (-0.5 vs 0.0) loss
    assert out["same_problem"] == 1.5 / 3 and out["same_problem_pairs"] == 3
    nan = alphamath.ranking([(0, True, 1.0)])
    assert math.isnan(nan["final_auc"]) and nan["same_problem_pairs"] == 0
