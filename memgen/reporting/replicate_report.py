"""Logging the claims scorecard (any run) and a replicate's aggregates and figures (parent run).

Figures: one per claim, seeds as dots, the across-seed mean with its 95% CI as an error bar,
and the threshold as a dashed line; sized for MLflow's artifact preview.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from memgen.replicates.claims import ClaimResult, claim_metrics
from memgen.reporting import html_report
from memgen.reporting.headline import KEY_METRICS
from memgen.reporting.plots.figures import new_figure
from memgen.reporting.report import log_summary
from memgen.tracking.run import TrackedRun


def log_scorecard(run: TrackedRun, rows: list[ClaimResult], step: int | None = None) -> None:
    """``claims.csv`` and ``claims/<name>/pass`` / ``value`` on a single run (rounded, and
    without a step unless a curve of them exists)."""
    run.log_frame(pd.DataFrame([r.row() for r in rows]), "claims.csv")
    log_summary(run, claim_metrics(rows), step=step)


def claim_figure(claim: str, long: pd.DataFrame, summary_row) -> Figure:
    """Seeds as dots, mean and CI as a bar, the threshold as a line."""
    values = pd.to_numeric(long.get("value", pd.Series(index=long.index, dtype=float)),
                           errors="coerce")
    rows = long.loc[(long["claim"] == claim) & np.isfinite(values), ["seed"]]
    rows["value"] = values[rows.index].astype(float)
    fig = new_figure(figsize=(4.8, 3.4), dpi=110)
    ax = fig.subplots()
    ax.scatter([0.0] * len(rows), rows["value"], s=36, alpha=0.8, label="seeds", zorder=3)
    for seed, value in zip(rows["seed"], rows["value"], strict=True):
        ax.annotate(str(seed), (0.0, value), xytext=(6, 0), textcoords="offset points",
                    fontsize=8, va="center")
    mean, low, high = summary_row.mean, summary_row.ci_low, summary_row.ci_high
    if math.isfinite(mean):
        err = [[mean - low], [high - mean]] if math.isfinite(low) else None
        ax.errorbar([0.4], [mean], yerr=err, fmt="s", color="black", capsize=6,
                    label="mean, 95% CI")
    elif math.isfinite(getattr(summary_row, "median", math.nan)):  # a p-value: no mean
        ax.scatter([0.4], [summary_row.median], marker="s", color="black", label="median")
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
        parent.log_frame(result.aggregates, "replicate/aggregates.csv")
        parent.log_frame(result.per_seed, "replicate/per_seed.csv")
    parent.log_frame(result.claims_long, "claims.csv")
    parent.log_frame(result.claims_summary, "claims_summary.csv")
    pngs = {}
    for row in result.claims_summary.itertuples(index=False):
        pngs[f"claims/{row.claim}.png"] = parent.log_figure(
            claim_figure(row.claim, result.claims_long, row), f"claims/{row.claim}.png")
    parent.log_text(result.text, "replicate/scorecard.txt")
    log_replicate_report(parent, result, pngs)


def key_aggregates(aggregates: pd.DataFrame | None) -> pd.DataFrame:
    """The aggregates of the key metrics (steering, probe, behaviors), in that order."""
    if aggregates is None or aggregates.empty:
        return pd.DataFrame()
    order = {key: i for i, key in enumerate(KEY_METRICS)}
    rows = aggregates[aggregates["metric"].isin(order)]
    return rows.sort_values("metric", key=lambda s: s.map(order))


def timing_table(aggregates: pd.DataFrame | None) -> str:
    """The children's ``time/<stage>_s`` over seeds, slowest stage first."""
    if aggregates is None or aggregates.empty:
        return html_report.table(None)
    rows = aggregates[aggregates["metric"].str.startswith("time/")]
    rows = rows.sort_values("mean", ascending=False, kind="stable")
    return html_report.table(rows[["metric", "n", "mean", "min", "max"]], 40)


def log_replicate_report(parent: TrackedRun, result, pngs: dict[str, bytes]) -> None:
    """``report.html`` and the description of a replicate parent: scorecard, key metrics with
    their across-seed CIs, the claim figures, then the full tables."""
    key = key_aggregates(result.aggregates)
    lines = result.text.splitlines()
    keep = ["n", "mean", "ci_low", "ci_high", "min", "max"]
    sections = [("Claims over seeds", html_report.scorecard(result.claims_summary)),
                ("Key metrics (mean and 95% CI over seeds)",
                 html_report.table(key[["metric", *keep]] if len(key) else key, 30)),
                ("Figures", html_report.figures(pngs)),
                ("Stage timings (s, mean over seeds)", timing_table(result.aggregates)),
                ("Per seed", html_report.table(result.per_seed, 50)),
                ("All aggregates", html_report.table(result.aggregates, 60,
                                                     "all: replicate/aggregates.csv"))]
    parent.log_text(html_report.page(parent.client.get_run(parent.run_id).info.run_name,
                                     f"replicate parent {parent.run_id}; seeds are its children",
                                     lines, sections), "report.html")
    note = [f"- {lines[0]}"] + [f"- {r.metric}: {r.mean:.3g} [{r.ci_low:.3g}, {r.ci_high:.3g}]"
                                for r in key.itertuples(index=False)][:8]
    parent.describe("\n".join(note) + "\n\nSeeds are this run's children; full results: "
                    "report.html")
