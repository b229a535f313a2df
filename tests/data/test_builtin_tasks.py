"""Built-in tasks: reference solutions verify, corrupted steps are caught at their index,
wrong answers fail, generation is deterministic, knobs move step counts as documented."""

import itertools
import random
import re
from fractions import Fraction

import pytest

from reasonjax.config import ConfigError
from reasonjax.data.task import Problem, TaskError, get_task, task_names
from reasonjax.data.tasks import BUILTIN
from reasonjax.data.tasks import arithmetic
from reasonjax.data.tasks import countdown as cd
from reasonjax.data.tasks import maze as mz
from reasonjax.models.tokenizer import DEFAULT_ALPHABET

N = 40  # problems per task and preset


def _corrupt(task_name: str, step: str) -> str:
    """A wrong version of a (non-final) reference step."""
    if task_name == "arithmetic":
        # One operand one larger, the rightmost whose change moves the value (0*7 -> 0*8
        # would not).
        spans = [m.span() for m in re.finditer(r"\d+", step)]
        for start, end in reversed(spans):
            wrong = step[:start] + str(int(step[start:end]) + 1) + step[end:]
            if arithmetic.value(arithmetic.parse(wrong)) != \
                    arithmetic.value(arithmetic.parse(step)):
                return wrong
        raise AssertionError(f"no operand of {step!r} moves its value")
    if task_name == "countdown":
        lhs, rest = step.split("=", 1)
        value, left = rest.split(" left ", 1)
        return f"{lhs}={int(value) + 1} left {left}"
    if task_name == "procbench":
        if step[0].isdigit() or step[0] == "-":
            items = step.split(" ")
            items[0] = str(int(items[0]) + 1)
            return " ".join(items)
        return ("b" if step[0] == "a" else "a") + step[1:]
    if task_name == "maze":
        kind, *nums = step.split()
        if kind in "cx":  # trace: wrong g
            return f"{kind} {nums[0]} {nums[1]} {int(nums[2]) + 1} {nums[3]}"
        r, c = int(nums[0]), int(nums[1])
        return f"{kind} {r + 1} {c + 1}"  # the move does not reach this cell
    raise AssertionError(task_name)


def _presets(name):
    return [None] + list(get_task(name).DIFFICULTIES)


@pytest.mark.parametrize("name", BUILTIN)
def test_reference_solutions_verify_and_check(name):
    for preset in _presets(name):
        task = get_task(name, preset)
        for p in task.generate(N, seed=3):
            text = task.prompt(p) + task.solution(p)
            assert set(text) <= set(DEFAULT_ALPHABET), text  # CharTokenizer alphabet
            assert task.prompt(p).endswith("\n")
            assert task.split_steps(task.solution(p)) == list(p.steps)
            assert task.verify(p, task.solution(p)), text
            check = task.check_steps(p, list(p.steps))
            assert check.solved and check.first_error is None, (text, check.reasons)
            assert task.extract_answer(task.solution(p)) == p.answer
            # the instance rebuilds the problem (users bring instances this way); countdown's
            # generator picks among solutions at random, from_instance takes the first
            again = task.from_instance(**p.instance)
            assert again.question == p.question and task.check_steps(p, again.steps).solved
            if name != "countdown":
                assert (again.steps, again.answer) == (p.steps, p.answer)


@pytest.mark.parametrize("name", BUILTIN)
def test_corrupted_step_is_caught_at_its_index(name):
    rng = random.Random(0)
    for preset in _presets(name):
        task = get_task(name, preset)
        for p in task.generate(N, seed=5):
            k = rng.randrange(len(p.steps))
            steps = list(p.steps)
            if task.is_final_step(steps[k]):
                steps[k] = "answer: " + ("x" if p.answer != "x" else "y")
            else:
                steps[k] = _corrupt(name, steps[k])
            check = task.check_steps(p, steps)
            assert check.first_error == k, (p.question, steps, check.reasons)
            assert check.prefix_correct == tuple(i < k for i in range(len(steps)))
            assert not check.correct[k] and check.reasons[k]


@pytest.mark.parametrize("name", BUILTIN)
def test_wrong_final_answer_fails_verify(name):
    task = get_task(name)
    for p in task.generate(N, seed=7):
        body = list(p.steps[:-1])
        assert not task.verify(p, "\n".join(body + ["answer: 9999"]))
        assert not task.verify(p, "\n".join(body))  # no answer line
        assert task.verify(p, "\n".join(list(p.steps) + ["answer: 9999"]))  # first one counts


@pytest.mark.parametrize("name", BUILTIN)
def test_generation_is_deterministic_per_seed(name):
    task = get_task(name)
    a = task.generate(20, seed=11)
    b = task.generate(20, seed=11)
    c = task.generate(20, seed=12)
    assert a == b
    assert [p.question for p in a] != [p.question for p in c]
    # random access: problem i does not depend on the ones before it
    assert task.problem(13, seed=11) == a[13]
    assert task.generate(5, seed=11, start=10) == a[10:15]


@pytest.mark.parametrize("name,knob,values,steps_of", [
    ("arithmetic", "n_ops", [1, 2, 5, 9], lambda v: v),
    ("countdown", "n_numbers", [2, 3, 4, 5], lambda v: v),  # v - 1 moves + answer
    ("procbench", "n_steps", [2, 7, 25], lambda v: v),
])
def test_knobs_set_step_counts(name, knob, values, steps_of):
    for v in values:
        for p in get_task(name, **{knob: v}).generate(15, seed=1):
            assert len(p.steps) == steps_of(v) == p.meta["n_steps"]


def test_maze_step_counts_follow_distance_and_size():
    means = []
    for size in (4, 6, 9):
        ps = get_task("maze", height=size, width=size, wall_prob=0.2, min_distance=3).generate(
            30, seed=2)
        for p in ps:
            grid = mz.parse_grid(p.instance["grid"])
            assert len(p.steps) == mz.distances(grid, grid.start)[grid.goal] + 1
        means.append(sum(len(p.steps) for p in ps) / len(ps))
    assert means[0] < means[1] < means[2]
    traced = get_task("maze", trace=True).generate(10, seed=2)
    plain = get_task("maze").generate(10, seed=2)
    for t, p in zip(traced, plain):
        assert len(t.steps) == len(p.steps) + t.meta["trace_length"]


def test_difficulty_presets_are_ordered_by_length():
    for name in BUILTIN:
        lengths = []
        for preset in ("easy", "medium", "hard"):
            task = get_task(name, preset)
            ps = task.generate(30, seed=0)
            lengths.append(sum(len(task.solution(p)) for p in ps) / len(ps))
        assert lengths[0] < lengths[1] < lengths[2], (name, lengths)


def test_default_arithmetic_is_short():
    task = get_task("arithmetic")
    assert max(len(task.prompt(p) + task.solution(p)) for p in task.generate(200)) < 100


# ---- arithmetic ------------------------------------------------------------------------

def test_arithmetic_hand_example():
    task = get_task("arithmetic")
    p = task.from_instance("12+7*3-5")
    assert p.steps == ("12+21-5", "33-5", "answer: 28")
    assert p.answer == "28" == str(eval("12+7*3-5"))  # noqa: S307 - our own literal


def test_arithmetic_answers_match_python():
    task = get_task("arithmetic", "hard")
    for p in task.generate(100, seed=4):
        assert int(p.answer) == eval(p.instance["expression"])  # noqa: S307 - generated digits


def test_arithmetic_steps_judged_on_their_own_merits():
    task = get_task("arithmetic")
    p = task.from_instance("2+3*4-1")  # = 13
    # another valid order, and a jump over two operations, are correct
    assert task.check_steps(p, ["2+12-1", "14-1", "answer: 13"]).solved
    assert task.check_steps(p, ["2+3*4-1".replace("2+3*4", "14"), "answer: 13"]).solved
    # precedence error at step 0; step 1 is right GIVEN the wrong step 0
    check = task.check_steps(p, ["5*4-1", "20-1", "answer: 19"])
    assert check.correct == (False, True, True) and check.first_error == 0
    # no progress, and a step after the answer
    assert task.check_steps(p, ["2+12-1", "2+12-1"]).first_error == 1
    check = task.check_steps(p, ["answer: 13", "13"])
    assert check.correct == (True, False) and check.complete
    assert not task.check_steps(p, ["2+12-1"]).complete


# ---- countdown --------------------------------------------------------------------------

def _all_values(nums):
    """Every value reachable using all of nums (positive integer rules), by brute force."""
    if len(nums) == 1:
        return {nums[0]}
    out = set()
    for i, j in itertools.combinations(range(len(nums)), 2):
        rest = [n for k, n in enumerate(nums) if k not in (i, j)]
        a, b = nums[i], nums[j]
        for v in {a + b, a * b, abs(a - b), Fraction(max(a, b), min(a, b))}:
            if v > 0 and v == int(v) and (v != abs(a - b) or a != b):
                out |= _all_values(rest + [int(v)])
    return out


def test_countdown_solver_matches_brute_force():
    rng = random.Random(1)
    for _ in range(150):
        nums = [rng.randint(1, 9) for _ in range(rng.randint(2, 4))]
        values = _all_values(nums)
        for target in (rng.randint(1, 60), 24, max(values)):
            assert cd.reachable(tuple(sorted(nums)), target) == (target in values), (nums, target)


def test_countdown_game24_and_unsolvable():
    task = get_task("countdown", "game24")
    p = task.from_instance([4, 6, 8, 3], 24)
    assert cd.check_expression(p.answer, [4, 6, 8, 3], 24) == ""
    # 3 3 8 8 only has the fraction solution 8/(3-8/3): unsolvable under integer rules
    q = task.from_instance([3, 3, 8, 8], 24)
    assert q.answer == "none" and q.steps == ("answer: none",)
    assert task.verify(q, "answer: none") and not task.verify(p, "answer: none")
    assert not task.verify(q, "answer: 8/(3-8/3)")


def test_countdown_expression_rules():
    assert cd.check_expression("(8-3)*4+4", [8, 3, 4, 4], 24) == ""
    assert "not the numbers" in cd.check_expression("8*3", [8, 3, 4], 24)
    assert "positive integer" in cd.check_expression("3-8+29", [3, 8, 29], 24)
    assert "positive integer" in cd.check_expression("8/3*9", [8, 3, 9], 24)
    assert cd.check_expression("8*(3", [8, 3], 24)


def test_countdown_step_that_strands_the_target_is_the_first_error():
    task = get_task("countdown")
    p = task.from_instance([2, 3, 4], 14)  # 2+3=5? no: 4*3=12, 12+2=14
    check = task.check_steps(p, ["2+3=5 left 4 5", "4*5=20 left 20", "answer: (2+3)*4"])
    assert check.first_error == 0  # arithmetic right, but 14 is unreachable from {4, 5}
    assert "can no longer be reached" in check.reasons[0]
    assert task.check_steps(p, ["4*3=12 left 2 12", "12+2=14 left 14", "answer: 4*3+2"]).solved
    bad_left = task.check_steps(p, ["4*3=12 left 2 13"])
    assert bad_left.first_error == 0 and "left" in bad_left.reasons[0]


def test_countdown_rejects_bad_instances():
    with pytest.raises(TaskError, match="positive integers"):
        get_task("countdown").from_instance([0, 3], 3)
    with pytest.raises(TaskError, match="n_numbers"):
        get_task("countdown", n_numbers=9)


# ---- procbench --------------------------------------------------------------------------

def test_procbench_hand_example():
    task = get_task("procbench")
    p = task.from_instance("dbca", ["rev", "swap 0 2", "del 1", "ins 0 x"])
    assert p.question == "dbca; rev; swap 0 2; del 1; ins 0 x"
    assert p.steps == ("acbd", "bcad", "bad", "answer: xbad")
    q = task.from_instance("3 1 4", ["add 2", "sort", "rot 1", "rep a b"][:3], kind="list")
    assert q.steps == ("5 3 6", "3 5 6", "answer: 5 6 3")
    r = task.from_instance("abca", ["rep a z", "sort"])
    assert r.steps == ("zbcz", "answer: bczz")


def test_procbench_judges_against_the_written_state():
    task = get_task("procbench")
    p = task.from_instance("dbca", ["rev", "swap 0 2", "del 1"])
    check = task.check_steps(p, ["acbx", "bcax", "answer: bax"])
    assert check.correct == (False, True, True) and check.first_error == 0
    assert task.check_steps(p, ["acbd", "answer: bad"]).solved  # answer jumps ahead
    assert task.check_steps(p, ["acbd", "bcad", "bad", "x"]).first_error == 3


def test_procbench_rejects_bad_instances():
    task = get_task("procbench")
    with pytest.raises(TaskError, match="operation 1"):
        task.from_instance("ab", ["rev", "swap 0 5"])
    with pytest.raises(TaskError, match="not a list operation"):
        task.from_instance("1 2", ["rep 1 2"], kind="list")
    with pytest.raises(TaskError, match="not a str state"):
        task.from_instance("AB", ["rev"])


# ---- maze -------------------------------------------------------------------------------

GRID = ["S..#.",
        ".#...",
        "...#.",
        ".#.G.",
        "....."]
COORDINATE_PROMPT = "start 0 0\ngoal 3 3\nwall 0 3\nwall 1 1\nwall 2 3\nwall 3 1\n"


def test_maze_hand_example():
    task = get_task("maze")
    p = task.from_instance(GRID)
    assert len(p.answer) == 6  # shortest path length, by hand
    assert task.verify(p, "answer: DDRRDR") and task.verify(p, "answer: RRDDDR")
    assert not task.verify(p, "answer: DDRRD")  # stops short
    assert not task.verify(p, "answer: DDDDRRRU")  # reaches the goal, not shortest
    assert get_task("maze", optimal=False).verify(p, "answer: DDDDRRRU")
    assert not task.verify(p, "answer: RRRDDD")  # walks into a wall


def test_maze_steps_on_another_shortest_path_are_correct():
    task = get_task("maze")
    p = task.from_instance(GRID)
    steps = ["R 0 1", "R 0 2", "D 1 2", "D 2 2", "D 3 2", "R 3 3", "answer: RRDDDR"]
    assert task.check_steps(p, steps).solved
    detour = ["D 1 0", "D 2 0", "D 3 0"]  # still reaches G, but off every shortest path
    assert task.check_steps(p, detour).first_error == 2


def _alt_astar_trace(grid):
    """A* breaking f ties by LARGER h and expanding neighbours in reverse order."""
    import heapq
    h = lambda c: mz.manhattan(c, grid.goal)  # noqa: E731
    best, closed = {grid.start: 0}, set()
    heap = [(h(grid.start), -h(grid.start), grid.start)]
    trace = [f"c {grid.start[0]} {grid.start[1]} 0 {h(grid.start)}"]
    while heap:
        _, _, cell = heapq.heappop(heap)
        if cell in closed:
            continue
        closed.add(cell)
        g = best[cell]
        trace.append(f"x {cell[0]} {cell[1]} {g} {h(cell)}")
        if cell == grid.goal:
            return trace
        for _, nxt in reversed(grid.neighbours(cell)):
            if nxt not in closed and best.get(nxt, 10**9) > g + 1:
                best[nxt] = g + 1
                heapq.heappush(heap, (g + 1 + h(nxt), -h(nxt), nxt))
                trace.append(f"c {nxt[0]} {nxt[1]} {g + 1} {h(nxt)}")
    raise AssertionError("unreachable")


def test_maze_trace_checker_accepts_any_tie_breaking():
    task = get_task("maze", "searchformer")
    for p in task.generate(15, seed=9):
        grid = mz.parse_grid(p.instance["grid"])
        plan = [s for s in p.steps if s[0] in "UDLR"] + [p.steps[-1]]
        assert task.check_steps(p, _alt_astar_trace(grid) + plan).solved


def test_maze_trace_errors():
    task = get_task("maze", trace=True)
    p = task.from_instance(GRID)
    trace = [s for s in p.steps if s[0] in "cx"]
    assert trace[0] == "c 0 0 0 6" and trace[1] == "x 0 0 0 6"
    skipped = trace[:2] + trace[3:]  # drops a required create
    assert task.check_steps(p, skipped).first_error is not None
    early_plan = task.check_steps(p, trace[:4] + ["D 1 0"])
    assert early_plan.first_error == 4 and "before the trace" in early_plan.reasons[4]
    assert get_task("maze").check_steps(p, trace[:1]).first_error == 0  # no trace expected


def test_maze_unreachable_and_bad_grids():
    task = get_task("maze")
    p = task.from_instance(["S#.", "##.", "..G"])
    assert p.answer == "none" and task.verify(p, "answer: none")
    with pytest.raises(TaskError, match="exactly one 'G'"):
        task.from_instance(["S..", "..."])
    with pytest.raises(TaskError, match="rectangular"):
        task.from_instance(["S..", "G."])
    with pytest.raises(TaskError, match="characters"):
        task.from_instance(["S.x", "..G"])


# ---- registry ---------------------------------------------------------------------------

def test_registry_and_knob_errors():
    assert set(BUILTIN) | {"gsm8k", "math", "mc", "gym"} == set(task_names())
    with pytest.raises(TaskError, match="unknown task"):
        get_task("sudoku")
    with pytest.raises(TaskError, match="no difficulty"):
        get_task("arithmetic", "impossible")
    with pytest.raises(TaskError, match="unknown key"):
        get_task("arithmetic", n_steps=3)
    with pytest.raises(TaskError, match="n_ops"):
        get_task("arithmetic", n_ops=0)


def test_problem_json_round_trip():
    p = get_task("maze").problem(3)
    assert Problem.from_json(p.to_json()) == p


def test_real_tasks_have_no_exact_step_checker():
    task = get_task("gsm8k")
    p = task.from_instance("Tom has 3 apples and buys 4. How many?",
                           "He has 3 + 4 = <<3+4=7>>7 apples.\n#### 7")
    assert p.steps == ("He has 3 + 4 = 7 apples.", "#### 7") and p.answer == "7"
    assert task.verify(p, "3+4=7\n#### 7.0") and not task.verify(p, "#### 8")
    with pytest.raises(TaskError, match="Monte Carlo"):
        task.check_steps(p, list(p.steps))


def test_maze_trace_close_needs_smallest_f():
    task = get_task("maze", trace=True, min_distance=1)
    p = task.from_instance(["G.S", "..."])
    head = ["c 0 2 0 2", "x 0 2 0 2"]
    creates = ["c 1 2 1 3", "c 0 1 1 1"]  # f = 4 and f = 2
    assert task.check_steps(p, head + creates + ["x 0 1 1 1"]).first_error is None
    assert task.check_steps(p, head + creates[::-1] + ["x 0 1 1 1"]).first_error is None
    check = task.check_steps(p, head + creates + ["x 1 2 1 3"])
    assert check.first_error == 4 and "smallest f" in check.reasons[4]
    check = task.check_steps(p, head + creates[:1] + ["x 1 2 1 3"])
    assert check.first_error == 3 and "not created" in check.reasons[3]
    check = task.check_steps(p, head + ["c 0 1 2 1"])
    assert check.first_error == 2 and "g of" in check.reasons[2]


# ---- maze: Dualformer modes and randomised traces ------------------------------------

class _FixedRng:
    """A stand-in for random.Random with hand-set draws."""

    def __init__(self, u=0.0, picks=()):
        self.u, self.picks = u, list(picks)

    def random(self):
        return self.u

    def sample(self, population, k):
        assert len(self.picks) == k and all(p in population for p in self.picks)
        return self.picks


HAND_TRACE = ["c 0 0 0 6", "x 0 0 0 6", "c 1 0 1 5", "c 0 1 1 5", "x 1 0 1 5", "c 2 0 2 4"]


def test_drop_trace_levels_by_hand():
    rng = _FixedRng()
    assert mz.drop_trace(HAND_TRACE, 0, rng) == HAND_TRACE
    assert mz.drop_trace(HAND_TRACE, 1, rng) == ["c 0 0 0 6", "c 1 0 1 5", "c 0 1 1 5",
                                                 "c 2 0 2 4"]
    assert mz.drop_trace(HAND_TRACE, 2, rng) == ["c 0 0", "c 1 0", "c 0 1", "c 2 0"]
    # 4 creates: int(0.3 * 4) = 1 dropped, the one rng.sample picks (index 2: "c 0 1")
    assert mz.drop_trace(HAND_TRACE, 3, _FixedRng(picks=[2])) == ["c 0 0", "c 1 0", "c 2 0"]
    assert mz.drop_trace(HAND_TRACE, 4, rng) == []
    ten = [f"c {i} 0 {i} 9" for i in range(10)]
    assert len(mz.drop_trace(ten, 3, random.Random(0))) == 7  # 30% of 10 creates dropped
    with pytest.raises(TaskError, match="drop level"):
        mz.drop_trace(HAND_TRACE, 5, rng)


def test_sample_level_follows_the_cumulative_probabilities():
    probs = mz.TraceDrop().probs  # 0.45, 1/6, 1/6, 1/6, 0.05: edges .45 .6167 .7833 .95
    for u, level in [(0.0, 0), (0.44, 0), (0.45, 1), (0.62, 2), (0.78, 2), (0.79, 3),
                     (0.949, 3), (0.96, 4), (0.999999, 4)]:
        assert mz.sample_level(probs, _FixedRng(u)) == level, u
    rng = random.Random(0)
    draws = [mz.sample_level(probs, rng) for _ in range(20000)]
    for level, p in enumerate(probs):
        assert abs(draws.count(level) / len(draws) - p) < 0.01
    with pytest.raises(ConfigError, match="summing to 1"):
        mz.TraceDrop(probs=(0.5, 0.5, 0.5, 0.0, 0.0))


def test_randomize_steps_keeps_the_plan_and_sets_the_control_line():
    steps = ["slow"] + HAND_TRACE[:4] + ["R 0 1", "answer: R"]
    assert mz.randomize_steps(steps, 4, _FixedRng()) == ["fast", "R 0 1", "answer: R"]
    assert mz.randomize_steps(steps, 2, _FixedRng()) == ["slow", "c 0 0", "c 1 0", "c 0 1",
                                                        "R 0 1", "answer: R"]
    with pytest.raises(TaskError, match="mode=auto trace=true"):
        mz.randomize_steps(steps[1:], 1, _FixedRng())


def test_maze_modes_set_prompt_and_reference():
    grid = "\n".join(GRID)
    auto, fast, slow = (get_task("maze", trace=True, mode=m) for m in ("auto", "fast", "slow"))
    p_auto, p_fast, p_slow = (t.from_instance(GRID) for t in (auto, fast, slow))
    assert auto.prompt(p_auto) == grid + "\n"
    assert fast.prompt(p_fast) == grid + "\nfast\n" and slow.prompt(p_slow) == grid + "\nslow\n"
    plan = ["R 0 1", "R 0 2", "D 1 2", "D 2 2", "D 3 2", "R 3 3", "answer: RRDDDR"]
    assert list(p_fast.steps) == plan
    assert list(p_slow.steps[-7:]) == plan and p_slow.steps[0] == "c 0 0 0 6"
    assert list(p_auto.steps) == ["slow"] + list(p_slow.steps)
    assert get_task("maze", mode="auto").from_instance(GRID).steps[0] == "fast"  # no trace
    # the papers' encoding: start, goal, then the walls row by row; same steps
    coords = get_task("maze", trace=True, mode="slow", coordinates=True)
    p_coords = coords.from_instance(GRID)
    assert coords.prompt(p_coords) == COORDINATE_PROMPT + "slow\n"
    assert p_coords.steps == p_slow.steps
    with pytest.raises(TaskError, match="set trace=true"):
        get_task("maze", mode="slow")
    with pytest.raises(TaskError, match="mode must be one of"):
        get_task("maze", trace=True, mode="medium")


def test_dropped_traces_of_any_tie_breaking_are_judged_correct():
    slow = get_task("maze", "searchformer", mode="slow")
    rng = random.Random(1)
    for p in slow.generate(15, seed=9):
        grid = mz.parse_grid(p.instance["grid"])
        plan = [s for s in p.steps if not mz.is_trace_step(s)]
        for trace in (list(p.steps[:-len(plan)]), _alt_astar_trace(grid)):
            for level in range(4):
                steps = mz.drop_trace(trace, level, rng) + plan
                assert slow.check_steps(p, steps).solved, (level, steps)


@pytest.mark.parametrize("steps,first_error,reason", [
    # full trace (with closes) still needs every create before the next close
    (["c 0 0 0 6", "x 0 0 0 6", "c 1 0 1 5", "x 1 0 1 5"], 3, "were not created"),
    # (2, 0) is 2 from the start: A* creates it from (1, 0) with g=2, never g=3
    (["c 0 0 0 6", "c 1 0 1 5", "c 0 1 1 5", "c 2 0 3 4"], 3, "has g=2"),
    (["c 0 0 0 6", "c 1 0 1 5", "x 1 0 1 5"], 2, "without close clauses"),
    (["c 0 0 0 6", "c 1 0 1 5", "c 1 0 1 5"], 2, "needs less"),
    (["c 0 0 0 6", "c 1 0"], 1, "with costs"),
    (["c 1 0", "c 0 1 1 5"], 1, "without costs"),
    (["c 1 0", "c 0 0"], 1, "created first"),
    (["c 0 3"], 0, "not a free cell"),
    # (4, 4)'s neighbours (3, 4), (4, 3) have dist + h = 8 > 6: A* never expands them
    (["c 0 0", "c 4 4"], 1, "is one A* expands"),
    (["c 0 0 0 6", "c 1 0 1 5", "D 1 0"], 2, "created the goal"),
    (["D 1 0"], 0, "search trace before the plan"),
])
def test_slow_mode_judges_dropped_traces_by_hand(steps, first_error, reason):
    task = get_task("maze", trace=True, mode="slow")
    check = task.check_steps(task.from_instance(GRID), steps)
    assert check.first_error == first_error and reason in check.reasons[first_error], \
        check.reasons


def test_control_lines_are_judged_in_auto_and_fast_modes():
    auto = get_task("maze", trace=True, mode="auto")
    fast = get_task("maze", trace=True, mode="fast")
    p = auto.from_instance(GRID)
    plan = ["D 1 0", "D 2 0", "R 2 1", "R 2 2", "D 3 2", "R 3 3", "answer: DDRRDR"]
    assert auto.check_steps(p, ["fast"] + plan).solved
    assert auto.check_steps(p, []).correct == ()
    assert auto.check_steps(p, ["slow", "c 1 0"] + plan).solved  # a level-3 trace
    assert auto.check_steps(p, plan).first_error == 0  # no control line
    assert auto.check_steps(p, ["fast", "c 0 0 0 6"] + plan).first_error == 1
    assert auto.check_steps(p, ["slow"] + plan).first_error == 1
    assert fast.check_steps(p, plan).solved
    check = fast.check_steps(p, ["c 0 0 0 6"] + plan)
    assert check.first_error == 0 and "without a search trace" in check.reasons[0]
    assert get_task("maze", mode="auto").check_steps(p, ["slow"] + plan).first_error == 0
