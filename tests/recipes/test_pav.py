"""PAV targets (prefix counts, the best-of-K prover, advantages, effective rewards) and the
equal-compute comparison by hand, config checks, and the pav recipe at a micro size end
to end."""

import json
import math

import numpy as np
import pytest

from reasonjax.config import ConfigError
from reasonjax.recipes import pav
from reasonjax.recipes import process_labels as pl
from reasonjax.recipes.replicate import load_config, replicate


def test_prefix_counts_roll_out_the_prompt_once_per_problem_and_every_open_prefix():
    counts = {(0, 0): 2, (0, 1): 3, (0, 2): 1, (1, 1): 0, (2, 0): 4, (2, 1): 4, (2, 2): 3}
    log = []

    def oracle(queries, k):
        assert k == 4
        log.append(list(queries))
        return np.asarray([counts[q] for q in queries])

    # solutions 0 and 1 answer problem 0 (0: 3 steps, wrong; 1: 2 steps, right), solution
    # 2 answers problem 1 and was cut off after 2 steps (its last prefix is rolled out).
    got = pl.prefix_counts([3, 2, 2], [False, True, None], oracle, k=4, group=[0, 0, 1])
    assert log == [[(0, 0), (2, 0), (0, 1), (0, 2), (1, 1), (2, 1), (2, 2)]]  # one call
    assert got.correct == [[2, 3, 1, 0], [2, 0, 4], [4, 4, 3]]
    assert got.rollouts == [12, 4, 12] and got.rounds == 1 and got.k == 4
    alone = pl.prefix_counts([1], [True], lambda q, k: np.asarray([1] * len(q)), k=2)
    assert alone.correct == [[1, 2]] and alone.rollouts == [2]


def test_best_of_k_values_are_unbiased_pass_at_k_of_the_base_policy():
    # n=4 rollouts: c=1, K=2 -> 1 - C(3,2)/C(4,2) = 1 - 3/6; c=2 -> 1 - 1/6; K=1 -> c/n
    assert pl.best_of_k_values([0, 1, 2, 4], 4, 2) == pytest.approx([0.0, 0.5, 5 / 6, 1.0])
    assert pl.best_of_k_values([0, 1, 3], 4, 1) == pytest.approx([0.0, 0.25, 0.75])
    assert pl.best_of_k_values([1, 3], 4, 4) == pytest.approx([1.0, 1.0])  # any correct


def test_pav_targets_are_q_after_the_step_and_the_prover_value_change():
    q, a = pl.pav_targets([0.5, 0.75, 0.25, 1.0], [0.8, 0.9, 0.5, 1.0])
    assert q == pytest.approx([0.75, 0.25, 1.0])
    assert a == pytest.approx([0.1, -0.4, 0.5])
    assert pl.effective_rewards(q, a, 0.5) == pytest.approx([0.8, 0.05, 1.25])
    assert pl.pav_targets([0.3], [0.6]) == ([], [])
    with pytest.raises(ValueError, match="equal-length"):
        pl.pav_targets([0.1, 0.2], [0.1])


def test_step_targets_from_counts_by_hand():
    # k=4, counts per prefix 2, 4, 0, 4 (the last: a right answer). Q_pi = .5, 1, 0, 1;
    # Bo-2: 1 - 1/6, 1, 0, 1. Steps: Q = 1, 0, 1; A = 1/6, -1, 1; reward (alpha 1) Q + A.
    t = pav.step_targets([2, 4, 0, 4], 4, 2, 1.0)
    assert t["q"] == pytest.approx([1.0, 0.0, 1.0])
    assert t["a"] == pytest.approx([1 / 6, -1.0, 1.0])
    assert t["reward"] == pytest.approx([7 / 6, -1.0, 2.0])
    assert t["v_pi"] == 0.5 and t["v_mu"] == pytest.approx(5 / 6)
    assert pav.step_targets([2, 4, 0, 4], 4, 2, 0.0)["reward"] == pytest.approx(t["q"])


def test_equal_compute_gain_and_tokens_to_reach_by_hand():
    # reference: N=4 at 100 tokens, 1/4 right; N=8 at 400 tokens, 3/4 right. The method
    # spends 200 tokens at N=4 (reference there: halfway in log tokens) and 800 at N=8
    # (clamped to the reference's N=8).
    ref4, ref8 = [1, 0, 0, 0], [1, 1, 1, 0]
    searches = {"orm-best-of-n-n4": {"correct": ref4, "tokens_per_problem": 100.0},
                "orm-best-of-n-n8": {"correct": ref8, "tokens_per_problem": 400.0},
                "pav-beam-n4": {"correct": [1, 1, 0, 0], "tokens_per_problem": 200.0},
                "pav-beam-n8": {"correct": [1, 1, 1, 1], "tokens_per_problem": 800.0}}
    gain = pav.equal_compute_gain(searches, "pav-beam", [4, 8])
    at200 = 0.5 * np.asarray(ref4, float) + 0.5 * np.asarray(ref8, float)
    expected = ((np.asarray([1, 1, 0, 0]) - at200) + (np.ones(4) - np.asarray(ref8))) / 2
    assert gain == pytest.approx(expected)
    assert gain.mean() == pytest.approx(((0.5 - 0.5) + (1.0 - 0.75)) / 2)
    assert pav.tokens_to_reach(0.5, [100.0, 400.0], [0.25, 0.75]) == pytest.approx(200.0)
    assert pav.tokens_to_reach(0.2, [400.0, 100.0], [0.75, 0.25]) == 100.0
    assert math.isnan(pav.tokens_to_reach(0.9, [100.0, 400.0], [0.25, 0.75]))


def test_config_checks_and_each_verifier_reads_its_own_head():
    cfg = load_config("pav", "tiny")
    orm = cfg.search.method("orm-best-of-n", 8)
    assert orm.n == 8 and orm.scorer.transform == "sigmoid" and orm.scorer.aggregate == "last"
    assert cfg.search.method("orm-beam", 8).scorer.transform == "sigmoid"
    beam = cfg.search.method("pav-beam", 16)
    assert beam.n == 16 and beam.scorer.transform == "identity" and beam.beam_width == 4
    with pytest.raises(ConfigError, match="prover_k"):
        load_config("pav", "tiny", ["prover_k=16"])
    with pytest.raises(ConfigError, match="search.budgets"):
        load_config("pav", "tiny", ["search.budgets=[4, 6]"])
    assert set(pav.losses(cfg)) == {"orm", "pav", "adv"}  # the preset runs the RL check
    assert pav.rl_runs(cfg) == [("rl", cfg.rl)]
    with pytest.raises(ConfigError, match="rl: task.train_size=2600 leaves no training "
                                          "problems for RL"):
        load_config("pav", "tiny", ["task.train_size=2600", "label_problems=600"])
    without = load_config("pav", "tiny", ["rl=null"])
    assert set(pav.losses(without)) == {"orm", "pav"} and pav.rl_runs(without) == []
    with pytest.raises(ConfigError, match="rl.prm_shaping=clip: the pav recipe sets"):
        load_config("pav", "tiny", ["rl={algorithm: {name: grpo}, prm_shaping: clip}"])


def _outcome(pav_correct, orm_correct, beam_correct, tokens=100.0) -> dict:
    searches = {}
    for n in (4, 8):
        for m, c in (("pav-beam", pav_correct), ("orm-best-of-n", orm_correct),
                     ("orm-beam", beam_correct)):
            searches[f"{m}-n{n}"] = {"correct": list(c), "tokens_per_problem": tokens * n}
    return {"searches": searches, "eval_problems": len(pav_correct)}


def test_effects_hold_only_where_pav_beam_wins():
    cfg = load_config("pav", "tiny", ["search.budgets=[4, 8]"])
    P = 200
    half = [1] * (P // 2) + [0] * (P // 2)
    most = [1] * (9 * P // 10) + [0] * (P // 10)
    found = pav.effects([_outcome(most, half, most)], cfg)
    assert [e.verdict for e in found] == ["held", "held", "inconclusive"]
    assert found[0].value.estimate == pytest.approx(0.4) and found[0].problems == P
    assert found[2].value.estimate == 0.0
    worse = pav.effects([_outcome(half, most, half)], cfg)
    assert [e.verdict for e in worse] == ["contradicted", "contradicted", "inconclusive"]
    # With the dense-reward RL runs: rl-pav vs rl-outcome, and each vs the warm-up policy.
    dense = _outcome(most, half, most)
    dense["rl"] = {"base": half, "rl-outcome": {"correct": half},
                   "rl-pav": {"correct": most}}
    found = pav.effects([dense], cfg)
    assert [e.verdict for e in found[3:]] == ["held", "inconclusive", "held"]
    assert found[3].value.estimate == pytest.approx(0.4)


MICRO = ["task.eval_size=4", "task.train_size=12", "warmup_problems=4", "warmup.steps=0",
         "model.overrides={n_layers: 1}", "label_problems=4", "samples.n=2",
         "samples.max_new_tokens=12", "rollouts.n=2", "prover_k=2",
         "rollouts.max_new_tokens=12", "rollouts.batch_size=8", "orm.steps=2", "pav.steps=2",
         "orm.batch_size=8", "pav.batch_size=8", "orm.seq_len=32", "pav.seq_len=32",
         "num_devices=1", "search.budgets=[4]", "search.best_of_n.max_steps=2",
         "search.beam.max_steps=2", "search.best_of_n.step_tokens=8",
         "search.beam.step_tokens=8", "search.beam.beam_width=2"]


RL = ["rl={algorithm: {name: grpo}, iterations: 2, prompts_per_iteration: 2, "
      "samples_per_prompt: 2, max_new_tokens: 12, prm_coef: 0.5}", "adv.steps=2",
      "adv.batch_size=8", "adv.seq_len=32"]


def _check_search_part(result, tmp_path):
    (row,) = result.rows
    assert row["N"] == 4
    for m in pav.METHODS:
        assert 0.0 <= row[m] <= 1.0 and row[f"{m} tokens"] > 0
    outcomes = json.loads((tmp_path / "outcomes.json").read_text())
    lab = outcomes["label"]
    assert len(lab["q"]) == lab["solutions"] == len(lab["a"])
    for q, a in zip(lab["q"], lab["a"]):
        assert len(q) == len(a) and all(0.0 <= x <= 1.0 for x in q)
        assert all(-1.0 <= x <= 1.0 for x in a)
    text = result.report.read_text()
    assert "| N | orm-best-of-n | orm-beam | pav-beam |" in text and "Bo-2(pi)" in text
    assert (tmp_path / "accuracy_vs_compute.png").is_file()
    phases = [json.loads(line)["phase"] for line in
              (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert phases[:7] == ["samples", "label", "orm", "pav", "search-orm-best-of-n-n4",
                          "search-orm-beam-n4", "search-pav-beam-n4"]
    return outcomes, text, phases


SEARCH_EFFECTS = ["PAV beam search above ORM best-of-N at equal compute",
                  "PAV beam search above ORM best-of-N at N=4",
                  "PAV beam search above ORM beam search at equal compute"]


def test_pav_recipe_micro_end_to_end(tmp_path):
    result = replicate("pav", "tiny", MICRO + ["rl=null"], tmp_path)
    _, text, phases = _check_search_part(result, tmp_path)
    assert [e.claim for e in result.effects] == SEARCH_EFFECTS
    assert len(phases) == 7 and "dense RL rewards" not in text


@pytest.mark.slow
def test_pav_recipe_micro_with_dense_rl_end_to_end(tmp_path):
    """The recipe with its RL block (two more RL runs: minutes on 2 cores, so `-m slow`;
    the PAV step rewards themselves are checked by hand in tests/rl/test_shaping.py)."""
    result = replicate("pav", "tiny", MICRO + RL, tmp_path)
    outcomes, text, phases = _check_search_part(result, tmp_path)
    assert [e.claim for e in result.effects] == SEARCH_EFFECTS + [
        "RL with PAV dense rewards above outcome-only RL",
        "outcome-only RL raises greedy accuracy over its start",
        "RL with PAV dense rewards raises greedy accuracy over its start"]
    assert "## PAVs as dense RL rewards" in text and "rl.prm_coef = 0.5" in text
    assert len(outcomes["rl"]["rl-pav"]["history"]) == 2
    assert phases[7:] == ["adv", "eval-base", "rl-outcome", "rl-pav"]
