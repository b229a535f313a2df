"""MCTS-DPO end to end at a micro size, and its step-pair examples."""

import math

import numpy as np

from reasonjax.recipes import common, mcts_dpo
from reasonjax.recipes.replicate import replicate

MODEL = "model.overrides={n_layers: 1, d_model: 16, n_heads: 2, n_kv_heads: 1, d_ff: 32}"
MICRO = [MODEL, "task.train_size=10", "task.eval_size=2", "warmup_problems=6",
         "warmup.steps=2", "warmup.batch_size=2", "num_devices=1", "search_problems=2",
         "batch_size=2", "search.num_actions=2", "search.num_simulations=2",
         "search.max_steps=2", "search.step_tokens=12", "train.steps=1",
         "train.batch_size=2", "greedy.max_new_tokens=24"]


def test_mcts_dpo_micro_run_writes_the_report(tmp_path):
    result = replicate("mcts_dpo", "tiny", MICRO, tmp_path)
    assert [r["round"] for r in result.rows] == [0, 1, 2]
    for row in result.rows:
        assert 0.0 <= row["greedy accuracy"] <= 1.0
        assert row["pairs"] >= 0
    for row in result.rows[1:]:
        assert 0.0 <= row["MCTS solved (train)"] <= 1.0
        if row["pairs"]:
            assert math.isfinite(row["DPO loss (last step)"])
    claim = "round 2 greedy accuracy above round 0 (after warm-up)"
    assert list(result.checks) == [claim]
    text = result.report.read_text()
    assert "## Greedy accuracy per round" in text and "## Effect checks" in text
    assert claim in text
    assert (tmp_path / "accuracy_vs_round.png").stat().st_size > 0
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 5


def test_visit_smoothing_is_the_rejected_steps_share_of_visits():
    from reasonjax.recipes.mcts_dpo import visit_smoothing

    assert visit_smoothing({"visits_chosen": 6, "visits_rejected": 2}) == 0.25
    assert visit_smoothing({"visits_chosen": 1, "visits_rejected": 3}) == 0.5  # capped
    assert visit_smoothing({"visits_chosen": 0, "visits_rejected": 0}) == 0.0


def test_pair_examples_train_only_the_step_tokens():
    env = common.make_env(common.TaskSpec(train_size=2, eval_size=1), common.ModelSpec(),
                          num_devices=1)
    rec = {"problem": 1, "prefix": ["6-48"], "chosen": "answer: -42", "rejected": "answer: 7",
           "chosen_final": True, "rejected_final": True}
    ex = mcts_dpo.pair_examples(env, [rec], env.train)[0]
    tok = env.tokenizer
    context = [tok.bos_id] + tok.encode(env.task.prompt(env.train[1]) + "6-48\n")
    chosen = tok.encode("answer: -42") + [tok.eos_id]
    np.testing.assert_array_equal(ex["chosen_tokens"], context + chosen)
    np.testing.assert_array_equal(ex["chosen_loss_mask"],
                                  [0] * len(context) + [1] * len(chosen))
    assert tok.decode(ex["rejected_tokens"][len(context):-1]) == "answer: 7"
