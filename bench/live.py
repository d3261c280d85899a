"""Live-update latency: from "sample stored" to "message received" over the WebSocket ``/ws``.

Starts a real ``opscope serve`` process (``bench/_live_server.py``: the same server, plus a log of
the wall-clock time of every store commit) on a free loopback port with a temporary data
directory and a 1 s collection cycle: the system collector, a scrape of the server's own
``/metrics`` and an HTTP probe of its ``/healthz``, all every 1 s. Then ``--clients`` WebSocket
clients (default 200, the ``websockets`` library, all in this one asyncio process) each subscribe
to ten metrics — cpu_usage, memory_usage, load1, active_connections, disk_usage,
network_receive_bytes_per_second, network_transmit_bytes_per_second (system collector), up,
scrape_duration_seconds (scrape) and probe_duration_seconds (probe) — and receive
``metrics_update`` messages for ``--duration`` seconds (default 60).

Each message is stamped with ``time.time()`` as soon as ``recv()`` returns it (it is parsed only
after the run). Two delays are reported per message, in milliseconds:

* **from commit** — receive time minus the wall-clock time of the store commit of the batch the
  message reports (matched by the batch timestamp in ms, which the message carries). This is
  "sample stored → message received", the delay the target (p99 ≤ 50 ms) refers to;
* **from sample timestamp** — receive time minus the message's ``timestamp`` (the collection's
  start): it also contains the collection itself (a psutil read, an HTTP scrape or probe).

Delivery is checked too: every commit in the window should reach every client once. To tell
the server's delays from the environment's, both processes record their event-loop stalls (a
5 ms sleep waking more than 10 ms late), each message slower than the target is attributed to
the stalls overlapping it, and the machine's CPU pressure (Linux PSI: share of the time some task
waited for a CPU) over the window is printed — on a shared machine it explains outliers.

Run: ``.venv/bin/python bench/live.py`` (``--duration 10`` for a quick look, ``--json``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from _support import (
    cpu_pressure_us,
    free_port,
    machine,
    metric_samples,
    metric_sum,
    print_json,
    stop_process,
    wait_http,
    watch_loop,
)

NAME = "live"
#: Target: 99th percentile of the commit → receive delay, in milliseconds.
TARGET_P99_MS = 50.0
METRICS = (
    "cpu_usage",
    "memory_usage",
    "load1",
    "active_connections",
    "disk_usage",
    "network_receive_bytes_per_second",
    "network_transmit_bytes_per_second",
    "up",
    "scrape_duration_seconds",
    "probe_duration_seconds",
)
CONFIG = """\
project: bench-live
server:
  host: 127.0.0.1
  port: {port}
monitor:
  interval: 1s
  system:
    enabled: true
    interval: 1s
  scrape:
    - job: opscope
      targets: ["127.0.0.1:{port}"]
      interval: 1s
      timeout: 1s
  probes:
    - job: opscope-health
      targets: ["http://127.0.0.1:{port}/healthz"]
      interval: 1s
      timeout: 1s
"""
#: The message's top-level timestamp: json.dumps writes "type" then "timestamp" first.
_TIMESTAMP = re.compile(r'"timestamp":\s*([0-9.eE+-]+)')
Say = Callable[[str], None]


@dataclass
class ClientLog:
    """What the clients saw: ``(receive time s, client index, head of text)`` per update."""

    updates: list[tuple[float, int, str]] = field(default_factory=list)
    other: Counter[str] = field(default_factory=Counter)
    closed: Counter[str] = field(default_factory=Counter)
    #: Full texts of client 0's updates, to check which metrics arrive.
    sample_texts: list[str] = field(default_factory=list)
    #: Event-loop stalls of this (client) process: ``(start Unix s, length s)``.
    stalls: list[tuple[float, float]] = field(default_factory=list)


@dataclass
class Window:
    """The measurement window (Unix s) and what this process saw in it."""

    start: float
    end: float
    client_cpu_s: float
    cpu_pressure_s: float | None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        prog="bench/live.py",
        description="Delay from store commit to WebSocket receipt of opscope's live "
        "metrics_update messages, with many clients on a real `opscope serve`.",
    )
    parser.add_argument(
        "--duration", type=float, default=60.0, help="seconds to measure (default 60)"
    )
    parser.add_argument("--clients", type=int, default=200, help="WebSocket clients (default 200)")
    parser.add_argument(
        "--settle",
        type=float,
        default=3.0,
        help="seconds after all clients subscribed before measuring (default 3)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.duration <= 2 or args.clients < 1 or args.settle < 0:
        parser.error("--duration must exceed 2 s, --clients be positive, --settle >= 0")
    return args


async def run_client(index: int, url: str, log: ClientLog, subscribed: asyncio.Queue[int]) -> None:
    """One client: subscribe, then record every message until cancelled or closed."""
    try:
        async with connect(url, open_timeout=60, max_size=None) as ws:
            await ws.send(json.dumps({"type": "subscribe", "metrics": list(METRICS)}))
            while True:
                reply = json.loads(await ws.recv(decode=True))
                if reply.get("type") == "subscription_confirmed":
                    break
                log.other[str(reply.get("type"))] += 1
            subscribed.put_nowait(index)
            while True:
                text = await ws.recv(decode=True)
                received = time.time()
                if text.startswith('{"type": "metrics_update"'):
                    log.updates.append((received, index, text[:120]))
                    if index == 0:
                        log.sample_texts.append(text)
                else:
                    log.other[str(json.loads(text).get("type"))] += 1
    except ConnectionClosed as exc:
        code = exc.rcvd.code if exc.rcvd is not None else None
        log.closed[f"closed {code}"] += 1


async def drive_clients(url: str, args: argparse.Namespace, say: Say) -> tuple[ClientLog, Window]:
    """Connect the clients, measure for ``args.duration`` s; return what they saw."""
    log = ClientLog()
    subscribed: asyncio.Queue[int] = asyncio.Queue()
    ws_url = url.replace("http://", "ws://") + "/ws"
    tasks = [
        asyncio.create_task(run_client(i, ws_url, log, subscribed), name=f"client-{i}")
        for i in range(args.clients)
    ]
    connect_start = time.monotonic()
    for ready in range(args.clients):
        try:
            await asyncio.wait_for(subscribed.get(), timeout=60)
        except TimeoutError:
            failed = [t for t in tasks if t.done()]
            raise RuntimeError(
                f"only {ready} clients subscribed within 60 s ({len(failed)} ended: {log.closed})"
            ) from None
    say(
        f"{NAME}: {args.clients} clients subscribed in {time.monotonic() - connect_start:.2f} s; "
        f"settling {args.settle:g} s, then measuring {args.duration:g} s"
    )
    watcher = asyncio.create_task(watch_loop(log.stalls), name="loop-watch")
    await asyncio.sleep(args.settle)
    cpu0, pressure0 = time.process_time(), cpu_pressure_us()
    start = time.time()
    await asyncio.sleep(args.duration)
    end = time.time()
    client_cpu, pressure1 = time.process_time() - cpu0, cpu_pressure_us()
    for task in [*tasks, watcher]:
        task.cancel()
    await asyncio.gather(*tasks, watcher, return_exceptions=True)
    pressure = None if pressure0 is None or pressure1 is None else (pressure1 - pressure0) / 1e6
    return log, Window(start, end, client_cpu, pressure)


@dataclass(frozen=True)
class Commit:
    """One committed append, from the server's commit log (times in Unix s)."""

    ts_ms: int
    group: str
    commit: float
    after_broadcast: float | None

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> Commit:
        """Read one record written by ``_live_server.py``."""
        after = record["after_broadcast"]
        return cls(
            ts_ms=int(record["ts_ms"]),
            group=str(record["groups"][0]),
            commit=float(record["commit"]),
            after_broadcast=None if after is None else float(after),
        )


@dataclass(frozen=True)
class Stats:
    """Distribution of delays in milliseconds."""

    count: int
    p50: float
    p90: float
    p99: float
    max: float

    @classmethod
    def of(cls, values: list[float]) -> Stats:
        """p50/p90/p99/max of ``values`` (ms), rounded to 0.01 ms; NaN when empty."""
        if not values:
            nan = float("nan")
            return cls(0, nan, nan, nan, nan)
        array = np.array(values)
        p50, p90, p99 = (round(float(x), 2) for x in np.percentile(array, [50, 90, 99]))
        return cls(len(values), p50, p90, p99, round(float(array.max()), 2))

    def line(self) -> str:
        """``p50 … ms  p90 … ms  p99 … ms  max … ms``."""
        return (
            f"p50 {self.p50:7.2f} ms  p90 {self.p90:7.2f} ms  p99 {self.p99:7.2f} ms  "
            f"max {self.max:7.2f} ms"
        )


@dataclass
class Stalls:
    """Event-loop stalls (> 10 ms late wake-ups) of one process inside the window."""

    count: int
    total_ms: float
    max_ms: float

    @classmethod
    def of(cls, stalls: list[tuple[float, float]], start: float, end: float) -> Stalls:
        """The stalls that began inside ``[start, end]``."""
        inside = [length * 1000 for at, length in stalls if start <= at <= end]
        return cls(len(inside), round(sum(inside), 1), round(max(inside, default=0.0), 1))


@dataclass
class Analysis:
    """Messages matched to commits: delays (ms), delivery counts, and why slow ones were slow.

    A message slower than the target is attributed to the server's and/or the client process's
    event-loop stalls that overlap its commit → receive interval; "neither" means no stall of
    either loop explains it (the time went to sending, the kernel, or CPU starvation between
    the 5 ms probes).
    """

    from_commit: Stats
    from_sample_timestamp: Stats
    from_commit_by_collector: dict[str, Stats]
    hub_broadcast: Stats
    commits_in_window: int
    ambiguous_timestamps: int
    messages_measured: int
    messages_expected: int
    messages_delivered: int
    messages_unmatched: int
    server_stalls: Stalls
    client_stalls: Stalls
    slow_messages: dict[str, int]


def _overlaps(stalls: list[tuple[float, float]], begin: float, end: float) -> bool:
    return any(at < end and at + length > begin for at, length in stalls)


def _cause(
    server: list[tuple[float, float]], client: list[tuple[float, float]], begin: float, end: float
) -> str:
    """Which process's event-loop stalls overlap ``[begin, end]``."""
    in_server, in_client = _overlaps(server, begin, end), _overlaps(client, begin, end)
    if in_server and in_client:
        return "both"
    if in_server:
        return "server stall"
    return "client stall" if in_client else "neither"


def analyse(
    log: ClientLog,
    commits: list[Commit],
    server_stalls: list[tuple[float, float]],
    window: Window,
    clients: int,
) -> Analysis:
    """Match each received update to the commit of its batch (by timestamp in ms).

    Updates of commits outside the window are left out. Two commits with the same batch
    timestamp cannot be told apart and are left out too (counted as ambiguous).
    """
    start, end = window.start, window.end
    by_ts: dict[int, list[Commit]] = defaultdict(list)
    for record in commits:
        by_ts[record.ts_ms].append(record)
    ambiguous = {ts for ts, records in by_ts.items() if len(records) > 1}
    in_window = [r for r in commits if start <= r.commit <= end]
    # Commits whose updates must all have arrived: in the window, ≥ 1 s before its end.
    expected_ts = {r.ts_ms for r in in_window if r.commit <= end - 1.0} - ambiguous
    from_commit: list[float] = []
    from_sample: list[float] = []
    per_group: dict[str, list[float]] = defaultdict(list)
    delivered: Counter[int] = Counter()
    slow: Counter[str] = Counter()
    unmatched = 0
    for received, _, head in log.updates:
        match = _TIMESTAMP.search(head)
        ts_s = float(match.group(1)) if match else float("nan")
        ts_ms = round(ts_s * 1000) if match else -1
        if ts_ms not in by_ts or ts_ms in ambiguous:
            unmatched += start <= received <= end
            continue
        record = by_ts[ts_ms][0]
        if not start <= record.commit <= end:
            continue
        delay = (received - record.commit) * 1000
        if delay > TARGET_P99_MS:
            slow[_cause(server_stalls, log.stalls, record.commit, received)] += 1
        from_commit.append(delay)
        from_sample.append((received - ts_s) * 1000)
        per_group[record.group.split("/")[0]].append(delay)
        if ts_ms in expected_ts:
            delivered[ts_ms] += 1
    broadcast = [
        (r.after_broadcast - r.commit) * 1000 for r in in_window if r.after_broadcast is not None
    ]
    return Analysis(
        from_commit=Stats.of(from_commit),
        from_sample_timestamp=Stats.of(from_sample),
        from_commit_by_collector={g: Stats.of(v) for g, v in sorted(per_group.items())},
        hub_broadcast=Stats.of(broadcast),
        commits_in_window=len(in_window),
        ambiguous_timestamps=len(ambiguous),
        messages_measured=len(from_commit),
        messages_expected=len(expected_ts) * clients,
        messages_delivered=sum(delivered[ts] for ts in expected_ts),
        messages_unmatched=unmatched,
        server_stalls=Stalls.of(server_stalls, start, end),
        client_stalls=Stalls.of(log.stalls, start, end),
        slow_messages=dict(slow),
    )


@dataclass
class Result:
    """One run: the analysis plus what the server and the clients reported."""

    clients: int
    duration_s: float
    analysis: Analysis
    metrics_subscribed: list[str]
    metrics_received: list[str]
    clients_closed_by_server: dict[str, int]
    other_messages: dict[str, int]
    server_websocket_messages_sent: int
    server_queue_drops: int
    server_cpu_percent: float
    client_cpu_percent: float
    #: Share of the window in which some task on the machine waited for a CPU (Linux PSI).
    cpu_pressure_percent: float | None
    server_log_warnings: list[str]
    machine: str
    target_p99_ms: float = TARGET_P99_MS

    @property
    def target_met(self) -> bool:
        """p99 of the commit → receive delay within the target."""
        return self.analysis.from_commit.p99 <= self.target_p99_ms


def metrics_seen(texts: list[str]) -> list[str]:
    """Metric names present in ``metrics_update`` texts."""
    names: set[str] = set()
    for text in texts:
        for item in json.loads(text)["metrics"]:
            names.add(item["metric"]["__name__"])
    return sorted(names)


def run(args: argparse.Namespace, say: Say) -> Result:
    """Start the server, drive the clients, stop the server, analyse."""
    port = free_port()
    here = Path(__file__).resolve().parent
    with tempfile.TemporaryDirectory(prefix="opscope-bench-live-") as tmp:
        work = Path(tmp)
        config = work / "opscope.yaml"
        config.write_text(CONFIG.format(port=port))
        ready, commits_path, server_log = work / "ready", work / "commits.json", work / "serve.log"
        with server_log.open("wb") as sink:
            server = subprocess.Popen(
                [
                    sys.executable,
                    str(here / "_live_server.py"),
                    "-c",
                    str(config),
                    "--data-dir",
                    str(work / "data"),
                    "--port",
                    str(port),
                    "--ready",
                    str(ready),
                    "--commits",
                    str(commits_path),
                ],
                stdout=sink,
                stderr=subprocess.STDOUT,
                cwd=work,
            )
        try:
            url = f"http://127.0.0.1:{port}"
            try:
                wait_http(f"{url}/healthz", alive=lambda: server.poll() is None)
            except RuntimeError as exc:
                raise SystemExit(
                    f"{NAME}: {exc}\n{server_log.read_text(errors='replace')}"
                ) from None
            say(f"{NAME}: opscope serve (pid {server.pid}) on {url}, 1 s collection cycle")
            proc = psutil.Process(server.pid)
            server_cpu0 = sum(proc.cpu_times()[:2])
            log, window = asyncio.run(drive_clients(url, args, say))
            server_cpu = sum(proc.cpu_times()[:2]) - server_cpu0
            telemetry = metric_samples(httpx.get(f"{url}/metrics", timeout=5).text)
        finally:
            code = stop_process(server)
        if not commits_path.exists():
            raise SystemExit(
                f"{NAME}: the server exited with {code} without writing its commit log:\n"
                + server_log.read_text(errors="replace")[-3000:]
            )
        server_record = json.loads(commits_path.read_text())
        commits = [Commit.from_json(r) for r in server_record["commits"]]
        server_stalls = [(float(at), float(length)) for at, length in server_record["stalls"]]
        warnings = [
            line
            for line in server_log.read_text(errors="replace").splitlines()
            if "WARNING" in line or "ERROR" in line
        ]
    seconds = window.end - window.start
    pressure = window.cpu_pressure_s
    return Result(
        clients=args.clients,
        duration_s=round(seconds, 2),
        analysis=analyse(log, commits, server_stalls, window, args.clients),
        metrics_subscribed=list(METRICS),
        metrics_received=metrics_seen(log.sample_texts),
        clients_closed_by_server=dict(log.closed),
        other_messages=dict(log.other),
        server_websocket_messages_sent=int(
            metric_sum(telemetry, "opscope_websocket_messages_sent_total")
        ),
        server_queue_drops=int(metric_sum(telemetry, "opscope_websocket_queue_drops_total")),
        server_cpu_percent=round(server_cpu / seconds * 100, 1),
        client_cpu_percent=round(window.client_cpu_s / seconds * 100, 1),
        cpu_pressure_percent=None if pressure is None else round(pressure / seconds * 100, 1),
        server_log_warnings=warnings[:20],
        machine=machine(),
    )


def summary(r: Result) -> str:
    """The one-line summary."""
    c, s = r.analysis.from_commit, r.analysis.from_sample_timestamp
    return (
        f"{NAME}: {r.clients} clients x {len(METRICS)} metrics, {r.duration_s:.0f} s: "
        f"commit->receive p50 {c.p50:.1f} ms, p99 {c.p99:.1f} ms, max {c.max:.1f} ms "
        f"(target p99 <= {r.target_p99_ms:g} ms from commit: "
        f"{'met' if r.target_met else 'MISSED'}); sample timestamp->receive p50 {s.p50:.1f} ms, "
        f"p99 {s.p99:.1f} ms, max {s.max:.1f} ms; {r.analysis.messages_measured} messages, "
        f"{r.analysis.messages_delivered}/{r.analysis.messages_expected} delivered"
    )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print detail lines, then one summary line (or one JSON object)."""
    args = parse_args(argv)

    def say(line: str) -> None:
        print(line, file=sys.stderr if args.json else sys.stdout, flush=True)

    result = run(args, say)
    if args.json:
        print_json(
            {
                "benchmark": NAME,
                **asdict(result),
                "target_met": result.target_met,
                "summary": summary(result),
            }
        )
        return 0
    an = result.analysis
    for group, stats in an.from_commit_by_collector.items():
        say(f"{NAME}: from commit, {group:<7} {stats.line()}  ({stats.count} msgs)")
    say(
        f"{NAME}: from sample timestamp {an.from_sample_timestamp.line()}  "
        f"({an.from_sample_timestamp.count} msgs)"
    )
    say(
        f"{NAME}: hub broadcast (build + enqueue for all clients, per commit) "
        f"{an.hub_broadcast.line()}  ({an.hub_broadcast.count} commits)"
    )
    say(
        f"{NAME}: metrics received {len(result.metrics_received)}/{len(METRICS)} "
        f"({', '.join(result.metrics_received)}); closed by server: "
        f"{result.clients_closed_by_server or 'none'}; queue drops {result.server_queue_drops}; "
        f"unmatched {an.messages_unmatched}; ambiguous timestamps {an.ambiguous_timestamps}"
    )
    say(
        f"{NAME}: event-loop stalls > 10 ms: server {an.server_stalls.count} "
        f"(max {an.server_stalls.max_ms:.1f} ms, total {an.server_stalls.total_ms:.0f} ms), "
        f"clients {an.client_stalls.count} (max {an.client_stalls.max_ms:.1f} ms, total "
        f"{an.client_stalls.total_ms:.0f} ms); messages over {TARGET_P99_MS:g} ms by overlapping "
        f"stall: {an.slow_messages or 'none'}"
    )
    pressure = result.cpu_pressure_percent
    say(
        f"{NAME}: CPU: server {result.server_cpu_percent}% and clients "
        f"{result.client_cpu_percent}% of one core; tasks waited for a CPU "
        f"{'n/a' if pressure is None else f'{pressure}%'} of the time (PSI); "
        f"machine: {result.machine}"
    )
    for line in result.server_log_warnings:
        say(f"{NAME}: server log: {line}")
    print(summary(result))
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
