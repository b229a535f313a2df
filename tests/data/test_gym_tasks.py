"""reasoning-gym datasets as tasks: the dataset's reference answer verifies through the
task and a wrong one fails (scored by reasoning-gym's own score_answer), generation is
deterministic per seed and index, knobs reach the generator config, problems survive
JSON and TFDS, and RL trains on one from the CLI."""

import json

import pytest

from reasonjax.cli import main
from reasonjax.data.task import Problem, TaskError, decode_problem, get_task, task_from_args

reasoning_gym = pytest.importorskip("reasoning_gym")

WITH_ANSWERS = ["chain_sum", "basic_arithmetic", "countdown", "maze", "letter_counting"]


@pytest.mark.parametrize("dataset", WITH_ANSWERS)
def test_reference_answers_verify_and_wrong_ones_do_not(dataset):
    task = get_task(f"gym:{dataset}")
    problems = task.generate(8, seed="test")
    for p in problems:
        reference = task.solution(p)
        assert reference.split("\n")[-1] == f"answer: {p.answer}"
        assert task.verify(p, reference) and task.score(p, reference) == 1.0
        assert task.verify(p, f"thinking...\n<answer>{p.answer}</answer>")
        assert not task.verify(p, "answer: not-a-real-answer-42")
        assert task.score(p, "no answer at all") == 0.0
        # The problem's instance rebuilds it: a task built from its name judges it alike.
        again = get_task(p.task).from_instance(**p.instance)
        assert again == p and get_task(p.task).verify(Problem.from_json(p.to_json()), reference)


@pytest.mark.parametrize("dataset", WITH_ANSWERS + ["propositional_logic"])
def test_generation_is_deterministic_per_seed_and_index(dataset):
    task = get_task(f"gym:{dataset}")
    a = task.generate(6, seed=3)
    assert a == get_task(f"gym:{dataset}").generate(6, seed=3)
    assert [p.question for p in a[2:]] == [p.question for p in task.generate(4, 3, start=2)]
    assert [p.question for p in a] != [p.question for p in task.generate(6, seed=4)]
    # Far indices come from another generator chunk, still by index alone.
    assert task.problem(1000, 3) == get_task(f"gym:{dataset}").problem(1000, 3)


def test_a_dataset_without_reference_answers_is_judged_by_its_scorer():
    task = get_task("gym:propositional_logic")
    p = task.problem(0, 0)
    assert p.steps == () and p.meta["has_reference"] is False
    assert not task.verify(p, "answer: P")
    assert task.score(p, "nothing") == 0.0


def test_expression_datasets_get_exact_steps_and_the_step_checker():
    task = get_task("gym:chain_sum", allow_negation=True)
    assert task.exact_steps and not get_task("gym:countdown").exact_steps
    for p in task.generate(20, seed=1):
        assert len(p.steps) == p.question.count(" + ") + p.question.count(" - ")
        assert task.check_steps(p, list(p.steps)).solved
        assert task.verify(p, task.solution(p))
        if len(p.steps) > 1:
            wrong = [p.steps[0] + "1", *p.steps[1:]]
            assert task.check_steps(p, wrong).first_error == 0
    with pytest.raises(TaskError, match="no exact step checker"):
        get_task("gym:countdown").check_steps(get_task("gym:countdown").problem(0), ["x"])


def test_knobs_reach_the_generator_config_and_bad_ones_are_refused():
    task = task_from_args("gym:chain_sum", None, ["min_terms=4", "max_terms=4",
                                                  "max_digits=1"])
    assert task.knobs() == {"dataset": "chain_sum",
                            "config": {"min_terms": 4, "max_terms": 4, "max_digits": 1}}
    for p in task.generate(5):
        assert p.question.count("+") + p.question.count(" - ") == 3
    assert get_task("gym:chain_sum", min_terms=4, max_terms=4, max_digits=1) == task
    with pytest.raises(TaskError, match="bogus"):
        task_from_args("gym:chain_sum", None, ["bogus=1"])
    with pytest.raises(TaskError, match="max_terms must be >= min_terms"):
        get_task("gym:chain_sum", min_terms=5, max_terms=2)
    with pytest.raises(TaskError, match="no reasoning-gym dataset 'nosuch'"):
        get_task("gym:nosuch")


def test_partial_credit_becomes_the_rl_reward():
    from reasonjax.driver.rollouts import outcome_rewards

    task = get_task("gym:countdown")
    p = task.problem(0, 0)
    wrong = "answer: 1 + 2"                    # a well-formed but wrong expression
    rewards, correct = outcome_rewards(task, [p, p, p], [task.solution(p), wrong, "?"])
    assert correct.tolist() == [True, False, False]
    assert rewards[0] == 1.0 and 0.0 < rewards[1] < 1.0 and rewards[2] == 0.0
    assert rewards[1] == pytest.approx(task.score(p, wrong))


def test_tfds_builder_writes_gym_problems_that_decode_and_verify(tmp_path):
    import tensorflow_datasets as tfds

    from reasonjax.data.tfds_builders import build_task_dataset

    name = build_task_dataset("gym:chain_sum", tmp_path, name="small",
                              sizes={"train": 12, "test": 4}, max_terms=3)
    assert name == "reasonjax_gym/small"
    source = tfds.data_source(name, data_dir=str(tmp_path))
    test = [decode_problem(source["test"][i]) for i in range(4)]
    train = {decode_problem(source["train"][i]).question for i in range(12)}
    task = get_task("gym:chain_sum")
    assert all(task.verify(p, task.solution(p)) for p in test)
    assert not train & {p.question for p in test}


def test_cli_lists_previews_and_trains_rl_on_a_gym_task(tmp_path, capsys):
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert "arithmetic " in out and "gym:chain_sum " in out and "gym:countdown " in out
    assert main(["data", "preview", "--task", "gym:chain_sum", "--n", "2",
                 "max_terms=2"]) == 0
    assert capsys.readouterr().out.count("checks pass") == 2
    assert main(["train", "grpo", "--task", "gym:chain_sum", "max_terms=2", "max_digits=1",
                 "--model", "tiny-100k", "--model-set", "max_seq_len=128", "--run-dir",
                 str(tmp_path), "--steps", "2", "--batch-size", "2", "--max-new-tokens", "8",
                 "--set", "samples_per_prompt=2", "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["task"] == "gym:chain_sum" and summary["metrics"]["iteration"] == 2
