"""Task generators: pure Python, deterministic from the seed, no torch."""

from memgen.tasks.arithmetic import ArithmeticTask
from memgen.tasks.base import Behavior, Example, Task
from memgen.tasks.registry import TASKS, build_task

__all__ = ["TASKS", "ArithmeticTask", "Behavior", "Example", "Task", "build_task"]
