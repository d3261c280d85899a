"""Scraping real targets: a real node_exporter, refused connections, malformed payloads."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from opscope.config import ScrapeConfig
from opscope.monitor.collectors import ScrapeCollector
from opscope.store import Store, instant_query, is_stale, parse_selector
from tests.conftest import LocalHTTPServer, Route, free_port

T0 = 1_800_000_000.0


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as c:
        yield c


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store.open(tmp_path)
    yield s
    s.close()


def collector(store: Store, client: httpx.AsyncClient, target: str, **job: object) -> ScrapeCollector:
    config = ScrapeConfig.model_validate({"job": "node", "targets": [target], **job})
    return ScrapeCollector(job=config, target=target, interval=10.0, resolve=store.series_id,
                           client=client)


def value(store: Store, selector: str, t: float) -> dict[tuple[tuple[str, str], ...], float]:
    return {s.ref.labels: s.value
            for s in instant_query(store, parse_selector(selector), int(t * 1000))}


@pytest.mark.node_exporter
async def test_real_node_exporter_is_ingested(
    node_exporter: str, store: Store, client: httpx.AsyncClient
) -> None:
    scrape = collector(store, client, node_exporter)
    store.append(await scrape.collect(T0))
    up = value(store, 'up{job="node"}', T0)
    assert up == {(("instance", node_exporter), ("job", "node")): 1.0}
    cpu = instant_query(store, parse_selector("node_cpu_seconds_total"), int(T0 * 1000))
    assert cpu, "node_exporter always exposes node_cpu_seconds_total"
    labels = dict(cpu[0].ref.labels)
    assert labels["job"] == "node" and labels["instance"] == node_exporter
    assert {"cpu", "mode"} <= set(labels)
    assert all(s.value >= 0 for s in cpu)
    # node_exporter's own count of what it exposes equals opscope's scrape_samples_scraped.
    scraped = value(store, "scrape_samples_scraped", T0)
    body = httpx.get(f"http://{node_exporter}/metrics").text
    lines = [ln for ln in body.splitlines() if ln and not ln.startswith("#")]
    assert abs(next(iter(scraped.values())) - len(lines)) <= 5  # a few series come and go
    assert scrape.health.health == "up" and scrape.health.last_error == ""


async def test_closed_port_is_a_failed_scrape(store: Store, client: httpx.AsyncClient) -> None:
    target = f"127.0.0.1:{free_port()}"
    scrape = collector(store, client, target)
    store.append(await scrape.collect(T0))
    assert value(store, "up", T0) == {(("instance", target), ("job", "node")): 0.0}
    assert scrape.health.health == "down"
    assert scrape.health.last_error == f'Get "http://{target}/metrics": connection refused'


async def test_malformed_payload_fails_the_scrape_and_marks_old_series_stale(
    http_server: LocalHTTPServer, store: Store, client: httpx.AsyncClient
) -> None:
    target = f"127.0.0.1:{http_server.port}"
    http_server.routes["/metrics"] = Route(body=b'good{a="1"} 1\nother 2\n')
    scrape = collector(store, client, target)
    store.append(await scrape.collect(T0))
    assert value(store, "good", T0 + 1) != {}
    http_server.routes["/metrics"] = Route(body=b'good{a="1"} 1\nother two\n')
    store.append(await scrape.collect(T0 + 10))
    assert scrape.health.last_error == 'line 2: invalid value "two"'
    assert value(store, "up", T0 + 10) == {(("instance", target), ("job", "node")): 0.0}
    # nothing of the bad payload was stored, and the earlier series are stale at once
    assert value(store, "good", T0 + 10) == {}
    assert value(store, "other", T0 + 10) == {}
    (raw,) = store.select(parse_selector("good"), 0, int((T0 + 20) * 1000))
    assert is_stale(raw.values).tolist() == [False, True]
    assert value(store, "scrape_samples_scraped", T0 + 10) == {
        (("instance", target), ("job", "node")): 0.0}


async def test_http_error_status_and_timeouts(
    http_server: LocalHTTPServer, store: Store, client: httpx.AsyncClient
) -> None:
    target = f"127.0.0.1:{http_server.port}"
    http_server.routes["/metrics"] = Route(status=503, body=b"overloaded")
    scrape = collector(store, client, target)
    await scrape.collect(T0)
    assert scrape.health.last_error == "server returned HTTP status 503 Service Unavailable"
    http_server.routes["/slow"] = Route(body=b"a 1\n", delay=2.0)
    slow = collector(store, client, target, metrics_path="/slow", timeout="500ms")
    store.append(await slow.collect(T0))
    assert slow.health.health == "down"
    assert "context deadline exceeded" in slow.health.last_error
    assert slow.health.last_duration is not None and slow.health.last_duration < 1.5


async def test_series_that_disappear_get_staleness_markers(
    http_server: LocalHTTPServer, store: Store, client: httpx.AsyncClient
) -> None:
    target = f"127.0.0.1:{http_server.port}"
    http_server.routes["/metrics"] = Route(body=b"a 1\nb 2\n")
    scrape = collector(store, client, target)
    store.append(await scrape.collect(T0))
    http_server.routes["/metrics"] = Route(body=b"a 3\nc 4\n")
    store.append(await scrape.collect(T0 + 10))
    assert value(store, "b", T0 + 5) != {}
    assert value(store, "b", T0 + 10) == {}  # stale at the next scrape, not 5 minutes later
    assert list(value(store, "a", T0 + 10).values()) == [3.0]
    added = value(store, "scrape_series_added", T0 + 10)
    assert list(added.values()) == [1.0]  # c is new


async def test_a_target_exposing_up_cannot_override_opscopes_up(
    http_server: LocalHTTPServer, store: Store, client: httpx.AsyncClient
) -> None:
    http_server.routes["/metrics"] = Route(body=b"up 0\nx 1\n")
    scrape = collector(store, client, f"127.0.0.1:{http_server.port}")
    (batch,) = await scrape.collect(T0)
    assert len(np.unique(batch.series_ids)) == len(batch.series_ids)
    store.append([batch])
    assert list(value(store, "up", T0).values()) == [1.0]
