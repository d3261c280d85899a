"""The arithmetic of PromQL's functions and aggregations, as pure functions over floats.

Each follows the Prometheus source named in its docstring (``promql/functions.go``,
``promql/engine.go``, ``promql/quantile.go``), including its handling of NaN and ±Inf.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from opscope.store.database import FloatArray, IntArray


def kahan_sum(values: Sequence[float]) -> float:
    """Sum with Neumaier-compensated (Kahan) summation, as Prometheus's ``kahanSumInc``."""
    total, compensation = 0.0, 0.0
    for value in values:
        t = total + value
        if math.isinf(t):
            compensation = 0.0
        elif abs(total) >= abs(value):
            compensation += (total - t) + value
        else:
            compensation += (value - t) + total
        total = t
    return total + compensation


def minimum(values: Sequence[float]) -> float:
    """``min``/``min_over_time``: NaN only when every value is NaN (Prometheus's rule)."""
    result = values[0]
    for value in values[1:]:
        if value < result or math.isnan(result):
            result = value
    return result


def maximum(values: Sequence[float]) -> float:
    """``max``/``max_over_time``: NaN only when every value is NaN (Prometheus's rule)."""
    result = values[0]
    for value in values[1:]:
        if value > result or math.isnan(result):
            result = value
    return result


def mean(values: Sequence[float]) -> float:
    """``avg``/``avg_over_time``: compensated sum over count."""
    return kahan_sum(values) / len(values)


def extrapolated_rate(
    timestamps: IntArray,
    values: FloatArray,
    *,
    range_start_ms: int,
    range_end_ms: int,
    is_counter: bool,
    is_rate: bool,
) -> float | None:
    """``rate``, ``increase`` (``is_counter``) and ``delta`` with Prometheus's extrapolation.

    Port of ``extrapolatedRate`` in ``promql/functions.go``: counter resets add the value before
    the reset; the result is extrapolated to the range boundaries when the first/last sample is
    within 1.1 × the average sample interval of them, else by half an interval; a counter is
    not extrapolated below zero. ``None`` with fewer than two samples.
    """
    n = len(values)
    if n < 2:
        return None
    result = float(values[-1] - values[0])
    if is_counter:
        previous = values[:-1]
        drops = values[1:] < previous
        result += float(previous[drops].sum())
    first_t, last_t = int(timestamps[0]), int(timestamps[-1])
    duration_to_start = (first_t - range_start_ms) / 1000.0
    duration_to_end = (range_end_ms - last_t) / 1000.0
    sampled_interval = (last_t - first_t) / 1000.0
    average_interval = sampled_interval / (n - 1)
    threshold = average_interval * 1.1
    if duration_to_start >= threshold:
        duration_to_start = average_interval / 2
    if is_counter and result > 0 and values[0] >= 0:
        duration_to_zero = sampled_interval * (float(values[0]) / result)
        duration_to_start = min(duration_to_start, duration_to_zero)
    if duration_to_end >= threshold:
        duration_to_end = average_interval / 2
    factor = (sampled_interval + duration_to_start + duration_to_end) / sampled_interval
    if is_rate:
        factor /= (range_end_ms - range_start_ms) / 1000.0
    return result * factor


def instant_rate(timestamps: IntArray, values: FloatArray) -> float | None:
    """``irate``: per-second rate between the last two samples (a drop is a counter reset).

    Port of ``instantValue`` in ``promql/functions.go``; ``None`` with fewer than two samples or
    when they share a timestamp.
    """
    if len(values) < 2:
        return None
    last, previous = float(values[-1]), float(values[-2])
    increase = last if last < previous else last - previous
    interval = (int(timestamps[-1]) - int(timestamps[-2])) / 1000.0
    if interval == 0:
        return None
    return increase / interval


def arithmetic(op: str, lhs: FloatArray, rhs: FloatArray | float) -> FloatArray:
    """``+ - * / % ^`` elementwise with IEEE 754 results like Go's (x/0 = ±Inf, 0/0 = NaN,
    ``%`` is ``math.Mod``: the sign of the dividend; ``^`` is ``math.Pow``)."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if op == "+":
            return lhs + rhs
        if op == "-":
            return lhs - rhs
        if op == "*":
            return lhs * rhs
        if op == "/":
            return lhs / rhs
        if op == "%":
            return np.fmod(lhs, rhs)
        if op == "^":
            return np.power(lhs, rhs)
    raise ValueError(f"not an arithmetic operator: {op}")


_COMPARE = {
    "==": np.equal,
    "!=": np.not_equal,
    ">": np.greater,
    "<": np.less,
    ">=": np.greater_equal,
    "<=": np.less_equal,
}


def comparison(op: str, lhs: FloatArray, rhs: FloatArray | float) -> npt.NDArray[np.bool_]:
    """``== != > < >= <=`` elementwise; NaN compares false except with ``!=`` (Go semantics)."""
    try:
        compare = _COMPARE[op]
    except KeyError:
        raise ValueError(f"not a comparison operator: {op}") from None
    result: npt.NDArray[np.bool_] = compare(lhs, rhs)
    return result


def count(values: Sequence[float]) -> float:
    """``count``/``count_over_time``."""
    return float(len(values))
