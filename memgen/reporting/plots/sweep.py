"""Figures of an Optuna study for the sweep's parent run: history, importance, contour, Pareto.

Drawn with ``optuna.visualization.matplotlib`` (no plotly), which draws through pyplot: each
figure is drawn with interactive mode off and closed in pyplot before it is returned, and the
backend is left as the user set it (on a headless server pyplot picks Agg). A figure that the
study cannot support yet (importance needs two finished trials, a Pareto front two objectives)
is skipped with a note instead of failing the sweep that has already run.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import matplotlib.pyplot as plt
import optuna
from matplotlib.figure import Figure
from optuna.visualization import matplotlib as ovm


def _slug(metric: str) -> str:
    return metric.replace("/", "_")


def _figure(draw: Callable[[], object]) -> Figure:
    """The figure ``draw`` makes through pyplot, out of pyplot's registry again (also the ones
    a failing ``draw`` left behind)."""
    before = set(plt.get_fignums())
    try:
        with warnings.catch_warnings(), plt.ioff():  # optuna's matplotlib plots: experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            warnings.simplefilter("ignore", UserWarning)
            drawn = draw()
    finally:
        for number in set(plt.get_fignums()) - before:
            plt.close(number)
    axes: Any = drawn.flat[0] if hasattr(drawn, "flat") else drawn
    fig = axes.figure
    fig.set_size_inches(max(fig.get_figwidth(), 7.0), max(fig.get_figheight(), 5.0))
    fig.tight_layout()
    return fig


def _target(i: int) -> Callable[[optuna.trial.FrozenTrial], float]:
    return lambda t: t.values[i]


def study_figures(study: optuna.Study, metrics: Sequence[str],
                  params: Sequence[str]) -> tuple[dict[str, Figure], list[str]]:
    """Figures by artifact path, and one note per skipped figure.

    Per objective: ``sweep/history_<metric>.png``, ``sweep/importance_<metric>.png`` and, with
    exactly two searched parameters, ``sweep/contour_<metric>.png``; with 2-3 objectives also
    ``sweep/pareto_front.png``.
    """
    figures: dict[str, Figure] = {}
    notes: list[str] = []
    multi = len(metrics) > 1

    def add(path: str, draw: Callable[[], object]) -> None:
        try:
            figures[path] = _figure(draw)
        except Exception as exc:  # noqa: BLE001 - a missing figure must not fail the sweep
            notes.append(f"{path}: skipped ({type(exc).__name__}: {exc})"[:300])

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        return figures, ["no complete trial: no figures"]
    for i, metric in enumerate(metrics):
        target = _target(i) if multi else None
        name = _slug(metric)
        add(f"sweep/history_{name}.png", functools.partial(
            ovm.plot_optimization_history, study, target=target, target_name=metric))
        if len(complete) >= 2:
            add(f"sweep/importance_{name}.png", functools.partial(
                ovm.plot_param_importances, study, target=target, target_name=metric))
        else:
            notes.append(f"sweep/importance_{name}.png: skipped (needs 2 complete trials)")
        if len(params) == 2:
            add(f"sweep/contour_{name}.png", functools.partial(
                ovm.plot_contour, study, params=list(params), target=target, target_name=metric))
    if len(metrics) in (2, 3):
        add("sweep/pareto_front.png", lambda: ovm.plot_pareto_front(
            study, target_names=list(metrics)))
    return figures, notes
