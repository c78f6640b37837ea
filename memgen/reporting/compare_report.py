"""``memgen compare``'s report: both scorecards, the headline metrics side by side and the paired
differences, printed and logged on B as ``compare/vs_<A>.html`` (plus the full table as CSV)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from memgen.reporting import html_report
from memgen.reporting.headline import KEY_METRICS
from memgen.tracking.run import TrackedRun


@dataclass
class Side:
    """One compared run: a single run (one seed) or a replicate (its finished seeds)."""

    run_id: str
    name: str
    experiment_id: str
    replicate: bool
    per_seed: dict[int, dict[str, float]]  # a single run: {its seed: its metrics}
    scorecard: str
    metrics: dict[str, float]  # a single run's metrics, or the replicate parent's


def headline_value(side: Side, key: str) -> str:
    """A run's value, or a replicate's mean [95% CI] over its seeds."""
    m = side.metrics
    if not side.replicate:
        return f"{m[key]:.4g}" if key in m else "n/a"
    if f"{key}/mean" not in m:
        return "n/a"
    low, high = m.get(f"{key}/ci_low", math.nan), m.get(f"{key}/ci_high", math.nan)
    return f"{m[f'{key}/mean']:.4g} [{low:.3g}, {high:.3g}]"


def headline_table(a: Side, b: Side) -> pd.DataFrame:
    return pd.DataFrame([{"metric": key, "A": headline_value(a, key), "B": headline_value(b, key)}
                         for key in KEY_METRICS])


def _shown(paired: pd.DataFrame) -> pd.DataFrame:
    """What the terminal shows: claim statistics, key metrics, then whatever else excludes 0."""
    key = paired["metric"].str.startswith("claims/") | paired["metric"].isin(KEY_METRICS)
    return pd.concat([paired[key], paired[~key & paired["excludes_0"]]])


def format_paired(paired: pd.DataFrame) -> str:
    lines = [f"{'metric':44s} {'n':>3s} {'A':>9s} {'B':>9s} {'B - A':>9s}  95% CI of B - A"]
    for r in paired.itertuples(index=False):
        ci = f"[{r.ci_low:.4g}, {r.ci_high:.4g}]" if math.isfinite(r.ci_low) else "n/a"
        mark = "  excludes 0" if r.excludes_0 else ""
        lines.append(f"{r.metric:44s} {r.n:3d} {r.mean_a:9.4g} {r.mean_b:9.4g} "
                     f"{r.diff:9.4g}  {ci}{mark}")
    return "\n".join(lines)


def log_comparison(tracked: TrackedRun, a: Side, b: Side, paired: pd.DataFrame | None,
                   note: str) -> str:
    """Log the comparison on B's run (``tracked``); returns the text the terminal shows."""
    heads = headline_table(a, b)
    text = [f"A: {a.name} ({a.run_id}{', replicate' if a.replicate else ''})",
            f"B: {b.name} ({b.run_id}{', replicate' if b.replicate else ''})", "",
            "== scorecard A ==", a.scorecard, "", "== scorecard B ==", b.scorecard, "",
            "== headline metrics ==", heads.to_string(index=False), "", note]
    if paired is not None:
        shown = _shown(paired)
        text += ["", "== paired difference B - A per seed ==", format_paired(shown),
                 f"({int(paired['excludes_0'].sum())} of {len(paired)} metrics' CIs exclude 0; "
                 f"all: compare/vs_{a.run_id}.csv on B)"]
    summary = "\n".join(text)
    sections = [("Scorecard A", f"<pre>{html_report.esc(a.scorecard)}</pre>"),
                ("Scorecard B", f"<pre>{html_report.esc(b.scorecard)}</pre>"),
                ("Headline metrics", html_report.table(heads, 40))]
    if paired is not None:
        tracked.log_frame(paired, f"compare/vs_{a.run_id}.csv")
        sections.append(("Paired difference B - A per seed (95% t-interval)",
                         html_report.table(paired, 400, note)))
    tracked.log_text(html_report.page(f"{b.name} vs {a.name}", f"A {a.run_id} · B {b.run_id}",
                                      text[:2] + [note], sections),
                     f"compare/vs_{a.run_id}.html")
    return summary
