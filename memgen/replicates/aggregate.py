"""Across-seed statistics of a replicate: every shared summary metric, and the claims.

The 95% confidence interval is Student's t-interval, mean +- t(0.975, n-1) * sd / sqrt(n). A
replicate has 3-10 seeds: a bootstrap over so few values has only a handful of distinct
resamples and its percentile interval is known to undercover (it cannot be wider than the
observed range), while the t-interval is exact for normal data and widens correctly as n
shrinks. With one seed there is no interval (nan).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from memgen.replicates.claims import NA, PASS, ClaimResult

CONFIDENCE = 0.95
# Not summaries of a run's result: end values of per-step curves, sizes fixed by the config,
# and the run's own claim verdicts (the replicate scores every seed itself).
_NOT_SUMMARIES = ("train/", "lr-", "epoch", "model/", "claims/")


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float]:
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


def summary_keys(per_seed: Mapping[int, Mapping[str, float]]) -> list[str]:
    """The summary metrics every finished seed logged (finite on each), sorted."""
    keys = None
    for metrics in per_seed.values():
        finite = {k for k, v in metrics.items() if v is not None and math.isfinite(float(v))}
        keys = finite if keys is None else keys & finite
    return sorted(k for k in keys or () if not k.startswith(_NOT_SUMMARIES)
                  and not k.endswith(("_step", "_epoch")))


def aggregate(per_seed: Mapping[int, Mapping[str, float]]) -> pd.DataFrame:
    """One row per shared metric: n, mean, std, median, min, max, ci_low, ci_high."""
    rows = [{"metric": key, **describe([per_seed[s][key] for s in sorted(per_seed)])}
            for key in summary_keys(per_seed)]
    return pd.DataFrame(rows, columns=["metric", "n", "mean", "std", "median", "min", "max",
                                       "ci_low", "ci_high"])


def per_seed_table(per_seed: Mapping[int, Mapping[str, float]],
                   keys: Sequence[str]) -> pd.DataFrame:
    """Seeds as rows, the shared metrics as columns."""
    return pd.DataFrame([{"seed": s, **{k: per_seed[s][k] for k in keys}}
                         for s in sorted(per_seed)])


def aggregate_metrics(table: pd.DataFrame) -> dict[str, float]:
    """``<metric>/mean``, ``/ci_low``, ``/ci_high`` for the parent run (finite values only)."""
    out: dict[str, float] = {}
    for row in table.itertuples(index=False):
        for stat in ("mean", "ci_low", "ci_high"):
            value = float(getattr(row, stat))
            if math.isfinite(value):
                out[f"{row.metric}/{stat}"] = value
    return out


def claims_over_seeds(scored: Mapping[int, list[ClaimResult]], failed: Sequence[int]
                      ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per claim and seed, one row per claim with its pass count and CI).

    A failed seed counts as a seed that did not pass: ``n_pass / n_seeds`` is over every seed
    asked for, finished or not.
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
        stats_ = describe(values) if values else {"mean": math.nan, "ci_low": math.nan,
                                                   "ci_high": math.nan}
        summary.append({
            "claim": name, "statistic": first.statistic, "op": first.op,
            "threshold": first.threshold, "n_seeds": n_seeds,
            "n_pass": sum(r.verdict == PASS for r in rows), "n_na": n_na,
            "pass_rate": (sum(r.verdict == PASS for r in rows) / n_seeds) if n_seeds else 0.0,
            "mean": stats_["mean"], "ci_low": stats_["ci_low"], "ci_high": stats_["ci_high"]})
    return long, pd.DataFrame(summary)


def _claim_names(scored: Mapping[int, list[ClaimResult]]) -> list[str]:
    return list(dict.fromkeys(r.name for rows in scored.values() for r in rows))


def format_replicate_scorecard(summary: pd.DataFrame) -> str:
    """The replicate's scorecard: pass count and the statistic's mean and CI over seeds."""
    def num(x: float) -> str:
        return "n/a" if not math.isfinite(x) else f"{x:.3f}"

    lines = [f"{'claim':16s} {'statistic':48s} {'threshold':>10s}  {'pass':>5s}  "
             f"mean [95% CI]"]
    for r in summary.itertuples(index=False):
        threshold = f"{r.op} {r.threshold:g}"
        passed = "n/a" if r.n_na == r.n_seeds else f"{r.n_pass}/{r.n_seeds}"
        ci = f"{num(r.mean)} [{num(r.ci_low)}, {num(r.ci_high)}]" if math.isfinite(r.mean) \
            else "n/a"
        lines.append(f"{r.claim:16s} {r.statistic:48s} {threshold:>10s}  {passed:>5s}  {ci}")
    return "\n".join(lines)
