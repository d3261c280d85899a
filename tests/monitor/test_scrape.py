"""Scraping real targets: a real node_exporter, refused connections, malformed payloads."""

from __future__ import annotations

import contextlib
import http.server
import ssl
import subprocess
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from opscope.config import ScrapeConfig
from opscope.monitor.collectors import ScrapeCollector
from opscope.monitor.collectors.http import make_client
from opscope.store import Store, instant_query, is_stale, parse_selector
from tests.conftest import LocalHTTPServer, Route, free_port, require_tool

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


def collector(
    store: Store, client: httpx.AsyncClient, target: str, **job: object
) -> ScrapeCollector:
    config = ScrapeConfig.model_validate({"job": "node", "targets": [target], **job})
    timeout = config.timeout.total_seconds() if config.timeout else 10.0
    return ScrapeCollector(
        job=config,
        target=target,
        interval=10.0,
        timeout=timeout,
        resolve=store.series_id,
        client=client,
    )


@contextlib.asynccontextmanager
async def own_client_collector(
    store: Store, target: str, **job: object
) -> AsyncIterator[ScrapeCollector]:
    """A collector with the HTTP client its job's settings call for (TLS, redirects)."""
    config = ScrapeConfig.model_validate({"job": "node", "targets": [target], **job})
    client = make_client(
        config.tls, where="test", follow_redirects=config.follow_redirects, keepalive=True
    )
    try:
        yield ScrapeCollector(
            job=config,
            target=target,
            interval=10.0,
            timeout=5.0,
            resolve=store.series_id,
            client=client,
        )
    finally:
        await client.aclose()


def value(store: Store, selector: str, t: float) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        s.ref.labels: s.value for s in instant_query(store, parse_selector(selector), int(t * 1000))
    }


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
        (("instance", target), ("job", "node")): 0.0
    }


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


async def test_redirects_are_followed_like_prometheus(
    http_server: LocalHTTPServer, store: Store
) -> None:
    http_server.routes["/old"] = Route(status=302, headers={"Location": "/metrics"})
    http_server.routes["/metrics"] = Route(body=b"a 1\n")
    target = f"127.0.0.1:{http_server.port}"
    for follow, health in ((True, "up"), (False, "down")):
        async with own_client_collector(
            store, target, metrics_path="/old", follow_redirects=follow
        ) as scrape:
            store.append(await scrape.collect(T0))
        assert scrape.health.health == health
    assert scrape.health.last_error == "server returned HTTP status 302 Found"
    assert http_server.hits["/metrics"] == 1


async def test_sample_limit_fails_the_scrape_before_creating_series(
    http_server: LocalHTTPServer, store: Store, client: httpx.AsyncClient
) -> None:
    http_server.routes["/metrics"] = Route(
        body="".join(f'many{{i="{i}"}} {i}\n' for i in range(50)).encode()
    )
    scrape = collector(store, client, f"127.0.0.1:{http_server.port}", sample_limit=10)
    store.append(await scrape.collect(T0))
    assert scrape.health.health == "down"
    assert scrape.health.last_error == "sample limit exceeded (50 > 10)"
    assert not [r for r in store.index if r.name == "many"]


async def test_body_size_limit_fails_the_scrape(
    http_server: LocalHTTPServer, store: Store, client: httpx.AsyncClient
) -> None:
    http_server.routes["/metrics"] = Route(body=b"a 1\n" * 10_000)  # 40,000 bytes
    scrape = collector(store, client, f"127.0.0.1:{http_server.port}", body_size_limit=1000)
    store.append(await scrape.collect(T0))
    assert scrape.health.last_error == "body size limit exceeded (1000 bytes)"
    assert value(store, "up", T0) == {
        (("instance", f"127.0.0.1:{http_server.port}"), ("job", "node")): 0.0
    }


@pytest.fixture
def https_server(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A real HTTPS server with a self-signed certificate for 127.0.0.1; yields (port, cert)."""
    openssl = require_tool("openssl")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"secure 1\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1]), cert
    server.shutdown()
    server.server_close()


async def test_https_targets_verify_certificates_unless_told_otherwise(
    https_server: tuple[int, Path], store: Store
) -> None:
    port, cert = https_server
    target = f"127.0.0.1:{port}"
    cases = [
        ({}, "down"),  # self-signed: refused by default
        ({"tls": {"ca_file": str(cert)}}, "up"),
        ({"tls": {"insecure_skip_verify": True}}, "up"),
    ]
    for extra, expected in cases:
        async with own_client_collector(store, target, scheme="https", **extra) as scrape:
            await scrape.collect(T0)
        assert scrape.health.health == expected, (extra, scrape.health.last_error)
        if expected == "down":
            assert scrape.health.last_error == (
                f'Get "https://{target}/metrics": TLS: certificate verify failed: '
                "self-signed certificate"
            )
