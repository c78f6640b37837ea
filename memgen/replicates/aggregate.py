"""Across-seed statistics of a replicate: every shared summary metric, and the claims.

The 95% confidence interval is Student's t-interval, mean +- t(0.975, n-1) * sd / sqrt(n). A
replicate has 3-10 seeds: a bootstrap over so few values has only a handful of distinct
resamples and its percentile interval is known to undercover (it cannot be wider than the
observed range), while the t-interval is exact for normal data and widens correctly as n
shrinks. With one seed there is no interval (nan).

A p-value is not averaged: the mean of 1e-60 and 1e-3 says nothing, and its t-interval goes
below 0. A metric whose name says it is a p-value (``.../p_value``) gets its worst (largest)
value, its median and how many seeds are at or below the threshold (``claims.max_p_value``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from memgen.replicates.claims import NA, PASS, ClaimResult

CONFIDENCE = 0.95
# Not summaries of a run's result: end values of per-step curves, sizes fixed by the config,
# the run's own claim verdicts (the replicate scores every seed itself), and MLflow's system
# metrics (the host's disk and CPU: `compare` found a "significant" disk-usage difference).
_NOT_SUMMARIES = ("train/", "lr-", "epoch", "model/", "claims/", "system/")
COLUMNS = ["metric", "n", "mean", "std", "median", "min", "max", "ci_low", "ci_high", "worst",
           "n_below"]
_P_VALUE = re.compile(r"(^|[/_.\- ])p[_-]?value", re.IGNORECASE)


def is_p_value(name: str) -> bool:
    """Whether a metric or claim statistic is a p-value (``consistency/intra/p_value``)."""
    return bool(_P_VALUE.search(name))


def t_interval(values: Sequence[float] | np.ndarray, confidence: float = CONFIDENCE
               ) -> tuple[float, float]:
    """(low, high) of the t-interval around the mean; nan for fewer than 2 values."""
    x = np.asarray(values, dtype=float)
    if x.size < 2:
        return math.nan, math.nan
    mean, sem = float(x.mean()), float(x.std(ddof=1)) / math.sqrt(x.size)
    if sem == 0:
        return mean, mean
    low, high = stats.t.interval(confidence, x.size - 1, loc=mean, scale=sem)
    return float(low), float(high)


def describe(values: Sequence[float]) -> dict[str, float]:
    """n, mean, sd, median, min, max and the 95% CI of one metric over seeds."""
    x = np.asarray(values, dtype=float)
    low, high = t_interval(x)
    return {"n": float(x.size), "mean": float(x.mean()),
            "std": float(x.std(ddof=1)) if x.size > 1 else math.nan,
            "median": float(np.median(x)), "min": float(x.min()), "max": float(x.max()),
            "ci_low": low, "ci_high": high}


def describe_p_values(values: Sequence[float], threshold: float) -> dict[str, float]:
    """n, median, min, max, the worst (largest) p-value and the count at or below
    ``threshold``; no mean, sd or t-interval (nan)."""
    x = np.asarray(values, dtype=float)
    return {"n": float(x.size), "mean": math.nan, "std": math.nan,
            "median": float(np.median(x)), "min": float(x.min()), "max": float(x.max()),
            "ci_low": math.nan, "ci_high": math.nan, "worst": float(x.max()),
            "n_below": float(np.sum(x <= threshold))}


def summary_keys(per_seed: Mapping[int, Mapping[str, float]]) -> list[str]:
    """The summary metrics every finished seed logged (finite on each), sorted."""
    keys = None
    for metrics in per_seed.values():
        finite = {k for k, v in metrics.items() if v is not None and math.isfinite(float(v))}
        keys = finite if keys is None else keys & finite
    return sorted(k for k in keys or () if not k.startswith(_NOT_SUMMARIES)
                  and not k.endswith(("_step", "_epoch")))


def aggregate(per_seed: Mapping[int, Mapping[str, float]], p_threshold: float = 0.01
              ) -> pd.DataFrame:
    """One row per shared metric: n, mean, std, median, min, max, ci_low, ci_high; p-values
    get worst and n_below (at or below ``p_threshold``) instead of a mean and CI."""
    rows = []
    for key in summary_keys(per_seed):
        values = [per_seed[s][key] for s in sorted(per_seed)]
        stats_ = describe_p_values(values, p_threshold) if is_p_value(key) else describe(values)
        rows.append({"metric": key, **stats_})
    return pd.DataFrame(rows, columns=COLUMNS)


def per_seed_table(per_seed: Mapping[int, Mapping[str, float]],
                   keys: Sequence[str]) -> pd.DataFrame:
    """Seeds as rows, the shared metrics as columns."""
    return pd.DataFrame([{"seed": s, **{k: per_seed[s][k] for k in keys}}
                         for s in sorted(per_seed)])


def aggregate_metrics(table: pd.DataFrame) -> dict[str, float]:
    """``<metric>/mean``, ``/ci_low``, ``/ci_high`` for the parent run (finite values only);
    for a p-value ``/worst``, ``/median`` and ``/n_below``."""
    out: dict[str, float] = {}
    for row in table.itertuples(index=False):
        stats_ = ("worst", "median", "n_below") if is_p_value(row.metric) else (
            "mean", "ci_low", "ci_high")
        for stat in stats_:
            value = float(getattr(row, stat))
            if math.isfinite(value):
                out[f"{row.metric}/{stat}"] = value
    return out


def claims_over_seeds(scored: Mapping[int, list[ClaimResult]], failed: Sequence[int]
                      ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per claim and seed, one row per claim with its pass count and CI).

    A failed seed counts as a seed that did not pass: ``n_pass / n_seeds`` is over every seed
    asked for, finished or not. A p-value claim has its median and worst instead of a CI.
    """
    long = pd.DataFrame([{"seed": seed, **row.row()} for seed in sorted(scored)
                         for row in scored[seed]]
                        + [{"seed": seed, "claim": name, "verdict": "failed run"}
                           for seed in sorted(failed) for name in _claim_names(scored)])
    summary = []
    n_seeds = len(scored) + len(failed)
    for name in _claim_names(scored):
        rows = [r for seed in sorted(scored) for r in scored[seed] if r.name == name]
        values = [r.value for r in rows if r.verdict != NA]
        first = rows[0]
        n_na = sum(r.verdict == NA for r in rows)
        p_value = is_p_value(first.statistic)
        stats_ = {"mean": math.nan, "ci_low": math.nan, "ci_high": math.nan,
                  "median": math.nan, "worst": math.nan}
        if values:
            stats_ |= (describe_p_values(values, first.threshold) if p_value
                       else describe(values))
        summary.append({
            "claim": name, "statistic": first.statistic, "op": first.op,
            "threshold": first.threshold, "n_seeds": n_seeds,
            "n_pass": sum(r.verdict == PASS for r in rows), "n_na": n_na,
            "pass_rate": (sum(r.verdict == PASS for r in rows) / n_seeds) if n_seeds else 0.0,
            "mean": stats_["mean"], "ci_low": stats_["ci_low"], "ci_high": stats_["ci_high"],
            "median": stats_["median"], "worst": stats_.get("worst", math.nan)})
    return long, pd.DataFrame(summary)


def _claim_names(scored: Mapping[int, list[ClaimResult]]) -> list[str]:
    return list(dict.fromkeys(r.name for rows in scored.values() for r in rows))


def format_replicate_scorecard(summary: pd.DataFrame) -> str:
    """The replicate's scorecard: pass count and the statistic's mean and CI over seeds (a
    p-value: its worst and median)."""
    def num(x: float) -> str:
        return "n/a" if not math.isfinite(x) else f"{x:.3f}"

    lines = [f"{'claim':16s} {'statistic':48s} {'threshold':>10s}  {'pass':>5s}  "
             f"mean [95% CI] (p-value: worst, median)"]
    for r in summary.itertuples(index=False):
        threshold = f"{r.op} {r.threshold:g}"
        passed = "n/a" if r.n_na == r.n_seeds else f"{r.n_pass}/{r.n_seeds}"
        if is_p_value(r.statistic) and math.isfinite(r.worst):
            ci = f"worst {r.worst:.2g}, median {r.median:.2g}"
        else:
            ci = f"{num(r.mean)} [{num(r.ci_low)}, {num(r.ci_high)}]" if math.isfinite(r.mean) \
                else "n/a"
        lines.append(f"{r.claim:16s} {r.statistic:48s} {threshold:>10s}  {passed:>5s}  {ci}")
    return "\n".join(lines)
