"""What a run shows a reader: numbers and the headline (``headline``), the text and HTML reports
(``report``, ``html_report``) and the reports of replicates, sweeps and comparisons
(``replicate_report``, ``sweep_report``, ``compare_report``). Figures are in ``plots/``.

Reports are logged through a :class:`memgen.tracking.run.TrackedRun`; nothing here trains.
"""
