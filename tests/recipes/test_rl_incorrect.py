"""RL on incorrect synthetic data: per-step advantages and critical steps (hand-computed),
pair construction on hand-made arithmetic solutions, the recording oracle, and the recipe
at a micro size end to end (once as sampled, once on hand-made pairs so the DPO fit runs)."""

import json
import math
import types

import jax
import pytest

from reasonjax import parallel
from reasonjax.config import ConfigError
from reasonjax.data.task import get_task
from reasonjax.recipes import common, process_labels, rl_incorrect
from reasonjax.recipes.process_labels import critical_step, prefix_counts, step_advantages
from reasonjax.recipes.replicate import load_config, replicate
from reasonjax.recipes.rl_incorrect import Pairs, critical_pair, encode_pairs


@pytest.fixture(scope="module")
def task():
    return get_task("arithmetic", "easy")


def test_step_advantages_are_value_differences_of_consecutive_prefixes():
    # k = 4: V = 3/4, 1, 1/4, 0 -> A = 1/4, -3/4, -1/4
    assert step_advantages([3, 4, 1, 0], 4) == pytest.approx([0.25, -0.75, -0.25])
    assert step_advantages([2], 4) == []  # no steps


def test_critical_step_is_the_first_strongly_negative_advantage():
    assert critical_step([0.25, -0.75, -0.25], 0.5) == 1
    assert critical_step([-0.5, -1.0], 0.5) == 0  # <= -threshold counts
    assert critical_step([0.25, -0.25], 0.5) is None
    assert critical_step([0.25, -0.25], 0.25) == 1
    with pytest.raises(ValueError, match="threshold"):
        critical_step([-1.0], 0.0)


def test_critical_pairs_cut_at_the_critical_step(task):
    # 1+2*3: 1+6, answer: 7
    wrong_first = ["1+5", "answer: 6"]  # V = 3/4, 0, 0: A = -3/4, 0 -> step 0
    j, pair = critical_pair(task, wrong_first, [3, 0, 0], 4,
                            {0: (["1+5\nanswer: 6", "1+6\nanswer: 7"], [False, True])},
                            0.5, "rest")
    assert j == 0 and pair == {"prefix": [], "chosen": "1+6\nanswer: 7",
                               "rejected": "1+5\nanswer: 6", "chosen_final": True,
                               "rejected_final": True, "critical": 0, "advantage": -0.75}
    j, pair = critical_pair(task, wrong_first, [3, 0, 0], 4,
                            {0: (["1+5\nanswer: 6", "1+6\nanswer: 7"], [False, True])},
                            0.5, "step")
    assert (pair["chosen"], pair["rejected"], pair["chosen_final"],
            pair["rejected_final"]) == ("1+6", "1+5", False, False)
    # V = 1/2, 1, 0: A = 1/2, -1 -> step 1, prefix ["1+6"], chosen from prefix 1's rollouts
    j, pair = critical_pair(task, ["1+6", "answer: 8"], [2, 4, 0], 4,
                            {0: (["1+6\nanswer: 7"], [True]), 1: (["answer: 7"] * 4, [True] * 4)},
                            0.5, "rest")
    assert j == 1 and (pair["prefix"], pair["chosen"], pair["rejected"],
                       pair["advantage"]) == (["1+6"], "answer: 7", "answer: 8", -1.0)
    # A = 0, -1/4: nothing drops by 1/2
    assert critical_pair(task, ["1+6", "answer: 8"], [1, 1, 0], 4, {}, 0.5, "rest") == \
        (None, None)


def test_critical_pairs_need_a_distinct_correct_continuation(task):
    # step 0 is right but its prefix's rollouts failed (V(s_1) = 0): critical at 0; as
    # one step the only correct rollout repeats the rejected step, so no step pair
    rollouts = {0: (["1+6\nanswer: 8", "1+6\nanswer: 7"], [False, True])}
    j, pair = critical_pair(task, ["1+6", "answer: 8"], [2, 0, 0], 4, rollouts, 0.5, "step")
    assert j == 0 and pair is None
    j, pair = critical_pair(task, ["1+6", "answer: 8"], [2, 0, 0], 4, rollouts, 0.5, "rest")
    assert (pair["chosen"], pair["rejected"]) == ("1+6\nanswer: 7", "1+6\nanswer: 8")


def test_encoded_pairs_train_only_the_continuations(task):
    from reasonjax.models.tokenizer import CharTokenizer

    env = types.SimpleNamespace(tokenizer=CharTokenizer(), delimiter="\n")
    tok = env.tokenizer
    pair = {"prompt": "1+2*3\n", "prefix": ["1+6"], "chosen": "answer: 7",
            "rejected": "answer: 8", "chosen_final": True, "rejected_final": True}
    ex = encode_pairs(env, [pair])[0]
    assert [int(t) for t in ex["chosen_tokens"][ex["chosen_loss_mask"] > 0]] == \
        tok.encode("answer: 7") + [tok.eos_id]
    assert [int(t) for t in ex["rejected_tokens"][ex["rejected_loss_mask"] > 0]] == \
        tok.encode("answer: 8") + [tok.eos_id]


def test_prefix_oracle_store_keeps_the_rollouts_it_counts():
    env = common.make_env(common.TaskSpec(train_size=2, eval_size=1),
                          common.ModelSpec(overrides={"n_layers": 1}), num_devices=1)
    params = parallel.init_params(env.model_config, jax.random.key(0), env.mesh)
    problems = list(env.train)
    steps = [[env.task.solution(p).split("\n")[0], "answer: 0"] for p in problems]
    spec = process_labels.RolloutSpec(n=2, max_new_tokens=6, batch_size=4)
    store: dict = {}
    oracle = process_labels.prefix_oracle(env, params, problems, steps, jax.random.key(1),
                                          spec, store=store)
    counts = prefix_counts([2, 2], [None, False], oracle, 2, group=[0, 1])
    # prompts (m = 0) of both, prefix 1 of both, prefix 2 of the unfinished one only
    assert sorted(store) == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]
    for (i, m), (texts, ok) in store.items():
        assert len(texts) == len(ok) == 2
        assert counts.correct[i][m] == sum(ok)
    assert counts.correct[1][2] == 0
    with pytest.raises(ValueError, match="k=3"):
        oracle([(0, 0)], 3)


MICRO = ["task.train_size=16", "task.eval_size=4", "positives=4", "scale=2",
         "negative_problems=4", "warmup.steps=2", "warmup.batch_size=4",
         "model.overrides={n_layers: 1}", "sampling.n=2", "sampling.max_new_tokens=12",
         "rollouts.n=2", "rollouts.batch_size=8", "rollouts.max_new_tokens=12",
         "dpo.steps=2", "dpo.batch_size=4", "dpo.seq_len=32", "dpo.optim.warmup_steps=1",
         "warmup.optim.warmup_steps=1", "num_devices=1"]


def _check_result(result, tmp_path):
    assert [r["positive solutions"] for r in result.rows] == [4, 4, 8]
    for row in result.rows:
        assert 0.0 <= row["greedy accuracy"] <= 1.0
    checks = result.checks
    assert "per-step DPO on negatives raises accuracy over SFT on the same positives" \
        in checks
    assert any("within 0.02 of SFT on 2x positives" in c for c in checks)
    text = result.report.read_text()
    assert "| arm | positive solutions |" in text and "Effect checks" in text
    assert (tmp_path / "accuracy_vs_positives.png").is_file()


def test_rl_incorrect_recipe_micro_end_to_end(tmp_path):
    result = replicate("rl_incorrect", "tiny", MICRO, tmp_path)
    _check_result(result, tmp_path)
    pairs = json.loads((tmp_path / "outcomes.json").read_text())["pairs"]
    assert pairs["samples"] == 8  # 4 negative problems x 2 samples
    assert 0 <= pairs["pairs"] <= pairs["critical"] <= pairs["negatives"] <= 8
    assert pairs["rollouts"] % 2 == 0


def test_rl_incorrect_trains_on_pairs(tmp_path, monkeypatch, task):
    """The DPO phase on hand-made pairs (an untrained model's samples give none)."""
    problem = task.from_instance("1+2*3")
    pair = {"prompt": task.prompt(problem), "prefix": [], "chosen": "1+6\nanswer: 7",
            "rejected": "1+5\nanswer: 6", "chosen_final": True, "rejected_final": True,
            "critical": 0, "advantage": -0.75, "problem": problem.to_json()}
    made = Pairs(pairs=[pair, dict(pair, prefix=["1+6"], chosen="answer: 7",
                                   rejected="answer: 8", critical=1, advantage=-1.0)],
                 samples=8, sample_accuracy=0.0, negatives=2, critical=2, rollouts=16,
                 agreement=[True, True])
    monkeypatch.setattr(rl_incorrect, "collect_pairs", lambda *a: made)
    result = replicate("rl_incorrect", "tiny", MICRO, tmp_path)
    _check_result(result, tmp_path)
    assert result.rows[1]["pairs"] == 2
    assert "advantage-chosen critical steps are the exact first errors" in result.checks
    metrics = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert any(m.get("phase") == "eval-dpo" for m in metrics)
    done = json.loads((tmp_path / "phases" / "dpo" / "result.json").read_text())
    assert math.isfinite(done["metrics"]["loss"]) and "reward_accuracy" in done["metrics"]


def test_config_checks_name_the_field():
    with pytest.raises(ConfigError, match="unit"):
        load_config("rl_incorrect", "tiny", ["unit=token"])
    with pytest.raises(ConfigError, match="threshold"):
        load_config("rl_incorrect", "tiny", ["threshold=0"])
    problems = types.SimpleNamespace(train=[0] * 4000)
    big = load_config("rl_incorrect", "tiny", ["positives=1500"])  # 4 x 1500 > 4000
    with pytest.raises(ConfigError, match="scale"):
        rl_incorrect._check_sizes(problems, big)
    many = load_config("rl_incorrect", "tiny", ["negative_problems=3500"])  # 1000 + 3500
    with pytest.raises(ConfigError, match="negative_problems"):
        rl_incorrect._check_sizes(problems, many)
    rl_incorrect._check_sizes(problems, load_config("rl_incorrect", "tiny"))
