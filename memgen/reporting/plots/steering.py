"""Figure of steering success against alpha, drawn against its controls and its cost."""

from __future__ import annotations

import matplotlib
import pandas as pd
from matplotlib.artist import Artist
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from memgen.reporting.plots.figures import new_figure

_DIRECTIONS = (("to_gen", "MEM -> GEN"), ("to_mem", "GEN -> MEM"))
_MARKERS = {"to_gen": "o", "to_mem": "s"}
_CONTROL_STYLES = ("--", ":", "-.", (0, (5, 1, 1, 1)))  # every control dashed, each its own way


def success_vs_alpha(grid_df: pd.DataFrame, tuned: tuple[int, float] | None = None) -> Figure:
    """Success per direction against alpha (one colour per k, controls dashed, 95% CI shaded),
    and the clean-accuracy drop of the selected neurons.

    ``grid_df`` is ``steering_grid``'s output; ``tuned`` the ``(k, alpha)`` the run steered
    with, marked with a star on every panel. A 2x2 grid: the fourth quadrant holds one legend that
    is split by meaning (colour = k, line style = control), so no legend covers a curve and the
    panels stay readable at the MLflow artifact viewer's width. The figure is not registered
    with pyplot (:func:`memgen.reporting.plots.figures.new_figure`).
    """
    fig = new_figure(figsize=(9.6, 7.6))
    axes = [fig.add_subplot(2, 2, i) for i in (1, 2, 3)]  # the 4th quadrant: the legend
    if grid_df.empty:  # still a figure, with empty panels
        grid_df = pd.DataFrame(columns=["k", "alpha", "direction", "method", "success", "ci_low",
                                        "ci_high", "clean_acc_drop"])
    ks = sorted(grid_df["k"].unique())
    colors = {k: matplotlib.colormaps["viridis"](i / max(1, len(ks) - 1) * 0.85)
              for i, k in enumerate(ks)}
    controls = sorted(m for m in grid_df["method"].unique() if m != "selected")
    styles = {m: _CONTROL_STYLES[i % len(_CONTROL_STYLES)] for i, m in enumerate(controls)}
    for ax, (direction, title) in zip(axes[:2], _DIRECTIONS, strict=True):
        part = grid_df[grid_df["direction"] == direction]
        for (k, method), rows in part.groupby(["k", "method"], sort=True):
            rows = rows.sort_values("alpha")
            selected = method == "selected"
            ax.plot(rows["alpha"], rows["success"], color=colors[k],
                    linestyle="-" if selected else styles[method], alpha=1.0 if selected else 0.6,
                    marker=_MARKERS[direction] if selected else None)
            if selected:
                ax.fill_between(rows["alpha"], rows["ci_low"], rows["ci_high"],
                                color=colors[k], alpha=0.15, linewidth=0)
        _mark_tuned(ax, part[part["method"] == "selected"], tuned, "success")
        ax.set(title=f"steer {title}", xlabel="alpha", ylabel="success (to target / n)",
               ylim=(-0.02, 1.02))
    ax = axes[2]
    chosen = grid_df[grid_df["method"] == "selected"]
    for (k, direction), rows in chosen.groupby(["k", "direction"], sort=True):
        rows = rows.sort_values("alpha")
        if rows["clean_acc_drop"].notna().any():
            ax.plot(rows["alpha"], rows["clean_acc_drop"], color=colors[k],
                    marker=_MARKERS.get(direction, "."))
    _mark_tuned(ax, chosen, tuned, "clean_acc_drop")
    ax.axhline(0.0, color="0.4", linewidth=1.0)
    ax.set(title="side effect on clean inputs", xlabel="alpha",
           ylabel="clean accuracy drop (fraction)")
    fig.tight_layout()
    _legend_cell(fig, colors, styles, tuned)
    return fig


def _legend_cell(fig: Figure, colors: dict, styles: dict,
                 tuned: tuple[int, float] | None) -> None:
    """The figure's one legend in the empty fourth quadrant: k by colour, controls by line
    style, directions by marker, the tuned setting by a star."""
    from matplotlib.lines import Line2D  # noqa: PLC0415

    handles: list[Artist] = [Line2D([], [], color=c, linewidth=2.5,
                                    label=f"k={k} selected neurons")
               for k, c in colors.items()]
    handles += [Line2D([], [], color="0.35", linestyle=style,
                       label=f"control: {m.removeprefix('control_')}")
                for m, style in styles.items()]
    handles += [Line2D([], [], color="0.35", marker=_MARKERS[d], linestyle="none",
                       label=f"{label} ({d})") for d, label in _DIRECTIONS]
    handles.append(Patch(facecolor="0.6", alpha=0.3, label="95% CI (selected)"))
    if tuned is not None:
        handles.append(Line2D([], [], color="tab:red", marker="*", markersize=14,
                              linestyle="none", label=f"tuned: k={tuned[0]}, alpha {tuned[1]:g}"))
    fig.legend(handles=handles, loc="center", bbox_to_anchor=(0.76, 0.26), frameon=False,
               fontsize=10)


def _mark_tuned(ax, rows: pd.DataFrame, tuned: tuple[int, float] | None, column: str) -> None:
    """A star at the (k, alpha) the run steered with, on each of its curves."""
    if tuned is None or rows.empty:
        return
    k, alpha = tuned
    at = rows[(rows["k"] == k) & ((rows["alpha"] - alpha).abs() < 1e-9)]
    at = at[at[column].notna()]
    if at.empty:
        ax.axvline(alpha, color="tab:red", linewidth=1.0, linestyle=":",
                   label=f"tuned alpha {alpha:g} (k={k})")
        return
    ax.scatter(at["alpha"], at[column], marker="*", s=260, color="tab:red", zorder=5,
               edgecolor="white", linewidth=0.8, label=f"tuned k={k}, alpha {alpha:g}")
