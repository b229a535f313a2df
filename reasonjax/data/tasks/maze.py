"""Grid mazes solved by A*, with an optional search trace (Searchformer-style).

After Searchformer (Lehnert et al., 2024, "Beyond A*: Better Planning with Transformers
via Search Dynamics Bootstrapping"): a grid with walls, a start and a goal; the plan is a
shortest path; optionally the solution first spells out the A* search (the trace). Format
(5x5, no trace)::

    S..#.          <- question: the grid, one line per row
    .#...             S start, G goal, # wall, . free
    ...#.
    .#.G.
    .....
    D 1 0          <- a step: a move (U/D/L/R) and the cell it reaches (row col)
    D 2 0
    R 2 1
    R 2 2
    D 3 2
    R 3 3
    answer: DDRRDR <- the plan as moves

With ``trace=True`` the plan is preceded by the A* trace (Manhattan heuristic, unit
costs): ``c r c g h`` when a node is created (pushed on the open list with cost-so-far g
and heuristic h) and ``x r c g h`` when it is closed (expanded), ending with closing the
goal. Ties on f = g + h are broken by smaller h, then row, then column.

Step checking (exact):
- a move is correct when it is a legal move from the position written in the previous
  move (the start for the first) to the cell it names, and that cell is one step closer
  to the goal (it lies on a shortest path), so the first incorrect move is the first
  move off every optimal plan (with ``optimal=False``: any move from which the goal
  is still reachable);
- a trace step is correct when it is a valid A* action given the trace so far (create:
  an unclosed free neighbour of the last closed node whose cost improves, with the right
  g and h; close: an open node of minimal f, once all neighbours of the previous close
  were created), so any tie-breaking order is accepted;
- the answer step is correct when its plan verifies.

``verify``: the plan moves from start to goal through free cells and (with
``optimal=True``) has the shortest length. Unreachable goals (only from
``from_instance``) have answer ``none``.

Dualformer modes (Su et al., 2024, "Dualformer: Controllable Fast and Slow Thinking by
Learning with Randomized Reasoning Traces"), the knob ``mode``:
- ``None`` (default): the Searchformer format above, traces judged by exact replay;
- ``auto``: the prompt is the grid; the solution starts with a control line, ``slow``
  (a trace follows) or ``fast`` (the plan follows directly), so the model picks the mode;
- ``fast`` / ``slow``: the control line ends the prompt (``grid + "\nfast\n"``), forcing
  the mode; the solution is the plan (fast) or the trace and the plan (slow).
A model trained on ``auto`` solutions learns the control line as the first thing it
writes, so the prompt-side line of ``fast`` / ``slow`` selects the mode at inference (the
paper's control tokens after BOS). Dualformer training rows (:func:`randomize_steps`)
drop parts of the trace by level (:func:`drop_trace`): 1 drops the close clauses, 2 also
the costs ``g h`` of the create clauses (``c r c``), 3 also a random 30% of the create
clauses, 4 the whole trace (a ``fast`` row); level 0 keeps it (:class:`TraceDrop`).

Judging in the Dualformer modes: a control line is correct in ``auto`` mode as the first
step (``slow`` needs ``trace=True``); ``fast`` allows no trace step; ``slow`` needs a
trace before the plan, in one form throughout: full (with close clauses: exact replay,
the plan after the goal is closed), or dropped, judged clause by clause for consistency
with some A* run (sound for every tie-breaking): the cell is free and reachable; with
costs, ``h`` is its distance to the goal and ``g`` is one more than the start distance of
a neighbour A* could expand (a cell p with dist(start, p) + h(p) <= the optimal cost; A*
with a consistent heuristic expands only those, each at its shortest distance); without
costs, some such neighbour exists; the start, when written, is the first create (with
costs it must be, as level 1 drops no create); a cell is created again only with a lower
g (without costs: at most twice). With costs the plan starts once the goal was created;
without costs it may start at any point (level 3 can drop the goal's create).

Knobs: ``height``, ``width``, ``wall_prob``, ``min_distance`` (shortest-path length at
least this), ``trace``, ``optimal``, ``mode``, ``coordinates`` (the prompt lists the
start, the goal and every wall as ``start r c`` / ``goal r c`` / ``wall r c`` lines, the
Searchformer / Dualformer papers' encoding, instead of drawing the grid). Steps =
shortest-path length + 1 (answer), plus the trace length with ``trace=True`` (and the
control line in ``auto`` mode).
"""

from __future__ import annotations

import dataclasses
import heapq
import random
import re
from collections import deque
from typing import ClassVar, Optional, Sequence

from reasonjax.config import ConfigError, check_fields
from reasonjax.data import answers
from reasonjax.data.task import ANSWER_PREFIX, Problem, Task, TaskError, register_task

MOVES = {"U": (-1, 0), "D": (1, 0), "L": (0, -1), "R": (0, 1)}
Cell = tuple[int, int]
FAST, SLOW = "fast", "slow"  # the control lines of the Dualformer modes
MODES = ("auto", FAST, SLOW)
DROP_LEVELS = (0, 1, 2, 3, 4)


@dataclasses.dataclass(frozen=True)
class Grid:
    rows: tuple[str, ...]
    start: Cell
    goal: Cell

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.rows), len(self.rows[0])

    def free(self, cell: Cell) -> bool:
        r, c = cell
        return 0 <= r < len(self.rows) and 0 <= c < len(self.rows[0]) and self.rows[r][c] != "#"

    def neighbours(self, cell: Cell) -> list[tuple[str, Cell]]:
        out = []
        for move, (dr, dc) in MOVES.items():
            nxt = (cell[0] + dr, cell[1] + dc)
            if self.free(nxt):
                out.append((move, nxt))
        return out


def parse_grid(text: str | Sequence[str]) -> Grid:
    """A Grid from rows of ``S G # .`` (a list of strings or newline-separated text)."""
    rows = tuple(text.strip().split("\n") if isinstance(text, str) else text)
    if not rows or not rows[0]:
        raise TaskError("maze: the grid is empty")
    width = len(rows[0])
    for r, row in enumerate(rows):
        if len(row) != width:
            raise TaskError(f"maze: row {r} has {len(row)} cells, row 0 has {width}; the grid "
                            "must be rectangular")
        bad = set(row) - set("SG#.")
        if bad:
            raise TaskError(f"maze: row {r} has characters {sorted(bad)}; use S G # .")
    found = {ch: [(r, c) for r, row in enumerate(rows) for c, x in enumerate(row) if x == ch]
             for ch in "SG"}
    for ch, cells in found.items():
        if len(cells) != 1:
            raise TaskError(f"maze: the grid needs exactly one {ch!r}, found {len(cells)}")
    return Grid(rows, found["S"][0], found["G"][0])


def distances(grid: Grid, source: Cell) -> dict[Cell, int]:
    """BFS distances from ``source`` to every reachable free cell."""
    dist = {source: 0}
    queue = deque([source])
    while queue:
        cell = queue.popleft()
        for _, nxt in grid.neighbours(cell):
            if nxt not in dist:
                dist[nxt] = dist[cell] + 1
                queue.append(nxt)
    return dist


def manhattan(a: Cell, b: Cell) -> int:
    return abs(a[0] - b[0]) + abs(a[1] - b[1])


def astar(grid: Grid) -> tuple[list[str], Optional[list[tuple[str, Cell]]]]:
    """A* from start to goal: (trace lines, plan as (move, cell) or None if unreachable)."""
    h = lambda cell: manhattan(cell, grid.goal)  # noqa: E731
    start = grid.start
    best = {start: 0}
    parent: dict[Cell, tuple[str, Cell]] = {}
    open_heap = [(h(start), h(start), start)]
    closed: set[Cell] = set()
    trace = [f"c {start[0]} {start[1]} 0 {h(start)}"]
    while open_heap:
        _, _, cell = heapq.heappop(open_heap)
        if cell in closed:
            continue
        g = best[cell]
        closed.add(cell)
        trace.append(f"x {cell[0]} {cell[1]} {g} {h(cell)}")
        if cell == grid.goal:
            plan = []
            while cell != start:
                move, prev = parent[cell]
                plan.append((move, cell))
                cell = prev
            return trace, plan[::-1]
        for move, nxt in grid.neighbours(cell):
            if nxt in closed or best.get(nxt, 1 << 30) <= g + 1:
                continue
            best[nxt] = g + 1
            parent[nxt] = (move, cell)
            heapq.heappush(open_heap, (g + 1 + h(nxt), h(nxt), nxt))
            trace.append(f"c {nxt[0]} {nxt[1]} {g + 1} {h(nxt)}")
    return trace, None


def follow(grid: Grid, plan: str) -> tuple[Optional[Cell], str]:
    """Where a move string ends (None if it leaves the free cells) and why."""
    cell = grid.start
    for i, move in enumerate(plan):
        if move not in MOVES:
            return None, f"move {i} {move!r} is not one of U D L R"
        nxt = (cell[0] + MOVES[move][0], cell[1] + MOVES[move][1])
        if not grid.free(nxt):
            return None, f"move {i} {move!r} from {cell} hits a wall or the border"
        cell = nxt
    return cell, ""


_MOVE_STEP = re.compile(r"([UDLR]) (\d+) (\d+)")
_TRACE_STEP = re.compile(r"([cx]) (\d+) (\d+) (\d+) (\d+)")
_BARE_CREATE = re.compile(r"c (\d+) (\d+)")  # a create clause without its costs


def is_trace_step(step: str) -> bool:
    """Whether ``step`` is a trace clause (``c/x r c g h``, or ``c r c`` without costs)."""
    step = step.strip()
    return bool(_TRACE_STEP.fullmatch(step) or _BARE_CREATE.fullmatch(step))


@dataclasses.dataclass(frozen=True)
class TraceDrop:
    """Dualformer's randomised traces: each training row keeps the full trace (level 0)
    or drops it to level 1-4 (see the module doc) with probabilities ``probs`` (levels
    0..4, summing to 1; the paper's maze setting by default); ``create_drop``: the share
    of create clauses level 3 drops; ``copies``: independent draws per training problem
    (the paper redraws every epoch)."""

    probs: tuple[float, ...] = (0.45, 1 / 6, 1 / 6, 1 / 6, 0.05)
    create_drop: float = 0.3
    copies: int = 1

    def __post_init__(self):
        check_fields(self, create_drop="in [0, 1]", copies=">= 1")
        if len(self.probs) != len(DROP_LEVELS) or any(p < 0 for p in self.probs) or \
                abs(sum(self.probs) - 1.0) > 1e-6:
            raise ConfigError(f"probs: need {len(DROP_LEVELS)} probabilities >= 0 (levels 0-4) "
                            f"summing to 1, got {list(self.probs)}")


def sample_level(probs: Sequence[float], rng: random.Random) -> int:
    """A drop level drawn with ``probs`` (levels 0..len-1): one ``rng.random()`` draw
    against the cumulative probabilities."""
    u, total = rng.random(), 0.0
    for level, p in enumerate(probs):
        total += p
        if u < total:
            return level
    return max(i for i, p in enumerate(probs) if p > 0)  # u at the rounding edge of 1


def drop_trace(trace: Sequence[str], level: int, rng: random.Random,
               create_drop: float = 0.3) -> list[str]:
    """The A* trace lines ``trace`` dropped to ``level`` (Dualformer): 0 keeps them; 1 drops
    the close (``x``) clauses; 2 also the costs, ``c r c g h`` -> ``c r c``; 3 also
    ``int(create_drop * n)`` of the n create clauses, chosen uniformly by
    ``rng.sample``; 4 drops every line. Only level 3 draws from ``rng``."""
    if level not in DROP_LEVELS:
        raise TaskError(f"maze: drop level must be one of {DROP_LEVELS}, got {level}")
    if level == 0:
        return list(trace)
    if level == 4:
        return []
    creates = [line for line in trace if line.startswith("c ")]
    if level >= 2:
        creates = [" ".join(line.split()[:3]) for line in creates]
    if level == 3:
        gone = set(rng.sample(range(len(creates)), int(create_drop * len(creates))))
        creates = [line for i, line in enumerate(creates) if i not in gone]
    return creates


def randomize_steps(steps: Sequence[str], level: int, rng: random.Random,
                    create_drop: float = 0.3) -> list[str]:
    """A Dualformer training solution from an ``auto``-mode reference (``slow``, the
    trace, the plan): the trace dropped to ``level`` (:func:`drop_trace`); level 4 turns
    it into a ``fast`` solution (control line ``fast``, the plan alone)."""
    if not steps or steps[0] != SLOW:
        raise TaskError("maze: randomize_steps needs an auto-mode solution with a trace (it "
                        "starts with the control line 'slow'); set mode=auto trace=true")
    trace = [s for s in steps[1:] if is_trace_step(s)]
    plan = [s for s in steps[1:] if not is_trace_step(s)]
    kept = drop_trace(trace, level, rng, create_drop)
    return [FAST if level == 4 else SLOW] + kept + plan


class _TraceChecker:
    """Replays A* trace steps, judging each against the trace before it."""

    def __init__(self, grid: Grid):
        self.grid = grid
        self.open: dict[Cell, tuple[int, int]] = {}
        self.closed: set[Cell] = set()
        self.last: Optional[tuple[Cell, int]] = None  # last closed cell and its g
        self.required: set[Cell] = set()
        self.created: set[Cell] = set()
        self.started = False
        self.done = False

    def step(self, kind: str, cell: Cell, g: int, h: int) -> str:
        """'' and applies the step if valid, else the reason (state unchanged)."""
        if self.done:
            return "the trace already closed the goal"
        if not self.grid.free(cell):
            return f"{cell} is not a free cell"
        if h != manhattan(cell, self.grid.goal):
            return f"h of {cell} is {manhattan(cell, self.grid.goal)}, not {h}"
        if kind == "c":
            if not self.started:
                if cell != self.grid.start or g != 0:
                    return "the trace must start by creating the start with g=0"
                self.started = True
            elif self.last is None or cell not in self.required or cell in self.created:
                return f"{cell} is not a neighbour of the last closed node to create"
            elif g != self.last[1] + 1:
                return f"g of {cell} is {self.last[1] + 1}, not {g}"
            self.open[cell] = (g, h)
            self.created.add(cell)
            return ""
        if self.required - self.created:
            return f"neighbours {sorted(self.required - self.created)} were not created"
        if self.open.get(cell) != (g, h):
            return f"({cell}, g={g}, h={h}) is not on the open list"
        if g + h != min(a + b for a, b in self.open.values()):
            return f"{cell} does not have the smallest f on the open list"
        del self.open[cell]
        self.closed.add(cell)
        self.last = (cell, g)
        self.created = set()
        self.required = {nxt for _, nxt in self.grid.neighbours(cell)
                         if nxt not in self.closed and self.open.get(nxt, (1 << 30,))[0] > g + 1}
        self.done = cell == self.grid.goal
        return ""


class _DroppedTraceChecker:
    """Judges a Dualformer slow-mode trace in any of its forms (see the module doc):
    ``full`` (exact replay by :class:`_TraceChecker`), ``costs`` (level 1: creates with
    costs, no close clauses) or ``bare`` (levels 2-3: creates without costs). The first
    trace step fixes ``bare``; a costed start create leaves it open until the next step."""

    def __init__(self, grid: Grid):
        self.grid = grid
        self.exact = _TraceChecker(grid)
        self.dist = distances(grid, grid.start)
        self.best = self.dist.get(grid.goal)  # the optimal plan length (None: unreachable)
        self.form: Optional[str] = None  # None | "pending" | "full" | "costs" | "bare"
        self.created: dict[Cell, list[Optional[int]]] = {}

    @property
    def started(self) -> bool:
        return self.form is not None

    def plan_may_start(self) -> str:
        """'' when the plan may follow the trace written so far, else why not."""
        if self.form is None:
            return "slow mode writes a search trace before the plan"
        if self.form == "full" and not self.exact.done:
            return "the plan starts before the trace closed the goal"
        if self.form in ("pending", "costs") and self.grid.goal not in self.created:
            return "the plan starts before the trace created the goal"
        return ""

    def _expandable(self, cell: Cell) -> bool:
        """A* (consistent h) may expand ``cell``: reachable, f = dist + h <= optimal."""
        return cell in self.dist and self.best is not None and \
            self.dist[cell] + manhattan(cell, self.grid.goal) <= self.best

    def _create(self, cell: Cell, g: Optional[int]) -> str:
        if not self.grid.free(cell) or cell not in self.dist:
            return f"{cell} is not a free cell reachable from the start"
        earlier = self.created.get(cell, [])
        if cell == self.grid.start:
            if self.created or g not in (None, 0):
                return "the start is created first, with g=0"
        elif not any(self._expandable(p) and (g is None or self.dist[p] == g - 1)
                     for _, p in self.grid.neighbours(cell)):
            return (f"no neighbour of {cell} that A* expands has g={g - 1}" if g is not None
                    else f"no neighbour of {cell} is one A* expands")
        if g is None and len(earlier) >= 2:
            return f"{cell} is created a third time (A* re-creates a node at most once)"
        if g is not None and earlier and g >= min(earlier):
            return f"{cell} was created before with g={min(earlier)}; a new create needs less"
        self.created[cell] = earlier + [g]
        return ""

    def step(self, kind: str, cell: Cell, g: Optional[int], h: Optional[int]) -> str:
        """'' and applies the step if valid, else the reason (state unchanged). ``g`` and
        ``h`` are None for a create without costs."""
        if g is None:
            if self.form not in (None, "bare"):
                return "this trace writes its creates with costs 'c r c g h'"
            why = self._create(cell, None)
            if not why:
                self.form = "bare"
            return why
        if self.form == "bare":
            return "this trace writes its creates without costs 'c r c'"
        if self.form in (None, "full") or (self.form == "pending" and kind == "x"):
            why = self.exact.step(kind, cell, g, h)
            if not why:
                self.form = "pending" if self.form is None else "full"
                self.created.setdefault(cell, []).append(g)
            return why
        if kind == "x":
            return "a trace without close clauses has none later"
        if h != manhattan(cell, self.grid.goal):
            return f"h of {cell} is {manhattan(cell, self.grid.goal)}, not {h}"
        why = self._create(cell, g)
        if not why:
            self.form = "costs"
        return why


@register_task
@dataclasses.dataclass(frozen=True)
class Maze(Task):
    """Grid mazes with shortest plans and optional A* traces (see module doc)."""

    name: ClassVar[str] = "maze"
    DIFFICULTIES: ClassVar[dict] = {
        "easy": {"height": 4, "width": 4, "wall_prob": 0.2},
        "medium": {"height": 5, "width": 5, "wall_prob": 0.3, "min_distance": 3},
        "hard": {"height": 8, "width": 8, "wall_prob": 0.3, "min_distance": 8},
        "searchformer": {"height": 10, "width": 10, "wall_prob": 0.4, "trace": True},
    }

    height: int = 5
    width: int = 5
    wall_prob: float = 0.3
    min_distance: int = 3
    trace: bool = False
    optimal: bool = True
    mode: Optional[str] = None
    coordinates: bool = False

    def __post_init__(self):
        if self.mode is not None and self.mode not in MODES:
            raise TaskError(f"maze: mode must be one of {MODES} or null (no control line), "
                            f"got {self.mode!r}")
        if self.mode == SLOW and not self.trace:
            raise TaskError("maze: mode=slow writes the A* trace; set trace=true")
        if self.height < 1 or self.width < 1 or self.height * self.width < 2:
            raise TaskError(f"maze: the grid needs at least 2 cells, got "
                            f"{self.height}x{self.width}")
        if not 0.0 <= self.wall_prob < 1.0:
            raise TaskError(f"maze: wall_prob must be in [0, 1), got {self.wall_prob}")
        if not 1 <= self.min_distance <= self.height + self.width - 2:
            raise TaskError(f"maze: min_distance must be in 1..{self.height + self.width - 2} "
                            f"for a {self.height}x{self.width} grid, got {self.min_distance}")

    def sample(self, rng: random.Random) -> Problem:
        cells = [(r, c) for r in range(self.height) for c in range(self.width)]
        for _ in range(10_000):
            start, goal = rng.sample(cells, 2)
            rows = ["".join("#" if rng.random() < self.wall_prob else "."
                            for _ in range(self.width)) for _ in range(self.height)]
            rows = [list(row) for row in rows]
            rows[start[0]][start[1]] = "S"
            rows[goal[0]][goal[1]] = "G"
            grid = parse_grid(["".join(row) for row in rows])
            if distances(grid, start).get(goal, -1) >= self.min_distance:
                return self.from_instance(grid.rows)
        raise TaskError(f"maze: no maze with a path of length >= {self.min_distance} in 10000 "
                        f"draws with {self.knobs()}; lower wall_prob or min_distance")

    def from_instance(self, grid: str | Sequence[str]) -> Problem:
        """A problem from a grid (rows of ``S G # .``); unreachable goals answer ``none``."""
        g = parse_grid(grid)
        if g.start == g.goal:
            raise TaskError("maze: start and goal are the same cell")
        trace, plan = astar(g)
        instance = {"grid": list(g.rows)}
        if plan is None:
            steps = ((FAST,) if self.mode == "auto" else ()) + (ANSWER_PREFIX + "none",)
            return Problem(task=self.name, question="\n".join(g.rows), steps=steps,
                           answer="none", instance=instance,
                           meta={"n_steps": len(steps), "distance": None})
        moves = "".join(m for m, _ in plan)
        written = self.trace and self.mode != FAST
        steps = (trace if written else []) + [f"{m} {r} {c}" for m, (r, c) in plan]
        steps.append(ANSWER_PREFIX + moves)
        if self.mode == "auto":
            steps.insert(0, SLOW if written else FAST)
        return Problem(task=self.name, question="\n".join(g.rows), steps=tuple(steps),
                       answer=moves, instance=instance,
                       meta={"n_steps": len(steps), "distance": len(plan),
                             "trace_length": len(trace)})

    def prompt(self, problem: Problem) -> str:
        """The grid (or with ``coordinates`` its start / goal / wall lines) and a newline;
        in ``fast`` / ``slow`` mode then the control line."""
        control = self.mode + "\n" if self.mode in (FAST, SLOW) else ""
        text = problem.question
        if self.coordinates:
            grid = parse_grid(problem.instance["grid"])
            walls = [f"wall {r} {c}" for r, row in enumerate(grid.rows)
                     for c, cell in enumerate(row) if cell == "#"]
            text = "\n".join([f"start {grid.start[0]} {grid.start[1]}",
                              f"goal {grid.goal[0]} {grid.goal[1]}", *walls])
        return text + "\n" + control

    def answer_correct(self, problem: Problem, answer: str) -> bool:
        grid = parse_grid(problem.instance["grid"])
        answer = answer.strip()
        if problem.answer == "none" or answer == "none":
            return answer == problem.answer
        end, _ = follow(grid, answer)
        if end != grid.goal:
            return False
        return not self.optimal or len(answer) == len(problem.answer)

    def judge_steps(self, problem: Problem, steps: Sequence[str]) -> list[tuple[bool, str]]:
        grid = parse_grid(problem.instance["grid"])
        mode, out = self.mode, []
        if mode == "auto" and steps:
            head = steps[0].strip()
            why = "" if head == FAST or (head == SLOW and self.trace) else \
                f"auto mode starts with the control line {FAST!r}" + \
                (f" or {SLOW!r}" if self.trace else "")
            out.append((not why, why))
            mode = head if not why else (SLOW if self.trace else FAST)
            steps = steps[1:]
        return out + self._judge_body(problem, grid, steps, mode)

    def _judge_body(self, problem: Problem, grid: Grid, steps: Sequence[str],
                    mode: Optional[str]) -> list[tuple[bool, str]]:
        """Per-step judgements after any control line, in ``mode`` (None: Searchformer)."""
        to_goal = distances(grid, grid.goal)
        tracer = _TraceChecker(grid) if mode is None else _DroppedTraceChecker(grid)
        pos, moved = grid.start, False
        out = []
        for step in steps:
            if self.is_final_step(step):
                got = answers.extract_tagged(step) or ""
                ok = self.answer_correct(problem, got)
                out.append((ok, "" if ok else f"plan {got!r} does not verify"))
                continue
            m = _TRACE_STEP.fullmatch(step.strip())
            bare = None if m or mode is None else _BARE_CREATE.fullmatch(step.strip())
            if m or bare:
                if not self.trace:
                    why = "this task has no search trace"
                elif mode == FAST:
                    why = "fast mode writes the plan without a search trace"
                elif m:
                    kind, r, c, g, h = m.group(1), *map(int, m.groups()[1:])
                    why = tracer.step(kind, (r, c), g, h)
                else:
                    why = tracer.step("c", (int(bare.group(1)), int(bare.group(2))), None, None)
                out.append((not why, why))
                continue
            m = _MOVE_STEP.fullmatch(step.strip())
            if not m:
                out.append((False, f"{step!r} is neither a move nor a trace step"))
                continue
            move, cell = m.group(1), (int(m.group(2)), int(m.group(3)))
            dr, dc = MOVES[move]
            if mode is None and self.trace and not tracer.done:
                why = "the plan starts before the trace closed the goal"
            elif mode == SLOW and not moved and tracer.plan_may_start():
                why = tracer.plan_may_start()
            elif (pos[0] + dr, pos[1] + dc) != cell:
                why = f"{move} from {pos} does not reach {cell}"
            elif not grid.free(cell):
                why = f"{cell} is a wall or outside the grid"
            elif cell not in to_goal:
                why = f"the goal cannot be reached from {cell}"
            elif self.optimal and to_goal[cell] != to_goal.get(pos, -2) - 1:
                why = f"{cell} is not on a shortest path from {pos}"
            else:
                why = ""
            out.append((not why, why))
            pos, moved = cell, True  # later moves are judged from the cell written here
        return out
