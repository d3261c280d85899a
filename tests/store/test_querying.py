"""Instant and range query semantics (Prometheus: lookback window (t − 5m, t], staleness)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from opscope.errors import QueryError
from opscope.store import (
    STALE_NAN,
    Batch,
    Store,
    instant_query,
    parse_selector,
    range_query,
    step_times,
    value_at,
    values_at,
)

MIN = 60_000  # one minute in ms
LOOKBACK = 5 * MIN


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store.open(tmp_path)
    yield s
    s.close()


def put(store: Store, name: str, t_ms: int, value: float) -> None:
    sid = store.series_id(name, ())
    store.append([Batch(name, t_ms, np.array([sid]), np.array([value]))])


def at(store: Store, name: str, t_ms: int) -> float | None:
    result = instant_query(store, parse_selector(name), t_ms, lookback_ms=LOOKBACK)
    return result[0].value if result else None


def test_instant_query_takes_the_newest_sample_in_the_lookback_window(store: Store) -> None:
    put(store, "m", 0, 1.0)
    put(store, "m", 2 * MIN, 2.0)
    assert at(store, "m", 2 * MIN - 1) == 1.0
    assert at(store, "m", 2 * MIN) == 2.0
    # 2.0 was sampled at 2m: still visible until 7m, excluded at exactly 7m (left-open window).
    assert at(store, "m", 7 * MIN - 1) == 2.0
    assert at(store, "m", 7 * MIN) is None
    assert at(store, "m", -1) is None  # before the first sample


def test_a_staleness_marker_ends_the_series_at_once(store: Store) -> None:
    put(store, "m", 0, 95.0)
    put(store, "m", 1 * MIN, STALE_NAN)
    put(store, "m", 2 * MIN, 96.0)
    assert at(store, "m", 30_000) == 95.0
    assert at(store, "m", 1 * MIN) is None  # marker newer than the value: no value
    assert at(store, "m", 90_000) is None
    assert at(store, "m", 2 * MIN) == 96.0


def test_a_plain_gap_is_bridged_by_the_lookback(store: Store) -> None:
    put(store, "m", 0, 95.0)
    put(store, "m", 4 * MIN, 95.0)  # three missed samples, no marker
    assert [at(store, "m", t * MIN) for t in range(5)] == [95.0] * 5


def test_instant_result_reports_the_sample_timestamp(store: Store) -> None:
    put(store, "m", 1000, 7.0)
    (sample,) = instant_query(store, parse_selector("m"), 61_000, lookback_ms=LOOKBACK)
    assert (sample.value, sample.sample_timestamp_ms) == (7.0, 1000)


def test_range_query_evaluates_each_step(store: Store) -> None:
    put(store, "m", 0, 1.0)
    put(store, "m", 3 * MIN, 2.0)
    put(store, "m", 4 * MIN, STALE_NAN)
    put(store, "m", 10 * MIN, 3.0)
    (series,) = range_query(store, parse_selector("m"), 0, 12 * MIN, MIN, lookback_ms=LOOKBACK)
    # steps 0..12 min: 1 until 3m, 2 at 3m, stale from 4m, nothing until 10m, 3 after.
    assert series.timestamps.tolist() == [t * MIN for t in (0, 1, 2, 3, 10, 11, 12)]
    assert series.values.tolist() == [1.0, 1.0, 1.0, 2.0, 3.0, 3.0, 3.0]


def test_range_query_uses_samples_from_before_start(store: Store) -> None:
    put(store, "m", 0, 5.0)
    (series,) = range_query(store, parse_selector("m"), 4 * MIN, 6 * MIN, MIN, lookback_ms=LOOKBACK)
    assert series.timestamps.tolist() == [4 * MIN]  # 5m and 6m are outside (t - 5m, t]


def test_pure_functions_agree_with_each_other() -> None:
    ts = np.array([0, 10, 20, 30], dtype=np.int64)
    vals = np.array([1.0, 2.0, STALE_NAN, 4.0])
    steps = np.arange(-5, 50, 5, dtype=np.int64)
    got_t, got_v = values_at(ts, vals, steps, lookback_ms=15)
    one_by_one = [(int(t), value_at(ts, vals, int(t), 15)) for t in steps]
    assert [(t, v) for t, v in one_by_one if v is not None] == [
        (int(t), (int(ts[np.searchsorted(ts, t, "right") - 1]), float(v)))
        for t, v in zip(got_t, got_v, strict=True)
    ]
    assert got_t.tolist() == [0, 5, 10, 15, 30, 35, 40]


def test_step_validation_matches_prometheus() -> None:
    with pytest.raises(QueryError, match="zero or negative query resolution"):
        step_times(0, 10, 0)
    with pytest.raises(QueryError, match="end timestamp must not be before start"):
        step_times(10, 0, 1)
    with pytest.raises(QueryError, match="11,000 points"):
        step_times(0, 11_001, 1)
    assert step_times(0, 11_000, 1).size == 11_001  # Prometheus: (end - start) / step <= 11000
