"""HTTP probes against a real local server, with blackbox_exporter's metric names."""

from __future__ import annotations

from pathlib import Path

import pytest

from opscope.config import ProbeConfig
from opscope.monitor.collectors import ProbeCollector
from opscope.monitor.collectors.probe import probe_succeeded
from opscope.store import Store, instant_query, parse_selector
from tests.conftest import LocalHTTPServer, Route, free_port


def timeout(job: ProbeConfig) -> float:
    return job.timeout.total_seconds() if job.timeout else 5.0


def probe_values(store: Store, url: str, t: float) -> dict[str, float]:
    results = instant_query(store, parse_selector(f'{{instance="{url}"}}'), int(t * 1000))
    return {r.ref.name: r.value for r in results}


@pytest.mark.parametrize(
    ("status", "valid", "expected"),
    [
        (200, [], True),
        (204, [], True),
        (301, [], False),
        (500, [], False),
        (500, [500], True),
        (200, [201], False),
    ],
)
def test_success_rule_is_blackbox_exporters(status: int, valid: list[int], expected: bool) -> None:
    assert probe_succeeded(status, valid) is expected


async def test_probe_of_a_healthy_and_a_failing_endpoint(
    http_server: LocalHTTPServer, tmp_path: Path
) -> None:
    http_server.routes["/health"] = Route(body=b"ok")
    http_server.routes["/broken"] = Route(status=500, body=b"boom")
    ok_url, bad_url = f"{http_server.url}/health", f"{http_server.url}/broken"
    job = ProbeConfig.model_validate({"job": "api", "targets": [ok_url, bad_url]})
    with Store.open(tmp_path) as store:
        probes = [
            ProbeCollector(job=job, target=u, interval=10.0, timeout=5.0, resolve=store.series_id)
            for u in (ok_url, bad_url)
        ]
        for probe in probes:
            store.append(await probe.collect(100.0))
            await probe.aclose()
        ok = probe_values(store, ok_url, 100.0)
        bad = probe_values(store, bad_url, 100.0)
    assert ok["probe_success"] == 1.0 and ok["probe_http_status_code"] == 200.0
    assert 0.0 < ok["probe_duration_seconds"] < 5.0
    assert bad["probe_success"] == 0.0 and bad["probe_http_status_code"] == 500.0
    assert probes[1].health.last_error == "unexpected HTTP status 500 Internal Server Error"
    assert http_server.hits["/health"] == 1


async def probe_once(
    tmp_path: Path, url: str, **job: object
) -> tuple[ProbeCollector, dict[str, float]]:
    """Probe ``url`` once into a fresh store; the collector and the values it stored."""
    config = ProbeConfig.model_validate({"job": "api", "targets": [url], **job})
    with Store.open(tmp_path) as store:
        probe = ProbeCollector(
            job=config, target=url, interval=10.0, timeout=timeout(config), resolve=store.series_id
        )
        store.append(await probe.collect(100.0))
        await probe.aclose()
        return probe, probe_values(store, url, 100.0)


async def test_probe_of_a_closed_port_reports_status_0(tmp_path: Path) -> None:
    probe, values = await probe_once(tmp_path, f"http://127.0.0.1:{free_port()}/health")
    assert values["probe_success"] == 0.0
    assert values["probe_http_status_code"] == 0.0
    assert probe.health.last_error.endswith("connection refused")


async def test_slow_endpoint_times_out(http_server: LocalHTTPServer, tmp_path: Path) -> None:
    http_server.routes["/slow"] = Route(body=b"ok", delay=2.0)
    _, values = await probe_once(tmp_path, f"{http_server.url}/slow", timeout="300ms")
    assert values["probe_success"] == 0.0
    assert values["probe_duration_seconds"] < 1.5
