"""The PromQL subset over the store; expected values worked out by hand from Prometheus's
rules (promql/functions.go, engine.go) and, where noted, confirmed with the real promtool."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from opscope.errors import QueryError, UnsupportedQuery
from opscope.monitor.promql import Evaluator, Scalar, compile_expr
from opscope.store import STALE_NAN, Batch, Store, label_set

MIN = 60_000


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path) as s:
        yield s


def load(store: Store, series: dict[str, list[float | None]], *, step_ms: int = MIN) -> None:
    """``series`` maps a selector-like key ``name{a="b"}`` to values at 0, step, 2·step, …
    (``None``: no sample)."""
    ids = {}
    for key in series:
        name, _, rest = key.partition("{")
        pairs = [p.split("=") for p in rest.rstrip("}").split(",") if p]
        ids[key] = store.series_id(name, label_set({k: v.strip('"') for k, v in pairs}))
    length = max(len(v) for v in series.values())
    for i in range(length):
        present = {k: v[i] for k, v in series.items() if i < len(v) and v[i] is not None}
        if present:
            store.append(
                [
                    Batch(
                        "t",
                        i * step_ms,
                        np.array([ids[k] for k in present]),
                        np.array(list(present.values()), dtype=np.float64),
                    )
                ]
            )


def run(store: Store, expr: str, t_ms: int) -> dict[tuple[tuple[str, str], ...], float] | float:
    result = Evaluator(store).instant(compile_expr(expr), t_ms)
    if isinstance(result, Scalar):
        return result.value
    return {s.labels: s.value for s in result}


COUNTER = {'req_total{job="a"}': [100, 160, 220, 10, 70]}
JOB_A = (("job", "a"),)


def test_rate_increase_irate_follow_prometheus_extrapolation(store: Store) -> None:
    load(store, COUNTER)
    # rate(req_total[5m]) at 4m30s (also the real promtool's answer): samples 100..70 at 0..4m;
    # increase = 70 - 100 + 220 (reset) = 190 over 240 s sampled; both ends are 30 s from the
    # window, within 1.1 × 60 s, so it is extrapolated to 300 s: 190 × 300/240 / 300 = 0.791666…
    assert run(store, "rate(req_total[5m])", 270_000) == {JOB_A: pytest.approx(190 / 240)}
    # increase(req_total[3m]) at 4m30s: 220, 10, 70 → 70 - 220 + 220 = 70, × 180/120 = 105.
    assert run(store, "increase(req_total[3m])", 270_000) == {JOB_A: pytest.approx(105.0)}
    # irate: the last two samples 10 → 70 in 60 s.
    assert run(store, "irate(req_total[5m])", 270_000) == {JOB_A: 1.0}
    # one sample only: no result
    assert run(store, "rate(req_total[1m])", 270_000) == {}


def test_counter_extrapolation_stops_at_zero(store: Store) -> None:
    # 5, 10, 15 at 0, 1m, 2m; window (−2m, 2m]: the start is 120 s away (beyond 1.1 × 60 s),
    # so it extrapolates half an interval (30 s) back; the counter would reach zero
    # 120 × 5/10 = 60 s back, further than 30 s, so 30 s stands.
    # increase = 10 × (120 + 30 + 0) / 120 = 12.5
    load(store, {'c{job="a"}': [5, 10, 15]})
    assert run(store, "increase(c[4m])", 120_000) == {JOB_A: pytest.approx(12.5)}
    # 0.1, 10.1 at 4m and 5m, window (2m, 5m]: half an interval would be 30 s back, but the
    # counter reaches zero 60 × 0.1/10 = 0.6 s before the first sample: 10 × 60.6 / 60.
    load(store, {'d{job="a"}': [None, None, None, None, 0.1, 10.1]})
    assert run(store, "increase(d[3m])", 5 * MIN) == {JOB_A: pytest.approx(10 * 60.6 / 60)}


def test_delta_skips_staleness_markers(store: Store) -> None:
    load(store, {'g{job="a"}': [1, None, 3, STALE_NAN, 5]})
    # samples 1@0, 3@2m, 5@4m (the marker is not a sample): 4 × 300/240 = 5 (promtool agrees)
    assert run(store, "delta(g[5m])", 270_000) == {JOB_A: pytest.approx(5.0)}
    assert run(store, "count_over_time(g[5m])", 270_000) == {JOB_A: 3.0}
    assert run(store, "g", 210_000) == {}  # the marker at 3m ends the series
    assert run(store, "g", 90_000) == {(("__name__", "g"), *JOB_A): 1.0}


def test_over_time_functions(store: Store) -> None:
    load(store, {'m{job="a"}': [4, 1, math.nan, 7]})
    t = 3 * MIN
    assert run(store, "min_over_time(m[10m])", t) == {JOB_A: 1.0}
    assert run(store, "max_over_time(m[10m])", t) == {JOB_A: 7.0}
    nan_sum = run(store, "sum_over_time(m[1m30s])", t)  # NaN@2m and 7@3m: NaN propagates
    assert isinstance(nan_sum, dict) and math.isnan(nan_sum[JOB_A])
    assert run(store, "avg_over_time(m[30s])", t) == {JOB_A: 7.0}
    assert run(store, "sum_over_time(m[2m] offset 2m)", t) == {JOB_A: 5.0}


def test_arithmetic_and_division_by_zero(store: Store) -> None:
    load(store, {'m{job="a"}': [6], 'z{job="a"}': [0]})
    assert run(store, "m / 0", 0) == {JOB_A: math.inf}
    assert run(store, "-m / 0", 0) == {JOB_A: -math.inf}
    result = run(store, "z / z", 0)
    assert isinstance(result, dict) and math.isnan(result[JOB_A])
    assert run(store, "m % 4", 0) == {JOB_A: 2.0}
    assert run(store, "-7 % 4", 0) == -3.0  # Go's math.Mod keeps the dividend's sign
    assert run(store, "2 ^ 10", 0) == 1024.0
    assert run(store, "m * 2 + 1", 0) == {JOB_A: 13.0}


def test_comparisons_filter_or_return_bool_and_nan_never_matches(store: Store) -> None:
    load(store, {'m{job="a"}': [5], 'm{job="b"}': [math.nan], 'm{job="c"}': [50]})
    named = {(("__name__", "m"), ("job", "c")): 50.0}
    assert run(store, "m > 10", 0) == named  # the name stays: a filter, not a new value
    assert run(store, "10 < m", 0) == named  # the vector's value is kept when scalar is left
    assert run(store, "m > bool 10", 0) == {JOB_A: 0.0, (("job", "b"),): 0.0, (("job", "c"),): 1.0}
    assert set(run(store, "m != 5", 0)) == {
        (("__name__", "m"), ("job", "b")),  # NaN != 5
        (("__name__", "m"), ("job", "c")),
    }
    assert run(store, "m == m", 0) == {
        (("__name__", "m"), ("job", "a")): 5.0,
        (("__name__", "m"), ("job", "c")): 50.0,
    }
    with pytest.raises(QueryError, match="BOOL"):
        run(store, "1 > 2", 0)
    assert run(store, "1 < bool 2", 0) == 1.0


def test_one_to_one_matching(store: Store) -> None:
    load(
        store,
        {
            'latency_sum{job="a",instance="1"}': [3],
            'latency_count{job="a",instance="1"}': [4],
            'latency_sum{job="b",instance="2"}': [0],
            'latency_count{job="b",instance="2"}': [0],
            'up{job="a",instance="1"}': [1],
        },
    )
    result = run(store, "latency_sum / latency_count", 0)
    assert isinstance(result, dict)
    assert result[(("instance", "1"), ("job", "a"))] == 0.75
    assert math.isnan(result[(("instance", "2"), ("job", "b"))])
    assert run(store, "latency_sum / latency_count > 0.5", 0) == {
        (("instance", "1"), ("job", "a")): 0.75
    }  # NaN (0/0) never fires
    assert run(store, "latency_sum + on(job) up", 0) == {(("job", "a"),): 4.0}
    assert run(store, "latency_sum + ignoring(instance) up", 0) == {(("job", "a"),): 4.0}


def test_duplicate_matches_are_errors_like_prometheus(store: Store) -> None:
    load(store, {'x{job="a",i="1"}': [1], 'x{job="a",i="2"}': [2], 'y{job="a"}': [3]})
    with pytest.raises(QueryError, match="many-to-one matching must be explicit"):
        run(store, "x + on(job) y", 0)
    with pytest.raises(QueryError, match="many-to-many matching not allowed"):
        run(store, "y + on(job) x", 0)


def test_set_operators(store: Store) -> None:
    load(store, {'a{job="x"}': [1], 'a{job="y"}': [2], 'b{job="y"}': [20], 'b{job="z"}': [30]})
    labels = lambda name, job: (("__name__", name), ("job", job))  # noqa: E731
    assert run(store, "a and b", 0) == {labels("a", "y"): 2.0}
    assert run(store, "a unless b", 0) == {labels("a", "x"): 1.0}
    assert run(store, "a or b", 0) == {
        labels("a", "x"): 1.0,
        labels("a", "y"): 2.0,
        labels("b", "z"): 30.0,
    }
    assert run(store, "a and on() b", 0) == {labels("a", "x"): 1.0, labels("a", "y"): 2.0}


def test_aggregations(store: Store) -> None:
    load(
        store,
        {
            'cpu{job="a",i="1"}': [10],
            'cpu{job="a",i="2"}': [30],
            'cpu{job="b",i="3"}': [math.nan],
            'cpu{job="b",i="4"}': [5],
        },
    )
    assert run(store, "sum by (job) (cpu)", 0) == {
        (("job", "a"),): 40.0,
        (("job", "b"),): pytest.approx(math.nan, nan_ok=True),
    }
    assert run(store, "avg without (i) (cpu{job='a'})", 0) == {(("job", "a"),): 20.0}
    assert run(store, "min by (job) (cpu)", 0) == {(("job", "a"),): 10.0, (("job", "b"),): 5.0}
    assert run(store, "max(cpu)", 0) == {(): 30.0}
    assert run(store, "count by (job) (cpu)", 0) == {(("job", "a"),): 2.0, (("job", "b"),): 2.0}


def test_absent_labels_come_from_equality_matchers(store: Store) -> None:
    load(store, {'up{job="a"}': [1]})
    assert run(store, "absent(up)", 0) == {}
    assert run(store, 'absent(nope{job="api",env=~"prod.*",x="1",x="2"})', 0) == {
        (("job", "api"),): 1.0
    }
    assert run(store, 'absent_over_time(nope{job="api"}[5m])', 0) == {(("job", "api"),): 1.0}
    assert run(store, "absent(sum(nope))", 0) == {(): 1.0}


def test_functions_on_vectors(store: Store) -> None:
    load(store, {'m{job="a"}': [-3]})
    assert run(store, "abs(m)", 0) == {JOB_A: 3.0}
    assert run(store, "clamp_min(m, 0)", 0) == {JOB_A: 0.0}
    assert run(store, "clamp_max(m, -10)", 0) == {JOB_A: -10.0}
    assert run(store, "time()", 90_000) == 90.0
    assert run(store, "-m", 0) == {JOB_A: 3.0}


def test_offset_and_lookback(store: Store) -> None:
    load(store, {'m{job="a"}': [1, 2, 3, 4, 5, 6, 7]})
    assert run(store, "m offset 2m", 6 * MIN) == {(("__name__", "m"), *JOB_A): 5.0}
    assert run(store, "avg_over_time(m[2m] offset 1m)", 6 * MIN) == {JOB_A: 5.5}
    assert run(store, "m", 6 * MIN + 5 * MIN) == {}  # older than the 5-minute lookback


def test_dropping_the_name_can_collide(store: Store) -> None:
    load(store, {'a{job="x"}': [1], 'b{job="x"}': [2]})
    with pytest.raises(QueryError, match="same labelset"):
        run(store, '{__name__=~"a|b"} * 2', 0)


@pytest.mark.parametrize(
    ("expr", "construct"),
    [
        ("topk(3, up)", "topk"),
        ("histogram_quantile(0.9, x)", "histogram_quantile"),
        ("rate(x[5m:1m])", "subqueries"),
        ("up @ 100", "@ modifier"),
        ("x * on(a) group_left y", "group_left"),
        ('label_replace(up, "a", "b", "c", "d")', "label_replace"),
        ("x atan2 y", "atan2"),
    ],
)
def test_constructs_outside_the_subset_are_refused_by_name(expr: str, construct: str) -> None:
    with pytest.raises(UnsupportedQuery, match=construct):
        compile_expr(expr)


def test_range_evaluation_assembles_series(store: Store) -> None:
    load(store, COUNTER)
    result = Evaluator(store).range(compile_expr("req_total > 50"), 0, 4 * MIN, MIN)
    ((labels, (times, values)),) = result.items()
    assert dict(labels) == {"__name__": "req_total", "job": "a"}
    assert times == [0, MIN, 2 * MIN, 4 * MIN]
    assert values == [100.0, 160.0, 220.0, 70.0]
