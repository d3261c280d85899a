"""The HTTP API, the WebSocket and the dashboard of ``opscope serve`` (FastAPI/Starlette).

Endpoints follow Prometheus's HTTP API where one exists (same paths, parameters and JSON shapes,
so tools that speak it can read opscope): ``/api/v1/query``, ``/api/v1/query_range``,
``/api/v1/series``, ``/api/v1/labels``, ``/api/v1/label/{name}/values``, ``/api/v1/targets``.
opscope adds ``/api/v1/summary`` (trends), ``/api/v1/push`` (the push API), ``/healthz``,
``/metrics`` (its own metrics), ``/ws`` (live updates) and the dashboard at ``/``. With
``tokens``, every request is checked by :class:`~opscope.server.auth.TokenAuth`.

Every error, of any endpoint, has one JSON shape — Prometheus's::

    {"status": "error", "errorType": "bad_data", "error": "invalid parameter \\"step\\": …"}

with ``errorType`` one of ``bad_data`` (400, 413, 415), ``unauthorized`` (401), ``forbidden``
(403), ``not_found`` (404), ``method_not_allowed`` (405), ``execution`` (422) and ``internal``
(500).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from opscope import __version__
from opscope.errors import OpscopeError, QueryError, QueryTooLarge
from opscope.monitor import Monitor
from opscope.monitor.pushing import PushRejected
from opscope.notify import Notifier
from opscope.server.alerting_api import NotFound, alerting_router
from opscope.server.api import QueryContext, api_router
from opscope.server.auth import LocalOnly, TokenAuth
from opscope.server.live import LiveHub
from opscope.server.push_api import push_router
from opscope.server.reports_api import ReportsContext, reports_router
from opscope.server.tokens import TokenFile
from opscope.store import Store
from opscope.telemetry import Telemetry

log = logging.getLogger(__name__)

_ERROR_TYPES = {
    400: "bad_data",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "bad_data",
    415: "bad_data",
    422: "execution",
    500: "internal",
    503: "unavailable",
}


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
    max_samples: int = 2_000_000
    notifier: Notifier | None = None
    #: API tokens every request is checked against; ``None``: no token needed.
    tokens: TokenFile | None = None
    #: Masks the configuration's secrets in error messages and target URLs.
    redact: Callable[[str], str] = str
    reports: ReportsContext | None = None
    #: Without tokens, answer only requests for this machine from no other site's page
    #: (:class:`~opscope.server.auth.LocalOnly`); the real server sets it.
    local_only: bool = False


def _error_response(status: int, message: str) -> JSONResponse:
    """The one JSON error shape of the API."""
    return JSONResponse(
        {"status": "error", "errorType": _ERROR_TYPES.get(status, "bad_data"), "error": message},
        status_code=status,
    )


def create_app(state: ServerState) -> FastAPI:
    """Build the ASGI application serving ``state``."""
    app = FastAPI(
        title="opscope",
        version=__version__,
        description="Live monitoring API of opscope (Prometheus-compatible where possible).",
        docs_url=None,  # the Swagger page loads from a CDN; users may be offline
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )
    app.state.opscope = state
    _install_error_handlers(app, state.redact)
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
            "notifications": state.notifier is not None,
        }

    @app.get("/metrics", summary="opscope's own metrics (Prometheus exposition format)")
    async def metrics() -> Response:
        state.telemetry.store_series.set(len(state.store.index))
        state.telemetry.store_cache_bytes.set(state.store.cache_bytes)
        return Response(generate_latest(state.telemetry.registry), media_type=CONTENT_TYPE_LATEST)

    context = QueryContext(
        store=state.store,
        monitor=state.monitor,
        now=state.now,
        lookback_ms=state.lookback_ms,
        max_samples=state.max_samples,
        redact=state.redact,
    )
    app.include_router(api_router(context))
    app.include_router(alerting_router(context, state.notifier))
    app.include_router(push_router(state.monitor.push, state.monitor.config.push))
    auth = TokenAuth(app, state.tokens) if state.tokens is not None else None
    if state.tokens is not None:
        app.add_middleware(TokenAuth, tokens=state.tokens)
    elif state.local_only:
        app.add_middleware(LocalOnly)
    app.add_middleware(HeadAsGet)
    if state.reports is not None:
        app.include_router(reports_router(state.reports))

    @app.websocket("/ws")
    async def live(websocket: WebSocket) -> None:
        await state.hub.serve(websocket, authenticate=auth.authenticate if auth else None)

    return app


class HeadAsGet:
    """ASGI middleware: a ``HEAD`` request is answered as its ``GET`` would be, without the
    body (RFC 9110 §9.3.2: a server answering GET answers HEAD too), for every route — the
    dashboard, ``/healthz`` and the API alike. Headers (``content-length`` included) are the
    GET's, and so is the token check."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        body_sent = False

        async def headers_only(message: Message) -> None:
            nonlocal body_sent
            if message["type"] == "http.response.body":
                if body_sent or message.get("more_body", False):
                    return
                body_sent = True
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, headers_only)


def _install_error_handlers(app: FastAPI, redact: Callable[[str], str]) -> None:
    def error_response(status: int, message: str) -> JSONResponse:
        return _error_response(status, redact(message))

    @app.exception_handler(PushRejected)
    async def push_rejected(_: Request, exc: PushRejected) -> JSONResponse:
        return error_response(400, str(exc))

    @app.exception_handler(QueryError)
    async def bad_query(_: Request, exc: QueryError) -> JSONResponse:
        status = (
            422 if isinstance(exc, QueryTooLarge) else 404 if isinstance(exc, NotFound) else 400
        )
        return error_response(status, str(exc))

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
