"""The widened arithmetic task: zero and negative operands, parentheses and exact
division, solved step by step and judged exactly; the narrow presets draw the problems
they always drew; and a tiny model trained on the widened task handles 0 and negative
operands about as well as the rest (the narrow task's model did not: operands were never
0 or negative in training)."""

import re

import numpy as np
import pytest

from reasonjax.data.task import TaskError, get_task
from reasonjax.data.tasks.arithmetic import parse, reduce_once, render, value


def test_expressions_parse_render_and_reduce_with_precedence_and_parentheses():
    for text, steps in [("12+7*3-5", ["12+21-5", "33-5", "28"]),
                        ("(2-5)*-3", ["-3*-3", "9"]),
                        ("4-(3-5)", ["4--2", "6"]),
                        ("8/-2/2", ["-4/2", "-2"]),
                        ("(1+2)*(3+4)", ["3*(3+4)", "3*7", "21"]),
                        ("2*(3+4*5)", ["2*(3+20)", "2*23", "46"])]:
        tree = parse(text)
        assert render(tree) == text
        got = []
        while not isinstance(tree, int):
            tree = reduce_once(tree)
            got.append(render(tree))
        assert got == steps
    assert value(parse("7/2")) * 2 == 7 and parse("3+") is None and parse("(1+2") is None
    assert parse("1 + 2") is None and parse("2**3") is None


def test_the_full_preset_draws_every_extension_and_its_solutions_check():
    task = get_task("arithmetic", "full")
    problems = task.generate(500, seed=1)
    text = " ".join(p.question for p in problems)
    assert "(" in text and "/" in text and re.search(r"(^|[-+*/( ])-\d", text)
    assert any("0" in re.findall(r"\d+", p.question) for p in problems)
    for p in problems:
        assert len(p.steps) == 3 and task.check_steps(p, list(p.steps)).solved
        assert task.verify(p, task.solution(p))
    p = task.from_instance("(2-5)*-3/9")
    assert p.steps == ("-3*-3/9", "9/9", "answer: 1")
    check = task.check_steps(p, ["-3*-3/9", "9/3", "answer: 3"])
    assert check.correct == (True, False, True) and check.first_error == 1
    assert task.check_steps(p, ["9/9", "answer: 1"]).first_error is None   # a jump
    assert "division by zero" in task.check_steps(p, ["1/0"]).reasons[0]
    with pytest.raises(TaskError, match="divides by zero"):
        task.from_instance("3/(2-2)")
    with pytest.raises(TaskError, match="inexact division"):
        task.from_instance("7/2+1")


def test_the_narrow_presets_keep_their_problems():
    """Known problems of the earlier task (stream 'train' of each preset)."""
    easy = [p.question for p in get_task("arithmetic", "easy").generate(4, seed="train")]
    hard = get_task("arithmetic", "hard").problem(0, seed=0)
    assert all(re.fullmatch(r"\d+([-+*]\d+){2}", q) for q in easy)
    assert hard.question == render(parse(hard.question)) and "(" not in hard.question
    assert not any(re.search(r"(^|[-+*])-|\b0\b|/", p.question)
                   for p in get_task("arithmetic", "medium").generate(300))


MODEL, STEPS = "tiny-100k", 4000


def _signed_or_zero(question: str) -> bool:
    operands = re.findall(r"(?:(?<=^)|(?<=[-+*/(]))-?\d+", question)
    return any(int(x) <= 0 for x in operands)


@pytest.mark.slow
def test_a_model_trained_on_the_widened_task_handles_zero_and_negative_operands():
    """Greedy accuracy on 300 held-out problems with a 0 or negative operand is within 10
    points of the accuracy on 300 with positive operands only, the 95% interval of the
    difference included (the narrow easy task's model scored 0.03-0.07 on problems with a
    0 operand against 0.80 overall). Slow: about 2 minutes on 2 cores."""
    from reasonjax.driver import Env
    from reasonjax.driver.records import greedy_correct
    from reasonjax.eval import stats
    from reasonjax.models import CharTokenizer, get_config
    from reasonjax.train.fit import FitConfig, TaskSFTConfig, sft_on_task
    from reasonjax.train.state import OptimConfig

    task = get_task("arithmetic", n_ops=2, max_operand=9, min_operand=0, negatives=True)
    tok, cfg = CharTokenizer(), get_config(MODEL)
    sft = TaskSFTConfig(fit=FitConfig(steps=STEPS, batch_size=32, progress=False,
                                      optim=OptimConfig(lr=3e-3, warmup_steps=50)),
                        seq_len=48)
    params, _ = sft_on_task(cfg, tok, task, sft)
    stream = task.generate(4000, seed="test")
    signed = [p for p in stream if _signed_or_zero(p.question)][:300]
    rest = [p for p in stream if not _signed_or_zero(p.question)][:300]
    assert len(rest) == 300
    env = Env(task=task, tokenizer=tok, model_config=cfg)
    a = np.asarray(greedy_correct(env, params, signed, 40), float)
    b = np.asarray(greedy_correct(env, params, rest, 40), float)
    half = stats.z_value() * np.sqrt(a.var() / len(a) + b.var() / len(b))
    print(f"0 / negative operands {a.mean():.3f}, positive only {b.mean():.3f} (300 each); "
          f"difference {a.mean() - b.mean():+.3f} [{a.mean() - b.mean() - half:+.3f}, "
          f"{a.mean() - b.mean() + half:+.3f}]")
    # Measured (tiny-100k, 4000 steps, 2 CPU cores, 2 min): 0.950 vs 0.913, difference
    # +0.037 [-0.004, +0.077]: the whole 95% interval lies within 10 points.
    assert b.mean() > 0.5 and abs(a.mean() - b.mean()) + half <= 0.10
