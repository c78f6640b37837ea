"""Figures of the neuron ranking table (``stats.rank_neurons``).

Figures come from :func:`memgen.reporting.plots.figures.new_figure`: no pyplot, no backend switch.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from memgen.reporting.plots.figures import new_figure

KIND_ORDER = ("resid", "mlp")


def abs_r_heatmap(table: pd.DataFrame) -> Figure:
    """abs(r) by layer (rows) and neuron index (columns), one panel per site kind."""
    missing = {"kind", "layer", "index", "abs_r"} - set(table.columns)
    if missing:
        raise ValueError(f"table: missing columns {sorted(missing)} (expected rank_neurons output)")
    kinds = [k for k in KIND_ORDER if (table["kind"] == k).any()]
    kinds += sorted(set(table["kind"]) - set(kinds))
    if not kinds:
        raise ValueError("table: no neurons to plot")
    vmax = float(table["abs_r"].max()) or 1.0
    fig = new_figure(figsize=(10, 2.2 + 2.0 * len(kinds)), layout="constrained")
    axes = fig.subplots(len(kinds), 1, squeeze=False)[:, 0]
    for ax, kind in zip(axes, kinds, strict=True):
        grid = table[table["kind"] == kind].pivot(index="layer", columns="index", values="abs_r")
        grid = grid.sort_index().sort_index(axis=1)
        layers = grid.index.to_numpy()
        image = ax.imshow(np.ma.masked_invalid(grid.to_numpy(dtype=float)), aspect="auto",
                          interpolation="nearest", cmap="viridis", vmin=0.0, vmax=vmax,
                          origin="lower")
        ax.set_yticks(np.arange(len(layers)), [str(v) for v in layers])
        ax.set_ylabel("layer")
        ax.set_xlabel("neuron index")
        ax.set_title(f"{kind}: abs(r) with MEM vs GEN")
        fig.colorbar(image, ax=ax, label="abs(r)")
    return fig
