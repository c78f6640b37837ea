"""``memgen compare <A> <B>``: is B better than A, beyond the noise between seeds?

A and B are runs or replicate parents. Both scorecards (scored here with this command's
``claims.*``, so the thresholds agree) and the headline metrics go side by side. For two
replicates over the same seeds, every metric and claim statistic the seeds share gets the
paired difference B - A per seed, its mean and the 95% t-interval over those per-seed
differences (``t_interval``, df = n - 1), and whether the interval excludes 0: one model per
seed means the seed-to-seed spread cancels, which two separate CIs cannot show. p-values get no
interval (a difference of p-values is not an effect size).

Printed, and logged on B as ``compare/vs_<A>.html`` (plus the full table as CSV).
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from memgen.commands.replicate import COMMAND as REPLICATE
from memgen.commands.replicate import finished_children, summarise
from memgen.errors import ConfigError
from memgen.replicates.aggregate import is_p_value, summary_keys, t_interval
from memgen.replicates.claims import format_scorecard, score_claims
from memgen.reporting.compare_report import Side, log_comparison
from memgen.tracking.run import TrackedRun
from memgen.tracking.store import tracking_uri

PAIRED_COLUMNS = ["metric", "n", "mean_a", "mean_b", "diff", "ci_low", "ci_high", "excludes_0"]


def _finished_run(client: MlflowClient, run_id: str) -> Any:
    try:
        run = client.get_run(run_id)
    except Exception:  # noqa: BLE001 - MLflow's not-found error, or a malformed id
        raise ConfigError(f"compare: no run '{run_id}' in this tracking store") from None
    if run.info.status != "FINISHED":
        raise ConfigError(f"compare: run {run_id} is {run.info.status}, not FINISHED")
    return run


def with_claims(metrics: dict[str, float], cfg: DictConfig) -> dict[str, float]:
    """A run's metrics plus its claim statistics (``claims/<name>/value``) under ``claims.*``,
    p-value claims left out."""
    kept = {k: v for k, v in metrics.items() if not k.startswith("claims/")}
    return kept | {f"claims/{r.name}/value": r.value for r in score_claims(kept, cfg.claims)
                   if math.isfinite(r.value) and not is_p_value(r.statistic)}


def load_side(client: MlflowClient, cfg: DictConfig, run_id: str) -> Side:
    """A run or replicate parent, checked FINISHED, with its per-seed metrics and scorecard."""
    run = _finished_run(client, run_id)
    name, experiment = run.info.run_name, run.info.experiment_id
    if run.data.tags.get("memgen.command") == REPLICATE:
        kids = finished_children(client, run)
        if not kids:
            raise ConfigError(f"compare: replicate {run_id} has no finished seed")
        per_seed = {seed: dict(kid.data.metrics) for seed, kid in kids.items()}
        asked = [int(s) for s in run.data.tags.get("memgen.replicate.seeds", "").split(",")
                 if s.strip().lstrip("-").isdigit()]
        failed = [s for s in asked if s not in per_seed]
        result = summarise(cfg, per_seed, failed)
        return Side(run_id, name, experiment, True,
                    {s: with_claims(m, cfg) for s, m in per_seed.items()}, result.text,
                    result.metrics)
    metrics = dict(run.data.metrics)
    seed = run.data.tags.get("seed", "0")
    claims = score_claims(metrics, cfg.claims)
    return Side(run_id, name, experiment, False,
                {int(seed) if seed.lstrip("-").isdigit() else 0: with_claims(metrics, cfg)},
                format_scorecard(claims), metrics)


def paired_differences(a: dict[int, dict[str, float]], b: dict[int, dict[str, float]]
                       ) -> pd.DataFrame:
    """Per metric over the seeds both have: mean of A, of B, of B - A and its t-interval."""
    seeds = sorted(set(a) & set(b))
    both = {(side, s): m[s] for side, m in (("a", a), ("b", b)) for s in seeds}
    claims = ({k for k in set.intersection(*(set(m) for m in both.values()))
               if k.startswith("claims/")} if both else set())
    keys = sorted(claims) + [k for k in summary_keys(both)  # type: ignore[arg-type]
                             if not is_p_value(k)]
    rows = []
    for key in keys:
        diffs = [b[s][key] - a[s][key] for s in seeds]
        low, high = t_interval(diffs)
        mean = sum(diffs) / len(diffs)
        rows.append({"metric": key, "n": len(seeds),
                     "mean_a": sum(a[s][key] for s in seeds) / len(seeds),
                     "mean_b": sum(b[s][key] for s in seeds) / len(seeds), "diff": mean,
                     "ci_low": low, "ci_high": high,
                     "excludes_0": bool(math.isfinite(low) and (low > 0 or high < 0))})
    return pd.DataFrame(rows, columns=PAIRED_COLUMNS)


def compare(cfg: DictConfig, run_a: str, run_b: str) -> tuple[dict[str, float], dict[str, Any]]:
    """Both sides checked before anything is written; then print and log on B."""
    client = MlflowClient(tracking_uri(cfg))
    a, b = load_side(client, cfg, run_a), load_side(client, cfg, run_b)
    paired = None
    if a.replicate and b.replicate:
        common = sorted(set(a.per_seed) & set(b.per_seed))
        note = (f"paired over seeds {common}" if len(common) >= 2 else
                f"no paired difference: the replicates share {len(common)} seed(s) {common}")
        if len(common) >= 2:
            paired = paired_differences(a.per_seed, b.per_seed)
    else:
        note = "no paired difference: pairing needs two replicates over the same seeds"
    tracked = TrackedRun(client, run_b, b.experiment_id, tracking_uri(cfg))
    summary = log_comparison(tracked, a, b, paired, note)
    metrics = {} if paired is None else {
        f"{r.metric}/diff": r.diff for r in paired.itertuples(index=False)}
    return metrics, {"run_id": run_b, "experiment_id": b.experiment_id, "summary": summary,
                     "paired": paired, "a": a, "b": b}
