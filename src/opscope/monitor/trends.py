"""Trends of recent values, as the seed's ``calculate_trends`` intends them — without its bugs.

For each series over a recent window: the current value, the least-squares slope (units per
second), its direction, and the change in % from the first to the last value of the window. A
zero first value makes the change undefined: it is reported as ``None`` ("n/a"), never as 0 or a
division error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from opscope.store.database import FloatArray, IntArray

Direction = Literal["increasing", "decreasing", "steady"]


@dataclass(frozen=True)
class Trend:
    """Summary of one series over a window; ``slope`` is per second, ``change_percent`` in %."""

    current: float
    samples: int
    slope: float | None
    direction: Direction | None
    change_percent: float | None


def trend(timestamps_ms: IntArray, values: FloatArray) -> Trend | None:
    """The trend of samples ``values`` at ``timestamps_ms``; ``None`` when there are none.

    ``current`` is the last value as it is (NaN and ±Inf included). ``slope`` is the
    least-squares fit of the finite values against time in seconds (``None`` with fewer than two);
    ``direction`` is ``steady`` when the slope is exactly 0; ``change_percent`` =
    (last − first) / |first| × 100 over the finite values, ``None`` when first is 0 or there are
    none. ``samples`` counts all values.
    """
    if len(values) == 0:
        return None
    current = float(values[-1])
    keep = np.isfinite(values)
    ts, vals = timestamps_ms[keep], values[keep]
    if len(vals) == 0:
        return Trend(current, len(values), None, None, None)
    slope: float | None = None
    direction: Direction | None = None
    if len(vals) >= 2 and ts[-1] != ts[0]:
        seconds = (ts - ts[0]) / 1000.0
        slope = float(np.polyfit(seconds, vals, 1)[0])
        if abs(slope) < 1e-12 * max(1.0, float(np.abs(vals).max())):
            slope = 0.0
        direction = "increasing" if slope > 0 else "decreasing" if slope < 0 else "steady"
    first, last = float(vals[0]), float(vals[-1])
    change = None if first == 0 else (last - first) / abs(first) * 100.0
    return Trend(current, len(values), slope, direction, change)
