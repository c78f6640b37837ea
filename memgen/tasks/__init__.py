"""Task generators: pure Python, deterministic from the seed, no torch.

Importing the package imports every task module, each registering its class (``@register`` in
:mod:`memgen.tasks.registry`): a new task module is added to the imports below.
"""

from memgen.tasks import arithmetic, cipher, colour, files, mixture  # noqa: F401 - they register
from memgen.tasks.arithmetic import ArithmeticTask
from memgen.tasks.base import Behavior, Example, Task
from memgen.tasks.registry import TASKS, build_task

__all__ = ["TASKS", "ArithmeticTask", "Behavior", "Example", "Task", "build_task"]
