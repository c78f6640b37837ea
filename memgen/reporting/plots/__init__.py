"""Figures, one module per analysis stage. Every figure comes from
:func:`memgen.reporting.plots.figures.new_figure`: no pyplot registry, no backend switch, so a
notebook's matplotlib settings are left as they were."""
