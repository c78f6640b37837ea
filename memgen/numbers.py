"""Numbers as a reader should see them: a rate of 0.86, not 0.8600000143051147."""

from __future__ import annotations

import math

import numpy as np

SIGNIFICANT = 4


def clean(value: float) -> float:
    """A float32 result (a torch metric) as its shortest decimal: 0.8600000143051147 -> 0.86.

    Lossless: a value float32 cannot hold exactly (any float64 arithmetic) is unchanged, so a
    logged metric still equals the number a caller computed from the same result.
    """
    value = float(value)
    if not math.isfinite(value) or float(np.float32(value)) != value:
        return value
    return float(str(np.float32(value)))


def rounded(value: float, digits: int = SIGNIFICANT) -> float:
    """``value`` to ``digits`` significant digits, for end-of-run summaries; whole numbers
    (counts, parameter totals) and non-finite values unchanged."""
    value = clean(value)
    if not math.isfinite(value) or value == 0 or value.is_integer():
        return value
    return float(f"{value:.{digits}g}")
