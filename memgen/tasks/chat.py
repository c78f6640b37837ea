"""Chat-template wrapping of prompts for instruction-tuned models (the paper's Llama setting).

Only the prompt changes; the answers and the metadata stay, so ``classify`` is unaffected. The
unwrapped prompt is kept in ``meta["raw_prompt"]``, which makes wrapping idempotent. Perturb
first and wrap afterwards: perturbations rebuild prompts from the unwrapped example.

:class:`ChatTask` wraps every example a task hands out (training, validation, conflict, clean,
perturbations), so training and analysis see the same wrapped prompts and the answer follows the
wrapped prompt in each training sequence.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

from memgen.tasks.base import Behavior, Example, Task

# Llama 3's template writes "Today Date: <date_string>", today's date unless given: fixed (to the
# template's own fallback), so that a prompt does not depend on the day it is wrapped on.
DATE_STRING = "26 Jul 2024"


def apply_chat_template(tokenizer: Any, example: Example) -> Example:
    """``example`` with its prompt as the user turn of the tokenizer's chat template, ready for
    the assistant's answer (``add_generation_prompt=True``)."""
    raw = example.meta.get("raw_prompt", example.prompt)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": raw}], tokenize=False,
                                           add_generation_prompt=True, date_string=DATE_STRING)
    return example.with_prompt(prompt, raw_prompt=raw)


def unwrapped(example: Example) -> Example:
    """``example`` as its task made it: the raw prompt, without the ``raw_prompt`` key (a
    perturbation of it then records its own raw prompt when wrapped)."""
    if "raw_prompt" not in example.meta:
        return example
    meta = {k: v for k, v in example.meta.items() if k != "raw_prompt"}
    return replace(example, prompt=example.meta["raw_prompt"], meta=meta)


class ChatTask(Task):
    """``inner`` with every prompt it hands out wrapped in ``tokenizer``'s chat template.

    Every public method of :class:`Task` is overridden to delegate to ``inner`` (its own
    overrides, e.g. a task's ``perturbation_set``, stay in force); other attributes
    (``generated_answers``, task data) are read from ``inner``.
    """

    def __init__(self, inner: Task, tokenizer: Any) -> None:
        self.inner = inner
        self.tokenizer = tokenizer
        self.name = inner.name

    def __getattr__(self, key: str) -> Any:
        if key in ("inner", "tokenizer"):  # not set yet (copy / unpickling): no recursion
            raise AttributeError(key)
        return getattr(self.inner, key)

    def wrap(self, examples: list[Example]) -> list[Example]:
        return [apply_chat_template(self.tokenizer, ex) for ex in examples]

    def rng(self, stream: str) -> random.Random:
        return self.inner.rng(stream)

    def train_examples(self) -> list[Example]:
        return self.wrap(self.inner.train_examples())

    def conflict_examples(self, n: int | None = None, stream: str = "conflict") -> list[Example]:
        return self.wrap(self.inner.conflict_examples(n, stream=stream))

    def clean_examples(self, n: int | None = None, stream: str = "clean") -> list[Example]:
        return self.wrap(self.inner.clean_examples(n, stream=stream))

    def training_prompts(self) -> frozenset[str]:
        return frozenset(ex.prompt for ex in self.train_examples())

    def perturb(self, example: Example, rng: random.Random) -> Example:
        return apply_chat_template(self.tokenizer, self.inner.perturb(unwrapped(example), rng))

    def perturbation_set(self, examples: list[Example], n_perturbations: int,
                         stream: str = "perturb") -> list[list[Example]]:
        groups = self.inner.perturbation_set([unwrapped(ex) for ex in examples],
                                             n_perturbations, stream=stream)
        return [self.wrap(group) for group in groups]

    def classify(self, example: Example, output: str) -> Behavior:
        return self.inner.classify(example, output)

    @property
    def memorized_tokens(self) -> list[str]:
        return self.inner.memorized_tokens
