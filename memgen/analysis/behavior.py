"""Behavior labels of perturbed conflict examples, behavior-flip pairs and their splits.

A *pair* is two variants (perturbations) of the same conflict example on which the model
behaved differently. memgen keeps only MEM-vs-GEN pairs: the statistics and probes need a binary
label (MEM=1, GEN=0) and OTHER (neither answer) is not one, so a MEM/OTHER or GEN/OTHER flip is
not a pair. Selection and evaluation splits are made by conflict example, so that no example
(and none of its variants) contributes to both: neurons are never evaluated on what chose them.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from torch import nn

from memgen.analysis import generation
from memgen.tasks.base import Behavior, Example, Task


def label_outputs(task: Task, examples: Sequence[Example], outputs: Sequence[str]
                  ) -> list[Behavior]:
    """The task's MEM / GEN / OTHER label of each output."""
    if len(examples) != len(outputs):
        raise ValueError(f"outputs: expected {len(examples)} (one per example), got {len(outputs)}")
    return [task.classify(ex, out) for ex, out in zip(examples, outputs, strict=True)]


@dataclass
class LabelledGroups:
    """Variants of each conflict example with the model's outputs and behavior labels."""

    groups: list[list[Example]]
    outputs: list[list[str]]
    labels: list[list[Behavior]]

    def counts(self) -> dict[str, int]:
        flat = [label for group in self.labels for label in group]
        return {"n_examples": len(self.groups), "n_variants": len(flat),
                "n_mem": flat.count(Behavior.MEM), "n_gen": flat.count(Behavior.GEN),
                "n_other": flat.count(Behavior.OTHER)}


def _regroup(flat: Sequence, sizes: Sequence[int]) -> list[list]:
    out, start = [], 0
    for size in sizes:
        out.append(list(flat[start:start + size]))
        start += size
    return out


def label_perturbation_groups(model: nn.Module, tokenizer, task: Task,
                              groups: Sequence[Sequence[Example]], max_new_tokens: int,
                              batch_size: int, num_beams: int = 1) -> LabelledGroups:
    """Generate on every variant in one batched pass and label the outputs per group."""
    flat = [ex for group in groups for ex in group]
    outputs = generation.generate(model, tokenizer, [ex.prompt for ex in flat],
                                  max_new_tokens=max_new_tokens, batch_size=batch_size,
                                  num_beams=num_beams)
    labels = label_outputs(task, flat, outputs)
    sizes = [len(group) for group in groups]
    return LabelledGroups(groups=[list(g) for g in groups], outputs=_regroup(outputs, sizes),
                          labels=_regroup(labels, sizes))


class Pair(NamedTuple):
    """Variants ``i < j`` of conflict example ``group``, one labelled MEM and the other GEN."""

    group: int
    i: int
    j: int


def find_pairs(labelled: LabelledGroups) -> list[Pair]:
    """Every MEM-vs-GEN pair of variants within each group (see the module doc for why)."""
    pairs = []
    for g, labels in enumerate(labelled.labels):
        for i, a in enumerate(labels):
            for j in range(i + 1, len(labels)):
                if {a, labels[j]} == {Behavior.MEM, Behavior.GEN}:
                    pairs.append(Pair(g, i, j))
    return pairs


def split_pairs(pairs: Sequence[Pair], selection_fraction: float, seed: int
                ) -> tuple[list[Pair], list[Pair]]:
    """(selection, evaluation) pairs, split by conflict example; deterministic from ``seed``.

    At least one group goes to each side; pairs keep their input order within a side.
    """
    if not 0 < selection_fraction < 1:
        raise ValueError(f"selection_fraction: expected a value in (0, 1), "
                         f"got {selection_fraction}")
    groups = sorted({p.group for p in pairs})
    if len(groups) < 2:
        raise ValueError(f"pairs: a selection/evaluation split needs pairs from at least 2 "
                         f"conflict examples, got {len(groups)}; generate more perturbations "
                         f"or conflict examples")
    random.Random(seed).shuffle(groups)
    n_sel = min(max(round(selection_fraction * len(groups)), 1), len(groups) - 1)
    chosen = set(groups[:n_sel])
    return [p for p in pairs if p.group in chosen], [p for p in pairs if p.group not in chosen]


def pair_items(labelled: LabelledGroups, pairs: Sequence[Pair]) -> tuple[list[Example], list[int]]:
    """The distinct variants in ``pairs`` (first-seen order) and their labels (MEM=1, GEN=0)."""
    seen = dict.fromkeys((p.group, k) for p in pairs for k in (p.i, p.j))
    examples, labels = [], []
    for g, k in seen:
        behavior = labelled.labels[g][k]
        if behavior not in (Behavior.MEM, Behavior.GEN):
            raise ValueError(f"pair variant ({g}, {k}) is {behavior.value}: expected MEM or GEN")
        examples.append(labelled.groups[g][k])
        labels.append(int(behavior == Behavior.MEM))
    return examples, labels
