"""Figures on their own Agg canvas: no pyplot state and no backend switch.

Importing or calling memgen leaves a notebook's matplotlib backend and pyplot's figure registry
as they were, and a long run can log many figures without keeping them open. ``fig.savefig``
writes the PNG; a notebook shows the returned Figure as it shows any other.
"""

from __future__ import annotations

from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def new_figure(**kwargs: Any) -> Figure:
    """A ``Figure(**kwargs)`` drawn by Agg, unknown to pyplot."""
    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig
