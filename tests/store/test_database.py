"""The SQLite time-series store: writes, reads, staleness markers, retention, persistence."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from opscope.errors import StoreError
from opscope.store import STALE_NAN, Batch, Store, is_stale, label_set, parse_selector


def batch(group: str, t_ms: int, values: dict[int, float]) -> Batch:
    return Batch(
        group,
        t_ms,
        np.array(list(values), dtype=np.int64),
        np.array(list(values.values()), dtype=np.float64),
    )


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store.open(tmp_path)
    yield s
    s.close()


def test_stale_marker_is_prometheus_bit_pattern() -> None:
    bits = np.array([STALE_NAN]).view(np.uint64)[0]
    assert int(bits) == 0x7FF0000000000002
    values = np.array([1.0, STALE_NAN, math.nan])
    assert is_stale(values).tolist() == [False, True, False]


def test_series_identity_is_name_plus_sorted_labels(store: Store) -> None:
    a = store.series_id("up", label_set({"job": "node", "instance": "h:1"}))
    b = store.series_id("up", label_set({"instance": "h:1", "job": "node"}))
    c = store.series_id("up", label_set({"instance": "h:2", "job": "node"}))
    assert a == b != c
    # An empty label value is the same as no label (Prometheus semantics).
    assert store.series_id("up", label_set({"job": "node", "instance": "h:1", "x": ""})) == a


def test_samples_round_trip_with_layouts_changing(store: Store) -> None:
    a = store.series_id("m", (("k", "a"),))
    b = store.series_id("m", (("k", "b"),))
    c = store.series_id("m", (("k", "c"),))
    store.append([batch("g", 1000, {a: 1.0, b: 2.0})])
    store.append([batch("g", 2000, {b: 20.0, a: 10.0, c: 30.0})])  # other order, new series
    store.append([batch("g", 3000, {c: 300.0})])
    got = {
        s.ref.labels: (s.timestamps.tolist(), s.values.tolist())
        for s in store.select(parse_selector("m"), 0, 10_000)
    }
    assert got == {
        (("k", "a"),): ([1000, 2000], [1.0, 10.0]),
        (("k", "b"),): ([1000, 2000], [2.0, 20.0]),
        (("k", "c"),): ([2000, 3000], [30.0, 300.0]),
    }
    window = store.select(parse_selector('m{k="a"}'), 1500, 2000)
    assert [(s.timestamps.tolist(), s.values.tolist()) for s in window] == [([2000], [10.0])]


def test_staleness_markers_are_stored_bit_exact(store: Store) -> None:
    a = store.series_id("m", ())
    store.append([batch("g", 1000, {a: 5.0})])
    store.append([batch("g", 2000, {a: STALE_NAN})])
    store.append([batch("g", 3000, {a: math.nan})])  # a real NaN sample is not a marker
    (series,) = store.select(parse_selector("m"), 0, 5000)
    assert is_stale(series.values).tolist() == [False, True, False]
    assert math.isnan(series.values[2])


def test_everything_persists_across_reopen(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        a = store.series_id("m", (("job", "x"),))
        store.append([batch("g", 1000, {a: 1.5})])
    with Store.open(tmp_path, readonly=True) as again:
        (series,) = again.select(parse_selector('m{job="x"}'), 0, 2000)
        assert series.values.tolist() == [1.5]
        with pytest.raises(StoreError, match="read-only"):
            again.series_id("new", ())
    with Store.open(tmp_path) as writer:  # new ids continue after the old ones
        assert writer.series_id("other", ()) > a


def test_a_series_that_never_got_samples_is_still_persisted_on_close(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        store.series_id("lonely", ())
    rows = sqlite3.connect(tmp_path / Store.FILENAME).execute("SELECT name FROM series").fetchall()
    assert rows == [("lonely",)]


def test_one_append_is_one_transaction(store: Store, tmp_path: Path) -> None:
    a = store.series_id("m", ())
    good = batch("g", 1000, {a: 1.0})
    # The second batch's values cannot be written (unsupported type), so nothing of the
    # append may remain — not even the first batch, nor the new group.
    broken = Batch("h", 1000, np.array([a]), np.array(["x"], dtype=object))  # type: ignore[arg-type]
    with pytest.raises((StoreError, ValueError, TypeError)):
        store.append([good, broken])
    rows = sqlite3.connect(tmp_path / Store.FILENAME).execute("SELECT count(*) FROM samples")
    assert rows.fetchone() == (0,)
    store.append([good])
    assert [s.values.tolist() for s in store.select(parse_selector("m"), 0, 2000)] == [[1.0]]


def test_listeners_see_each_committed_append(store: Store) -> None:
    seen: list[int] = []
    store.add_listener(lambda batches: seen.extend(b.timestamp_ms for b in batches))
    a = store.series_id("m", ())
    store.append([batch("g", 1000, {a: 1.0}), batch("h", 1000, {a: 2.0})])
    assert seen == [1000, 1000]


def test_retention_deletes_old_samples_and_forgotten_series(store: Store, tmp_path: Path) -> None:
    old = store.series_id("gone", ())
    kept = store.series_id("kept", ())
    store.append([batch("old", 1_000, {old: 1.0})])
    store.append([batch("new", 1_000, {kept: 1.0})])
    store.append([batch("new", 90_000, {kept: 2.0})])
    result = store.delete_before(50_000)
    assert result.rows == 2
    assert result.series == 0  # "gone" is still the latest layout of its group: it is kept
    assert [s.values.tolist() for s in store.select(parse_selector("kept"), 0, 100_000)] == [[2.0]]
    assert store.select(parse_selector("gone"), 0, 100_000) == []
    assert store.oldest_timestamp() == 90_000
    db = sqlite3.connect(tmp_path / Store.FILENAME)
    assert db.execute("SELECT count(*) FROM samples WHERE ts < 50000").fetchone() == (0,)


def test_retention_forgets_series_no_collector_holds(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        old = store.series_id("gone", ())
        store.append([batch("old", 1_000, {old: 1.0})])
    with Store.open(tmp_path) as store:  # after a restart no collector holds "gone"
        kept = store.series_id("kept", ())
        store.append([batch("new", 90_000, {kept: 2.0})])
        result = store.delete_before(50_000)
        assert (result.rows, result.series) == (1, 1)
        assert [r.name for r in store.index] == ["kept"]
    db = sqlite3.connect(tmp_path / Store.FILENAME)
    assert db.execute("SELECT name FROM series").fetchall() == [("kept",)]


def test_wide_reads_are_sliced_without_changing_results(store: Store) -> None:
    ids = [store.series_id("w", (("i", str(i)),)) for i in range(300)]
    for t in range(50):
        store.append([Batch("g", t * 1000, np.array(ids), np.arange(300, dtype=np.float64) + t)])
    import opscope.store.database as database

    old = database._MATRIX_CELLS
    database._MATRIX_CELLS = 1000  # force slices of 20 series
    try:
        result = store.select(parse_selector("w"), 0, 100_000)
    finally:
        database._MATRIX_CELLS = old
    assert len(result) == 300
    by_label = {dict(s.ref.labels)["i"]: s for s in result}
    assert by_label["299"].values.tolist() == [299.0 + t for t in range(50)]
    assert by_label["0"].timestamps.tolist() == [t * 1000 for t in range(50)]


def test_refuses_a_store_from_a_newer_version(tmp_path: Path) -> None:
    Store.open(tmp_path).close()
    db = sqlite3.connect(tmp_path / Store.FILENAME)
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(StoreError, match="newer opscope"):
        Store.open(tmp_path)


def test_readonly_open_of_missing_store_explains(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no store at"):
        Store.open(tmp_path / "nothing", readonly=True)


def test_the_value_cache_stays_within_its_budget(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db", cache_bytes=20_000) as store:
        ids = np.array([store.series_id("m", (("i", str(i)),)) for i in range(100)])
        for t in range(200):  # 200 rows of 800 value bytes each
            store.append([Batch("g", t, ids, np.full(100, float(t)))])
        assert 0 < store.cache_bytes <= 20_000
        # evicted rows are read back from the database, unchanged
        (first,) = store.select(parse_selector('m{i="7"}'), 0, 0)
        assert first.values.tolist() == [0.0]
