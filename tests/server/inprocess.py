"""The API application in-process over a real store (httpx's ASGI transport, no socket), shared
by the API, push and authentication tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from opscope.clock import ManualClock
from opscope.config import parse_config
from opscope.monitor import Monitor
from opscope.monitor.rules import compile_groups
from opscope.notify import Notifier
from opscope.server.app import ServerState, create_app
from opscope.server.live import LiveHub
from opscope.server.tokens import TokenFile
from opscope.store import Store
from opscope.telemetry import Telemetry

#: The manual clock's start (Unix seconds).
NOW = 1_800_000_000.0


@dataclass
class InProcess:
    """A client of the application and what it serves."""

    client: httpx.AsyncClient
    store: Store
    monitor: Monitor
    clock: ManualClock


@contextlib.asynccontextmanager
async def in_process(
    data_dir: Path,
    config_yaml: str,
    *,
    max_samples: int = 2_000_000,
    tokens: TokenFile | None = None,
) -> AsyncIterator[InProcess]:
    """The application for ``config_yaml`` over a store in ``data_dir``, at :data:`NOW`; with
    its alerting rules, a notifier when the configuration has notification channels, and
    checking ``tokens``."""
    loaded = parse_config(config_yaml, environ={})
    config = loaded.config
    clock = ManualClock(start=NOW)
    telemetry = Telemetry()
    with Store.open(data_dir) as store:
        monitor = Monitor(
            config.monitor,
            store,
            telemetry=telemetry,
            clock=clock,
            rule_groups=compile_groups(loaded.rule_groups),
        )
        hub = LiveHub(store, status=monitor.system_status, telemetry=telemetry, now=clock.time)
        state = ServerState(
            project="blatam",
            store=store,
            monitor=monitor,
            hub=hub,
            telemetry=telemetry,
            now=clock.time,
            lookback_ms=300_000,
            max_samples=max_samples,
            notifier=Notifier(config.notify, store, clock=clock)
            if config.notify.channels
            else None,
            tokens=tokens,
        )
        transport = httpx.ASGITransport(app=create_app(state))
        async with httpx.AsyncClient(transport=transport, base_url="http://opscope") as client:
            yield InProcess(client, store, monitor, clock)
        await monitor.aclose()
