"""Task names to classes; the one place a new task is registered."""

from __future__ import annotations

import dataclasses
from typing import Any

from memgen.tasks.arithmetic import ArithmeticTask
from memgen.tasks.base import Task
from memgen.tasks.cipher import CipherTask
from memgen.tasks.colour import ColourTask
from memgen.tasks.files import FilesTask
from memgen.tasks.mixture import MixtureTask

TASKS: dict[str, type[Task]] = {
    "arithmetic": ArithmeticTask,
    "colour": ColourTask,
    "cipher": CipherTask,
    "files": FilesTask,
    "mixture": MixtureTask,
}


def build_params(name: str, params: dict[str, Any]) -> Any:
    """The task's ``Params`` dataclass from a plain dict; unknown keys fail with their name."""
    cls = TASKS[name].Params  # type: ignore[attr-defined]
    known = {f.name: f for f in dataclasses.fields(cls)}
    for key in params:
        if key not in known:
            raise ValueError(f"task.params.{key}: unknown key for task '{name}' "
                             f"(expected one of {sorted(known)})")
    return cls(**params)


def build_task(name: str, params: dict[str, Any] | None = None, **common: Any) -> Task:
    """Instantiate a registered task with its params and the common sizes (seed, n_train...)."""
    if name not in TASKS:
        raise ValueError(f"task.name: unknown task '{name}' (expected one of {sorted(TASKS)})")
    return TASKS[name](params=build_params(name, params or {}), **common)  # type: ignore[call-arg]
