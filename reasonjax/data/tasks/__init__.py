"""Built-in tasks (registered with :func:`reasonjax.data.task.get_task` on import)."""

from reasonjax.data.tasks.arithmetic import Arithmetic
from reasonjax.data.tasks.countdown import Countdown
from reasonjax.data.tasks.gym import GymTask
from reasonjax.data.tasks.maze import Maze
from reasonjax.data.tasks.procbench import ProcBench
from reasonjax.data.tasks.real import GSM8K, MATH, MultipleChoice

BUILTIN = ("arithmetic", "countdown", "procbench", "maze")

__all__ = ["Arithmetic", "Countdown", "GymTask", "Maze", "ProcBench", "GSM8K", "MATH",
           "MultipleChoice", "BUILTIN"]
