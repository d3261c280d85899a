"""The HTTP API, the WebSocket and the dashboard of ``opscope serve`` (FastAPI/Starlette).

Endpoints follow Prometheus's HTTP API where one exists (same paths, parameters and JSON shapes,
so tools that speak it can read opscope): ``/api/v1/query``, ``/api/v1/query_range``,
``/api/v1/series``, ``/api/v1/labels``, ``/api/v1/label/{name}/values``, ``/api/v1/targets``.
opscope adds ``/api/v1/summary`` (trends), ``/healthz``, ``/metrics`` (its own metrics), ``/ws``
(live updates) and the dashboard at ``/``.

Every error, of any endpoint, has one JSON shape — Prometheus's::

    {"status": "error", "errorType": "bad_data", "error": "invalid parameter \\"step\\": …"}

with ``errorType`` one of ``bad_data`` (400), ``not_found`` (404), ``method_not_allowed`` (405),
``execution`` (422) and ``internal`` (500).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import FastAPI, Query, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from opscope import __version__
from opscope.errors import OpscopeError, QueryError
from opscope.monitor import Monitor
from opscope.monitor.trends import trend
from opscope.server.live import LiveHub
from opscope.server.params import format_value, parse_step, parse_time
from opscope.store import (
    Selector,
    Store,
    instant_query,
    parse_selector,
    range_query,
    raw_series,
    selector_for,
)
from opscope.telemetry import Telemetry

log = logging.getLogger(__name__)

_ERROR_TYPES = {
    400: "bad_data",
    404: "not_found",
    405: "method_not_allowed",
    413: "bad_data",
    422: "execution",
    500: "internal",
    503: "unavailable",
}
#: Metrics summarised by ``/api/v1/summary`` when no ``match[]`` is given.
DEFAULT_SUMMARY = (
    "cpu_usage",
    "memory_usage",
    "disk_usage",
    "load1",
    "active_connections",
    "network_receive_bytes_per_second",
    "network_transmit_bytes_per_second",
    "probe_duration_seconds",
    "probe_success",
    "up",
)


@dataclass
class ServerState:
    """What the routes need: the store, the monitor (targets), the hub, telemetry and a clock."""

    project: str
    store: Store
    monitor: Monitor
    hub: LiveHub
    telemetry: Telemetry
    now: Callable[[], float]
    lookback_ms: int


def error_response(status: int, message: str) -> JSONResponse:
    """The one JSON error shape of the API."""
    return JSONResponse(
        {"status": "error", "errorType": _ERROR_TYPES.get(status, "bad_data"), "error": message},
        status_code=status,
    )


def _success(data: Any) -> dict[str, Any]:
    return {"status": "success", "data": data}


def create_app(state: ServerState) -> FastAPI:
    """Build the ASGI application serving ``state``."""
    app = FastAPI(
        title="opscope",
        version=__version__,
        description="Live monitoring API of opscope (Prometheus-compatible where possible).",
        docs_url="/api/docs",
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )
    app.state.opscope = state
    _install_error_handlers(app)
    static = resources.files("opscope.server") / "static"
    app.mount("/static", StaticFiles(directory=str(static)), name="static")

    @app.get("/", include_in_schema=False)
    async def dashboard() -> FileResponse:
        return FileResponse(str(static / "index.html"), media_type="text/html")

    @app.get("/healthz", summary="Liveness of the server")
    async def healthz() -> dict[str, Any]:
        return {
            "status": "ok",
            "version": __version__,
            "project": state.project,
            "time": state.now(),
        }

    @app.get("/metrics", summary="opscope's own metrics (Prometheus exposition format)")
    async def metrics() -> Response:
        state.telemetry.store_series.set(len(state.store.index))
        state.telemetry.store_cache_bytes.set(state.store.cache_bytes)
        return Response(generate_latest(state.telemetry.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/api/v1/query", summary="Instant query")
    async def query(
        query: Annotated[str | None, Query(description="Series selector")] = None,
        metric: Annotated[str | None, Query(description="Metric name")] = None,
        labels: Annotated[
            str | None, Query(description='Matchers: job="node",mode!="idle"')
        ] = None,
        time: Annotated[str | None, Query(description="Unix seconds or RFC 3339")] = None,
    ) -> dict[str, Any]:
        return _instant(state, _params(query=query, metric=metric, labels=labels, time=time))

    @app.post("/api/v1/query", include_in_schema=False)
    async def query_post(request: Request) -> dict[str, Any]:
        return _instant(state, await _form(request))

    @app.get("/api/v1/query_range", summary="Range query")
    async def query_range(
        query: Annotated[str | None, Query(description="Series selector")] = None,
        metric: Annotated[str | None, Query(description="Metric name")] = None,
        labels: Annotated[str | None, Query(description="Matchers")] = None,
        start: Annotated[str | None, Query(description="Unix seconds or RFC 3339")] = None,
        end: Annotated[str | None, Query(description="Unix seconds or RFC 3339")] = None,
        step: Annotated[str | None, Query(description="Seconds or a duration like 15s")] = None,
    ) -> dict[str, Any]:
        return _range(
            state,
            _params(query=query, metric=metric, labels=labels, start=start, end=end, step=step),
        )

    @app.post("/api/v1/query_range", include_in_schema=False)
    async def query_range_post(request: Request) -> dict[str, Any]:
        return _range(state, await _form(request))

    @app.get("/api/v1/series", summary="Series matching selectors")
    async def series(
        match: Annotated[list[str] | None, Query(alias="match[]")] = None,
        match_plain: Annotated[list[str] | None, Query(alias="match")] = None,
    ) -> dict[str, Any]:
        selectors = _selectors((match or []) + (match_plain or []), required=True)
        found: dict[int, dict[str, str]] = {}
        for selector in selectors:
            for ref in state.store.index.select(selector):
                if state.store.has_samples(ref.id):
                    found[ref.id] = ref.metric()
        return _success(list(found.values()))

    @app.get("/api/v1/labels", summary="Label names")
    async def label_names() -> dict[str, Any]:
        names = {"__name__"}
        for ref in state.store.written():
            names.update(k for k, _ in ref.labels)
        return _success(sorted(names))

    @app.get("/api/v1/label/{name}/values", summary="Values of one label")
    async def label_values(name: str) -> dict[str, Any]:
        if name == "__name__":
            return _success(sorted({ref.name for ref in state.store.written()}))
        values = {v for ref in state.store.written() for k, v in ref.labels if k == name}
        return _success(sorted(values))

    @app.get("/api/v1/targets", summary="Health of every collection target")
    async def targets() -> dict[str, Any]:
        active = []
        for t in state.monitor.targets:
            active.append(
                {
                    "kind": t.kind,
                    "scrapePool": t.job,
                    "scrapeUrl": t.url,
                    "labels": t.labels,
                    "health": t.health,
                    "lastError": t.last_error,
                    "lastScrape": _iso(t.last_collection),
                    "lastScrapeDuration": t.last_duration,
                    "lastSamples": t.last_samples,
                    "scrapeInterval": f"{t.interval:g}s",
                }
            )
        return _success({"activeTargets": active, "droppedTargets": []})

    @app.get("/api/v1/summary", summary="Current value and trend of each series")
    async def summary(
        match: Annotated[list[str] | None, Query(alias="match[]")] = None,
        window: Annotated[str, Query(description="Window of the trend")] = "5m",
    ) -> dict[str, Any]:
        window_s = parse_step(window, name="window")
        selectors = _selectors(match or list(DEFAULT_SUMMARY), required=False)
        now_ms = int(state.now() * 1000)
        items = []
        seen: set[int] = set()
        for selector in selectors:
            for s in raw_series(state.store, selector, now_ms - int(window_s * 1000), now_ms):
                if s.ref.id in seen:
                    continue
                seen.add(s.ref.id)
                found = trend(s.timestamps, s.values)
                if found is None:
                    continue
                items.append(
                    {
                        "metric": s.ref.metric(),
                        "current": format_value(found.current),
                        "samples": found.samples,
                        "slope_per_second": found.slope,
                        "direction": found.direction or "n/a",
                        "change_percent": found.change_percent,
                        "change": "n/a"
                        if found.change_percent is None
                        else f"{found.change_percent:+.2f}%",
                    }
                )
        return _success(
            {
                "window": window,
                "time": now_ms / 1000.0,
                "series": items,
                "system_status": state.monitor.system_status(),
            }
        )

    @app.websocket("/ws")
    async def live(websocket: WebSocket) -> None:
        await state.hub.serve(websocket)

    return app


def _iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def _params(**known: str | None) -> dict[str, str]:
    return {k: v for k, v in known.items() if v is not None}


async def _form(request: Request) -> dict[str, str]:
    """Parameters of a POST in ``application/x-www-form-urlencoded`` (plus the query string)."""
    params = dict(request.query_params)
    body = (await request.body()).decode("utf-8", errors="replace")
    for key, values in parse_qs(body, keep_blank_values=True).items():
        params[key] = values[-1]
    return params


def _selector(params: dict[str, str]) -> Selector:
    text = params.get("query")
    if text:
        return parse_selector(text)
    metric = params.get("metric")
    if metric:
        return selector_for(metric, params.get("labels"))
    raise QueryError(
        'invalid parameter "query": a series selector is required '
        '(or "metric", optionally with "labels")'
    )


def _selectors(texts: list[str], *, required: bool) -> list[Selector]:
    if required and not texts:
        raise QueryError("no match[] parameter provided")
    return [parse_selector(t) for t in texts]


def _instant(state: ServerState, params: dict[str, str]) -> dict[str, Any]:
    selector = _selector(params)
    t = parse_time(params.get("time"), name="time", default=state.now())
    t_ms = round(t * 1000)
    result = [
        {"metric": s.ref.metric(), "value": [t_ms / 1000.0, format_value(s.value)]}
        for s in instant_query(state.store, selector, t_ms, lookback_ms=state.lookback_ms)
    ]
    return _success({"resultType": "vector", "result": result})


def _range(state: ServerState, params: dict[str, str]) -> dict[str, Any]:
    selector = _selector(params)
    if "start" not in params or "end" not in params:
        raise QueryError('invalid parameter "start"/"end": both are required')
    start = parse_time(params["start"], name="start", default=0.0)
    end = parse_time(params["end"], name="end", default=0.0)
    step = parse_step(params.get("step"), name="step")
    result = range_query(
        state.store,
        selector,
        round(start * 1000),
        round(end * 1000),
        max(1, round(step * 1000)),
        lookback_ms=state.lookback_ms,
    )
    return _success(
        {
            "resultType": "matrix",
            "result": [
                {
                    "metric": s.ref.metric(),
                    "values": [
                        [t / 1000.0, format_value(v)]
                        for t, v in zip(s.timestamps.tolist(), s.values.tolist(), strict=True)
                    ],
                }
                for s in result
            ],
        }
    )


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(QueryError)
    async def bad_query(_: Request, exc: QueryError) -> JSONResponse:
        return error_response(400, str(exc))

    @app.exception_handler(OpscopeError)
    async def opscope_error(_: Request, exc: OpscopeError) -> JSONResponse:
        log.error("request failed: %s", exc)
        return error_response(500, str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for error in exc.errors():
            loc = ".".join(str(p) for p in error.get("loc", ()) if p not in ("query", "body"))
            parts.append(f"{loc}: {error.get('msg', 'invalid')}" if loc else error.get("msg", ""))
        return error_response(400, "; ".join(parts) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        return error_response(exc.status_code, message)

    @app.exception_handler(Exception)
    async def internal(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error in a request")
        return error_response(500, f"internal error: {exc.__class__.__name__}")
