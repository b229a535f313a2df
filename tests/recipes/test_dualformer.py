"""Dualformer's training rows against hand-checked properties, and the recipe at a micro
size end to end (two trainings, three evaluations, the report and its effects)."""

import json

import pytest

from reasonjax.config import ConfigError
from reasonjax.data.task import get_task
from reasonjax.data.tasks import maze
from reasonjax.recipes.dualformer import randomized_solutions
from reasonjax.recipes.replicate import load_config, replicate


def test_randomized_solutions_draw_levels_per_row_and_keep_the_plan():
    task = get_task("maze", trace=True, mode="auto")
    problems = task.generate(40, seed=3)
    drop = maze.TraceDrop(copies=3)
    prompts, completions, levels = randomized_solutions(task, problems, drop, seed=0)
    assert len(prompts) == len(completions) == len(levels) == 120
    assert randomized_solutions(task, problems, drop, seed=0)[1] == completions  # seeded
    assert randomized_solutions(task, problems, drop, seed=1)[1] != completions
    assert set(levels) == set(maze.DROP_LEVELS)
    for i, (text, level) in enumerate(zip(completions, levels)):
        p = problems[i // 3]
        steps = text.split("\n")
        assert prompts[i] == task.prompt(p)
        assert steps[0] == ("fast" if level == 4 else "slow")
        plan = [s for s in p.steps[1:] if not maze.is_trace_step(s)]
        assert steps[-len(plan):] == plan
        assert task.check_steps(p, steps).solved  # every dropped form judges correct
        trace = steps[1:-len(plan)]
        assert (level == 0) == any(s.startswith("x ") for s in trace)
        assert (level >= 2) == all(len(s.split()) == 3 for s in trace) or not trace


@pytest.mark.filterwarnings("ignore:.*were truncated")
def test_dualformer_recipe_micro_end_to_end(tmp_path):
    overrides = ["task.train_size=16", "task.eval_size=4", "warmup.steps=2",
                 "warmup.batch_size=4", "warmup.seq_len=96", "model.overrides={n_layers: 1}",
                 "max_new_tokens=16", "batch_size=4", "drop.copies=2", "num_devices=1"]
    res = replicate("dualformer", "tiny", overrides, tmp_path)
    outcomes = json.loads((tmp_path / "outcomes.json").read_text())
    assert set(outcomes) == {"searchformer_slow", "dualformer_slow", "dualformer_fast",
                             "levels"}
    assert sum(outcomes["levels"]) == 32
    assert all(len(outcomes[k]["optimal"]) == 4 for k in outcomes if k != "levels")
    assert [(r["model"], r["mode"]) for r in res.rows] == [
        ("searchformer", "slow"), ("dualformer", "slow"), ("dualformer", "fast")]
    assert len(res.effects) == 2 and all(e.problems == 4 for e in res.effects)
    assert (tmp_path / "report.md").is_file()
    with pytest.raises(ConfigError, match="task.knobs.mode=auto"):
        replicate("dualformer", "tiny", overrides + ["task.knobs.mode=slow"],
                  tmp_path / "bad")


def test_presets_are_valid_configs():
    cfg = load_config("dualformer", "paper")
    assert cfg.task.knobs["height"] == cfg.task.knobs["width"] == 30
    assert load_config("dualformer", "tiny").model.preset == "tiny-1m"
