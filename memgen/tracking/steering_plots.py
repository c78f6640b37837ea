"""Figure of steering success against alpha, drawn against its controls and its cost."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # headless: runs on servers and in Lightning callbacks

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

_DIRECTIONS = (("to_gen", "MEM -> GEN"), ("to_mem", "GEN -> MEM"))
_MARKERS = {"to_gen": "o", "to_mem": "s"}
_CONTROL_STYLES = ("--", ":", "-.", (0, (5, 1, 1, 1)))  # every control dashed, each its own way


def success_vs_alpha(grid_df: pd.DataFrame) -> Figure:
    """Success per direction against alpha (one colour per k, controls dashed, 95% CI shaded),
    and the clean-accuracy drop of the selected neurons on the last panel.

    ``grid_df`` is ``steering_grid``'s output. The figure is closed in pyplot before it is
    returned (no accumulation across calls); ``savefig`` and ``mlflow.log_figure`` work.
    """
    fig, axes = plt.subplots(1, 3, figsize=(13.0, 4.0))
    plt.close(fig)
    if grid_df.empty:  # still a figure, with empty panels
        grid_df = pd.DataFrame(columns=["k", "alpha", "direction", "method", "success", "ci_low",
                                        "ci_high", "clean_acc_drop"])
    ks = sorted(grid_df["k"].unique())
    colors = {k: plt.get_cmap("viridis")(i / max(1, len(ks) - 1) * 0.85)
              for i, k in enumerate(ks)}
    for ax, (direction, title) in zip(axes[:2], _DIRECTIONS, strict=True):
        part = grid_df[grid_df["direction"] == direction]
        controls = sorted(m for m in part["method"].unique() if m != "selected")
        for (k, method), rows in part.groupby(["k", "method"], sort=True):
            rows = rows.sort_values("alpha")
            selected = method == "selected"
            style = "-" if selected else _CONTROL_STYLES[controls.index(method) % 4]
            ax.plot(rows["alpha"], rows["success"], color=colors[k],
                    linestyle=style, alpha=1.0 if selected else 0.6,
                    marker=_MARKERS[direction] if selected else None,
                    label=f"k={k}" if selected else f"k={k} {method.removeprefix('control_')}")
            if selected:
                ax.fill_between(rows["alpha"], rows["ci_low"], rows["ci_high"],
                                color=colors[k], alpha=0.15, linewidth=0)
        ax.set(title=f"steer {title}", xlabel="alpha", ylabel="success (to target / n)",
               ylim=(-0.02, 1.02))
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    ax = axes[2]
    chosen = grid_df[grid_df["method"] == "selected"]
    for (k, direction), rows in chosen.groupby(["k", "direction"], sort=True):
        rows = rows.sort_values("alpha")
        if rows["clean_acc_drop"].notna().any():
            ax.plot(rows["alpha"], rows["clean_acc_drop"], color=colors[k],
                    marker=_MARKERS.get(direction, "."), label=f"k={k} {direction}")
    ax.axhline(0.0, color="0.4", linewidth=1.0)
    ax.set(title="side effect on clean inputs", xlabel="alpha",
           ylabel="clean accuracy drop (fraction)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
