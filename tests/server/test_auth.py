"""API tokens: who may call what, the WebSocket's token, and refusing to bind without tokens."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from opscope.config import parse_config
from opscope.errors import ConfigError
from opscope.monitor import Monitor
from opscope.server.app import ServerState, create_app
from opscope.server.auth import is_loopback, required_scope
from opscope.server.live import LiveHub
from opscope.server.running import OpscopeServer
from opscope.server.tokens import FILENAME, TokenFile
from opscope.store import Store
from opscope.telemetry import Telemetry

from .inprocess import NOW, in_process

SILENCE = {"matchers": ['alertname="X"'], "endsAt": str(NOW + 3600), "createdBy": "t"}

#: Every endpoint, the scope it needs (None: public), and a request that reaches it.
ENDPOINTS: list[tuple[str, str, str | None, dict[str, object]]] = [
    ("GET", "/healthz", None, {}),
    ("GET", "/", None, {}),
    ("GET", "/api/openapi.json", None, {}),
    ("GET", "/static/index.html", None, {}),
    ("GET", "/metrics", "read", {}),
    ("GET", "/api/v1/query", "read", {"params": {"query": "up"}}),
    ("POST", "/api/v1/query", "read", {"data": {"query": "up"}}),
    ("GET", "/api/v1/query_range", "read", {"params": {"query": "up", "start": 1, "end": 2}}),
    ("POST", "/api/v1/query_range", "read", {"data": {"query": "up", "start": 1, "end": 2}}),
    ("GET", "/api/v1/series", "read", {"params": {"match[]": "up"}}),
    ("POST", "/api/v1/series", "read", {"data": {"match[]": "up"}}),
    ("GET", "/api/v1/labels", "read", {}),
    ("POST", "/api/v1/labels", "read", {}),
    ("GET", "/api/v1/label/job/values", "read", {}),
    ("POST", "/api/v1/label/job/values", "read", {}),
    ("GET", "/api/v1/targets", "read", {}),
    ("GET", "/api/v1/summary", "read", {}),
    ("GET", "/api/v1/rules", "read", {}),
    ("GET", "/api/v1/alerts", "read", {}),
    ("GET", "/api/v1/silences", "read", {}),
    ("GET", "/api/v1/notifications", "read", {}),
    ("GET", "/api/v1/push", "read", {}),
    ("POST", "/api/v1/silences", "admin", {"json": SILENCE}),
    ("DELETE", "/api/v1/silences/abc", "admin", {}),
    ("PUT", "/api/v1/push/j", "write", {"content": "m 1\n"}),
    ("POST", "/api/v1/push/j", "write", {"content": "m 1\n"}),
    ("DELETE", "/api/v1/push/j", "write", {}),
    ("PUT", "/api/v1/push/j/instance/a", "write", {"content": "m 1\n"}),
    ("POST", "/api/v1/push/j/instance/a", "write", {"content": "m 1\n"}),
    ("DELETE", "/api/v1/push/j/instance/a", "write", {}),
]
RANK = {None: 0, "read": 1, "write": 2, "admin": 3}


@dataclass
class Secured:
    client: httpx.AsyncClient
    tokens: dict[str, str]
    token_file: TokenFile


@contextlib.asynccontextmanager
async def secured_app(tmp_path: Path) -> AsyncIterator[Secured]:
    token_file = TokenFile(tmp_path / "data")
    tokens = {scope: token_file.create(f"t-{scope}", scope) for scope in ("read", "write", "admin")}  # type: ignore[arg-type]
    config = "monitor: {system: {enabled: false}}\nnotify: {channels: {x: 'json://127.0.0.1:1/'}}\n"
    async with in_process(tmp_path / "data", config, tokens=token_file) as app:
        yield Secured(app.client, tokens, token_file)


@pytest.fixture
async def secured(tmp_path: Path) -> AsyncIterator[Secured]:
    async with secured_app(tmp_path) as s:
        yield s


def test_the_table_covers_every_documented_endpoint(tmp_path: Path) -> None:
    documented = set()
    config = parse_config("monitor: {system: {enabled: false}}\n", environ={}).config
    with Store.open(tmp_path) as store:
        monitor = Monitor(config.monitor, store)
        hub = LiveHub(store, status=monitor.system_status, telemetry=Telemetry(), now=lambda: NOW)
        app = create_app(
            ServerState("p", store, monitor, hub, Telemetry(), lambda: NOW, lookback_ms=1)
        )
        for path, methods in app.openapi()["paths"].items():
            for method in methods:
                documented.add((method.upper(), path))
    covered = {(m, p) for m, p, _, _ in ENDPOINTS}
    templates = {
        ("GET", "/api/v1/label/{name}/values"): ("GET", "/api/v1/label/job/values"),
        ("DELETE", "/api/v1/silences/{silence_id}"): ("DELETE", "/api/v1/silences/abc"),
        ("PUT", "/api/v1/push/{job}"): ("PUT", "/api/v1/push/j"),
        ("POST", "/api/v1/push/{job}"): ("POST", "/api/v1/push/j"),
        ("DELETE", "/api/v1/push/{job}"): ("DELETE", "/api/v1/push/j"),
        ("PUT", "/api/v1/push/{job}/{grouping}"): ("PUT", "/api/v1/push/j/instance/a"),
        ("POST", "/api/v1/push/{job}/{grouping}"): ("POST", "/api/v1/push/j/instance/a"),
        ("DELETE", "/api/v1/push/{job}/{grouping}"): ("DELETE", "/api/v1/push/j/instance/a"),
    }
    missing = {templates.get(d, d) for d in documented} - covered
    assert missing == set()
    for method, path, scope, _ in ENDPOINTS:
        assert required_scope(method, path) == scope, (method, path)


@pytest.mark.parametrize(("method", "path", "needed", "kwargs"), ENDPOINTS)
async def test_each_endpoint_needs_its_scope(
    secured: Secured, method: str, path: str, needed: str | None, kwargs: dict[str, object]
) -> None:
    async def call(token: str | None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return await secured.client.request(method, path, headers=headers, **kwargs)  # type: ignore[arg-type]

    for token in (None, "opscope_wrong", secured.tokens["read"][:-1] + "x"):
        response = await call(token)
        if needed is None:
            assert response.status_code not in (401, 403)
            continue
        assert response.status_code == 401
        assert response.json() == {
            "status": "error",
            "errorType": "unauthorized",
            "error": "missing or invalid API token",
        }
        assert response.headers["www-authenticate"].startswith("Bearer")
    for scope, token in secured.tokens.items():
        response = await call(token)
        if RANK[scope] < RANK[needed]:
            assert response.status_code == 403, (scope, response.text)
            assert response.json()["errorType"] == "forbidden"
        else:
            assert response.status_code not in (401, 403), (scope, response.text)
            assert response.status_code < 500


async def test_a_revoked_token_is_refused_without_a_restart(secured: Secured) -> None:
    headers = {"Authorization": f"Bearer {secured.tokens['read']}"}
    assert (await secured.client.get("/api/v1/targets", headers=headers)).status_code == 200
    assert secured.token_file.revoke("t-read")
    assert (await secured.client.get("/api/v1/targets", headers=headers)).status_code == 401


def test_only_hashes_are_stored(tmp_path: Path) -> None:
    tokens = TokenFile(tmp_path)
    token = tokens.create("ci", "write")
    text = (tmp_path / FILENAME).read_text()
    assert token not in text
    assert token.startswith("opscope_") and len(token) == len("opscope_") + 43
    assert json.loads(text)["tokens"][0]["name"] == "ci"
    assert (tmp_path / FILENAME).stat().st_mode & 0o777 == 0o600
    assert tokens.scope_of(token) == "write"
    with pytest.raises(ConfigError, match="exists"):
        tokens.create("ci", "read")
    with pytest.raises(ConfigError, match="invalid scope"):
        tokens.create("other", "root")  # type: ignore[arg-type]


def test_loopback_addresses() -> None:
    assert [is_loopback(h) for h in ("127.0.0.1", "127.0.0.2", "::1", "localhost")] == [True] * 4
    assert [is_loopback(h) for h in ("0.0.0.0", "::", "192.0.2.1", "example.com")] == [False] * 4


async def test_binding_a_public_address_without_tokens_is_refused(tmp_path: Path) -> None:
    loaded = parse_config("monitor: {system: {enabled: false}}\n", environ={})
    server = OpscopeServer(loaded, host="0.0.0.0", port=0, data_dir=tmp_path)
    with pytest.raises(ConfigError, match="opscope token create --name NAME --scope admin"):
        await server.start()
    assert not (tmp_path / "serve.lock").exists()  # refused before taking anything


def test_the_cli_refuses_to_serve_0000_without_tokens(tmp_path: Path) -> None:
    config = tmp_path / "opscope.yaml"
    config.write_text("monitor: {system: {enabled: false}}\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "opscope",
            "serve",
            "-c",
            str(config),
            "--host",
            "0.0.0.0",
            "--port",
            "0",
            "--data-dir",
            str(tmp_path / "data"),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert result.returncode == 2
    assert "binding 0.0.0.0 (not a loopback address) needs API tokens" in result.stderr
    assert "opscope token create" in result.stderr


def test_token_commands(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "opscope", "token", *args, "--data-dir", str(tmp_path)],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )

    created = run("create", "--name", "ci-push", "--scope", "write")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert TokenFile(tmp_path).scope_of(token) == "write"
    listed = run("list", "--json")
    assert [(t["name"], t["scope"]) for t in json.loads(listed.stdout)] == [("ci-push", "write")]
    assert token not in listed.stdout
    assert run("create", "--name", "x", "--scope", "owner").returncode == 2
    assert run("revoke", "ci-push").returncode == 0
    assert run("revoke", "ci-push").returncode == 2
    assert TokenFile(tmp_path).scope_of(token) is None


@pytest.fixture
async def server_with_tokens(tmp_path: Path) -> AsyncIterator[tuple[OpscopeServer, dict[str, str]]]:
    data = tmp_path / "data"
    tokens = {s: TokenFile(data).create(f"t-{s}", s) for s in ("read", "write")}  # type: ignore[arg-type]
    loaded = parse_config(
        "monitor: {system: {enabled: false}}\nserver: {auth: required}\n", environ={}
    )
    server = OpscopeServer(loaded, port=0, data_dir=data)
    await server.start()
    yield server, tokens
    await server.stop()


async def test_the_websocket_needs_a_token(
    server_with_tokens: tuple[OpscopeServer, dict[str, str]],
) -> None:
    server, tokens = server_with_tokens
    url = server.url.replace("http://", "ws://") + "/ws"
    subscribe = json.dumps({"type": "subscribe", "metrics": ["up"]})
    # No token: the first message is not an auth message, so the connection is closed.
    async with connect(url, proxy=None) as ws:
        await ws.send(subscribe)
        assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "error"
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    # A wrong token in the query string: refused too.
    async with connect(url + "?token=opscope_nope", proxy=None) as ws:
        assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "error"
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
    # The token as a parameter, in the header, or as the first message.
    for kwargs, first in (
        ({"uri": url + f"?token={tokens['read']}"}, None),
        ({"uri": url, "additional_headers": {"Authorization": f"Bearer {tokens['write']}"}}, None),
        ({"uri": url}, {"type": "auth", "token": tokens["read"]}),
    ):
        async with connect(proxy=None, **kwargs) as ws:  # type: ignore[arg-type]
            if first is not None:
                await ws.send(json.dumps(first))
                reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
                assert reply == {"type": "authenticated", "scope": "read"}
            await ws.send(subscribe)
            reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert reply == {"type": "subscription_confirmed", "metrics": ["up"]}


async def test_a_read_token_cannot_push_over_http(
    server_with_tokens: tuple[OpscopeServer, dict[str, str]],
) -> None:
    server, tokens = server_with_tokens
    async with httpx.AsyncClient(base_url=server.url) as client:
        read = {"Authorization": f"Bearer {tokens['read']}"}
        write = {"Authorization": f"Bearer {tokens['write']}"}
        assert (
            await client.put("/api/v1/push/j", content="m 1\n", headers=read)
        ).status_code == 403
        assert (
            await client.put("/api/v1/push/j", content="m 1\n", headers=write)
        ).status_code == 200
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/api/v1/query", params={"query": "m"})).status_code == 401


def test_a_token_name_ending_in_a_newline_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="invalid token name"):
        TokenFile(tmp_path).create("nl\n", "read")
    assert TokenFile(tmp_path).records() == []


async def test_a_revoked_token_ends_its_websocket_session(
    server_with_tokens: tuple[OpscopeServer, dict[str, str]], tmp_path: Path
) -> None:
    server, tokens = server_with_tokens
    url = server.url.replace("http://", "ws://") + f"/ws?token={tokens['read']}"
    async with connect(url, proxy=None) as ws:
        await ws.send(json.dumps({"type": "subscribe", "metrics": ["up"]}))
        reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert reply == {"type": "subscription_confirmed", "metrics": ["up"]}
        # Revoked through the token file, as `opscope token revoke` does from another process.
        assert TokenFile(tmp_path / "data").revoke("t-read")
        revoked_at = asyncio.get_running_loop().time()
        assert json.loads(await asyncio.wait_for(ws.recv(), 5)) == {
            "type": "error",
            "error": "API token revoked",
        }
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
        assert asyncio.get_running_loop().time() - revoked_at < 2.0
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    # A session whose token stays valid stays open.
    async with connect(server.url.replace("http://", "ws://") + "/ws", proxy=None) as ws:
        await ws.send(json.dumps({"type": "auth", "token": tokens["write"]}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "authenticated"
        await asyncio.sleep(1.5)
        await ws.send(json.dumps({"type": "ping"}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 5)) == {"type": "pong"}


async def test_a_binary_first_message_is_refused_cleanly(
    server_with_tokens: tuple[OpscopeServer, dict[str, str]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    server, _ = server_with_tokens
    async with connect(server.url.replace("http://", "ws://") + "/ws", proxy=None) as ws:
        await ws.send(b'{"type": "auth"}')
        assert json.loads(await asyncio.wait_for(ws.recv(), 5)) == {
            "type": "error",
            "error": "missing or invalid API token",
        }
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


async def test_head_is_answered_wherever_get_is(
    server_with_tokens: tuple[OpscopeServer, dict[str, str]],
) -> None:
    """RFC 9110 §9.3.2: HEAD gets GET's status and headers, no body — over a real socket."""
    server, tokens = server_with_tokens
    read = {"Authorization": f"Bearer {tokens['read']}"}
    async with httpx.AsyncClient(base_url=server.url) as client:
        for path, headers in (
            ("/healthz", {}),
            ("/", {}),
            ("/static/index.html", {}),
            ("/api/v1/query?query=up", read),
            ("/metrics", read),
        ):
            got = await client.get(path, headers=headers)
            head = await client.head(path, headers=headers)
            assert (path, head.status_code, head.content) == (path, 200, b"")
            assert head.headers["content-type"] == got.headers["content-type"]
            if path in ("/", "/static/index.html"):  # the others carry the time
                assert head.headers["content-length"] == str(len(got.content))
        # The token is checked as for GET.
        assert (await client.head("/api/v1/query?query=up")).status_code == 401
        # A path with no GET still says so.
        assert (await client.head("/api/v1/push/j", headers=read)).status_code == 405


def test_token_commands_need_only_the_data_dir_of_the_config(tmp_path: Path) -> None:
    config = tmp_path / "opscope.yaml"
    config.write_text(
        "data_dir: ${OPSCOPE_HOME}/data\n"
        "monitor:\n"
        "  sql:\n"
        '    - {name: m, url: "postgresql://ops:${DB_PASSWORD}@db/crm", query: "SELECT 1"}\n'
        "notify: {channels: {ops: '${SLACK_WEBHOOK}'}}\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("DB_PASSWORD", "SLACK_WEBHOOK")}

    def run(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "opscope", "token", *args, "-c", str(config)],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
            env={**env, **extra, "COLUMNS": "200"},
        )

    home = str(tmp_path / "home")
    created = run("create", "--name", "ci", "--scope", "write", OPSCOPE_HOME=home)
    assert created.returncode == 0, created.stderr
    assert TokenFile(tmp_path / "home" / "data").scope_of(created.stdout.strip()) == "write"
    assert run("revoke", "ci", OPSCOPE_HOME=home).returncode == 0
    assert TokenFile(tmp_path / "home" / "data").records() == []
    # The data_dir's own variable is still needed, and its line is named.
    unset = run("list", **{k: v for k, v in env.items() if k != "OPSCOPE_HOME"})
    assert unset.returncode == 2
    assert f"{config}:1" in unset.stderr and "OPSCOPE_HOME is not set" in unset.stderr


@pytest.mark.parametrize(
    ("host", "auth", "way_out"),
    [
        ("0.0.0.0", "auto", "or bind 127.0.0.1"),
        ("0.0.0.0", "required", "or bind 127.0.0.1 with server.auth: auto"),
        ("127.0.0.1", "required", "or set server.auth: auto (a server bound to 127.0.0.1 needs"),
    ],
)
async def test_the_refusal_suggests_only_what_would_help(
    tmp_path: Path, host: str, auth: str, way_out: str
) -> None:
    loaded = parse_config(
        f"monitor: {{system: {{enabled: false}}}}\nserver: {{auth: {auth}}}\n", environ={}
    )
    server = OpscopeServer(loaded, host=host, port=0, data_dir=tmp_path)
    with pytest.raises(ConfigError) as refused:
        await server.start()
    assert way_out in str(refused.value)
    if host == "127.0.0.1":
        assert "bind 127.0.0.1" not in str(refused.value)


async def test_without_tokens_only_local_requests_from_local_pages_are_answered(
    tmp_path: Path,
) -> None:
    """A server without tokens (loopback, server.auth: auto) refuses a Host that is not this
    machine (DNS rebinding) and requests a page of another site sent (a cross-site form POST
    needs no CORS preflight), WebSocket handshakes included; local clients are unaffected."""
    loaded = parse_config("monitor: {system: {enabled: false}}\n", environ={})
    server = OpscopeServer(loaded, port=0, data_dir=tmp_path)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            rebound = await http.get(
                "/api/v1/query", params={"query": "up"}, headers={"Host": "evil.example:80"}
            )
            assert rebound.status_code == 403
            assert rebound.json()["errorType"] == "forbidden" and "Host" in rebound.json()["error"]
            local = await http.get(
                "/api/v1/query",
                params={"query": "up"},
                headers={"Host": f"localhost:{server.port}"},
            )
            assert local.status_code == 200
            cross_site = await http.post(
                "/api/v1/push/csrf",
                content="stolen 1\n",
                headers={"Origin": "http://evil.example", "Content-Type": "text/plain"},
            )
            assert cross_site.status_code == 403
            same_site = await http.post(
                "/api/v1/push/mine", content="ok 1\n", headers={"Origin": server.url}
            )
            assert same_site.status_code == 200
            groups = {g["labels"]["job"] for g in (await http.get("/api/v1/push")).json()["data"]}
            assert groups == {"mine"}
        ws = server.url.replace("http://", "ws://") + "/ws"
        with pytest.raises(InvalidStatus) as refused:
            async with connect(ws, origin="http://evil.example", proxy=None):  # type: ignore[arg-type]
                pass
        assert refused.value.response.status_code == 403
        async with connect(ws, origin=server.url, proxy=None) as live:  # type: ignore[arg-type]
            await live.send(json.dumps({"type": "ping"}))
            assert json.loads(await asyncio.wait_for(live.recv(), 5)) == {"type": "pong"}
    finally:
        await server.stop()
