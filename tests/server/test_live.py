"""The WebSocket hub and HTTP connections over a real server on a free loopback port."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from websockets.asyncio.client import ClientConnection, connect

from opscope.config import parse_config
from opscope.server.running import OpscopeServer
from opscope.store import STALE_NAN, Batch, label_set

T0 = 1_800_000_000.0


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[OpscopeServer]:
    loaded = parse_config(
        "monitor: {system: {enabled: false}}\nserver: {websocket_queue: 4}\n", environ={}
    )
    srv = OpscopeServer(loaded, port=0, data_dir=tmp_path / "data")
    await srv.start()
    yield srv
    await srv.stop()


def ws_url(server: OpscopeServer) -> str:
    return server.url.replace("http://", "ws://") + "/ws"


def open_ws(server: OpscopeServer, **kwargs: Any) -> Any:
    return connect(ws_url(server), compression=None, proxy=None, **kwargs)


async def request(ws: ClientConnection, payload: dict[str, Any]) -> dict[str, Any]:
    await ws.send(json.dumps(payload))
    reply: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 5))
    return reply


def append(
    server: OpscopeServer, t: float, values: dict[tuple[str, tuple[tuple[str, str], ...]], float]
) -> None:
    assert server.store is not None
    ids = [server.store.series_id(name, labels) for name, labels in values]
    server.store.append(
        [
            Batch(
                "test",
                int(t * 1000),
                np.array(ids, dtype=np.int64),
                np.array(list(values.values())),
            )
        ]
    )


CPU = ("cpu_usage", label_set({"job": "system"}))
MEM = ("memory_usage", label_set({"job": "system"}))
ROOT = ("disk_usage", label_set({"job": "system", "mount": "/"}))
BOOT = ("disk_usage", label_set({"job": "system", "mount": "/boot"}))


async def test_only_subscribed_metrics_are_delivered(server: OpscopeServer) -> None:
    async with open_ws(server) as a, open_ws(server) as b, open_ws(server) as idle:
        assert await request(a, {"type": "subscribe", "metrics": ["cpu_usage"]}) == {
            "type": "subscription_confirmed",
            "metrics": ["cpu_usage"],
        }
        confirmed = await request(
            b, {"type": "subscribe", "metrics": ['disk_usage{mount="/"}'], "id": 7}
        )
        assert confirmed == {
            "type": "subscription_confirmed",
            "metrics": ['disk_usage{mount="/"}'],
            "id": 7,
        }
        append(server, T0, {CPU: 12.5, MEM: 40.0, ROOT: 70.0, BOOT: 20.0})
        update_a = json.loads(await asyncio.wait_for(a.recv(), 5))
        update_b = json.loads(await asyncio.wait_for(b.recv(), 5))
        assert update_a["type"] == "metrics_update"
        assert update_a["timestamp"] == T0
        assert update_a["metrics"] == [
            {"metric": {"__name__": "cpu_usage", "job": "system"}, "value": 12.5, "timestamp": T0}
        ]
        assert "system_status" in update_a
        assert [m["metric"] for m in update_b["metrics"]] == [
            {"__name__": "disk_usage", "job": "system", "mount": "/"}
        ]
        # the idle client got nothing: its first message is the answer to its ping
        assert await request(idle, {"type": "ping"}) == {"type": "pong"}
        # a cycle without subscribed series sends nothing; unsubscribing stops updates
        append(server, T0 + 1, {MEM: 41.0})
        assert await request(a, {"type": "unsubscribe", "metrics": ["cpu_usage"]}) == {
            "type": "subscription_confirmed",
            "metrics": [],
        }
        append(server, T0 + 2, {CPU: 13.0, MEM: 41.0})
        assert await request(a, {"type": "ping"}) == {"type": "pong"}


async def test_stale_markers_are_not_sent_as_values(server: OpscopeServer) -> None:
    async with open_ws(server) as ws:
        await request(ws, {"type": "subscribe", "metrics": ["cpu_usage", "memory_usage"]})
        append(server, T0, {CPU: STALE_NAN, MEM: float("nan")})
        update = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert update["metrics"] == [
            {
                "metric": {"__name__": "memory_usage", "job": "system"},
                "value": None,
                "timestamp": T0,
            }
        ]


async def test_historical_data_matches_what_was_stored(server: OpscopeServer) -> None:
    stored = [(T0 + 10 * i, float(i * i)) for i in range(12)]
    for t, v in stored:
        append(server, t, {CPU: v})
    async with open_ws(server) as ws:
        reply = await request(
            ws,
            {
                "type": "get_historical",
                "metric": "cpu_usage",
                "start": T0,
                "end": T0 + 110,
                "step": 10,
                "id": "h1",
            },
        )
    assert reply["type"] == "historical_data"
    assert reply["id"] == "h1"
    (series,) = reply["series"]
    assert series["metric"] == {"__name__": "cpu_usage", "job": "system"}
    assert series["values"] == [[t, v] for t, v in stored]


async def test_malformed_messages_get_errors_and_the_connection_stays(
    server: OpscopeServer,
) -> None:
    async with open_ws(server) as ws:
        unknown = await request(ws, {"type": "bogus"})
        assert unknown["type"] == "error" and "unknown message type 'bogus'" in unknown["error"]
        await ws.send("{not json")
        assert json.loads(await ws.recv())["error"].startswith("message is not JSON")
        await ws.send(b"\x00\x01")
        assert json.loads(await ws.recv())["error"] == "expected a JSON text message"
        bad = await request(ws, {"type": "subscribe", "metrics": "cpu_usage"})
        assert bad["type"] == "error" and "must be a list" in bad["error"]
        bad = await request(ws, {"type": "subscribe", "metrics": ["cpu{"]})
        assert bad["type"] == "error" and "cannot parse selector" in bad["error"]
        bad = await request(
            ws, {"type": "get_historical", "metric": "cpu_usage", "start": "yesterday"}
        )
        assert bad["type"] == "error" and 'invalid parameter "start"' in bad["error"]
        assert await request(ws, {"type": "ping"}) == {"type": "pong"}


async def test_a_client_that_never_reads_is_dropped_and_never_stalls_the_others(
    server: OpscopeServer,
) -> None:
    # 600 series with long labels: every update is ~60 kB, so the stalled client's socket
    # buffers fill after a few hundred updates and its queue of 4 overflows.
    series = [
        ("big", label_set({"job": "x", "i": f"{i:04d}", "pad": "p" * 40})) for i in range(600)
    ]
    updates = 400
    slow_sock = socket.create_connection(("127.0.0.1", server.port))
    slow_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    # close_timeout: the stalled client cannot read the close frame behind its unread data
    async with (
        open_ws(server, max_queue=1, sock=slow_sock, close_timeout=0.5) as slow,
        open_ws(server, max_size=None) as fast,
    ):
        await request(slow, {"type": "subscribe", "metrics": ["big"]})
        await request(fast, {"type": "subscribe", "metrics": ["big"]})
        received: list[float] = []
        for i in range(updates):
            append(server, T0 + i, dict.fromkeys(series, float(i)))
            message = json.loads(await asyncio.wait_for(fast.recv(), 10))
            received.append(message["timestamp"])
            assert len(message["metrics"]) == 600
        assert received == [T0 + i for i in range(updates)]  # every update, in order
        assert server.hub is not None
        for _ in range(100):
            if server.hub.clients == 1:
                break
            await asyncio.sleep(0.05)
        assert server.hub.clients == 1  # the slow client was dropped
        dropped = server.telemetry.websocket_dropped.labels("slow")._value.get()
        assert dropped == 1.0


async def test_hostile_requests_get_errors_and_the_connection_stays(
    server: OpscopeServer,
) -> None:
    async with open_ws(server, max_size=None) as ws:
        huge = await request(
            ws,
            {
                "type": "get_historical",
                "metric": "cpu_usage",
                "start": 0,
                "end": 1e30,
                "step": 1e29,
            },
        )
        assert huge["type"] == "error" and 'invalid parameter "end"' in huge["error"]
        await ws.send("[" * 100_000 + "]" * 100_000)
        assert json.loads(await ws.recv())["error"].startswith("message is not JSON")
        assert await request(ws, {"type": "ping"}) == {"type": "pong"}


async def test_history_accepts_rfc3339_times_and_duration_steps(server: OpscopeServer) -> None:
    for i in range(3):
        append(server, T0 + 60 * i, {CPU: float(i)})
    async with open_ws(server) as ws:
        reply = await request(
            ws,
            {
                "type": "get_historical",
                "metric": "cpu_usage",
                "start": "2027-01-15T08:00:00Z",
                "end": str(T0 + 120),
                "step": "1m",
            },
        )
    assert reply["series"][0]["values"] == [[T0, 0.0], [T0 + 60, 1.0], [T0 + 120, 2.0]]


async def test_equivalent_selectors_are_one_subscription(server: OpscopeServer) -> None:
    async with open_ws(server) as ws:
        confirmed = await request(ws, {"type": "subscribe", "metrics": ["memory_usage{}"]})
        assert confirmed["metrics"] == ["memory_usage"]
        confirmed = await request(ws, {"type": "unsubscribe", "metrics": ["memory_usage"]})
        assert confirmed["metrics"] == []


async def test_keep_alive_responses_are_not_held_by_nagles_algorithm(
    server: OpscopeServer,
) -> None:
    """Twenty requests on one keep-alive connection, each sent once the previous answer is
    read. Without TCP_NODELAY on accepted connections, each response's body waits for the
    client's delayed ACK of its headers (40 ms on Linux): 20 requests would take ≥ 0.8 s."""
    host, port = server.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    request = f"GET /healthz HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    loop = asyncio.get_running_loop()
    started = loop.time()
    for _ in range(20):
        writer.write(request)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        body = await asyncio.wait_for(reader.readexactly(length), 5)
        assert head.startswith(b"HTTP/1.1 200") and b'"status":"ok"' in body
    elapsed = loop.time() - started
    writer.close()
    await writer.wait_closed()
    assert elapsed < 0.4, f"20 keep-alive requests took {elapsed:.2f} s"


async def test_a_slow_history_request_does_not_stall_other_clients(
    server: OpscopeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While one client's get_historical waits inside the store, another client's ping is
    answered and the HTTP API responds: the range query runs off the event loop."""
    assert server.store is not None
    append(server, T0, {CPU: 1.0})
    entered, release = threading.Event(), threading.Event()
    original = server.store.select

    def blocked(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        release.wait(timeout=10)
        return original(*args, **kwargs)

    monkeypatch.setattr(server.store, "select", blocked)
    async with open_ws(server) as slow, open_ws(server) as other:
        await slow.send(
            json.dumps(
                {"type": "get_historical", "metric": "cpu_usage", "start": T0 - 60, "end": T0}
            )
        )
        try:
            async with asyncio.timeout(10):
                while not entered.is_set():
                    await asyncio.sleep(0.005)
            assert await request(other, {"type": "ping"}) == {"type": "pong"}
            async with httpx.AsyncClient() as http:
                health = await asyncio.wait_for(http.get(f"{server.url}/healthz"), 5)
            assert health.status_code == 200
        finally:
            release.set()
        reply = json.loads(await asyncio.wait_for(slow.recv(), 10))
        assert reply["type"] == "historical_data"
        assert [v for _, v in reply["series"][0]["values"]][-1] == 1.0
