"""The live WebSocket hub: subscriptions, per-cycle updates, history on request.

Protocol (JSON text frames; the seed's message types, so its clients keep working):

client → server                          server → client
``{"type":"subscribe","metrics":[…]}``   ``{"type":"subscription_confirmed","metrics":[…]}``
``{"type":"unsubscribe","metrics":[…]}`` ``{"type":"subscription_confirmed","metrics":[…]}``
``{"type":"get_historical","metric":…,   ``{"type":"historical_data","metric":…,"start":…,
"start":…,"end":…,"step":…}``            "end":…,"step":…,"series":[{"metric":{…},
                                         "values":[[t, v], …]}]}``
``{"type":"ping"}``                      ``{"type":"pong"}``
(server-initiated)                       ``{"type":"alert","event":"pending|firing|resolved|
                                         dropped","group":…,"alert":{…}}`` on every transition
anything else                            ``{"type":"error","error":…}`` (connection stays)

After every collection cycle that stored a subscribed series, the server sends
``{"type":"metrics_update","timestamp":t,"metrics":[{"metric":{…},"value":v,"timestamp":t}],
"system_status":{…}}`` with only the subscribed series. Subscriptions are metric names or series
selectors (``disk_usage{mount="/"}``). Times are Unix seconds; a non-finite value is ``null``.
Requests may carry an ``"id"``, echoed in the reply.

When the server needs tokens, a connection is authenticated once it is accepted and its token is
checked again every :data:`REAUTH_INTERVAL` seconds: a token revoked meanwhile ends the session
with ``{"type":"error","error":"API token revoked"}`` and close code 1008, as a REST request with
that token gets 401 at once.

Each client has a bounded send queue. A client that falls a whole queue behind — slow, stalled or
gone — is dropped (closed with code 1013) so that it never delays the others: the broadcast only
ever enqueues, and each client's own task does the sending.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal

import numpy as np
from starlette.websockets import WebSocket, WebSocketDisconnect

from opscope.errors import QueryError
from opscope.monitor.alerts import alert_json
from opscope.monitor.rules import GroupResult
from opscope.server.params import check_time, parse_step, parse_time
from opscope.store import Batch, Selector, Store, is_stale, parse_selector, range_query
from opscope.store.database import IntArray
from opscope.telemetry import Telemetry

log = logging.getLogger(__name__)

#: Close code for a client dropped for falling behind (RFC 6455 1013 "try again later").
CLOSE_TOO_SLOW = 1013
#: Close code for a connection whose token was revoked (RFC 6455 1008 "policy violation").
CLOSE_REVOKED = 1008
#: Seconds between two checks of an open connection's token.
REAUTH_INTERVAL = 0.5
#: Most points per series a get_historical reply holds when no step is given.
DEFAULT_HISTORY_POINTS = 300
State = Literal["open", "dropped", "closed"]
#: Checks an accepted connection (closing it when refused) and returns a predicate telling
#: whether its credentials still hold, or ``None`` when the connection was refused.
Authenticator = Callable[[WebSocket], Awaitable[Callable[[], bool] | None]]


def _number(value: float) -> float | None:
    return value if math.isfinite(value) else None


class LiveClient:
    """One WebSocket connection: its subscriptions and its bounded send queue."""

    def __init__(self, websocket: WebSocket, queue_size: int) -> None:
        self.websocket = websocket
        self.queue: asyncio.Queue[str] = asyncio.Queue(maxsize=queue_size)
        self.subscriptions: dict[str, Selector] = {}
        self.state: State = "open"
        self.dropped = asyncio.Event()

    @property
    def subscription_key(self) -> tuple[str, ...]:
        """The subscriptions, sorted: clients with equal keys get the very same message."""
        return tuple(sorted(self.subscriptions))

    def offer(self, text: str) -> bool:
        """Enqueue ``text``; ``False`` when the queue is full (the client has fallen behind)."""
        try:
            self.queue.put_nowait(text)
        except asyncio.QueueFull:
            return False
        return True

    async def send_loop(self, telemetry: Telemetry) -> None:
        """Send queued messages in order until the connection ends."""
        while True:
            text = await self.queue.get()
            await self.websocket.send_text(text)
            telemetry.websocket_messages.inc()


class LiveHub:
    """Fans collection cycles out to WebSocket clients and answers their requests."""

    def __init__(
        self,
        store: Store,
        *,
        status: Callable[[], dict[str, object]],
        telemetry: Telemetry,
        queue_size: int = 64,
        lookback_ms: int = 300_000,
        now: Callable[[], float],
    ) -> None:
        self.store = store
        self.telemetry = telemetry
        self.queue_size = queue_size
        self.lookback_ms = lookback_ms
        self._status = status
        self._now = now
        self._clients: set[LiveClient] = set()
        self._selector_ids: dict[str, tuple[int, IntArray]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        store.add_listener(self._on_append)

    @property
    def clients(self) -> int:
        """Connected clients."""
        return len(self._clients)

    def close(self) -> None:
        """Stop listening to the store."""
        self.store.remove_listener(self._on_append)

    # ------------------------------------------------------------------------------- broadcast
    def _on_append(self, batches: Sequence[Batch]) -> None:
        if not self._clients:
            return
        if self._loop is not None and threading.get_ident() != self._loop_thread:
            self._loop.call_soon_threadsafe(self.broadcast, batches)
        else:
            self.broadcast(batches)

    def broadcast(self, batches: Sequence[Batch]) -> None:
        """Enqueue a ``metrics_update`` for every client subscribed to a series in ``batches``."""
        messages: dict[tuple[str, ...], str | None] = {}
        status: dict[str, object] | None = None
        for client in list(self._clients):
            if client.state != "open" or not client.subscriptions:
                continue
            key = client.subscription_key
            if key not in messages:
                metrics = self._matching(batches, client.subscriptions)
                if metrics:
                    if status is None:
                        status = self._status()
                    messages[key] = json.dumps(
                        {
                            "type": "metrics_update",
                            "timestamp": max(b.timestamp_ms for b in batches) / 1000.0,
                            "metrics": metrics,
                            "system_status": status,
                        },
                        allow_nan=False,
                    )
                else:
                    messages[key] = None
            text = messages[key]
            if text is not None and not client.offer(text):
                self._drop(client, "slow")

    def publish_alerts(self, result: GroupResult) -> None:
        """Send ``{"type":"alert",…}`` to every client for each alert transition."""
        for change in result.changes:
            text = json.dumps(
                {
                    "type": "alert",
                    "event": change.kind,
                    "group": result.group.name,
                    "alert": alert_json(change.alert),
                },
                allow_nan=False,
            )
            for client in list(self._clients):
                if client.state == "open" and not client.offer(text):
                    self._drop(client, "slow")

    def _ids_for(self, text: str, selector: Selector) -> IntArray:
        version = self.store.index.version
        cached = self._selector_ids.get(text)
        if cached is None or cached[0] != version:
            ids = np.array(sorted(r.id for r in self.store.select_refs(selector)), dtype=np.int64)
            cached = self._selector_ids[text] = (version, ids)
        return cached[1]

    def _matching(
        self, batches: Sequence[Batch], subscriptions: dict[str, Selector]
    ) -> list[dict[str, Any]]:
        wanted = np.unique(
            np.concatenate([self._ids_for(text, sel) for text, sel in subscriptions.items()])
        )
        out = []
        for batch in batches:
            mask = np.isin(batch.series_ids, wanted, assume_unique=True)
            if not mask.any():
                continue
            ids = batch.series_ids[mask]
            values = batch.values[mask]
            fresh = ~is_stale(values)
            t = batch.timestamp_ms / 1000.0
            for series_id, value in zip(ids[fresh].tolist(), values[fresh].tolist(), strict=True):
                ref = self.store.index.ref(series_id)
                out.append({"metric": ref.metric(), "value": _number(value), "timestamp": t})
        return out

    def _drop(self, client: LiveClient, reason: str) -> None:
        if client.state != "open":
            return
        client.state = "dropped"
        client.dropped.set()
        self.telemetry.websocket_dropped.labels(reason).inc()
        self.telemetry.websocket_queue_drops.inc()
        log.info(
            "dropped a WebSocket client (%s): its send queue of %d is full", reason, self.queue_size
        )

    # ------------------------------------------------------------------------------ connection
    async def serve(
        self,
        websocket: WebSocket,
        *,
        authenticate: Authenticator | None = None,
    ) -> None:
        """Run one client connection until it closes, is dropped or its token is revoked.

        With ``authenticate``, the accepted connection is first checked (and closed by it when
        refused): only then does it receive anything; the predicate it returns is then asked
        every :data:`REAUTH_INTERVAL` seconds, and a ``False`` closes the connection (1008)."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._loop_thread = threading.get_ident()
        await websocket.accept()
        still_allowed: Callable[[], bool] | None = None
        if authenticate is not None:
            still_allowed = await authenticate(websocket)
            if still_allowed is None:
                return
        client = LiveClient(websocket, self.queue_size)
        self._clients.add(client)
        self.telemetry.websocket_clients.set(len(self._clients))
        sender = asyncio.create_task(client.send_loop(self.telemetry), name="ws-send")
        receiver = asyncio.create_task(self._receive_loop(client), name="ws-receive")
        dropped = asyncio.create_task(client.dropped.wait(), name="ws-dropped")
        tasks = {sender, receiver, dropped}
        revoked: asyncio.Task[None] | None = None
        if still_allowed is not None:
            revoked = asyncio.create_task(_until_refused(still_allowed), name="ws-reauth")
            tasks.add(revoked)
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            if receiver.done() and not receiver.cancelled() and receiver.exception() is not None:
                log.error("WebSocket receive loop failed", exc_info=receiver.exception())
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._clients.discard(client)
            self.telemetry.websocket_clients.set(len(self._clients))
            if client.state == "dropped":
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(
                        websocket.close(CLOSE_TOO_SLOW, "client too slow"), timeout=1.0
                    )
            elif revoked is not None and revoked.done() and not revoked.cancelled():
                log.info("closed a WebSocket session: its API token was revoked")
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(1.0):
                        await websocket.send_text(
                            json.dumps({"type": "error", "error": "API token revoked"})
                        )
                        await websocket.close(CLOSE_REVOKED, "token revoked")
            client.state = "closed"

    async def _receive_loop(self, client: LiveClient) -> None:
        while True:
            try:
                message = await client.websocket.receive()
            except WebSocketDisconnect:
                return
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None:
                self._reply(client, {"type": "error", "error": "expected a JSON text message"})
                continue
            self._reply(client, await self.answer(client, text))

    def _reply(self, client: LiveClient, payload: dict[str, Any]) -> None:
        if not client.offer(json.dumps(payload, allow_nan=False)):
            self._drop(client, "slow")

    async def answer(self, client: LiveClient, text: str) -> dict[str, Any]:
        """:meth:`handle`, with ``get_historical`` — a range query over the store that can take
        a while — answered in a worker thread, so that it never stalls the event loop (other
        clients' updates, the API)."""
        request, error = _parse_message(text)
        if error is not None:
            return error
        if request.get("type") == "get_historical":
            return await asyncio.to_thread(self._answer, client, request)
        return self._answer(client, request)

    def handle(self, client: LiveClient, text: str) -> dict[str, Any]:
        """Answer one client message (a pure request → reply step, except for subscriptions)."""
        request, error = _parse_message(text)
        return error if error is not None else self._answer(client, request)

    def _answer(self, client: LiveClient, request: dict[str, Any]) -> dict[str, Any]:
        try:
            reply = self._handle(client, request)
        except Exception as exc:  # a bug answering one message must not end the connection
            log.exception("WebSocket request %r failed", request.get("type"))
            reply = {"type": "error", "error": f"internal error: {exc.__class__.__name__}"}
        if "id" in request and isinstance(request["id"], str | int | float):
            reply["id"] = request["id"]
        return reply

    def _handle(self, client: LiveClient, request: dict[str, Any]) -> dict[str, Any]:
        kind = request.get("type")
        try:
            if kind in ("subscribe", "unsubscribe"):
                names = request.get("metrics")
                if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                    raise QueryError('"metrics" must be a list of metric names or selectors')
                # Keyed by the selector's canonical text: "up{}" and "up" are one subscription.
                parsed = {str(sel): sel for sel in (parse_selector(name) for name in names)}
                if kind == "subscribe":
                    client.subscriptions.update(parsed)
                else:
                    for key in parsed:
                        client.subscriptions.pop(key, None)
                return {"type": "subscription_confirmed", "metrics": sorted(client.subscriptions)}
            if kind == "get_historical":
                return self._historical(request)
            if kind == "ping":
                return {"type": "pong"}
        except QueryError as exc:
            return {"type": "error", "error": str(exc), "request": kind}
        return {
            "type": "error",
            "error": f"unknown message type {kind!r}; expected subscribe, "
            "unsubscribe, get_historical or ping",
        }

    def _historical(self, request: dict[str, Any]) -> dict[str, Any]:
        metric = request.get("metric")
        if not isinstance(metric, str):
            raise QueryError('"metric" must be a metric name or selector')
        selector = parse_selector(metric)
        now = self._now()
        end = _time(request, "end", now)
        start = _time(request, "start", end - 3600.0)
        step = _step(request, max(1.0, (end - start) / DEFAULT_HISTORY_POINTS))
        result = range_query(
            self.store,
            selector,
            int(start * 1000),
            int(end * 1000),
            max(1, int(step * 1000)),
            lookback_ms=self.lookback_ms,
        )
        return {
            "type": "historical_data",
            "metric": metric,
            "start": start,
            "end": end,
            "step": step,
            "series": [
                {
                    "metric": s.ref.metric(),
                    "values": [
                        [t / 1000.0, _number(v)]
                        for t, v in zip(s.timestamps.tolist(), s.values.tolist(), strict=True)
                    ],
                }
                for s in result
            ],
        }


def _parse_message(text: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """A client message as a JSON object, or the ``error`` reply when it is not one."""
    try:
        request = json.loads(text)
    except (ValueError, RecursionError) as exc:
        return {}, {"type": "error", "error": f"message is not JSON: {exc}"}
    if not isinstance(request, dict):
        return {}, {"type": "error", "error": 'expected a JSON object with a "type"'}
    return request, None


async def _until_refused(still_allowed: Callable[[], bool]) -> None:
    """Return once ``still_allowed()`` is false, asking every :data:`REAUTH_INTERVAL` seconds."""
    while True:
        await asyncio.sleep(REAUTH_INTERVAL)
        if not still_allowed():
            return


def _time(request: dict[str, Any], name: str, default: float) -> float:
    """A time field: Unix seconds (number or string) or RFC 3339, as the REST API takes."""
    value = request.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise QueryError(f'"{name}" must be Unix seconds or an RFC 3339 time')
    if isinstance(value, str):
        return parse_time(value, name=name, default=default)
    return check_time(float(value), name=name, text=value)


def _step(request: dict[str, Any], default: float) -> float:
    """The step field: seconds (number or string) or a duration like ``15s``."""
    value = request.get("step")
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise QueryError('"step" must be seconds or a duration like 15s')
    return parse_step(str(value), name="step")
