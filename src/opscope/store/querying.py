"""Instant and range queries of series selectors, with Prometheus's semantics.

The value of a series at evaluation time ``t`` is its newest sample with a timestamp in
``(t − lookback, t]`` (Prometheus ≥ 3.0 left-open window; lookback 5 minutes by default) — unless
that newest sample is a staleness marker, in which case the series has no value at ``t``.
A range query evaluates that rule at ``start, start + step, …, ≤ end``.
Source: Prometheus documentation, "Querying basics — Staleness", and ``promql/engine.go``.

The semantic functions (:func:`value_at`, :func:`values_at`) are pure functions over arrays;
:func:`instant_query` and :func:`range_query` fetch the arrays from the store and apply them.
They are the vector-selector layer the PromQL evaluator builds on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from opscope.errors import QueryError
from opscope.store.database import FloatArray, IntArray, Store, is_stale
from opscope.store.labels import Selector
from opscope.store.series import SeriesRef

#: Prometheus's default lookback delta (``--query.lookback-delta``), in milliseconds.
DEFAULT_LOOKBACK_MS = 5 * 60 * 1000
#: Prometheus refuses range queries with more steps than this ((end − start) / step).
MAX_STEPS = 11_000


@dataclass(frozen=True)
class InstantSample:
    """One series' value at an evaluation time, with the timestamp of the sample it came from."""

    ref: SeriesRef
    value: float
    sample_timestamp_ms: int


@dataclass(frozen=True)
class RangeSeries:
    """One series evaluated at each step of a range query (steps without a value are absent)."""

    ref: SeriesRef
    timestamps: IntArray
    values: FloatArray


def value_at(
    timestamps: IntArray, values: FloatArray, t_ms: int, lookback_ms: int
) -> tuple[int, float] | None:
    """The ``(sample timestamp, value)`` a series has at ``t_ms``, or ``None``.

    ``timestamps`` must be ascending. ``None`` when no sample lies in ``(t − lookback, t]`` or the
    newest one there is a staleness marker.
    """
    i = int(np.searchsorted(timestamps, t_ms, side="right")) - 1
    if i < 0 or timestamps[i] <= t_ms - lookback_ms or is_stale(values[i : i + 1])[0]:
        return None
    return int(timestamps[i]), float(values[i])


def values_at(
    timestamps: IntArray, values: FloatArray, steps: IntArray, lookback_ms: int
) -> tuple[IntArray, FloatArray]:
    """Vectorised :func:`value_at` at every time in ``steps``: the steps with a value, and it."""
    idx = np.searchsorted(timestamps, steps, side="right") - 1
    ok = idx >= 0
    idx = np.where(ok, idx, 0)
    ok &= timestamps[idx] > steps - lookback_ms
    picked = values[idx]
    ok &= ~is_stale(picked)
    return steps[ok], picked[ok]


def instant_query(
    store: Store, selector: Selector, t_ms: int, *, lookback_ms: int = DEFAULT_LOOKBACK_MS
) -> list[InstantSample]:
    """The value at ``t_ms`` of every series matched by ``selector`` that has one."""
    result = []
    for series in store.select(selector, t_ms - lookback_ms + 1, t_ms):
        found = value_at(series.timestamps, series.values, t_ms, lookback_ms)
        if found is not None:
            result.append(InstantSample(series.ref, found[1], found[0]))
    return result


def step_times(start_ms: int, end_ms: int, step_ms: int) -> IntArray:
    """Evaluation times ``start, start + step, …, ≤ end`` of a range query.

    Raises :class:`QueryError` for a non-positive step, ``end < start``, or
    ``(end − start) / step`` above :data:`MAX_STEPS` (Prometheus's rule and message).
    """
    if step_ms <= 0:
        raise QueryError(
            "zero or negative query resolution step widths are not accepted. Try a positive integer"
        )
    if end_ms < start_ms:
        raise QueryError("end timestamp must not be before start time")
    if (end_ms - start_ms) / step_ms > MAX_STEPS:
        raise QueryError(
            "exceeded maximum resolution of 11,000 points per timeseries. "
            "Try decreasing the query resolution (?step=XX)"
        )
    return np.arange(start_ms, end_ms + 1, step_ms, dtype=np.int64)


def range_query(
    store: Store,
    selector: Selector,
    start_ms: int,
    end_ms: int,
    step_ms: int,
    *,
    lookback_ms: int = DEFAULT_LOOKBACK_MS,
) -> list[RangeSeries]:
    """Every series matched by ``selector`` evaluated at each step (see :func:`step_times`)."""
    steps = step_times(start_ms, end_ms, step_ms)
    result = []
    for series in store.select(selector, start_ms - lookback_ms + 1, end_ms):
        ts, vals = values_at(series.timestamps, series.values, steps, lookback_ms)
        if len(ts):
            result.append(RangeSeries(series.ref, ts, vals))
    return result
