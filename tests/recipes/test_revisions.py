"""revisions recipe: answer rules per budget and token shares against hand-computed
values, and a micro end-to-end run with the GLoRe refiners on."""

import pytest

from reasonjax.recipes import revisions
from reasonjax.recipes.replicate import load_config, replicate


def _chain(i, answers, correct, gen=(10.0, 12.0, 14.0), pre=(5.0, 30.0, 60.0)):
    return {"index": i, "completions": ["x"] * 3, "answers": answers, "correct": correct,
            "tokens_generated": list(gen), "tokens_prefilled": list(pre)}


OUTCOME = {
    "chains": [_chain(0, ["1", "2", "2"], [False, True, True]),
               _chain(1, ["5", "4", None], [True, False, False]),
               _chain(2, [None, None, None], [False, False, False])],
    "parallel": {"answers": [["2", "1", "1"], ["5", "5", "4"], ["3", None, "7"]],
                 "correct": [[True, False, False], [True, True, False],
                             [False, False, True]],
                 "tokens_generated": [30.0, 30.0, 30.0], "tokens_prefilled": [6.0] * 3},
    "policy": {"answers": [["1", "1", "2"], ["4", "4", "5"], ["7", "7", "3"]],
               "correct": [[False, False, True], [False, False, True],
                           [True, True, False]],
               "tokens_generated": [36.0, 36.0, 36.0], "tokens_prefilled": [6.0] * 3},
}


def test_budget_table_hand_computed():
    t3 = revisions.budget_table(OUTCOME, 3)
    assert t3["revisions (last)"] == [True, False, False]
    # chain 0: 2 twice -> right; chain 1: 5 vs 4 tie -> the latest (4) -> wrong; none
    assert t3["revisions (vote)"] == [True, False, False]
    # parallel: 1 twice (wrong); 5 twice (right); a three-way tie -> the latest, 7 (right)
    assert t3["parallel (vote)"] == [False, True, True]
    assert t3["policy (vote)"] == [False, False, True]
    assert t3["revisions (coverage)"] == [True, True, False]
    t1 = revisions.budget_table(OUTCOME, 1)
    assert t1["revisions (last)"] == t1["revisions (vote)"] == [False, True, False]
    assert t1["parallel (vote)"] == [True, True, False]
    t2 = revisions.budget_table(OUTCOME, 2)
    assert t2["revisions (vote)"] == [True, False, False]  # 1 vs 2 tie -> 2 (latest)
    assert t2["parallel (coverage)"] == [True, True, False]


def test_budget_tokens_are_chain_prefixes_and_sample_shares():
    tok = revisions.budget_tokens(OUTCOME, 2)
    assert tok["revisions generated"] == pytest.approx(22.0)
    assert tok["revisions prefilled"] == pytest.approx(35.0)
    assert tok["parallel generated"] == pytest.approx(20.0)
    assert tok["policy generated"] == pytest.approx(24.0)
    assert tok["policy prefilled"] == pytest.approx(4.0)


def test_effects_compare_at_the_last_round():
    cfg = load_config("revisions", "tiny", ["revision.rounds=3"])
    found = revisions.effects([OUTCOME], cfg)
    assert [e.value.estimate for e in found] == pytest.approx([-1 / 3, 0.0, 0.0])
    assert all(e.problems == 3 for e in found)


def test_micro_run_with_refiners(tmp_path):
    res = replicate("revisions", "tiny", [
        "task.train_size=16", "task.eval_size=4", "warmup_problems=8", "warmup.steps=3",
        "warmup.batch_size=4", "num_devices=1", "model.overrides={n_layers: 1}",
        "samples.n=2", "samples.max_new_tokens=8", "train.fit.steps=2",
        "train.fit.batch_size=4", "train.fit.seq_len=64", "train.reference=true",
        "revision.rounds=2", "revision.sample.max_new_tokens=8", "refine.enabled=true",
        "refine.train.fit.steps=2", "refine.train.fit.batch_size=4",
        "refine.train.fit.seq_len=64", "refine.train.reference=true",
        "refine.sample.max_new_tokens=8", "batch_size=4"], tmp_path)
    assert [r["N"] for r in res.rows] == [1, 2]
    assert all(0.0 <= r[m] <= 1.0 for r in res.rows for m in revisions.METHODS)
    assert res.rows[0]["revisions generated"] > 0
    assert len(res.effects) == 5  # the revisions' three and one per refiner
    assert [e.claim for e in res.effects[3:]] == [
        "GLoRe global refinement above the first attempt it refines",
        "GLoRe local refinement above the first attempt it refines (oracle first error)"]
    assert all(e.problems == 4 for e in res.effects)
    text = (tmp_path / "report.md").read_text()
    assert "GLoRe local (oracle first error)" in text
    assert (tmp_path / "accuracy_vs_n.png").is_file()
