"""What the parent run shows once the trials are done: counts, best or Pareto trials, figures.

The best trial's values go to *tags* ``best/<key>`` (MLflow params are immutable, and a resumed
study can find a better trial later) and its key metrics to metrics ``best/<metric>``, so the
parent's row in the run list shows the result. A multi-objective study has no single best: its
Pareto trials go to ``sweep/pareto.csv`` and the tag ``pareto/trials``, and each objective's
best value over them to ``best/<objective>``. Every trial is a row of ``sweep/trials.csv``;
``report.html`` shows the outcome, the trials and the figures on one page.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import optuna
import pandas as pd

from memgen.numbers import clean
from memgen.reporting import html_report
from memgen.reporting.headline import KEY_METRICS
from memgen.reporting.plots.sweep import study_figures
from memgen.reporting.report import finite
from memgen.tracking.run import TrackedRun

if TYPE_CHECKING:  # types only: the sweep machinery sits above reporting
    from memgen.sweeps.objectives import Objective
    from memgen.sweeps.space import Param

State = optuna.trial.TrialState


def trials_table(study: optuna.Study, objectives: Sequence[Objective]) -> pd.DataFrame:
    """One row per trial: number, state, objective values by metric name, params, child run."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        row = {"number": t.number, "state": t.state.name,
               "mlflow_run_id": t.user_attrs.get("mlflow_run_id", "")}
        values = t.values or [math.nan] * len(objectives)
        if t.state == State.PRUNED and t.intermediate_values:  # the last reported balance
            row["last_intermediate"] = t.intermediate_values[max(t.intermediate_values)]
        for o, v in zip(objectives, values, strict=False):
            row[o.metric] = v
        row.update(t.params)
        row["duration_s"] = t.duration.total_seconds() if t.duration else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def _child_metrics(parent: TrackedRun, trial: optuna.trial.FrozenTrial) -> dict[str, float]:
    run_id = trial.user_attrs.get("mlflow_run_id")
    return dict(parent.client.get_run(run_id).data.metrics) if run_id else {}


def log_study(parent: TrackedRun, study: optuna.Study, objectives: Sequence[Objective],
              params: Sequence[Param]) -> tuple[dict[str, float], str]:
    """Log the study's outcome on the parent run; returns its metrics and a text summary."""
    trials = study.get_trials(deepcopy=False)
    counts = {s: sum(t.state == s for t in trials) for s in (State.COMPLETE, State.PRUNED,
                                                             State.FAIL)}
    metrics = {"sweep/n_trials": float(len(trials)),
               "sweep/n_complete": float(counts[State.COMPLETE]),
               "sweep/n_pruned": float(counts[State.PRUNED]),
               "sweep/n_failed": float(counts[State.FAIL])}
    table = trials_table(study, objectives)
    parent.log_frame(table, "sweep/trials.csv")
    names = [o.metric for o in objectives]
    lines = [f"study {study.study_name}: {len(trials)} trials, {counts[State.COMPLETE]} complete, "
             f"{counts[State.PRUNED]} pruned, {counts[State.FAIL]} failed"]
    if counts[State.COMPLETE] and len(objectives) == 1:
        best = study.best_trial
        parent.set_tags({f"best/{k}": v for k, v in best.params.items()}
                        | {"best/trial_number": best.number,
                           "best/mlflow_run_id": best.user_attrs.get("mlflow_run_id", "")})
        best_metrics = {f"best/{k}": v for k, v in _child_metrics(parent, best).items()
                        if k in KEY_METRICS}
        best_metrics[f"best/{names[0]}"] = best.value if best.value is not None else math.nan
        metrics |= finite(best_metrics)
        lines.append(f"best trial {best.number}: {names[0]}={best.value:.4f}  "
                     + "  ".join(f"{k}={v}" for k, v in best.params.items()))
    elif counts[State.COMPLETE]:
        pareto = sorted(study.best_trials, key=lambda t: t.number)
        numbers = {t.number for t in pareto}
        parent.log_frame(table[table["number"].isin(numbers)], "sweep/pareto.csv")
        parent.set_tags({"pareto/trials": ",".join(str(n) for n in sorted(numbers))})
        metrics["sweep/n_pareto"] = float(len(pareto))
        for i, o in enumerate(objectives):  # each objective's best over the front
            values = [t.values[i] for t in pareto]
            metrics[f"best/{o.metric}"] = max(values) if o.direction == "maximize" \
                else min(values)
        lines.append(f"Pareto front ({', '.join(f'{o.direction} {o.metric}' for o in objectives)})"
                     f": {len(pareto)} trials")
        for t in pareto:
            vals = "  ".join(f"{n}={v:.4f}" for n, v in zip(names, t.values, strict=True))
            lines.append(f"  trial {t.number}: {vals}  "
                         + "  ".join(f"{k}={v}" for k, v in t.params.items()))
    # as logged (float32 noise off): equal to the trials' own values, which Optuna compares
    metrics = {k: clean(v) for k, v in finite(metrics).items()}
    parent.log_metrics(metrics)
    figures, notes = study_figures(study, names, [p.key for p in params])
    pngs = {path: parent.log_figure(fig, path) for path, fig in figures.items()}
    if notes:
        parent.set_tags({"sweep.figure_notes": " | ".join(notes)[:5000]})
    log_sweep_report(parent, study.study_name, lines, metrics, table, pngs, notes)
    return metrics, "\n".join(lines)


def log_sweep_report(parent: TrackedRun, study_name: str, lines: list[str],
                     metrics: dict[str, float], table: pd.DataFrame, pngs: dict[str, bytes],
                     notes: Sequence[str]) -> None:
    """``report.html`` and the description of the parent: outcome, best values, trials."""
    best = pd.DataFrame([{"metric": k, "value": v} for k, v in sorted(metrics.items())
                         if k.startswith("best/")])
    shown = table.sort_values("number") if "number" in table else table
    sections = [("Best trial: key metrics", html_report.table(best, 40)),
                ("Figures", html_report.figures(pngs)),
                ("Trials", html_report.table(shown, 50, "all trials: sweep/trials.csv")),
                ("Notes", "<br>".join(html_report.esc(n) for n in notes))]
    parent.log_text(html_report.page(f"sweep {study_name}", f"parent run {parent.run_id}",
                                     lines, sections), "report.html")
    parent.describe("\n".join(f"- {line.strip()}" for line in lines)
                    + "\n\nTrials are this run's children; full results: report.html")
