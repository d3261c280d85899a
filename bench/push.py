"""Push ingest: 10,000-sample exposition bodies from 4 concurrent clients, samples/s and p99.

``opscope serve`` runs as its own process on a free loopback port (system metrics off, the push
API on, a fresh data directory). Four clients — asyncio tasks of this process, each with its own
keep-alive HTTP connection, sending prebuilt requests as wrk does (``--client httpx`` uses
httpx instead) — push to their own group (``/api/v1/push/bench/instance/cN``) as fast as the
server answers: every request is a ``PUT`` of 100 gauge families × 100 series = 10,000 samples
(about 640 kB of text), with the same series and new values each time, as a
batch job that pushes its state does. Each request is timed from send to full response; a
request is counted only when it answers 200. After the run, a query checks that the store
holds every pushed series with the last value pushed.

Baseline, side by side when installed: the Prometheus Pushgateway (Debian
``prometheus-pushgateway``), started on another free loopback port and driven with the same
bodies at ``/metrics/job/bench/instance/cN``. It keeps pushed metrics in memory (no disk),
opscope writes every push to SQLite and keeps the groups' state there, so the comparison is
conservative for opscope.

Target (opscope): ≥ 500,000 samples/s stored and p99 request latency ≤ 50 ms on this machine.

Run: ``.venv/bin/python bench/push.py [--seconds 10] [--json]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from _support import free_port, machine, print_json, stop_process, wait_http

CLIENTS = 4
FAMILIES = 100
SERIES = 100
VARIANTS = 4
TARGET_RATE = 500_000
TARGET_P99_MS = 50.0


def bodies(seed: int) -> list[str]:
    """``VARIANTS`` bodies with the same 10,000 series and different values."""
    rng = random.Random(seed)
    out = []
    for _ in range(VARIANTS):
        lines = []
        for f in range(FAMILIES):
            name = f"bench_job_metric_{f}"
            lines.append(f"# TYPE {name} gauge")
            for s in range(SERIES):
                labels = f'shard="{s}",zone="z{s % 3}",table="t{s % 7}"'
                lines.append(f"{name}{{{labels}}} {rng.uniform(0, 1e6):.3f}")
        out.append("\n".join(lines) + "\n")
    return out


@dataclass
class Outcome:
    """One system's run: samples stored per second, request latencies (s), failures."""

    name: str
    samples: int
    seconds: float
    latencies: list[float]
    failures: int

    @property
    def rate(self) -> float:
        return self.samples / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Connection:
    """One keep-alive HTTP/1.1 connection that sends prebuilt requests, as a load generator
    such as wrk does (``--client raw``, the default): a full client library takes CPU from
    the server on a 2-core machine (httpx about 2.5 ms per 640 kB request here; it stays
    available as ``--client httpx``)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, url: str) -> Connection:
        parts = urlsplit(url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        return cls(reader, writer)

    async def send(self, request: bytes) -> tuple[int, bytes]:
        """Send ``request`` (head and body) and read the whole response: (status, body)."""
        self.writer.write(request)
        await self.writer.drain()
        status = int((await self.reader.readline()).split()[1])
        length, chunked = 0, False
        while (line := await self.reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
            elif name.strip().lower() == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
        if not chunked:
            return status, await self.reader.readexactly(length)
        body = b""
        while size := int((await self.reader.readline()).strip() or b"0", 16):
            body += await self.reader.readexactly(size)
            await self.reader.readline()
        await self.reader.readline()
        return status, body

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


def put_request(url: str, body: bytes) -> bytes:
    """A complete ``PUT url`` HTTP/1.1 request with ``body`` as exposition text."""
    parts = urlsplit(url)
    head = (
        f"PUT {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f"Content-Type: text/plain; version=0.0.4\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class HttpxConnection:
    """The same requests sent with httpx (``--client httpx``)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = httpx.AsyncClient(timeout=30.0)

    async def send(self, body: bytes) -> tuple[int, bytes]:
        response = await self.http.put(
            self.url, content=body, headers={"Content-Type": "text/plain; version=0.0.4"}
        )
        return response.status_code, response.content

    async def close(self) -> None:
        await self.http.aclose()


async def drive(
    name: str, url_of: list[str], texts: list[str], seconds: float, client_kind: str = "raw"
) -> Outcome:
    """Push from ``CLIENTS`` tasks for ``seconds`` (after two warm-up pushes each)."""
    latencies: list[float] = []
    failures = 0
    samples = 0
    raw = client_kind == "raw"
    requests = [
        [put_request(url, t.encode()) if raw else t.encode() for t in texts] for url in url_of
    ]

    async def client(index: int, deadline: float | None, rounds: int) -> None:
        nonlocal failures, samples
        connection: Connection | HttpxConnection = (
            await Connection.open(url_of[index]) if raw else HttpxConnection(url_of[index])
        )
        try:
            n = 0
            while (deadline is None and n < rounds) or (
                deadline is not None and time.perf_counter() < deadline
            ):
                request = requests[index][(n + index) % len(texts)]
                started = time.perf_counter()
                status, body = await connection.send(request)
                elapsed = time.perf_counter() - started
                n += 1
                if deadline is None:
                    continue
                if status in (200, 202):
                    latencies.append(elapsed)
                    samples += FAMILIES * SERIES
                else:
                    failures += 1
                    if failures == 1:
                        print(f"{name}: HTTP {status} {body[:200]!r}")
        finally:
            await connection.close()

    await asyncio.gather(*(client(i, None, 2) for i in range(CLIENTS)))  # warm-up
    started = time.perf_counter()
    deadline = started + seconds
    await asyncio.gather(*(client(i, deadline, 0) for i in range(CLIENTS)))
    return Outcome(name, samples, time.perf_counter() - started, latencies, failures)


def start_opscope(tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    config = tmp / "opscope.yaml"
    config.write_text(
        "monitor:\n  interval: 10s\n  system: {enabled: false}\nserver: {host: 127.0.0.1}\n"
    )
    log = (tmp / "serve.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "opscope",
            "serve",
            "-c",
            str(config),
            "--port",
            str(port),
            "--data-dir",
            str(tmp / "data"),
            "--log-level",
            "warning",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/healthz", alive=lambda: process.poll() is None)
    return process, url


def start_pushgateway(tmp: Path) -> tuple[subprocess.Popen[bytes], str] | None:
    binary = shutil.which("prometheus-pushgateway") or shutil.which("pushgateway")
    if binary is None:
        return None
    port = free_port()
    process = subprocess.Popen(
        [binary, f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=(tmp / "pushgateway.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/-/ready", alive=lambda: process.poll() is None)
    return process, url


def pushgateway_version(binary: str | None) -> str:
    if binary is None:
        return ""
    result = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
    )
    first = (result.stdout or result.stderr).splitlines()
    return first[0] if first else ""


CHECKED_FAMILIES = (0, 37, 99)


def check_stored(url: str, last: list[str]) -> int:
    """How many series of three families (of every client) hold the last value pushed."""
    expected: dict[tuple[str, str, str], float] = {}
    for index in range(CLIENTS):
        for line in last[index].splitlines():
            if line.startswith("#"):
                continue
            key, _, value = line.rpartition(" ")
            name, _, labels = key.partition("{")
            shard = labels.split('shard="')[1].split('"')[0]
            expected[(f"c{index}", name, shard)] = float(value)
    families = "|".join(str(f) for f in CHECKED_FAMILIES)
    response = httpx.get(
        f"{url}/api/v1/query",
        params={"query": '{job="bench",__name__=~"bench_job_metric_(' + families + ')"}'},
        timeout=30,
    )
    if response.status_code != 200:
        print(f"query failed: HTTP {response.status_code} {response.text[:300]}", file=sys.stderr)
        return 0
    found = 0
    for item in response.json()["data"]["result"]:
        metric = item["metric"]
        wanted = expected.get((metric["instance"], metric["__name__"], metric["shard"]))
        if wanted == float(item["value"][1]):
            found += 1
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per system")
    parser.add_argument("--seed", type=int, default=1, help="body generator seed")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--client",
        choices=("raw", "httpx"),
        default="raw",
        help="load generator: prebuilt HTTP/1.1 requests (raw) or httpx",
    )
    args = parser.parse_args()
    say = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
    texts = bodies(args.seed)
    say(f"bodies: {FAMILIES * SERIES} samples, {len(texts[0]) / 1e3:.0f} kB; {machine()}")
    results: list[Outcome] = []
    stored = 0
    with tempfile.TemporaryDirectory() as tmp:
        process, url = start_opscope(Path(tmp))
        try:
            urls = [f"{url}/api/v1/push/bench/instance/c{i}" for i in range(CLIENTS)]
            results.append(asyncio.run(drive("opscope", urls, texts, args.seconds, args.client)))
            ops = results[0]
            # Each client's last body: the requests alternate variants, so push them once more.
            last = [texts[i % VARIANTS] for i in range(CLIENTS)]
            for i in range(CLIENTS):
                httpx.put(urls[i], content=last[i].encode(), timeout=30)
            stored = check_stored(url, last)
        finally:
            stop_process(process)
        binary = shutil.which("prometheus-pushgateway") or shutil.which("pushgateway")
        gateway = start_pushgateway(Path(tmp))
        if gateway is not None:
            gw_process, gw_url = gateway
            try:
                urls = [f"{gw_url}/metrics/job/bench/instance/c{i}" for i in range(CLIENTS)]
                results.append(
                    asyncio.run(drive("pushgateway", urls, texts, args.seconds, args.client))
                )
            finally:
                stop_process(gw_process)
    for r in results:
        say(
            f"{r.name}: {r.rate:,.0f} samples/s, {len(r.latencies)} pushes, p50 "
            f"{r.percentile(0.5) * 1e3:.1f} ms, p99 {r.percentile(0.99) * 1e3:.1f} ms, "
            f"{r.failures} failed"
        )
    checked = CLIENTS * len(CHECKED_FAMILIES) * SERIES
    say(f"opscope holds the last pushed value of {stored} of {checked} series checked")
    ops = results[0]
    p99_ms = ops.percentile(0.99) * 1e3
    met = (
        ops.rate >= TARGET_RATE
        and p99_ms <= TARGET_P99_MS
        and stored == CLIENTS * len(CHECKED_FAMILIES) * SERIES
    )
    baseline = results[1] if len(results) > 1 else None
    ratio = ops.rate / baseline.rate if baseline and baseline.rate else None
    summary = (
        f"push: opscope {ops.rate:,.0f} samples/s, p99 {p99_ms:.1f} ms "
        f"(target ≥ {TARGET_RATE:,} samples/s and p99 ≤ {TARGET_P99_MS:g} ms: "
        f"{'met' if met else 'NOT met'})"
    )
    if baseline is not None:
        summary += (
            f"; {pushgateway_version(binary) or 'pushgateway'} {baseline.rate:,.0f} samples/s, "
            f"p99 {baseline.percentile(0.99) * 1e3:.1f} ms; ratio {ratio:.2f}"
        )
    else:
        summary += "; no baseline (apt-get install prometheus-pushgateway)"
    if args.json:
        print_json(
            {
                "benchmark": "push",
                "machine": machine(),
                "opscope_samples_per_second": ops.rate,
                "opscope_p50_ms": ops.percentile(0.5) * 1e3,
                "opscope_p99_ms": p99_ms,
                "opscope_failures": ops.failures,
                "stored_series_checked": stored,
                "baseline": None
                if baseline is None
                else {
                    "name": "pushgateway",
                    "samples_per_second": baseline.rate,
                    "p99_ms": baseline.percentile(0.99) * 1e3,
                },
                "ratio": ratio,
                "target_met": met,
                "summary": summary,
            }
        )
    else:
        print(summary)


if __name__ == "__main__":
    main()
