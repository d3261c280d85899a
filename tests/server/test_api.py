"""The REST API in-process: Prometheus-shaped results and the one JSON error shape."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from opscope.monitor import Monitor
from opscope.store import STALE_NAN, Batch, Store, label_set

from .inprocess import NOW, in_process


@dataclass
class Api:
    client: httpx.AsyncClient
    store: Store
    monitor: Monitor

    def put(self, name: str, labels: dict[str, str], points: list[tuple[float, float]]) -> None:
        sid = self.store.series_id(name, label_set(labels))
        for t, v in points:
            self.store.append(
                [Batch(f"test/{name}", int(t * 1000), np.array([sid]), np.array([v]))]
            )


@contextlib.asynccontextmanager
async def running_api(tmp_path: Path, *, max_samples: int = 2_000_000) -> AsyncIterator[Api]:
    """The app in-process over a real store, with a scrape target that refuses connections."""
    config = (
        "monitor:\n  system: {enabled: false}\n  scrape: [{job: node, targets: ['127.0.0.1:1']}]\n"
    )
    async with in_process(tmp_path, config, max_samples=max_samples) as app:
        yield Api(app.client, app.store, app.monitor)


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with running_api(tmp_path) as running:
        yield running


async def test_healthz(api: Api) -> None:
    response = await api.client.get("/healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
    assert response.json()["project"] == "blatam"
    assert response.json()["time"] == NOW  # the server clock, for clients to align with
    assert response.json()["notifications"] is False  # no notify.channels


async def test_instant_query_has_prometheus_shape_and_lookback(api: Api) -> None:
    api.put("cpu_usage", {"job": "system"}, [(NOW - 400, 10.0), (NOW - 60, 42.5)])
    api.put("cpu_usage", {"job": "other"}, [(NOW - 400, 99.0)])  # older than 5m: absent
    response = await api.client.get("/api/v1/query", params={"query": "cpu_usage"})
    assert response.status_code == 200
    assert response.json() == {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [
                {"metric": {"__name__": "cpu_usage", "job": "system"}, "value": [NOW, "42.5"]},
            ],
        },
    }
    past = await api.client.get(
        "/api/v1/query",
        params={"metric": "cpu_usage", "labels": 'job="other"', "time": str(NOW - 300)},
    )
    assert past.json()["data"]["result"][0]["value"] == [NOW - 300, "99"]


async def test_promql_expressions_and_range_selectors(api: Api) -> None:
    api.put("req_total", {"job": "a"}, [(NOW - 120, 10.0), (NOW - 60, 70.0), (NOW, 130.0)])
    rate = await api.client.get(
        "/api/v1/query", params={"query": "sum by (job) (rate(req_total[2m]))"}
    )
    # window (NOW-120, NOW]: 70 → 130 in 60 s, extrapolated to the 120 s window (the start is
    # within 1.1 intervals): 60 × 120/60 / 120 s = 1 per second
    assert rate.json()["data"]["result"] == [{"metric": {"job": "a"}, "value": [NOW, "1"]}]
    scalar = await api.client.get("/api/v1/query", params={"query": "1 + 1"})
    assert scalar.json()["data"] == {"resultType": "scalar", "result": [NOW, "2"]}
    raw = await api.client.get("/api/v1/query", params={"query": "req_total[1m30s]"})
    assert raw.json()["data"] == {
        "resultType": "matrix",
        "result": [
            {
                "metric": {"__name__": "req_total", "job": "a"},
                "values": [[NOW - 60, "70"], [NOW, "130"]],
            }
        ],
    }


async def test_post_form_query_like_grafana_sends(api: Api) -> None:
    api.put("up", {"job": "node"}, [(NOW - 10, 1.0)])
    response = await api.client.post(
        "/api/v1/query",
        content=f"query=up&time={NOW}",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.json()["data"]["result"] == [
        {"metric": {"__name__": "up", "job": "node"}, "value": [NOW, "1"]}
    ]


async def test_range_query_steps_and_staleness(api: Api) -> None:
    api.put("m", {}, [(NOW - 120, 1.0), (NOW - 60, 2.0), (NOW - 30, STALE_NAN)])
    response = await api.client.get(
        "/api/v1/query_range",
        params={"query": "m", "start": str(NOW - 120), "end": str(NOW), "step": "30s"},
    )
    body = response.json()
    assert body["data"]["resultType"] == "matrix"
    assert body["data"]["result"] == [
        {
            "metric": {"__name__": "m"},
            "values": [[NOW - 120, "1"], [NOW - 90, "1"], [NOW - 60, "2"]],
        }
    ]


@pytest.mark.parametrize(
    ("path", "params", "status", "needle"),
    [
        ("/api/v1/query", {}, 400, "an expression is required"),
        ("/api/v1/query", {"query": "up{"}, 400, "cannot parse"),
        ("/api/v1/query", {"query": "topk(3, up)"}, 400, "the aggregation topk() is not supported"),
        (
            "/api/v1/query_range",
            {"query": "up[5m]", "start": "0", "end": "1", "step": "1"},
            400,
            'invalid expression type "range vector"',
        ),
        ("/api/v1/query", {"query": "up", "time": "yesterday"}, 400, 'invalid parameter "time"'),
        (
            "/api/v1/query_range",
            {"query": "up", "start": "0", "end": "10", "step": "0"},
            400,
            "must be a positive duration",
        ),
        (
            "/api/v1/query_range",
            {"query": "up", "start": "0", "end": "100000", "step": "1"},
            400,
            "11,000 points",
        ),
        ("/api/v1/query_range", {"query": "up"}, 400, "both are required"),
        ("/api/v1/series", {}, 400, "no match[] parameter provided"),
        ("/api/v1/summary", {"window": "soon"}, 400, 'invalid parameter "window"'),
        ("/api/v1/nothing", {}, 404, "Not Found"),
    ],
)
async def test_every_error_has_the_one_json_shape(
    api: Api, path: str, params: dict[str, str], status: int, needle: str
) -> None:
    response = await api.client.get(path, params=params)
    assert response.status_code == status
    body = response.json()
    assert set(body) == {"status", "errorType", "error"}
    assert body["status"] == "error"
    assert body["errorType"] == {400: "bad_data", 404: "not_found"}[status]
    assert needle in body["error"]


async def test_wrong_method_is_405_in_the_same_shape(api: Api) -> None:
    response = await api.client.delete("/api/v1/targets")
    assert response.status_code == 405
    assert response.json()["errorType"] == "method_not_allowed"


async def test_series_labels_and_label_values(api: Api) -> None:
    api.put("up", {"job": "node", "instance": "a:1"}, [(NOW, 1.0)])
    api.put("up", {"job": "app", "instance": "b:2"}, [(NOW, 0.0)])
    api.put("load1", {"job": "system"}, [(NOW, 0.5)])
    series = (await api.client.get("/api/v1/series", params={"match[]": 'up{job="node"}'})).json()
    assert series["data"] == [{"__name__": "up", "instance": "a:1", "job": "node"}]
    plain = (await api.client.get("/api/v1/series", params={"match": "load1"})).json()
    assert plain["data"] == [{"__name__": "load1", "job": "system"}]
    labels = (await api.client.get("/api/v1/labels")).json()["data"]
    assert labels == ["__name__", "instance", "job"]
    jobs = (await api.client.get("/api/v1/label/job/values")).json()["data"]
    assert jobs == ["app", "node", "system"]
    names = (await api.client.get("/api/v1/label/__name__/values")).json()["data"]
    assert {"load1", "up"} <= set(names)


async def test_targets_report_health_and_last_error(api: Api) -> None:
    await api.monitor.collect_all()
    response = await api.client.get("/api/v1/targets")
    (target,) = response.json()["data"]["activeTargets"]
    assert target["health"] == "down"
    assert target["scrapeUrl"] == "http://127.0.0.1:1/metrics"
    assert target["labels"] == {"job": "node", "instance": "127.0.0.1:1"}
    assert target["lastError"] == 'Get "http://127.0.0.1:1/metrics": connection refused'
    assert target["lastScrape"] == "2027-01-15T08:00:00Z"


async def test_summary_trend_and_zero_baseline(api: Api) -> None:
    # 10, 20, 30 one minute apart: slope 10/60 per second, +200 %.
    api.put("cpu_usage", {"job": "system"}, [(NOW - 120, 10.0), (NOW - 60, 20.0), (NOW, 30.0)])
    # from 0 to 5: the change from a zero baseline is n/a, not 0 and not an error
    api.put("active_connections", {"job": "system"}, [(NOW - 60, 0.0), (NOW, 5.0)])
    api.put("memory_usage", {"job": "system"}, [(NOW - 60, 50.0), (NOW, 50.0)])
    response = await api.client.get("/api/v1/summary")
    items = {i["metric"]["__name__"]: i for i in response.json()["data"]["series"]}
    cpu = items["cpu_usage"]
    assert cpu["current"] == "30"
    assert cpu["slope_per_second"] == pytest.approx(10 / 60)
    assert cpu["direction"] == "increasing"
    assert cpu["change_percent"] == pytest.approx(200.0)
    assert cpu["change"] == "+200.00%"
    conns = items["active_connections"]
    assert conns["change_percent"] is None and conns["change"] == "n/a"
    assert items["memory_usage"]["direction"] == "steady"


async def test_metrics_endpoint_is_valid_exposition_with_opscope_metrics(api: Api) -> None:
    await api.monitor.collect_all()
    response = await api.client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    assert "opscope_samples_ingested" in families
    assert "opscope_websocket_clients" in families
    assert "process_resident_memory_bytes" in families
    scrape_failures = [
        s
        for s in families["opscope_collections"].samples
        if s.labels == {"collector": "scrape", "outcome": "failure"}
    ]
    assert scrape_failures[0].value == 1.0


async def test_dashboard_and_openapi_are_served(api: Api) -> None:
    page = await api.client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    spec = (await api.client.get("/api/openapi.json")).json()
    assert "/api/v1/query_range" in spec["paths"]


async def test_regex_matching_is_linear_time(api: Api) -> None:
    # With a backtracking engine this pattern never finishes on a long value (ReDoS);
    # Prometheus uses RE2, and so does opscope.
    api.put("ll", {"a": "z" * 100_000}, [(NOW, 1.0)])
    api.put("node_cpu_seconds_total", {"cpu": "0"}, [(NOW, 2.0)])
    response = await api.client.get("/api/v1/query", params={"query": 'll{a=~"(z|zz)*x"}'})
    assert response.json()["data"]["result"] == []
    response = await api.client.get("/api/v1/query", params={"query": '{__name__=~"(.*.*)*y"}'})
    assert response.json()["data"]["result"] == []
    response = await api.client.get("/api/v1/query", params={"query": 'll{a=~"z+"}'})
    assert len(response.json()["data"]["result"]) == 1


@pytest.mark.parametrize(
    "params",
    [
        {"path": "/api/v1/query", "query": "up", "time": "1e30"},
        {"path": "/api/v1/query", "query": "up", "time": "-inf"},
        {
            "path": "/api/v1/query_range",
            "query": "up",
            "start": "-1e30",
            "end": "1e30",
            "step": "1e29",
        },
        {"path": "/api/v1/query_range", "query": "up", "start": "0", "end": "10", "step": "1e30"},
        {"path": "/api/v1/summary", "window": "1e30"},
        {"path": "/api/v1/labels", "match[]": "up{"},
        {"path": "/api/v1/series", "match[]": "up", "start": "2", "end": "1"},
        {"path": "/api/v1/label/bad-name/values"},
    ],
)
async def test_absurd_parameters_are_400_not_500(api: Api, params: dict[str, str]) -> None:
    path = params.pop("path")
    response = await api.client.get(path, params=params)
    assert response.status_code == 400, response.text
    assert response.json()["errorType"] == "bad_data"


async def test_range_query_step_count_rule_matches_prometheus(api: Api) -> None:
    api.put("m", {}, [(NOW, 1.0)])
    ok = await api.client.get(
        "/api/v1/query_range",
        params={"query": "m", "start": str(NOW - 11_000), "end": str(NOW), "step": "1"},
    )
    assert ok.status_code == 200  # (end - start) / step = 11,000 is allowed
    too_many = await api.client.get(
        "/api/v1/query_range",
        params={"query": "m", "start": str(NOW - 11_001), "end": str(NOW), "step": "1"},
    )
    assert too_many.status_code == 400


async def test_queries_over_the_sample_limit_are_refused_with_422(tmp_path: Path) -> None:
    async with running_api(tmp_path, max_samples=100) as small:
        for i in range(30):
            small.put("m", {"i": str(i)}, [(NOW - 10, 1.0)])
        fine = await small.client.get("/api/v1/query", params={"query": "m"})
        assert len(fine.json()["data"]["result"]) == 30
        # 30 series × 4 steps = 120 points > 100
        big = await small.client.get(
            "/api/v1/query_range",
            params={"query": "m", "start": str(NOW - 3), "end": str(NOW), "step": "1"},
        )
        assert big.status_code == 422
        assert big.json()["errorType"] == "execution"
        assert "query processing would load too many samples" in big.json()["error"]


async def test_series_and_labels_honour_time_range_and_match(api: Api) -> None:
    api.put("up", {"job": "old"}, [(NOW - 7200, 1.0)])
    api.put("up", {"job": "new"}, [(NOW - 10, 1.0)])
    api.put("load1", {"job": "system"}, [(NOW - 10, 0.5)])
    recent = (
        await api.client.get(
            "/api/v1/series", params={"match[]": "up", "start": str(NOW - 600), "end": str(NOW)}
        )
    ).json()["data"]
    assert recent == [{"__name__": "up", "job": "new"}]
    jobs = (await api.client.get("/api/v1/label/job/values", params={"match[]": "up"})).json()[
        "data"
    ]
    assert jobs == ["new", "old"]
    names = (
        await api.client.get(
            "/api/v1/label/__name__/values", params={"start": str(NOW - 600), "end": str(NOW)}
        )
    ).json()["data"]
    assert names == ["load1", "up"]
    form = await api.client.post(
        "/api/v1/series",
        content="match[]=load1",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert form.json()["data"] == [{"__name__": "load1", "job": "system"}]
    labels = await api.client.post(
        "/api/v1/labels",
        content="match[]=load1",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert labels.json()["data"] == ["__name__", "job"]


async def test_summary_follows_instant_query_semantics(api: Api) -> None:
    api.put("up", {"job": "flap"}, [(NOW - 60, 1.0), (NOW - 30, STALE_NAN)])
    api.put("up", {"job": "fine"}, [(NOW - 60, 1.0), (NOW - 30, 1.0)])
    api.put("load1", {"job": "x"}, [(NOW - 30, float("nan"))])
    body = (await api.client.get("/api/v1/summary", params={"match[]": ["up", "load1"]})).json()[
        "data"
    ]
    current = {(s["metric"]["__name__"], s["metric"]["job"]): s["current"] for s in body["series"]}
    # the stale series has no current value, exactly as /api/v1/query says
    assert current == {("up", "fine"): "1", ("load1", "x"): "NaN"}
    query = (await api.client.get("/api/v1/query", params={"query": "up"})).json()["data"]
    assert [r["metric"]["job"] for r in query["result"]] == ["fine"]
    earlier = (
        await api.client.get("/api/v1/summary", params={"match[]": "up", "time": str(NOW - 45)})
    ).json()["data"]
    assert {s["metric"]["job"] for s in earlier["series"]} == {"flap", "fine"}


async def test_head_healthz(api: Api) -> None:
    response = await api.client.head("/healthz")
    assert response.status_code == 200


async def test_a_slow_query_does_not_block_the_server(api: Api) -> None:
    # Make the store's selection wait until released: if queries ran on the event loop,
    # /healthz could not answer until then.
    entered, release = threading.Event(), threading.Event()
    original = api.store.select_refs

    def blocked(selector: object) -> object:
        entered.set()
        release.wait(timeout=5)
        return original(selector)  # type: ignore[arg-type]

    api.store.select_refs = blocked  # type: ignore[method-assign]
    pending = asyncio.create_task(api.client.get("/api/v1/query", params={"query": "up"}))
    try:
        while not entered.is_set():  # the query is now inside the store call
            await asyncio.sleep(0.005)
        health = await asyncio.wait_for(api.client.get("/healthz"), timeout=10)
        assert health.status_code == 200
        assert not pending.done()
    finally:
        release.set()
    assert (await pending).status_code == 200


async def test_deep_expressions_are_evaluated(api: Api) -> None:
    api.put("foo", {"job": "a"}, [(NOW, 2.0)])
    # Prometheus evaluates both; the values are hand-computed: 500 × 2 and 2
    terms = await api.client.get("/api/v1/query", params={"query": "+".join(["foo"] * 500)})
    assert terms.status_code == 200, terms.text
    assert terms.json()["data"]["result"] == [{"metric": {"job": "a"}, "value": [NOW, "1000"]}]
    nested = "(" * 1000 + "foo" + ")" * 1000
    parens = await api.client.get("/api/v1/query", params={"query": nested})
    assert parens.status_code == 200, parens.text
    assert parens.json()["data"]["result"][0]["value"] == [NOW, "2"]
    ranged = await api.client.get(
        "/api/v1/query_range",
        params={"query": "-" * 999 + "foo", "start": str(NOW), "end": str(NOW), "step": "1"},
    )
    assert ranged.json()["data"]["result"][0]["values"] == [[NOW, "-2"]]


@pytest.mark.parametrize(
    "query",
    [
        "(" * 50_000 + "foo" + ")" * 50_000,  # deep enough to crash the PromQL parser
        "+".join(["foo"] * 20_000),
        "abs(" * 10_000 + "foo" + ")" * 10_000,
    ],
)
async def test_expressions_too_deep_to_parse_are_400(api: Api, query: str) -> None:
    for path in ("/api/v1/query", "/api/v1/series"):
        key = "query" if path.endswith("query") else "match[]"
        response = await api.client.post(path, data={key: query})
        assert response.status_code == 400, response.text
        assert "nested too deeply" in response.json()["error"]
