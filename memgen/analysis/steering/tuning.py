"""Steering over a grid of (k, alpha), and the pick of one cell.

- ``steering_grid``: ``evaluate_steering`` (and side effects) over lists of k (top-k or top
  fraction) and alpha, as a DataFrame; the unsteered clean baseline is computed once.
- ``grid_scores``: one score per (k, alpha) cell: the weaker direction's success minus the best
  control's and the clean-accuracy drop.
- ``best_cell``: the cell to steer at, within a control / clean-drop budget.
- ``direction_scores`` / ``best_cells``: the same per direction, when each direction is steered
  at its own cell (toward MEM and toward GEN are two interventions with their own controls).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import pandas as pd

from memgen.analysis.neurons import NeuronSelection, SiteStats
from memgen.analysis.settings import Decoding, Subject
from memgen.analysis.sites import site_width
from memgen.analysis.stats import select_neurons
from memgen.analysis.steering.controls import CONTROL_NAMES, build_controls
from memgen.analysis.steering.evaluation import (
    DECODING,
    CleanBaseline,
    baseline_labels,
    clean_baseline,
    evaluate_steering,
)
from memgen.tasks.base import Behavior, Example


def select_top(stats: Mapping[str, SiteStats], top: int | float) -> NeuronSelection:
    """Top neurons by abs(r): an int is a count, a float a fraction of all neurons."""
    if isinstance(top, bool) or not isinstance(top, (int, float)):
        raise ValueError(f"ks: expected a count or a fraction in (0, 1], got {top!r}")
    if isinstance(top, float):
        return select_neurons(dict(stats), top_fraction=top)
    return select_neurons(dict(stats), top_k=top)


Selector = Mapping[str, SiteStats] | Callable[[int | float], NeuronSelection]


def steering_grid(subject: Subject, examples: Sequence[Example],
                  labels: Sequence[Behavior | str] | None, selector: Selector,
                  ks: Sequence[int | float], alphas: Sequence[float], *,
                  stats: Mapping[str, SiteStats] | None = None,
                  control_names: Sequence[str] = CONTROL_NAMES,
                  clean_examples: Sequence[Example] | None = None,
                  baseline: CleanBaseline | None = None, decoding: Decoding = DECODING,
                  seed: int = 0, last_prompt_only: bool = False) -> pd.DataFrame:
    """Success (and side effects of the selection) for every (k, alpha, direction, method).

    ``selector``: per-site statistics (the top-k neurons by abs(r) are selected; a float k is a
    fraction of all neurons) or a callable ``k -> NeuronSelection``. Controls are drawn once per
    k from ``stats`` (or the selector's statistics; without statistics, ``random`` draws
    over the selection's sites and ``low_r`` is refused). ``baseline``: the
    unsteered clean results, when the caller already has them (else computed here, once).
    Columns: top, k, alpha, direction, method, success, ci_low, ci_high, n, to_target,
    unchanged, other, clean_acc, clean_acc_steered, clean_acc_drop, kl (NaN for controls).
    """
    if isinstance(selector, Mapping):
        stats = selector if stats is None else stats

        def select(top):
            return select_top(selector, top)
    else:
        select = selector
    if labels is None:
        labels = baseline_labels(subject, examples, decoding)
    if clean_examples and baseline is None:
        baseline = clean_baseline(subject, clean_examples, decoding)
    rows = []
    for top in ks:
        selection = select(top)
        pool = stats if stats is not None else {
            s: site_width(subject.model, s) for s in dict.fromkeys(selection.sites)}
        controls = build_controls(pool, selection, seed, tuple(control_names))
        for alpha in alphas:
            result = evaluate_steering(
                subject, examples, labels, selection, alpha, controls, decoding=decoding,
                clean_examples=clean_examples, baseline=baseline,
                last_prompt_only=last_prompt_only)
            for row in result.table().to_dict("records"):
                side = result.side.get(row["direction"]) if row["method"] == "selected" else None
                rows.append({"top": top, "k": len(selection), "alpha": float(alpha), **row,
                             "clean_acc": side.clean_acc if side else math.nan,
                             "clean_acc_steered": side.clean_acc_steered if side else math.nan,
                             "clean_acc_drop": side.clean_acc_drop if side else math.nan,
                             "kl": side.kl if side else math.nan})
    return pd.DataFrame(rows)


def grid_scores(grid: pd.DataFrame) -> pd.DataFrame:
    """One row per (top, alpha) of a ``steering_grid`` table: the weaker direction's success,
    the best control's success, the worse direction's clean-accuracy drop, and
    ``score = min_success - max_control_success - max(clean_acc_drop, 0)``: steering counts
    only by what the controls do not also do, and what it costs on clean inputs."""
    rows = []
    for (top, alpha), cell in grid.groupby(["top", "alpha"], sort=True):
        selected = cell[cell["method"] == "selected"]
        controls = cell[cell["method"] != "selected"]
        min_success = float(selected["success"].min())
        max_control = float(controls["success"].max()) if len(controls) else 0.0
        drop = float(selected["clean_acc_drop"].max())
        drop = 0.0 if math.isnan(drop) else drop
        max_control = 0.0 if math.isnan(max_control) else max_control
        rows.append({"top": top, "k": int(selected["k"].iloc[0]), "alpha": float(alpha),
                     "min_success": min_success, "max_control_success": max_control,
                     "clean_acc_drop": drop,
                     "score": min_success - max_control - max(drop, 0.0)})
    return pd.DataFrame(rows)


def within_budget(scores: pd.DataFrame, max_control: float | None = None,
                  max_clean_drop: float | None = None) -> pd.Series:
    """The cells whose best control and clean drop stay within ``max_control`` /
    ``max_clean_drop`` (None: no limit), as a boolean mask over ``scores``."""
    eps = 1e-9  # rates are ratios of counts: 0.935 - 0.915 must count as a 0.02 drop
    mask = pd.Series(True, index=scores.index)
    if max_control is not None:
        mask &= scores["max_control_success"] <= max_control + eps
    if max_clean_drop is not None:
        mask &= scores["clean_acc_drop"] <= max_clean_drop + eps
    return mask


def best_cell(scores: pd.DataFrame, max_control: float | None = None,
              max_clean_drop: float | None = None) -> pd.Series:
    """The highest score; with a budget, the highest weaker-direction success among the cells
    whose best control and clean drop stay within ``max_control`` / ``max_clean_drop`` (the
    highest score if none does). Ties go to the smaller alpha, then the fewer neurons."""
    valid = scores.dropna(subset=["score"])
    if valid.empty:
        raise ValueError("steering tuning: no (top, alpha) cell had items in both directions")
    within = valid[within_budget(valid, max_control, max_clean_drop)]
    if (max_control is not None or max_clean_drop is not None) and not within.empty:
        return within.sort_values(["min_success", "alpha", "k"],
                                  ascending=[False, True, True]).iloc[0]
    return valid.sort_values(["score", "alpha", "k"], ascending=[False, True, True]).iloc[0]


def direction_scores(grid: pd.DataFrame) -> pd.DataFrame:
    """One row per (top, alpha, direction) of a ``steering_grid`` table: that direction's
    success, its strongest control and its clean-accuracy drop, and ``score = success -
    max_control_success - max(clean_acc_drop, 0)``, as ``grid_scores`` but per direction."""
    rows = []
    for (top, alpha, direction), cell in grid.groupby(["top", "alpha", "direction"], sort=True):
        selected = cell[cell["method"] == "selected"]
        controls = cell[cell["method"] != "selected"]
        success = float(selected["success"].iloc[0])
        max_control = float(controls["success"].max()) if len(controls) else 0.0
        max_control = 0.0 if math.isnan(max_control) else max_control
        drop = float(selected["clean_acc_drop"].iloc[0])
        drop = 0.0 if math.isnan(drop) else drop
        rows.append({"top": top, "k": int(selected["k"].iloc[0]), "alpha": float(alpha),
                     "direction": direction, "success": success,
                     "max_control_success": max_control, "clean_acc_drop": drop,
                     "score": success - max_control - max(drop, 0.0)})
    return pd.DataFrame(rows)


def best_cells(scores: pd.DataFrame, max_control: float | None = None,
               max_clean_drop: float | None = None) -> dict[str, pd.Series]:
    """``best_cell`` for each direction of a ``direction_scores`` table: the most successful
    cell whose own strongest control and clean drop stay within the budget (the highest
    score where none does)."""
    out = {}
    for direction, rows in scores.groupby("direction", sort=True):
        as_cells = rows.rename(columns={"success": "min_success"})
        out[str(direction)] = best_cell(as_cells, max_control, max_clean_drop)
    return out


def direction_metrics(cells: Mapping[str, pd.Series]) -> dict[str, float]:
    """``steer/tuned/<direction>/*`` of each direction's own tuned cell."""
    out: dict[str, float] = {}
    for direction, cell in cells.items():
        out |= {f"steer/tuned/{direction}/top_fraction": float(cell["top"]),
                f"steer/tuned/{direction}/alpha": float(cell["alpha"]),
                f"steer/tuned/{direction}/k": float(cell["k"]),
                f"steer/tuned/{direction}/score": float(cell["score"])}
    return out
