"""`opscope serve` with a scheduled report: the run at start, its links, the report routes."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from opscope.clock import ManualClock
from opscope.config import parse_config
from opscope.server.running import OpscopeServer
from opscope.store import Store
from opscope.store.runs import RunRecords
from tests.conftest import LocalHTTPServer, Route
from tests.report.test_scheduling import config_text, utc, write_data

RUN = "20260330T060000Z"
FILE = "sales_performance-2026-W13.json"


async def wait_for(predicate: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail("timed out")
        await asyncio.sleep(0.05)


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Start an in-process server whose scheduler last saw the report on 1 March 2026 and
    starts on Wednesday 1 April: the 30 March run was missed and runs at start."""
    servers: list[OpscopeServer] = []

    async def start(server_section: str = "server: {port: 0}\n") -> OpscopeServer:
        write_data(tmp_path / "data")
        data_dir = tmp_path / f"state{len(servers)}"
        with Store.open(data_dir) as store, RunRecords(store.path) as runs:
            runs.since("weekly-sales", utc(2026, 3, 1))
        text = (
            server_section
            + "monitor: {system: {enabled: false}}\n"
            + config_text(
                f"    hook: {{webhook: '{hook_url}'}}\n", "    formats: [json]\n    to: [hook]\n"
            )
        )
        loaded = parse_config(text, environ={}, path=tmp_path / "opscope.yaml")
        server = OpscopeServer(loaded, data_dir=data_dir, clock=ManualClock(utc(2026, 4, 1, 9)))
        await server.start()
        servers.append(server)
        return server

    hook_url = ""

    def set_hook(url: str) -> None:
        nonlocal hook_url
        hook_url = url

    start.set_hook = set_hook  # type: ignore[attr-defined]
    yield start
    for server in servers:
        await server.stop()


def hooks(server: LocalHTTPServer) -> list[dict[str, Any]]:
    return [json.loads(body) for _, path, _, body in server.requests if path == "/hook"]


async def test_the_missed_run_runs_at_start_and_its_links_serve_its_files(
    serve: Any, http_server: LocalHTTPServer
) -> None:
    http_server.routes["/hook"] = Route(status=200)
    serve.set_hook(f"{http_server.url}/hook")
    server = await serve()
    await wait_for(lambda: len(hooks(http_server)) == 1)
    (body,) = hooks(http_server)
    assert body["runUrl"] == f"{server.url}/reports/weekly-sales/{RUN}/"
    (entry,) = body["files"]
    on_disk = server.data_dir / "reports" / "weekly-sales" / RUN / FILE
    async with httpx.AsyncClient(timeout=10) as client:
        got = await client.get(entry["url"])
        assert got.status_code == 200
        assert got.content == on_disk.read_bytes()
        assert got.headers["content-type"].startswith("application/json")
        listing = (await client.get(body["runUrl"])).json()["data"]
        assert [f["name"] for f in listing] == [FILE]
        assert listing[0]["size"] == on_disk.stat().st_size

        reports = (await client.get(f"{server.url}/api/v1/reports")).json()["data"]
        (report,) = reports
        assert report["name"] == "weekly-sales" and report["report"] == "sales_performance"
        assert report["nextRun"] == "2026-04-06T06:00:00Z"  # Monday 08:00 CEST
        assert report["lastRun"]["scheduled_at"] == "2026-03-30T06:00:00Z"
        assert report["lastRun"]["trigger"] == "catch-up"

        async def delivered() -> bool:
            runs = (await client.get(f"{server.url}/api/v1/reports/weekly-sales/runs")).json()
            return bool(runs["data"][0]["deliveries"][0]["state"] == "delivered")

        deadline = time.monotonic() + 30
        while not await delivered():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        runs = (await client.get(f"{server.url}/api/v1/reports/weekly-sales/runs")).json()
        (run,) = runs["data"]
        assert run["state"] == "succeeded" and run["period"] == "2026-W13"
        assert run["files"] == [f"reports/weekly-sales/{RUN}/{FILE}"]
        assert run["deliveries"][0]["channel"] == "hook"
        assert run["deliveries"][0]["attempts"] == 1

        for path in (
            f"/reports/weekly-sales/{RUN}/..%2F..%2F..%2Fopscope.db",
            f"/reports/weekly-sales/{RUN}/.{FILE}.tmp",
            f"/reports/weekly-sales/{RUN}/missing.pdf",
            f"/reports/weekly-sales/20260330/{FILE}",
            f"/reports/other/{RUN}/{FILE}",
            "/api/v1/reports/other/runs",
        ):
            answer = await client.get(server.url + path)
            assert answer.status_code == 404, path
            assert answer.json()["status"] == "error"
            assert answer.json()["errorType"] == "not_found"


async def test_links_use_the_external_url_when_one_is_set(
    serve: Any, http_server: LocalHTTPServer
) -> None:
    http_server.routes["/hook"] = Route(status=200)
    serve.set_hook(f"{http_server.url}/hook")
    server = await serve("server: {port: 0, external_url: 'https://ops.example.com/opscope'}\n")
    await wait_for(lambda: len(hooks(http_server)) == 1)
    (body,) = hooks(http_server)
    assert body["files"][0]["url"] == (
        f"https://ops.example.com/opscope/reports/weekly-sales/{RUN}/{FILE}"
    )
    async with httpx.AsyncClient(timeout=10) as client:
        listing = (await client.get(f"{server.url}/reports/weekly-sales/{RUN}/")).json()["data"]
    assert listing[0]["url"] == body["files"][0]["url"]
