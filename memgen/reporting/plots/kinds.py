"""Figure of the intervention kinds side by side (steering/kinds.csv)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from memgen.reporting.plots.figures import new_figure

_PANELS = (("success", "success (95% CI) and strongest control (x)"),
           ("clean_acc_drop", "clean accuracy drop"), ("kl", "KL on clean inputs"),
           ("wrong_way", "share pushed the wrong way (margin)"))


def kinds_figure(table: pd.DataFrame) -> Figure:
    """One bar per (kind, positions), per direction (to_gen / to_mem side by side), in four
    panels: success with its CI and the strongest control as a cross, clean drop, KL and the
    share of items whose margin moved away from the target."""
    fig = new_figure(figsize=(max(10.0, 0.45 * len(table) + 4), 8.5))
    labels = list(dict.fromkeys(f"{r.kind} {r.positions}" for r in table.itertuples()))
    x = np.arange(len(labels))
    width = 0.38
    for i, (column, title) in enumerate(_PANELS):
        ax = fig.add_subplot(2, 2, i + 1)
        for j, direction in enumerate(("to_gen", "to_mem")):
            part = table[table["direction"] == direction]
            pos = {f"{r.kind} {r.positions}": r for r in part.itertuples()}
            xs = [x[n] + (j - 0.5) * width for n, lab in enumerate(labels) if lab in pos]
            rows = [pos[lab] for lab in labels if lab in pos]
            if not rows or column not in table.columns:
                continue
            values = [getattr(r, column) for r in rows]
            kw: dict[str, Any] = {}
            if column == "success":
                kw["yerr"] = np.array([[max(0.0, r.success - r.ci_low) for r in rows],
                                       [max(0.0, r.ci_high - r.success) for r in rows]])
            ax.bar(xs, values, width, label=direction, **kw)
            if column == "success":
                ax.scatter(xs, [r.max_control_success for r in rows], marker="x", color="k",
                           zorder=3)
        ax.set_xticks(x, labels, fontsize=7, rotation=90)
        ax.set_title(title, fontsize=9)
        if i == 0:
            ax.set_ylim(0, 1.02)
            ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
