"""The typed results of the analysis stages: what each stage hands to the next and to the caller.

Each result knows its own ``metrics()`` (flat ``stage/name`` keys); ``Analysis`` gathers them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch

from memgen.analysis.behavior import LabelledGroups, Pair
from memgen.analysis.consistency import IntraResult, inter_metrics
from memgen.analysis.neurons import NeuronSelection, SiteStats
from memgen.analysis.probes import ProbeReport
from memgen.analysis.stats import site_summary
from memgen.analysis.steering.evaluation import SteeringResult
from memgen.analysis.steering.tuning import direction_metrics
from memgen.tasks import Behavior, Example

Item = tuple[int, int]  # (group, variant)


@dataclass
class Split:
    """Labelled variants of one split: examples, labels (MEM=1, GEN=0) and their row ids."""

    items: list[Item]
    examples: list[Example]
    labels: torch.Tensor

    @property
    def behaviors(self) -> list[Behavior]:
        return [Behavior.MEM if y else Behavior.GEN for y in self.labels.tolist()]


@dataclass
class Behaviors:
    """Stage 1: every perturbation labelled, the differing pairs, and the two splits."""

    labelled: LabelledGroups
    pairs: list[Pair]
    selection: Split
    evaluation: Split
    selection_pairs: list[Pair]
    evaluation_pairs: list[Pair]

    def metrics(self) -> dict[str, float]:
        counts = self.labelled.counts()
        n = max(1, counts["n_variants"])
        return {
            "behavior/n_examples": counts["n_examples"],
            "behavior/n_variants": counts["n_variants"],
            "behavior/mem_rate": counts["n_mem"] / n,
            "behavior/gen_rate": counts["n_gen"] / n,
            "behavior/other_rate": counts["n_other"] / n,
            "pairs/n": len(self.pairs),
            "pairs/n_examples_with_pairs": len({p.group for p in self.pairs}),
            "pairs/n_selection_items": len(self.selection.items),
            "pairs/n_evaluation_items": len(self.evaluation.items),
        }

    def split_table(self) -> pd.DataFrame:
        """The items of each split (selection first, in the order the statistics saw them):
        with the model's run, enough to recompute the neuron table without the seed."""
        rows = [{"group": g, "variant": k, "split": name,
                 "behavior": self.labelled.labels[g][k].value, "label": int(y),
                 "prompt": ex.prompt, "mem_answer": ex.mem_answer, "gen_answer": ex.gen_answer}
                for name, split in (("selection", self.selection), ("evaluation", self.evaluation))
                for (g, k), ex, y in zip(split.items, split.examples, split.labels.tolist(),
                                         strict=True)]
        return pd.DataFrame(rows, columns=["group", "variant", "split", "behavior", "label",
                                           "prompt", "mem_answer", "gen_answer"])

    def pair_table(self) -> pd.DataFrame:
        """Every MEM/GEN pair (variants ``i`` and ``j`` of conflict example ``group``) and its
        split."""
        split_of = {p: "selection" for p in self.selection_pairs} | {
            p: "evaluation" for p in self.evaluation_pairs}
        return pd.DataFrame([{"group": p.group, "i": p.i, "j": p.j,
                              "split": split_of.get(p, "")} for p in self.pairs],
                            columns=["group", "i", "j", "split"])


@dataclass
class Neurons:
    """Stage 2: per-site statistics on the selection split, the ranking and the selection."""

    stats: dict[str, SiteStats]
    table: pd.DataFrame
    selection: NeuronSelection
    chance: dict[str, Any]

    def metrics(self) -> dict[str, float]:
        out = site_summary(self.stats)
        out["neurons/n_total"] = float(len(self.table))
        out["neurons/n_selected"] = float(len(self.selection))
        out["neurons/max_abs_r"] = float(self.table["abs_r"].max())
        out["neurons/selected_min_abs_r"] = float(self.selection.r.abs().min())
        out["neurons/chance_max_abs_r_q95"] = self.chance["max_abs_r_q"]
        out["neurons/chance_abs_r_q95"] = self.chance["abs_r_q"]
        return out


@dataclass
class Features:
    """Last-prompt-token activations of every labelled item, captured once per checkpoint."""

    by_item: dict[Item, int]
    values: dict[str, torch.Tensor]  # site -> [N, D]
    labels: torch.Tensor  # [N]

    def take(self, items: list[Item]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        rows = torch.tensor([self.by_item[it] for it in items], dtype=torch.long)
        return {s: v[rows] for s, v in self.values.items()}, self.labels[rows]


@dataclass
class InterTask:
    """Stage 6 (mixtures): each sub-task's neurons on one shared model, compared."""

    selections: dict[str, NeuronSelection]
    jaccard: pd.DataFrame  # task x task
    expected: pd.DataFrame  # chance jaccard, same shape
    cross_steering: pd.DataFrame  # rows: source task, target task, direction, success, n

    def metrics(self, overlaps) -> dict[str, float]:
        out = inter_metrics(overlaps)
        for row in self.cross_steering.itertuples(index=False):
            out[f"steer/cross/{row.source}_to_{row.target}/{row.direction}/success"] = row.success
        return out


@dataclass
class SteeringTuning:
    """The (top_fraction, alpha) picked on the selection split, and every cell's score."""

    best: pd.Series  # the picked row of ``scores``
    scores: pd.DataFrame  # top, k, alpha, min_success, max_control_success, clean_acc_drop
    # every (cell, direction, method) row the scores came from: per-direction successes and
    # controls, so another pick can be judged from the run alone
    grid: pd.DataFrame | None = None
    # ``tune_per_direction``: each direction's own pick (a ``direction_scores`` row)
    by_direction: dict[str, pd.Series] = field(default_factory=dict)

    @property
    def top_fraction(self) -> float:
        return float(self.best["top"])

    @property
    def alpha(self) -> float:
        return float(self.best["alpha"])

    def metrics(self) -> dict[str, float]:
        out = {"steer/tuned/top_fraction": self.top_fraction, "steer/tuned/alpha": self.alpha,
               "steer/tuned/k": float(self.best["k"]),
               "steer/tuned/score": float(self.best["score"])}
        return out | direction_metrics(self.by_direction)


@dataclass
class Analysis:
    """Everything the stages produced; ``summary()`` is what ``memgen run`` prints."""

    behaviors: Behaviors
    neurons: Neurons | None = None
    probes: ProbeReport | None = None
    steering: SteeringResult | None = None
    grid: pd.DataFrame | None = None
    tuning: SteeringTuning | None = None
    consistency: IntraResult | None = None
    transfer: SteeringResult | None = None  # half B's neurons steering half A's items
    inter: InterTask | None = None
    kinds: Any = None  # kinds_stage.KindsReport: kinds side by side, margins, the ceiling
    metrics: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # stage -> why
