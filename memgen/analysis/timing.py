"""Wall time per stage, as ``time/<stage>_s`` metrics: where a run's minutes go.

A :class:`StageTimer` is a stopwatch with laps: ``lap("capture")`` books the seconds since the
previous lap (or the start) to ``capture``. Laps add one line after each stage instead of
wrapping it in a block, so timing stays out of the way of the code it measures. A stage booked
twice (labelling per perturbation seed) adds up.
"""

from __future__ import annotations

import time

PREFIX = "time/"


class StageTimer:
    """Seconds per stage since the last lap; ``metrics()`` gives ``time/<stage>_s``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._mark = time.perf_counter()

    def restart(self) -> None:
        """Start the next lap now: what ran since the last lap is not booked anywhere."""
        self._mark = time.perf_counter()

    def lap(self, stage: str) -> float:
        """Book the seconds since the last lap to ``stage``; returns them."""
        now = time.perf_counter()
        spent = now - self._mark
        self.seconds[stage] = self.seconds.get(stage, 0.0) + spent
        self._mark = now
        return spent

    def metrics(self) -> dict[str, float]:
        return {f"{PREFIX}{stage}_s": value for stage, value in self.seconds.items()}


def is_timing(metric: str) -> bool:
    """Whether a metric is a stage time (it varies run to run; results do not)."""
    return metric.startswith(PREFIX)
