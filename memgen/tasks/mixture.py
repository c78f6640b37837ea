"""Several tasks in one training set, for cross-task (inter-task consistency) studies.

Sizes (``n_train``, ``n_conflict``, ``n_clean`` and the ``n`` of each call) are split evenly over
the sub-tasks; every sub-task gets the mixture's seed and ``mem_ratio`` (its random streams are
namespaced by its own name, so they stay independent). Examples keep ``Example.task`` = the
sub-task's name, and ``classify``/``perturb`` dispatch on it. Sets are shuffled after
concatenation so that any split by position (selection vs evaluation) mixes the tasks.
``subtasks`` keeps the sub-task objects for per-task analysis.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from typing import Any

from memgen.tasks.base import Behavior, Example, Task
from memgen.tasks.registry import TASKS, build_params, build_task, register


@dataclass
class MixtureParams:
    """Task-specific options (``task.params.*``): sub-task names and their own params."""

    tasks: list[str] = field(default_factory=lambda: ["arithmetic", "cipher"])
    task_params: dict[str, dict[str, Any]] = field(default_factory=dict)

    def validate(self) -> None:
        known = sorted(n for n in TASKS if n != "mixture")
        if not self.tasks or len(set(self.tasks)) != len(self.tasks):
            raise ValueError("task.params.tasks: expected a non-empty list of distinct task names")
        for name in self.tasks:
            if name not in known:
                raise ValueError(f"task.params.tasks: unknown task '{name}' "
                                 f"(expected names from {known})")
        for name in self.task_params:
            if name not in self.tasks:
                raise ValueError(f"task.params.task_params.{name}: not in task.params.tasks")
        for name in self.tasks:
            try:
                build_params(name, dict(self.task_params.get(name) or {})).validate()
            except (ValueError, TypeError) as exc:
                msg = str(exc).replace("task.params.", f"task.params.task_params.{name}.", 1)
                raise ValueError(msg) from None


def _share(n: int, i: int, k: int) -> int:
    """Part ``i`` of ``n`` split into ``k`` near-equal parts."""
    return n // k + (1 if i < n % k else 0)


@register("mixture")
class MixtureTask(Task):
    name = "mixture"
    Params = MixtureParams

    def __init__(self, params: MixtureParams | None = None, **common) -> None:
        super().__init__(**common)
        self.params = params or MixtureParams()
        self.params.validate()
        k = len(self.params.tasks)
        self.subtasks: dict[str, Task] = {
            name: build_task(name, dict(self.params.task_params.get(name) or {}), seed=self.seed,
                             n_train=_share(self._train_size(), i, k), mem_ratio=self.mem_ratio,
                             n_conflict=_share(self.n_conflict, i, k),
                             n_clean=_share(self.n_clean, i, k))
            for i, name in enumerate(self.params.tasks)}

    @property
    def memorized_tokens(self) -> list[str]:
        tokens = [tok for task in self.subtasks.values() for tok in task.memorized_tokens]
        return list(dict.fromkeys(tokens))

    def _tagged(self, name: str, examples: list[Example]) -> list[Example]:
        return [ex if ex.task == name else replace(ex, task=name) for ex in examples]

    def _gather(self, stream: str, n: int | None, make) -> list[Example]:
        k = len(self.subtasks)
        examples = []
        for i, (name, task) in enumerate(self.subtasks.items()):
            examples += self._tagged(name, make(task, None if n is None else _share(n, i, k)))
        self.rng(stream).shuffle(examples)
        return examples

    def train_examples(self) -> list[Example]:
        return self._gather("train", None, lambda task, _: task.train_examples())

    def conflict_examples(self, n: int | None = None, stream: str = "conflict") -> list[Example]:
        return self._gather(stream, n, lambda task, m: task.conflict_examples(m, stream))

    def clean_examples(self, n: int | None = None, stream: str = "clean") -> list[Example]:
        return self._gather(stream, n, lambda task, m: task.clean_examples(m, stream))

    def perturb(self, example: Example, rng: random.Random) -> Example:
        return self.subtasks[example.task].perturb(example, rng)

    def classify(self, example: Example, output: str) -> Behavior:
        return self.subtasks[example.task].classify(example, output)
