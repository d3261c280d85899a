"""Shared fixtures: free loopback ports, real-tool requirements, a real `opscope serve` process."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ON_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_tool(name: str) -> str:
    """The path of executable ``name``; skip the test when it is missing (fail under CI)."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (Debian: apt-get install {name})"
        if ON_CI:
            pytest.fail(f"{message}; CI must install it")
        pytest.skip(message)
    return path


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


POLL_INTERVAL = 0.02


def wait_until(predicate: Callable[[], bool], *, timeout: float = 15.0, what: str = "") -> None:
    """Poll ``predicate`` every ``POLL_INTERVAL`` s until it is true; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(POLL_INTERVAL)
    pytest.fail(f"timed out after {timeout}s waiting for {what or predicate}")


@dataclass
class ServeProcess:
    """A running `opscope serve` subprocess."""

    process: subprocess.Popen[bytes]
    url: str
    data_dir: Path
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def serve_process(tmp_path: Path) -> Iterator[Callable[[str], ServeProcess]]:
    """Start `python -m opscope serve` with a config text; ``{port}`` in it is the server port."""
    started: list[ServeProcess] = []

    def start(
        config_text: str, *, port: int | None = None, data_dir: Path | None = None
    ) -> ServeProcess:
        port = port or free_port()
        index = len(started)
        config = tmp_path / f"opscope-{index}.yaml"
        config.write_text(config_text.replace("{port}", str(port)))
        data_dir = data_dir or tmp_path / f"data-{index}"
        log = tmp_path / f"serve-{index}.log"
        with log.open("wb") as sink:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "opscope",
                    "serve",
                    "-c",
                    str(config),
                    "--data-dir",
                    str(data_dir),
                    "--port",
                    str(port),
                ],
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        serve = ServeProcess(process, f"http://127.0.0.1:{port}", data_dir, log)
        started.append(serve)

        def healthy() -> bool:
            if process.poll() is not None:
                pytest.fail(f"opscope serve exited with {process.returncode}:\n{serve.output()}")
            try:
                return httpx.get(f"{serve.url}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(healthy, what="opscope serve to answer /healthz")
        return serve

    yield start
    for serve in started:
        if serve.process.poll() is None:
            serve.process.terminate()
            try:
                serve.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                serve.process.kill()
                serve.process.wait()


@dataclass
class Route:
    """What the test HTTP server answers on one path."""

    status: int = 200
    body: bytes = b""
    delay: float = 0.0
    content_type: str = "text/plain; version=0.0.4"
    headers: dict[str, str] | None = None
    #: Statuses answered to successive requests (the last one repeats); overrides ``status``.
    statuses: list[int] | None = None


class LocalHTTPServer:
    """A real HTTP server on a free loopback port whose answers the test sets per path."""

    def __init__(self) -> None:
        import http.server
        import threading

        routes: dict[str, Route] = {}
        self.routes = routes
        self.hits: dict[str, int] = {}
        hits = self.hits
        #: Every request received: (method, path, headers, body).
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        requests = self.requests

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                hits[self.path] = hits.get(self.path, 0) + 1
                requests.append((self.command, self.path, dict(self.headers), body))
                route = routes.get(self.path, Route(404, b"not found\n"))
                if route.delay:
                    time.sleep(route.delay)  # the server under test is slow on purpose
                status = route.status
                if route.statuses:
                    status = route.statuses[min(hits[self.path], len(route.statuses)) - 1]
                self.send_response(status)
                self.send_header("Content-Type", route.content_type)
                self.send_header("Content-Length", str(len(route.body)))
                for name, value in (route.headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(route.body)

            do_HEAD = do_GET
            do_POST = do_GET

            def log_message(self, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def http_server() -> Iterator[LocalHTTPServer]:
    """A real HTTP server on loopback; set ``http_server.routes[path] = Route(...)``."""
    server = LocalHTTPServer()
    yield server
    server.close()


@pytest.fixture(scope="session")
def node_exporter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Prometheus node_exporter on a free loopback port; yields its ``host:port``."""
    binary = require_tool("prometheus-node-exporter")
    port = free_port()
    address = f"127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("node_exporter") / "stderr.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [binary, f"--web.listen-address={address}"],
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )

    def ready() -> bool:
        if process.poll() is not None:
            pytest.fail(f"node_exporter exited: {log.read_text(errors='replace')}")
        try:
            return httpx.get(f"http://{address}/metrics", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(ready, what="node_exporter to serve /metrics")
    yield address
    process.terminate()
    process.wait(timeout=10)


class SMTPServer:
    """A real SMTP server (aiosmtpd) on a free loopback port that can go down and come back."""

    def __init__(self) -> None:
        self.port = free_port()
        self.messages: list[bytes] = []
        self._controller: object | None = None
        self.start()

    def start(self) -> None:
        from aiosmtpd.controller import Controller

        messages = self.messages

        class Handler:
            async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
                messages.append(envelope.content)  # type: ignore[attr-defined]
                return "250 Message accepted for delivery"

        controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        controller.start()
        self._controller = controller

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()  # type: ignore[attr-defined]
            self._controller = None

    @property
    def url(self) -> str:
        """An apprise URL delivering to this server."""
        return (
            f"mailto://127.0.0.1:{self.port}?from=opscope@example.com"
            "&to=ops@example.com&mode=insecure"
        )


@pytest.fixture
def smtp_server() -> Iterator[SMTPServer]:
    """A real SMTP server on loopback; ``.messages`` holds what it received."""
    server = SMTPServer()
    yield server
    server.stop()


@pytest.fixture(autouse=True, scope="session")
def _source_snapshots(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Snapshots of report sources (`opscope report` keeps them in the user's cache) go to a
    folder of this test run, for in-process and subprocess runs alike."""
    before = os.environ.get("OPSCOPE_CACHE_DIR")
    os.environ["OPSCOPE_CACHE_DIR"] = str(tmp_path_factory.mktemp("source-snapshots"))
    yield
    if before is None:
        os.environ.pop("OPSCOPE_CACHE_DIR", None)
    else:
        os.environ["OPSCOPE_CACHE_DIR"] = before
