"""Who may call what: bearer tokens checked for every request when the server needs them.

When tokens are needed (``server.host`` is not a loopback address, or ``server.auth:
required``), every request except the public ones carries ``Authorization: Bearer <token>``;
the WebSocket may instead pass ``?token=<token>`` or send ``{"type": "auth", "token": …}`` as
its first message (browsers cannot set headers on a WebSocket). The scope each request needs
is decided by :func:`required_scope` — one table, tested exhaustively:

=====================================================  ========
``/healthz``, ``/``, ``/static/…``, ``/api/openapi.json``  public (no data)
``PUT``/``POST``/``DELETE /api/v1/push/…``                  write
``POST /api/v1/silences``, ``DELETE /api/v1/silences/…``    admin
any other method on any other path (queries, ``/metrics``)  read
=====================================================  ========

An accepted WebSocket's token is checked again while the connection is open (the hub asks the
predicate :meth:`TokenAuth.authenticate` returns): a revoked token ends the session (1008).

A missing or unknown token gets 401 (with ``WWW-Authenticate: Bearer``), a token whose scope
is too low 403, both in the API's one JSON error shape and without saying which part of the
token was wrong. Tokens are never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from opscope.server.tokens import Scope as TokenScope
from opscope.server.tokens import TokenFile, allows

_PUBLIC = ("/healthz", "/", "/api/openapi.json")
#: Seconds a WebSocket client has to send its auth message.
WS_AUTH_TIMEOUT = 10.0
#: WebSocket close code for a refused token (RFC 6455 "policy violation").
CLOSE_POLICY = 1008


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` only reaches this machine (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def required_scope(method: str, path: str) -> TokenScope | None:
    """The scope a request needs, or ``None`` for the public endpoints."""
    if path in _PUBLIC or path.startswith("/static/"):
        return None
    if path.startswith("/api/v1/push/") and method in ("PUT", "POST", "DELETE"):
        return "write"
    if (path == "/api/v1/silences" and method == "POST") or (
        path.startswith("/api/v1/silences/") and method == "DELETE"
    ):
        return "admin"
    return "read"


def bearer(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The token of an ``Authorization: Bearer`` header, if there is one."""
    for name, value in headers:
        if name.lower() == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


def _error(status: int, error_type: str, message: str) -> tuple[int, list[Any], bytes]:
    body = json.dumps({"status": "error", "errorType": error_type, "error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="opscope"'))
    return status, headers, body


class TokenAuth:
    """ASGI middleware: checks the bearer token of every HTTP request against ``tokens``.

    WebSocket connections pass through; the ``/ws`` endpoint calls :meth:`authenticate`.
    """

    def __init__(self, app: ASGIApp, tokens: TokenFile) -> None:
        self.app = app
        self.tokens = tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        needed = required_scope(scope["method"], scope["path"])
        if needed is not None:
            refused = self.refusal(bearer(scope["headers"]), needed)
            if refused is not None:
                status, headers, body = refused
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)

    def refusal(self, token: str | None, needed: TokenScope) -> tuple[int, list[Any], bytes] | None:
        """The error response for ``token`` where ``needed`` is required, or ``None``."""
        granted = self.tokens.scope_of(token) if token else None
        if granted is None:
            return _error(401, "unauthorized", "missing or invalid API token")
        if not allows(granted, needed):
            return _error(403, "forbidden", f"this endpoint needs a token of scope {needed}")
        return None

    async def authenticate(self, websocket: WebSocket) -> Callable[[], bool] | None:
        """Check an accepted WebSocket's token (header, ``token`` parameter or first message
        ``{"type": "auth", "token": …}``); on failure send an error and close it (1008) and
        return ``None``. Otherwise return a predicate telling whether the token is still valid
        (re-read from the token file: a revoked token makes it false)."""
        token = bearer(websocket.scope["headers"]) or websocket.query_params.get("token")
        first_message = token is None
        if first_message:
            token = await _first_message_token(websocket)
        scope = self.tokens.scope_of(token) if token else None
        if token is None or scope is None:
            with contextlib.suppress(Exception):
                await websocket.send_text(
                    json.dumps({"type": "error", "error": "missing or invalid API token"})
                )
                await websocket.close(CLOSE_POLICY, "unauthorized")
            return None
        if first_message:
            await websocket.send_text(json.dumps({"type": "authenticated", "scope": scope}))
        checked = token
        return lambda: self.tokens.scope_of(checked) is not None


def _local_name(host_header: str) -> bool:
    """Whether a ``Host`` header value names this machine (``localhost``, a loopback address;
    any port)."""
    host = host_header.strip()
    if host.startswith("["):
        name = host[1 : host.find("]")] if "]" in host else host
    else:
        name = host.rpartition(":")[0] if host.count(":") == 1 else host
    return is_loopback(name.lower().rstrip("."))


class LocalOnly:
    """ASGI middleware of a server that needs no token (bound to a loopback address): it
    answers only requests that name this machine in ``Host`` and that no other site's page
    sent (``Origin``). Without it, any web page the user opens could push data or send
    requests with side effects (a cross-site form POST needs no CORS preflight) and, by DNS
    rebinding, read the API — the reason Jupyter and webpack's dev server check ``Host`` too.
    HTTP requests get 403 in the API's JSON error shape; WebSocket handshakes are refused.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        problem = self.problem(scope["headers"])
        if problem is None:
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": CLOSE_POLICY, "reason": problem})
        else:
            status, headers, body = _error(403, "forbidden", problem)
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})

    @staticmethod
    def problem(headers: list[tuple[bytes, bytes]]) -> str | None:
        """Why a request with ``headers`` is refused, or ``None``."""
        for name, value in headers:
            lowered = name.lower()
            if lowered == b"host" and not _local_name(value.decode("latin-1")):
                return (
                    "this server needs no token, so it only answers requests for localhost or "
                    "a loopback address (Host header); to serve other names, configure API "
                    "tokens (server.auth: required)"
                )
            if lowered == b"origin":
                origin = value.decode("latin-1").strip()
                host = urlsplit(origin).hostname if origin != "null" else None
                if host is None or not is_loopback(host.lower()):
                    return (
                        f"requests from pages of other sites ({origin}) are refused: this "
                        "server needs no token"
                    )
        return None


async def _first_message_token(websocket: WebSocket) -> str | None:
    """The token of a first message ``{"type": "auth", "token": …}``; ``None`` for anything
    else (a binary frame, text that is not JSON, another message, a disconnect, a timeout)."""
    try:
        async with asyncio.timeout(WS_AUTH_TIMEOUT):
            message = await websocket.receive()
    except (TimeoutError, WebSocketDisconnect):
        return None
    text = message.get("text") if message.get("type") == "websocket.receive" else None
    if not isinstance(text, str):
        return None
    try:
        request = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if isinstance(request, dict) and request.get("type") == "auth":
        token = request.get("token")
        return token if isinstance(token, str) and token else None
    return None
