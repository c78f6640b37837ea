"""Figure of probe accuracy by layer, drawn against the baselines it has to beat."""

from __future__ import annotations

import math
from typing import Any

from matplotlib.figure import Figure

from memgen.analysis.probes import ProbeReport
from memgen.reporting.plots.figures import new_figure

_BASELINE_STYLE: dict[str, Any] = {"color": "0.4", "linewidth": 1.0}


def probe_accuracy_by_layer(report: ProbeReport) -> Figure:
    """Held-out accuracy per layer, one line per site kind, with baselines and the top-k probe.

    The figure is not registered with pyplot (:func:`memgen.reporting.plots.figures.new_figure`), so
    callers that log a figure every validation epoch do not accumulate open figures.
    """
    fig = new_figure(figsize=(8.0, 4.0))
    ax = fig.subplots()
    table = report.table.sort_values(["kind", "layer"])
    for kind, rows in table.groupby("kind", sort=True):
        (line,) = ax.plot(rows["layer"], rows["acc"], marker="o", label=f"{kind} probe")
        if rows["shuffled_acc"].notna().sum() > 1:
            ax.plot(
                rows["layer"],
                rows["shuffled_acc"],
                marker=".",
                linestyle=":",
                alpha=0.6,
                color=line.get_color(),
                label=f"{kind} shuffled labels",
            )

    if "lens_acc" in table and table["lens_acc"].notna().any():
        lens = table[table["lens_acc"].notna()]
        ax.plot(lens["layer"], lens["lens_acc"], marker="s", linestyle="--",
                label="answer lens (each item's own answers)")

    ax.axhline(report.majority_acc, linestyle="--", label="majority class", **_BASELINE_STYLE)
    if report.input_only_acc is not None:
        ax.axhline(
            report.input_only_acc,
            linestyle=(0, (1, 1)),
            label="input only (prompt tokens)",
            **_BASELINE_STYLE,
        )
    ax.axhline(
        report.shuffled_acc,
        linestyle="-.",
        label=f"shuffled labels ({report.best_site})",
        **_BASELINE_STYLE,
    )

    layers = sorted(int(x) for x in table["layer"].unique())
    ticks = layers[:: max(1, len(layers) // 12)]  # keep deep models' axes readable
    labels = [str(x) for x in ticks]
    if report.topk_acc is not None and not math.isnan(report.topk_acc):
        last_layer = layers[-1] if layers else 0
        ticks, labels = [*ticks, last_layer + 1], [*labels, "top-k"]
        ax.plot(
            [last_layer + 1],
            [report.topk_acc],
            marker="*",
            markersize=14,
            linestyle="none",
            color="tab:red",
            label=f"top-k neurons (k={report.n_topk})",
        )

    ax.set_xticks(ticks, labels)
    ax.set_xlabel("layer")
    ax.set_ylabel("held-out accuracy")
    ax.set_ylim(0.0, 1.05)
    ax.set_title(f"Behavior probes (train {report.n_train}, eval {report.n_eval})")
    ax.grid(alpha=0.3)
    # outside the axes: inside, it hid the lines it names at the artifact viewer's width
    ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    return fig
