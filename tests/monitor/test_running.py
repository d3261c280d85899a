"""The monitor's task loops: intervals on an injected clock, guarded failures, retention."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import numpy as np
import pytest

from opscope.clock import ManualClock
from opscope.config import parse_config
from opscope.monitor import Monitor
from opscope.monitor.collectors import TargetHealth
from opscope.store import Batch, Store, instant_query, parse_selector
from tests.conftest import LocalHTTPServer, Route


class Counting:
    """A collector that records the times it was asked to collect; optionally broken."""

    def __init__(self, store: Store, name: str, interval: float, *, broken: bool = False) -> None:
        self.health = TargetHealth(kind="scrape", job=name, instance="x", url="", interval=interval)
        self._interval = interval
        self.times: list[float] = []
        self.broken = broken
        self._id = store.series_id(name, ())

    @property
    def interval(self) -> float:
        return self._interval

    async def collect(self, now: float) -> list[Batch]:
        self.times.append(now)
        if self.broken:
            raise RuntimeError("collector bug")
        self.health.record(ok=True, at=now, duration=0.0, samples=1)
        return [Batch(self.health.job, int(now * 1000), np.array([self._id]), np.array([now]))]

    async def aclose(self) -> None:
        pass


def monitor_with(
    store: Store, clock: ManualClock, text: str = "monitor: {system: {enabled: false}}"
) -> Monitor:
    return Monitor(parse_config(text, environ={}).config.monitor, store, clock=clock)


async def test_each_collector_runs_on_its_own_interval_and_a_broken_one_is_contained(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = ManualClock(start=1000.0)
    with Store.open(tmp_path) as store:
        monitor = monitor_with(store, clock)
        fast = Counting(store, "fast", 1.0)
        slow = Counting(store, "slow", 5.0)
        broken = Counting(store, "broken", 1.0, broken=True)
        monitor.collectors = [fast, slow, broken]
        task = asyncio.create_task(monitor.run())
        for _ in range(5):  # let every loop start and go to sleep before time moves
            await asyncio.sleep(0)
        for _ in range(10):
            await clock.advance(1.0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await monitor.aclose()
        assert len(fast.times) == 10  # t = 1000 + spread, then every second
        assert len(slow.times) == 2
        assert len(broken.times) == 10  # retried at every interval despite failing
        assert broken.health.health == "down"
        assert broken.health.last_error == "internal error: RuntimeError('collector bug')"
        failures = [r for r in caplog.records if "collection failed" in r.getMessage()]
        assert len(failures) == 1  # logged with its traceback once, not at every retry
        assert failures[0].exc_info is not None
        stored = instant_query(store, parse_selector("fast"), int(clock.time() * 1000))
        assert stored[0].value == fast.times[-1]


async def test_retention_deletes_samples_older_than_configured(tmp_path: Path) -> None:
    clock = ManualClock(start=100_000.0)
    with Store.open(tmp_path) as store:
        monitor = monitor_with(store, clock, "monitor: {retention: 1h, system: {enabled: false}}")
        sid = store.series_id("m", ())
        for t in (100_000.0, 102_000.0, 103_700.0):
            store.append([Batch("g", int(t * 1000), np.array([sid]), np.array([t]))])
        await clock.advance(3_700.0)  # now = 103,700: cutoff = 100,100
        monitor.enforce_retention()
        (series,) = store.select(parse_selector("m"), 0, 10**12)
        assert series.timestamps.tolist() == [102_000_000, 103_700_000]
        await monitor.aclose()


async def test_collect_all_fills_the_targets_api_state(
    http_server: LocalHTTPServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    http_server.routes["/metrics"] = Route(body=b"a 1\n")
    http_server.routes["/healthz"] = Route(body=b"ok")
    text = (
        "monitor:\n"
        f"  scrape: [{{job: app, targets: ['127.0.0.1:{http_server.port}']}}]\n"
        f"  probes: [{{job: web, targets: ['{http_server.url}/healthz']}}]\n"
    )
    with Store.open(tmp_path) as store:
        monitor = monitor_with(store, ManualClock(start=5000.0), text)
        await monitor.collect_all()
        await monitor.aclose()
        health = {(t.kind, t.job): t.health for t in monitor.targets}
        assert health == {
            ("system", "system"): "up",
            ("scrape", "app"): "up",
            ("probe", "web"): "up",
        }
        assert "scrape/app/127.0.0.1" not in caplog.text  # healthy targets log nothing
        status = monitor.system_status()
        assert status["targets_up"] == 2 and status["targets_total"] == 2
        assert isinstance(status["memory_usage"], float)


async def test_a_target_going_down_and_up_is_logged_once_each(
    http_server: LocalHTTPServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    text = f"monitor: {{system: {{enabled: false}}, scrape: [{{job: app, targets: ['127.0.0.1:{http_server.port}']}}]}}"
    with Store.open(tmp_path) as store:
        monitor = monitor_with(store, ManualClock(), text)
        for body in (b"a 1\n", b"a one\n", b"a one\n", b"a 2\n", b"a 3\n"):
            http_server.routes["/metrics"] = Route(body=body)
            await monitor.collect_all()
        await monitor.aclose()
    messages = [r.getMessage() for r in caplog.records if "scrape/app" in r.getMessage()]
    assert messages == [
        f'scrape/app/127.0.0.1:{http_server.port} is down: line 1: invalid value "one"',
        f"scrape/app/127.0.0.1:{http_server.port} is up again",
    ]
