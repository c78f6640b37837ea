"""Logging the claims scorecard (any run) and a replicate's aggregates and figures (parent run).

Figures: one per claim, seeds as dots, the across-seed mean with its 95% CI as an error bar,
and the threshold as a dashed line; sized for MLflow's artifact preview.
"""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from memgen.replicates.claims import ClaimResult, claim_metrics  # noqa: E402
from memgen.tracking.run import TrackedRun  # noqa: E402


def log_scorecard(run: TrackedRun, rows: list[ClaimResult], step: int | None = None) -> None:
    """``claims.csv`` and ``claims/<name>/pass`` / ``value`` on a single run."""
    run.log_table(pd.DataFrame([r.row() for r in rows]), "claims.csv")
    run.log_metrics(claim_metrics(rows), step=step)


def claim_figure(claim: str, long: pd.DataFrame, summary_row) -> plt.Figure:
    """Seeds as dots, mean and CI as a bar, the threshold as a line."""
    values = pd.to_numeric(long.get("value", pd.Series(index=long.index, dtype=float)),
                           errors="coerce")
    rows = long.loc[(long["claim"] == claim) & np.isfinite(values), ["seed"]]
    rows["value"] = values[rows.index].astype(float)
    fig, ax = plt.subplots(figsize=(4.8, 3.4), dpi=110)
    ax.scatter([0.0] * len(rows), rows["value"], s=36, alpha=0.8, label="seeds", zorder=3)
    for seed, value in zip(rows["seed"], rows["value"], strict=True):
        ax.annotate(str(seed), (0.0, value), xytext=(6, 0), textcoords="offset points",
                    fontsize=8, va="center")
    mean, low, high = summary_row.mean, summary_row.ci_low, summary_row.ci_high
    if math.isfinite(mean):
        err = [[mean - low], [high - mean]] if math.isfinite(low) else None
        ax.errorbar([0.4], [mean], yerr=err, fmt="s", color="black", capsize=6,
                    label="mean, 95% CI")
    ax.axhline(summary_row.threshold, color="tab:red", linestyle="--",
               label=f"threshold ({summary_row.op} {summary_row.threshold:g})")
    ax.set_xlim(-0.5, 1.0)
    ax.set_xticks([])
    ax.set_ylabel(summary_row.statistic, fontsize=9)
    ax.set_title(f"{claim}: {summary_row.n_pass}/{summary_row.n_seeds} seeds pass", fontsize=11)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.tight_layout()
    return fig


def log_replicate(parent: TrackedRun, result) -> None:
    """Parent metrics, tables (aggregates, per seed, claims) and one figure per claim."""
    parent.log_metrics(result.metrics)
    if result.aggregates is not None:
        parent.log_table(result.aggregates, "replicate/aggregates.csv")
        parent.log_table(result.per_seed, "replicate/per_seed.csv")
    parent.log_table(result.claims_long, "claims.csv")
    parent.log_table(result.claims_summary, "claims_summary.csv")
    for row in result.claims_summary.itertuples(index=False):
        parent.log_figure(claim_figure(row.claim, result.claims_long, row),
                          f"claims/{row.claim}.png")
    parent.log_text(result.text, "replicate/scorecard.txt")
