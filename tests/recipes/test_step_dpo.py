"""Step-DPO pair extraction against hand-made samples, and the recipe at a micro size
end to end (Monte Carlo first-error location, so the rollout path runs too)."""

import json
import math
import types

import pytest

from reasonjax.config import ConfigError
from reasonjax.data.task import get_task
from reasonjax.recipes.process_labels import Samples
from reasonjax.recipes.replicate import replicate
from reasonjax.recipes.step_dpo import encode_pairs, pair_exactness, step_pairs


@pytest.fixture(scope="module")
def env():
    from reasonjax.models.tokenizer import CharTokenizer

    return types.SimpleNamespace(task=get_task("arithmetic", "easy"),
                                 tokenizer=CharTokenizer(), delimiter="\n")


def test_step_pairs_take_the_first_verified_correction_that_differs(env):
    problem = env.task.from_instance("1+2*3")  # 1+6, answer: 7
    steps = [["1+5", "answer: 6"], ["1+6", "answer: 8"], ["7", "answer: 7"]]
    errors = [0, 1, None]  # the third is skipped (no error located)
    fixes = Samples(texts=[["1+5\nanswer: 6", "1+6\nanswer: 7", "7\nanswer: 7"],
                           ["answer: 8", "answer: 7"]],
                    correct=[[False, True, True], [False, True]], tokens_generated=0)
    pairs = step_pairs(env, [problem] * 3, steps, errors, fixes)
    assert [(p["prefix"], p["chosen"], p["rejected"]) for p in pairs] == [
        ([], "1+6", "1+5"), (["1+6"], "answer: 7", "answer: 8")]
    assert all(p["prompt"] == "1+2*3\n" for p in pairs)
    assert pair_exactness(env, pairs) == [True, True]
    bad = dict(pairs[0], chosen="1+7")
    assert pair_exactness(env, [bad, pairs[1]]) == [False, True]
    ex = encode_pairs(env, pairs)
    tok = env.tokenizer
    # chosen continuation of pair 0 is "1+6\n" (not final: ended by the delimiter) ...
    c = ex[0]["chosen_tokens"][ex[0]["chosen_loss_mask"] > 0]
    assert tok.decode([int(t) for t in c]) == "1+6\n"
    # ... and of pair 1 the answer step, ended by eos.
    c = ex[1]["chosen_tokens"][ex[1]["chosen_loss_mask"] > 0]
    assert [int(t) for t in c] == tok.encode("answer: 7") + [tok.eos_id]


def test_step_pairs_skip_corrections_that_repeat_the_wrong_step(env):
    problem = env.task.from_instance("1+2*3")
    fixes = Samples(texts=[["1+5\nanswer: 7"]], correct=[[True]], tokens_generated=0)
    assert step_pairs(env, [problem], [["1+5", "answer: 6"]], [0], fixes) == []


def test_step_dpo_recipe_micro_end_to_end(tmp_path):
    overrides = ["task.train_size=12", "warmup_problems=6", "task.eval_size=4",
                 "warmup.steps=0", "model.overrides={n_layers: 1}", "sampling.n=2",
                 "sampling.max_new_tokens=12",
                 "locate=monte_carlo", "locate_rollouts.n=2", "locate_rollouts.batch_size=8",
                 "locate_rollouts.max_new_tokens=12", "corrections.n=2",
                 "corrections.batch_size=8", "corrections.max_new_tokens=12", "dpo.steps=2",
                 "dpo.batch_size=8", "dpo.seq_len=32", "num_devices=1"]
    result = replicate("step_dpo", "tiny", overrides, tmp_path)
    assert [r["stage"] for r in result.rows] == ["warm-up", "round 1"]
    r1 = result.rows[1]
    # the 6 problems after warmup_problems, 2 samples each
    assert r1["samples"] == 12 and 0 <= r1["wrong"] <= 12
    assert r1["errors located"] == r1["wrong"]  # binary search always ends on a step
    assert 0 <= r1["pairs"] <= r1["errors located"]
    assert r1["rollouts to locate"] % 2 == 0  # probes of k=2 rollouts
    for row in result.rows:
        assert 0.0 <= row["greedy accuracy"] <= 1.0
    assert math.isfinite(r1["sample accuracy"])
    assert "Step-DPO raises greedy accuracy over the warm-up model" in result.checks
    assert "Monte Carlo first errors match the exact ones" in result.checks
    text = result.report.read_text()
    assert "| stage | greedy accuracy |" in text and "Effect checks" in text
    assert (tmp_path / "accuracy_vs_round.png").is_file()


def test_step_dpo_needs_monte_carlo_location_without_an_exact_step_checker(tmp_path):
    data = tmp_path / "gsm8k.jsonl"
    data.write_text("".join(json.dumps({"question": f"{a} cats, {a} come?",
                                        "answer": f"#### {2 * a}"}) + "\n" for a in range(4)))
    with pytest.raises(ConfigError, match="locate=exact.*gsm8k.*locate=monte_carlo"):
        replicate("step_dpo", "tiny", ["task.name=gsm8k", f"task.data_file={data}",
                                       "task.eval_size=2", "num_devices=1"], tmp_path / "run")
