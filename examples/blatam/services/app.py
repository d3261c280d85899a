"""One small HTTP service of the Blatam stack, run by the `development` environment's local backend
as each of its three services (``--name``). Standard library only.

Environment: ``PORT`` (required) is the port to listen on, ``VERSION`` (optional) the version
reported. Endpoints:

* ``GET /health``  → 200 ``{"status": "ok", "service": …, "version": …}``
* ``GET /metrics`` → Prometheus text exposition: ``http_requests_total{method,path,code}``,
  ``http_request_duration_seconds{method,path}`` (histogram, the Prometheus client libraries'
  default buckets), ``process_start_time_seconds`` and ``app_info{service,version}``
* ``GET /``        → JSON about the service (name, version, pid, uptime, requests answered)

Paths other than these are counted under ``path="other"`` so the label set stays bounded.
SIGTERM (or SIGINT) stops accepting connections, answers the requests already received,
including connections already queued, and exits 0.

Run it by hand: ``PORT=8000 VERSION=1.0.0 python3 services/app.py --name ai_system``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType

#: Upper bounds of the latency histogram, in seconds (the Prometheus client libraries' default).
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
ROUTES = ("/", "/health", "/metrics")
EXPOSITION_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: Seconds a connection may stay silent before it is closed.
CONNECTION_TIMEOUT = 30.0
#: Seconds between two looks at a shutdown request by the serving loop.
SHUTDOWN_POLL = 0.1


def _label_value(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{k}="{_label_value(v)}"' for k, v in labels.items()) + "}"


def _number(value: float) -> str:
    return "+Inf" if value == float("inf") else repr(float(value))


class Metrics:
    """Request counters and latency histograms, safe to update from many threads."""

    def __init__(self, service: str, version: str) -> None:
        self.service = service
        self.version = version
        self.started_at = time.time()
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str, str], int] = {}
        #: (method, path) → (count per bucket, not cumulative; sum of seconds; count)
        self._durations: dict[tuple[str, str], tuple[list[int], float, int]] = {}

    def observe(self, method: str, path: str, code: int, seconds: float) -> None:
        """Count one answered request and its duration."""
        with self._lock:
            key = (method, path, str(code))
            self._requests[key] = self._requests.get(key, 0) + 1
            buckets, total, count = self._durations.get((method, path), ([0] * len(BUCKETS), 0, 0))
            for index, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    buckets[index] += 1
                    break
            self._durations[(method, path)] = (buckets, total + seconds, count + 1)

    def total(self) -> int:
        """Requests answered so far."""
        with self._lock:
            return sum(self._requests.values())

    def exposition(self) -> str:
        """Every metric in Prometheus text exposition format 0.0.4."""
        with self._lock:
            requests = sorted(self._requests.items())
            durations = sorted((k, (list(b), s, c)) for k, (b, s, c) in self._durations.items())
        lines = [
            "# HELP http_requests_total HTTP requests answered, by method, path and status code.",
            "# TYPE http_requests_total counter",
        ]
        for (method, path, code), value in requests:
            lines.append(
                f"http_requests_total{_labels(method=method, path=path, code=code)} {value}"
            )
        lines += [
            "# HELP http_request_duration_seconds Time taken to answer HTTP requests.",
            "# TYPE http_request_duration_seconds histogram",
        ]
        for (method, path), (buckets, total, count) in durations:
            cumulative = 0
            for bound, hits in zip((*BUCKETS, float("inf")), (*buckets, 0), strict=True):
                cumulative += hits
                if bound == float("inf"):
                    cumulative = count
                labels = _labels(method=method, path=path, le=_number(bound))
                lines.append(f"http_request_duration_seconds_bucket{labels} {cumulative}")
            labels = _labels(method=method, path=path)
            lines.append(f"http_request_duration_seconds_sum{labels} {_number(total)}")
            lines.append(f"http_request_duration_seconds_count{labels} {count}")
        lines += [
            "# HELP process_start_time_seconds Start time of the process since unix epoch in "
            "seconds.",
            "# TYPE process_start_time_seconds gauge",
            f"process_start_time_seconds {_number(self.started_at)}",
            "# HELP app_info The service and version this process runs.",
            "# TYPE app_info gauge",
            f"app_info{_labels(service=self.service, version=self.version)} 1",
        ]
        return "\n".join(lines) + "\n"


class Handler(BaseHTTPRequestHandler):
    """Answers the service's endpoints; every answer is counted in ``server.metrics``."""

    server: Server
    timeout = CONNECTION_TIMEOUT
    server_version = "blatam-app"

    def do_GET(self) -> None:
        started = time.perf_counter()
        path = self.path.split("?", 1)[0]
        metrics = self.server.metrics
        if path == "/health":
            code = self._send_json(
                200, {"status": "ok", "service": metrics.service, "version": metrics.version}
            )
        elif path == "/metrics":
            code = self._send(200, metrics.exposition().encode(), EXPOSITION_TYPE)
        elif path == "/":
            code = self._send_json(
                200,
                {
                    "service": metrics.service,
                    "version": metrics.version,
                    "pid": os.getpid(),
                    "started_at": metrics.started_at,
                    "uptime_seconds": round(time.time() - metrics.started_at, 3),
                    "requests_total": metrics.total(),
                    "endpoints": list(ROUTES),
                },
            )
        else:
            code = self._send_json(404, {"error": f"no such path: {path}"})
        self._observe(path, code, started)

    do_HEAD = do_GET

    def _refuse(self) -> None:
        started = time.perf_counter()
        path = self.path.split("?", 1)[0]
        code = self._send_json(405, {"error": f"method {self.command} not allowed"})
        self._observe(path, code, started)

    do_POST = do_PUT = do_DELETE = do_PATCH = _refuse

    def _observe(self, path: str, code: int, started: float) -> None:
        route = path if path in ROUTES else "other"
        self.server.metrics.observe(self.command, route, code, time.perf_counter() - started)

    def _send_json(self, code: int, body: dict[str, object]) -> int:
        return self._send(code, json.dumps(body).encode() + b"\n", "application/json")

    def _send(self, code: int, body: bytes, content_type: str) -> int:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        return code


class Server(ThreadingHTTPServer):
    """A threading HTTP server whose ``server_close`` waits for the requests in progress."""

    daemon_threads = False
    block_on_close = True

    def __init__(self, address: tuple[str, int], metrics: Metrics) -> None:
        self.metrics = metrics
        super().__init__(address, Handler)

    def drain_backlog(self) -> int:
        """Answer the connections the kernel has already accepted; how many there were."""
        self.socket.setblocking(False)
        handled = 0
        while True:
            try:
                request, address = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return handled
            request.setblocking(True)
            self.process_request(request, address)
            handled += 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", required=True, help="service name reported")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    args = parser.parse_args(argv)
    port = os.environ.get("PORT", "")
    if not port.isdigit():
        print(f"{args.name}: set PORT to the port to listen on (got {port!r})", file=sys.stderr)
        return 2
    metrics = Metrics(args.name, os.environ.get("VERSION") or "dev")
    try:
        server = Server((args.host, int(port)), metrics)
    except OSError as exc:
        print(f"{args.name}: cannot listen on {args.host}:{port}: {exc}", file=sys.stderr)
        return 1
    stopping = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        if not stopping.is_set():
            stopping.set()
            print(f"{args.name}: {signal.Signals(signum).name}, stopping", file=sys.stderr)
            # shutdown() waits for serve_forever(), which runs in this (the main) thread.
            threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(
        f"{args.name} {metrics.version} listening on {args.host}:{port} (pid {os.getpid()})",
        file=sys.stderr,
    )
    server.serve_forever(poll_interval=SHUTDOWN_POLL)
    queued = server.drain_backlog()
    server.server_close()  # joins the threads still answering
    print(f"{args.name}: stopped ({queued} queued connections answered)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
