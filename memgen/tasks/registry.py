"""Task names to classes. A task module registers its class with ``@register``; the package
``memgen/tasks/__init__.py`` imports every task module, so importing anything from
``memgen.tasks`` sees them all. A new task: a module with an ``@register``-ed class, imported there.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

from memgen.tasks.base import Task

TASKS: dict[str, type[Task]] = {}
T = TypeVar("T", bound=type[Task])


def register(name: str) -> Callable[[T], T]:
    """Class decorator: ``@register("arithmetic")`` makes the class ``task.name=arithmetic``."""

    def add(cls: T) -> T:
        if name in TASKS and TASKS[name] is not cls:
            raise ValueError(f"task {name!r} is registered twice ({TASKS[name].__name__}, "
                             f"{cls.__name__})")
        TASKS[name] = cls
        return cls

    return add


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
