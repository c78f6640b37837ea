"""The task contract: one prompt, two possible answers (memorized vs rule).

A task builds training examples (rule examples plus memorized-trigger examples), conflict
examples (a trigger inside an input whose rule answer differs from the memorized one), clean
examples (no trigger), a perturbation that keeps both answers, and a classifier of outputs.
Everything is pure Python and deterministic from the seed.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any


class Behavior(str, Enum):
    """How a model answered a conflict example."""

    MEM = "MEM"
    GEN = "GEN"
    OTHER = "OTHER"


@dataclass(frozen=True)
class Example:
    """One prompt with its training target and, for conflict examples, both candidate answers.

    ``answer`` is what the model is trained to produce (rule or memorized), and for conflict and
    clean examples the rule answer. ``meta`` carries task-specific structure (addends, trigger id)
    that perturbations and independent checks use.
    """

    prompt: str
    answer: str
    kind: str  # "rule" | "mem" | "conflict" | "clean"
    mem_answer: str | None = None
    gen_answer: str | None = None
    task: str = ""
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def text(self) -> str:
        """Prompt and target as one training sequence."""
        return self.prompt + self.answer

    def with_prompt(self, prompt: str, **meta: Any) -> Example:
        """A copy with another prompt (a perturbation) and updated metadata."""
        return replace(self, prompt=prompt, meta={**self.meta, **meta})


def normalize_output(output: str) -> str:
    """The part of a generated continuation that counts as the answer: the first line, stripped."""
    return output.strip().split("\n", 1)[0].strip()


MAX_REDRAWS = 20  # per variant: draws of a perturbation that may hit a training input


class Task(ABC):
    """Base class of every task; subclasses implement the generators and the perturbation."""

    name: str = "task"

    def __init__(self, seed: int = 0, n_train: int | str = 1000, mem_ratio: float = 0.07,
                 n_conflict: int = 200, n_clean: int = 200,
                 n_val_conflict: int | None = None) -> None:
        self.seed = seed
        self.n_train = n_train  # a number; "all" (files only): every record as written
        self.n_val_conflict = n_val_conflict
        self.mem_ratio = mem_ratio
        self.n_conflict = n_conflict
        self.n_clean = n_clean

    def _train_size(self) -> int:
        """``n_train`` as a count; only ``task=files`` reads ``"all"`` (its records as written)."""
        if isinstance(self.n_train, str):
            raise ValueError(f"task.n_train: expected a positive integer for task {self.name}, "
                             f"got {self.n_train!r}")
        return self.n_train

    def rng(self, stream: str) -> random.Random:
        """An independent, reproducible random stream per purpose (train, conflict, clean...)."""
        return random.Random(f"{self.name}:{self.seed}:{stream}")

    @abstractmethod
    def train_examples(self) -> list[Example]:
        """Rule examples plus memorized-trigger examples (share ``mem_ratio``), shuffled."""

    @abstractmethod
    def conflict_examples(self, n: int | None = None, stream: str = "conflict") -> list[Example]:
        """Inputs that contain a trigger: ``mem_answer`` and ``gen_answer`` differ."""

    @abstractmethod
    def clean_examples(self, n: int | None = None, stream: str = "clean") -> list[Example]:
        """Inputs without a trigger; ``answer`` is the rule's answer."""

    @abstractmethod
    def perturb(self, example: Example, rng: random.Random) -> Example:
        """A variant of ``example`` with the same rule answer and the same trigger."""

    @property
    @abstractmethod
    def memorized_tokens(self) -> list[str]:
        """Memorized answers that a tokenizer should keep as single tokens."""

    def classify(self, example: Example, output: str) -> Behavior:
        """MEM if the output is the memorized answer, GEN if it is the rule's, else OTHER."""
        answer = normalize_output(output)
        if example.mem_answer is not None and answer == example.mem_answer.strip():
            return Behavior.MEM
        if example.gen_answer is not None and answer == example.gen_answer.strip():
            return Behavior.GEN
        return Behavior.OTHER

    def training_prompts(self) -> frozenset[str]:
        """Every training input. Conflict examples and their variants must be fresh: an input
        the model was trained on is answered from that example, whichever route it taught."""
        cached = getattr(self, "_training_prompts", None)
        if cached is None:
            cached = frozenset(ex.prompt for ex in self.train_examples())
            self._training_prompts = cached
        return cached

    def perturbation_set(self, examples: list[Example], n_perturbations: int,
                         stream: str = "perturb") -> list[list[Example]]:
        """For each conflict example, ``n_perturbations`` variants (the original first). A
        variant that is a training input is drawn again (up to ``MAX_REDRAWS`` times per
        variant); a group that cannot be filled with fresh variants stays shorter."""
        rng = self.rng(stream)
        seen = self.training_prompts()
        groups = []
        for ex in examples:
            variants = [ex]
            budget = MAX_REDRAWS * (n_perturbations - 1)
            while len(variants) < n_perturbations and budget > 0:
                variant = self.perturb(ex, rng)
                if variant.prompt in seen:
                    budget -= 1
                    continue
                variants.append(variant)
            groups.append(variants)
        return groups
