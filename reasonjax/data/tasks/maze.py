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

Knobs: ``height``, ``width``, ``wall_prob``, ``min_distance`` (shortest-path length at
least this), ``trace``, ``optimal``. Steps = shortest-path length + 1 (answer), plus the
trace length with ``trace=True``.
"""

from __future__ import annotations

import dataclasses
import heapq
import random
import re
from collections import deque
from typing import ClassVar, Optional, Sequence

from reasonjax.data import answers
from reasonjax.data.task import ANSWER_PREFIX, Problem, Task, TaskError, register_task

MOVES = {"U": (-1, 0), "D": (1, 0), "L": (0, -1), "R": (0, 1)}
Cell = tuple[int, int]


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

    def __post_init__(self):
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
            return Problem(task=self.name, question="\n".join(g.rows),
                           steps=(ANSWER_PREFIX + "none",), answer="none", instance=instance,
                           meta={"n_steps": 1, "distance": None})
        moves = "".join(m for m, _ in plan)
        steps = (trace if self.trace else []) + [f"{m} {r} {c}" for m, (r, c) in plan]
        steps.append(ANSWER_PREFIX + moves)
        return Problem(task=self.name, question="\n".join(g.rows), steps=tuple(steps),
                       answer=moves, instance=instance,
                       meta={"n_steps": len(steps), "distance": len(plan),
                             "trace_length": len(trace)})

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
        to_goal = distances(grid, grid.goal)
        tracer = _TraceChecker(grid)
        pos = grid.start
        out = []
        for step in steps:
            if self.is_final_step(step):
                got = answers.extract_tagged(step) or ""
                ok = self.answer_correct(problem, got)
                out.append((ok, "" if ok else f"plan {got!r} does not verify"))
                continue
            m = _TRACE_STEP.fullmatch(step.strip())
            if m:
                kind, r, c, g, h = m.group(1), *map(int, m.groups()[1:])
                why = tracer.step(kind, (r, c), g, h) if self.trace else \
                    "this task has no search trace"
                out.append((not why, why))
                continue
            m = _MOVE_STEP.fullmatch(step.strip())
            if not m:
                out.append((False, f"{step!r} is neither a move nor a trace step"))
                continue
            move, cell = m.group(1), (int(m.group(2)), int(m.group(3)))
            dr, dc = MOVES[move]
            if self.trace and not tracer.done:
                why = "the plan starts before the trace closed the goal"
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
            pos = cell  # later moves are judged from the cell written here
        return out
