"""The example service (examples/blatam/services/app.py), run as a real process."""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from tests.conftest import free_port, wait_until

EXAMPLE = Path(__file__).parents[2] / "examples" / "blatam"
#: The Prometheus client libraries' default histogram buckets.
DEFAULT_BUCKETS = [
    "0.005",
    "0.01",
    "0.025",
    "0.05",
    "0.075",
    "0.1",
    "0.25",
    "0.5",
    "0.75",
    "1.0",
    "2.5",
    "5.0",
    "7.5",
    "10.0",
    "+Inf",
]


class App:
    """app.py running on a free port; its stderr lines arrive in ``lines``."""

    def __init__(self, env: dict[str, str]) -> None:
        self.started = time.time()
        self.process = subprocess.Popen(
            [sys.executable, "services/app.py", "--name", "analytics_engine"],
            cwd=EXAMPLE,
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.put(line)

    def line_with(self, text: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if text in line:
                return line
        pytest.fail(f"app.py wrote no line with {text!r} within {timeout}s")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)
        assert self.process.stderr is not None
        self.process.stderr.close()


@pytest.fixture
def app() -> Iterator[tuple[App, str]]:
    port = free_port()
    running = App({"PORT": str(port), "VERSION": "3.1.4"})
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if running.process.poll() is not None:
            pytest.fail(f"app.py exited with {running.process.returncode}")
        try:
            return httpx.get(f"{url}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(ready, what="app.py to answer /health")
        yield running, url
    finally:
        running.stop()


def scrape(url: str) -> dict[str, list[Sample]]:
    response = httpx.get(f"{url}/metrics", timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {f.name: f.samples for f in text_string_to_metric_families(response.text)}


def value(samples: list[Sample], name: str, **labels: str) -> float:
    [found] = [s.value for s in samples if s.name == name and s.labels == labels]
    return found


def test_health_and_index_describe_the_service(app: tuple[App, str]) -> None:
    running, url = app
    health = httpx.get(f"{url}/health", timeout=5)
    assert (health.status_code, health.json()) == (
        200,
        {"status": "ok", "service": "analytics_engine", "version": "3.1.4"},
    )
    index = httpx.get(f"{url}/", timeout=5).json()
    assert (index["service"], index["version"], index["pid"]) == (
        "analytics_engine",
        "3.1.4",
        running.process.pid,
    )
    assert httpx.get(f"{url}/nowhere", timeout=5).status_code == 404


def test_metrics_parse_and_count_every_answer(app: tuple[App, str]) -> None:
    running, url = app
    first = scrape(url)
    health_before = value(
        first["http_requests"], "http_requests_total", method="GET", path="/health", code="200"
    )
    for _ in range(3):
        httpx.get(f"{url}/health", timeout=5)
    httpx.get(f"{url}/nowhere/else", timeout=5)
    httpx.post(f"{url}/health", timeout=5)

    second = scrape(url)
    requests = second["http_requests"]
    assert value(requests, "http_requests_total", method="GET", path="/health", code="200") == (
        health_before + 3
    )
    # The first scrape is counted once it has been answered.
    assert value(requests, "http_requests_total", method="GET", path="/metrics", code="200") == 1
    assert value(requests, "http_requests_total", method="GET", path="other", code="404") == 1
    assert value(requests, "http_requests_total", method="POST", path="/health", code="405") == 1

    get_labels = {"method": "GET", "path": "/health"}
    durations = [
        s
        for s in second["http_request_duration_seconds"]
        if {k: s.labels.get(k) for k in get_labels} == get_labels
    ]
    buckets = [s for s in durations if s.name.endswith("_bucket")]
    assert [s.labels["le"] for s in buckets] == DEFAULT_BUCKETS
    counts = [s.value for s in buckets]
    assert counts == sorted(counts)  # cumulative
    assert counts[-1] == health_before + 3
    assert value(durations, "http_request_duration_seconds_count", **get_labels) == counts[-1]
    assert 0 < value(durations, "http_request_duration_seconds_sum", **get_labels) < counts[-1]

    [start] = second["process_start_time_seconds"]
    assert running.started - 1 <= start.value <= time.time()
    [info] = second["app_info"]
    assert info.labels == {"service": "analytics_engine", "version": "3.1.4"}


def test_sigterm_answers_the_request_in_progress_then_exits_0(app: tuple[App, str]) -> None:
    running, url = app
    running.line_with("listening on")
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(b"GET /health HTTP/1.0\r\n")  # the request is in progress
        running.process.send_signal(signal.SIGTERM)
        running.line_with("SIGTERM, stopping")
        assert running.process.poll() is None

        conn.sendall(b"\r\n")
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.0 200 OK")
    assert running.process.wait(timeout=10) == 0


def test_port_is_required() -> None:
    env = {k: v for k, v in os.environ.items() if k != "PORT"}
    result = subprocess.run(
        [sys.executable, "services/app.py", "--name", "ai_system"],
        check=False,
        cwd=EXAMPLE,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "set PORT" in result.stderr
