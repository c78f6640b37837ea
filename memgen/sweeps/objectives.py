"""What a sweep optimizes: ``sweep.objectives`` checked against the metrics a trial produces.

A typo in a metric name would otherwise surface only after the first trial has trained or
steered; the names are derived from the analysis code itself (``summary_metrics`` on a stub
result), so they cannot drift from what trials log.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from memgen.analysis.steering.controls import CONTROL_NAMES
from memgen.analysis.steering.evaluation import (
    SideEffects,
    SteeringResult,
    Transitions,
    summary_metrics,
)
from memgen.analysis.steering.hooks import DIRECTIONS
from memgen.errors import ConfigError

DIRECTIONS_OPT = ("maximize", "minimize")
STEER_EXTRA = ("steer/k",)  # neurons steered: a trial logs it next to summary_metrics
TRAINING_FIXED = (
    "train/loss_epoch", "val/mem_rate", "val/gen_rate", "val/other_rate",
    "val/behavior_balance", "val/best_behavior_balance", "val/mem_gen_product",
    "val/best_mem_gen_product", "val/pair_yield", "val/best_pair_yield",
    "kept/mem_rate", "kept/gen_rate",
    "kept/other_rate", "model/params_total", "model/params_trainable",
    "behavior/n_examples", "behavior/n_variants", "behavior/mem_rate", "behavior/gen_rate",
    "behavior/other_rate", "pairs/n", "pairs/n_examples_with_pairs",
    "pairs/n_selection_items", "pairs/n_evaluation_items",
    "neurons/n_total", "neurons/n_selected", "neurons/max_abs_r",
    "neurons/selected_min_abs_r", "neurons/chance_max_abs_r_q95", "neurons/chance_abs_r_q95",
    "probe/best_acc", "probe/baseline/majority_acc", "probe/baseline/input_only_acc",
    "probe/baseline/shuffled_acc", "probe/topk_acc", "probe/lens/best_acc",
    *(f"consistency/intra/{n}" for n in ("jaccard", "expected_jaccard", "overlap_coef",
                                          "p_value", "enrichment", "r_corr")),
)
_SITE = r"(resid|mlp)\.\d+"
TRAINING_PATTERNS = (re.compile(rf"neurons/(max_abs_r|mean_abs_nmd)/{_SITE}"),
                     re.compile(rf"probe/(acc|auroc|lens_acc)/{_SITE}"))
# Which analysis stages a training trial must run to produce a metric (None: training alone).
STAGE_OF_PREFIX = {"behavior/": (), "pairs/": (), "neurons/": (), "probe/": ("probes",),
                   "steer/": ("steering",), "side/": ("steering",),
                   "consistency/": ("consistency",)}


@dataclass(frozen=True)
class Objective:
    """One optimized metric and its direction."""

    metric: str
    direction: str  # maximize | minimize


def steering_metric_names(controls: Sequence[str] = CONTROL_NAMES) -> list[str]:
    """Every metric a steering trial logs, from ``summary_metrics`` on a stub result."""
    t = {d: Transitions(d, 1, 1, 0, 0) for d in DIRECTIONS}
    side = {d: SideEffects(d, 1, 1.0, 1.0, 0.0) for d in DIRECTIONS}
    stub = SteeringResult(alpha=1.0, k=1, selected=t, controls={c: t for c in controls},
                          side=side)
    return [*summary_metrics(stub), *STEER_EXTRA]


def known_metric(name: str, kind: str) -> bool:
    steering = set(steering_metric_names())
    if kind == "steering":
        return name in steering
    return (name in steering or name in TRAINING_FIXED
            or any(p.fullmatch(name) for p in TRAINING_PATTERNS))


def _unknown(name: str, kind: str) -> str:
    pool = steering_metric_names() + ([] if kind == "steering" else list(TRAINING_FIXED))
    close = difflib.get_close_matches(name, pool, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else \
        f"; e.g. {', '.join(pool[:3])} (see memgen.sweeps.objectives)"
    return f"unknown metric {name!r} for a {kind} sweep{hint}"


def parse_objectives(raw: Sequence[Mapping] | None, kind: str,
                     controls: Sequence[str] = CONTROL_NAMES) -> list[Objective]:
    """``sweep.objectives`` as :class:`Objective` s; unknown names and directions fail here."""
    items: Any = (OmegaConf.to_container(raw) if isinstance(raw, DictConfig)
                  or OmegaConf.is_list(raw) else raw)
    if not items:
        raise ConfigError("sweep.objectives: empty; expected a list of {metric, direction}, "
                          "e.g. [{metric: steer/to_gen/success, direction: maximize}]")
    out: list[Objective] = []
    for i, item in enumerate(items):
        key = f"sweep.objectives[{i}]"
        if not isinstance(item, Mapping) or set(item) != {"metric", "direction"}:
            raise ConfigError(f"{key}: expected {{metric: <name>, direction: maximize|minimize}}"
                              f", got {item!r}")
        metric, direction = str(item["metric"]), str(item["direction"])
        if direction not in DIRECTIONS_OPT:
            raise ConfigError(f"{key}.direction: expected 'maximize' or 'minimize', "
                              f"got {direction!r}")
        if not known_metric(metric, kind):
            raise ConfigError(f"{key}.metric: {_unknown(metric, kind)}")
        control = re.search(r"/control_(\w+)/", metric)
        if control and control.group(1) not in controls:
            raise ConfigError(f"{key}.metric: {metric!r} needs analysis.steering.controls to "
                              f"include {control.group(1)!r}")
        if any(o.metric == metric for o in out):
            raise ConfigError(f"{key}.metric: {metric!r} is listed twice")
        out.append(Objective(metric, direction))
    return out


def analysis_stages(objectives: Sequence[Objective]) -> tuple[str, ...] | None:
    """The ``analyse_model`` stages a training trial needs; None when training metrics suffice."""
    stages: list[str] = []
    needed = False
    for o in objectives:
        for prefix, extra in STAGE_OF_PREFIX.items():
            if o.metric.startswith(prefix):
                needed = True
                stages += [s for s in extra if s not in stages]
    return tuple(stages) if needed else None


def objective_values(metrics: Mapping[str, float], objectives: Sequence[Objective]
                     ) -> list[float]:
    """The trial's value per objective; a missing or NaN one fails the trial with a reason."""
    values = []
    for o in objectives:
        if o.metric not in metrics:
            raise ValueError(f"objective {o.metric!r} was not produced by this trial")
        value = float(metrics[o.metric])
        if not math.isfinite(value):
            raise ValueError(f"objective {o.metric!r} is {value} (e.g. no item to steer in "
                             f"that direction)")
        values.append(value)
    return values
