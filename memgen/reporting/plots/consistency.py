"""Figure of inter-task consistency: which tasks select the same neurons, against chance."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from memgen.reporting.plots.figures import new_figure


def overlap_matrix_figure(matrix_df: pd.DataFrame, expected_df: pd.DataFrame | None = None,
                          title: str = "Overlap of selected neurons (Jaccard)") -> Figure:
    """Task-by-task Jaccard heatmap with each value written in its cell.

    ``matrix_df`` is ``inter_task_consistency``'s matrix. With ``expected_df`` (e.g.
    ``overlap_matrix(tasks, overlaps, "expected_jaccard")``) each off-diagonal cell also shows
    its chance level, because a Jaccard index is only meaningful next to it. The figure is
    not registered with pyplot (:func:`memgen.reporting.plots.figures.new_figure`).
    """
    if matrix_df.shape[0] != matrix_df.shape[1] or list(matrix_df.index) != list(matrix_df.columns):
        raise ValueError("matrix_df: expected a square table with the same tasks as rows and "
                         f"columns, got rows {list(matrix_df.index)} and columns "
                         f"{list(matrix_df.columns)}")
    if matrix_df.empty:
        raise ValueError("matrix_df: no task to plot")
    if expected_df is not None:
        expected_df = expected_df.reindex(index=matrix_df.index, columns=matrix_df.columns)
    tasks = [str(t) for t in matrix_df.index]
    values = matrix_df.to_numpy(dtype=float)
    size = 1.6 + 1.1 * len(tasks)
    fig = new_figure(figsize=(size + 1.2, size))
    ax = fig.subplots()
    image = ax.imshow(np.ma.masked_invalid(values), cmap="viridis", vmin=0.0, vmax=1.0)
    for i in range(len(tasks)):
        for j in range(len(tasks)):
            v = values[i, j]
            text = "–" if math.isnan(v) else f"{v:.2f}"
            if expected_df is not None and i != j:
                e = float(expected_df.iat[i, j])
                if not math.isnan(e):
                    text += f"\n(chance {e:.3f})"
            color = "white" if not math.isnan(v) and v <= 0.6 else "black"  # dark cells: white
            ax.text(j, i, text, ha="center", va="center", color=color, fontsize=9)
    ax.set_xticks(np.arange(len(tasks)), tasks, rotation=30, ha="right")
    ax.set_yticks(np.arange(len(tasks)), tasks)
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="Jaccard index")
    fig.tight_layout()
    return fig
