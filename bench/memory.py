"""Resident memory of ``opscope serve`` running the Blatam example configuration.

Starts ``opscope serve -c examples/blatam/opscope.yaml --data-dir <temp dir>`` as a real
subprocess (port 8765, as the configuration says: it scrapes and probes itself there) and a real
``prometheus-node-exporter`` on 127.0.0.1:9100 when that port is free and the binary exists. The
server's resident set size (RSS, the process plus any children, read with psutil) is sampled every
``--every`` seconds for ``--duration`` seconds; the result is the start (first sample after the
server answers ``/healthz``), peak and final RSS in MB (10^6 bytes) against the 150 MB target, the
growth rate over the second half of the run in MB per hour, and how much was ingested, read from
the server's own ``/metrics`` (``opscope_store_series``, ``opscope_samples_ingested_total``).

Run: ``.venv/bin/python bench/memory.py`` (600 s) or ``--duration 60`` for a quick look.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import psutil

from _support import (
    REPO,
    listener_of,
    machine,
    metric_samples,
    metric_sum,
    port_is_free,
    print_json,
    rss_bytes,
    stop_process,
    wait_http,
)
from opscope.config import load_config

NAME = "memory"
#: The RSS target, in MB (10^6 bytes).
TARGET_MB = 150.0
MB = 1e6
NODE_EXPORTER = "prometheus-node-exporter"
Say = Callable[[str], None]


@dataclass
class Result:
    """What one run measured; memory in MB (10^6 bytes), times in seconds."""

    duration_s: float
    rss_samples: int
    start_mb: float
    peak_mb: float
    final_mb: float
    growth_mb_per_hour: float | None
    target_mb: float
    target_met: bool
    series: int
    samples_ingested: int
    collections: dict[str, int]
    targets: dict[str, str]
    store_bytes: int
    node_exporter: str
    node_exporter_mb: float | None
    machine: str
    timeline: list[tuple[float, float]] = field(default_factory=list)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        prog="bench/memory.py",
        description="Sample the resident memory of `opscope serve` on the Blatam example "
        "configuration (real server, real node_exporter) and compare it with the "
        f"{TARGET_MB:g} MB target.",
    )
    parser.add_argument(
        "--duration", type=float, default=600.0, help="seconds to run the server (default 600)"
    )
    parser.add_argument(
        "--every", type=float, default=5.0, help="seconds between RSS samples (default 5)"
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=REPO / "examples" / "blatam" / "opscope.yaml",
        help="opscope configuration (default examples/blatam/opscope.yaml)",
    )
    parser.add_argument(
        "--progress",
        type=float,
        default=60.0,
        help="seconds between progress lines (default 60; 0 = none)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser.parse_args(argv)


def start_node_exporter(
    targets: list[str], log: Path
) -> tuple[subprocess.Popen[bytes] | None, str]:
    """Start node_exporter on the loopback port of the config's ``:9100`` target if possible.

    Returns the process (``None`` when not started) and a sentence saying what was done.
    """
    wanted = [t for t in targets if t.endswith(":9100")]
    if not wanted:
        return None, "the configuration scrapes no :9100 target; node_exporter not started"
    host, _, port = wanted[0].rpartition(":")
    binary = shutil.which(NODE_EXPORTER)
    if not port_is_free(host, int(port)):
        return None, (
            f"{host}:{port} is already served by {listener_of(int(port))}; "
            "scraping that instead of starting node_exporter"
        )
    if binary is None:
        return None, (
            f"{NODE_EXPORTER} is not installed (Debian: apt-get install {NODE_EXPORTER}); "
            f"the scrape of {host}:{port} fails (up 0) for the whole run"
        )
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [binary, f"--web.listen-address={host}:{port}"], stdout=sink, stderr=subprocess.STDOUT
        )
    wait_http(f"http://{host}:{port}/metrics", alive=lambda: process.poll() is None)
    return process, f"started {binary} (pid {process.pid}) on {host}:{port}"


#: Shortest run (s) whose RSS growth rate is reported: shorter ones are start-up noise.
GROWTH_MIN_S = 120.0


def growth_per_hour(timeline: list[tuple[float, float]]) -> float | None:
    """Least-squares slope (MB/h) of RSS over the second half of ``timeline`` (t s, RSS MB).

    ``None`` for runs shorter than :data:`GROWTH_MIN_S`.
    """
    half = timeline[len(timeline) // 2 :]
    if len(half) < 2 or timeline[-1][0] < GROWTH_MIN_S:
        return None
    n = len(half)
    mean_t = sum(t for t, _ in half) / n
    mean_m = sum(m for _, m in half) / n
    var = sum((t - mean_t) ** 2 for t, _ in half)
    if var == 0:
        return None
    cov = sum((t - mean_t) * (m - mean_m) for t, m in half)
    return round(cov / var * 3600.0, 2)


def run(args: argparse.Namespace, say: Say) -> Result:
    """Start everything, sample RSS for ``args.duration`` s, stop everything, return results."""
    config = load_config(args.config).config
    host, port = config.server.host, config.server.port
    if not port_is_free(host, port):
        raise SystemExit(
            f"{NAME}: {host}:{port} is in use by {listener_of(port)}. The configuration "
            f"{args.config} serves on that port and scrapes and probes itself there, so the "
            "benchmark needs it free: stop that process and run again."
        )
    node_targets = [t for job in config.monitor.scrape for t in job.targets]
    with tempfile.TemporaryDirectory(prefix="opscope-bench-memory-") as tmp:
        work = Path(tmp)
        node, node_note = start_node_exporter(node_targets, work / "node_exporter.log")
        say(f"{NAME}: node_exporter: {node_note}")
        server_log = work / "serve.log"
        data_dir = work / "data"
        node_mb: float | None = None
        try:
            with server_log.open("wb") as sink:
                server = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "opscope",
                        "serve",
                        "-c",
                        str(args.config.resolve()),
                        "--data-dir",
                        str(data_dir),
                    ],
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                    cwd=work,
                )
            try:
                url = f"http://{host}:{port}"
                try:
                    wait_http(f"{url}/healthz", alive=lambda: server.poll() is None)
                except RuntimeError as exc:
                    log_text = server_log.read_text(errors="replace")
                    raise SystemExit(f"{NAME}: {exc}\n{log_text}") from None
                say(f"{NAME}: opscope serve pid {server.pid} on {url} (temporary data dir)")
                timeline = sample_rss(server, args, say)
                metrics = metric_samples(httpx.get(f"{url}/metrics", timeout=5).text)
                targets = httpx.get(f"{url}/api/v1/targets", timeout=5).json()["data"]
                if node is not None:
                    with contextlib.suppress(psutil.Error):
                        node_mb = rss_bytes(node.pid) / MB
            finally:
                code = stop_process(server)
                if code not in (0, -signal.SIGTERM):
                    say(f"{NAME}: opscope serve exited with {code}:")
                    say(server_log.read_text(errors="replace")[-2000:])
        finally:
            if node is not None:
                stop_process(node)
        store_bytes = sum(p.stat().st_size for p in data_dir.glob("opscope.db*"))
    mbs = [m for _, m in timeline]
    collections = {
        f"{kind}/{outcome}": int(
            metric_sum(metrics, "opscope_collections_total", collector=kind, outcome=outcome)
        )
        for kind in ("system", "scrape", "probe")
        for outcome in ("success", "failure", "error")
    }
    target_health = {
        f"{t['scrapePool']}/{t['labels'].get('instance', '')}": t["health"]
        + (f" ({t['lastError']})" if t["lastError"] else "")
        for t in targets["activeTargets"]
    }
    return Result(
        duration_s=timeline[-1][0],
        rss_samples=len(timeline),
        start_mb=mbs[0],
        peak_mb=max(mbs),
        final_mb=mbs[-1],
        growth_mb_per_hour=growth_per_hour(timeline),
        target_mb=TARGET_MB,
        target_met=max(mbs) <= TARGET_MB,
        series=int(metric_sum(metrics, "opscope_store_series")),
        samples_ingested=int(metric_sum(metrics, "opscope_samples_ingested_total")),
        collections={k: v for k, v in collections.items() if v},
        targets=target_health,
        store_bytes=store_bytes,
        node_exporter=node_note,
        node_exporter_mb=None if node_mb is None else round(node_mb, 1),
        machine=machine(),
        timeline=timeline,
    )


def sample_rss(
    server: subprocess.Popen[bytes], args: argparse.Namespace, say: Say
) -> list[tuple[float, float]]:
    """RSS samples ``(seconds since the first sample, MB)`` of ``server`` every ``args.every`` s."""
    timeline: list[tuple[float, float]] = []
    started = time.monotonic()
    next_progress = args.progress
    tick = 0
    while True:
        elapsed = time.monotonic() - started
        if server.poll() is not None:
            raise SystemExit(f"{NAME}: opscope serve exited early with {server.returncode}")
        mb = rss_bytes(server.pid) / MB
        timeline.append((round(elapsed, 1), round(mb, 2)))
        if args.progress and elapsed >= next_progress:
            peak = max(m for _, m in timeline)
            say(f"{NAME}: t={elapsed:5.0f} s  rss {mb:6.1f} MB  peak {peak:6.1f} MB")
            next_progress += args.progress
        if elapsed >= args.duration:
            return timeline
        tick += 1
        wake = min(tick * args.every, args.duration)
        time.sleep(max(0.0, wake - (time.monotonic() - started)))


def summary(result: Result) -> str:
    """The one-line summary."""
    verdict = "met" if result.target_met else "MISSED"
    growth = (
        f"growth {result.growth_mb_per_hour:+.1f} MB/h over the second half"
        if result.growth_mb_per_hour is not None
        else f"growth not estimated (run < {GROWTH_MIN_S:g} s)"
    )
    return (
        f"{NAME}: RSS start {result.start_mb:.1f} MB, peak {result.peak_mb:.1f} MB, "
        f"final {result.final_mb:.1f} MB over {result.duration_s:.0f} s "
        f"(target peak <= {result.target_mb:g} MB: {verdict}); "
        f"{result.series} series, {result.samples_ingested} samples ingested; {growth}"
    )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print detail lines, then one summary line (or one JSON object)."""
    args = parse_args(argv)
    if args.duration <= 0 or args.every <= 0:
        raise SystemExit(f"{NAME}: --duration and --every must be positive")

    def say(line: str) -> None:
        print(line, file=sys.stderr if args.json else sys.stdout, flush=True)

    result = run(args, say)
    if args.json:
        print_json({"benchmark": NAME, **asdict(result), "summary": summary(result)})
        return 0
    say(f"{NAME}: machine: {result.machine}")
    say(f"{NAME}: targets: " + ", ".join(f"{k} {v}" for k, v in result.targets.items()))
    say(
        f"{NAME}: collections: "
        + ", ".join(f"{k} {v}" for k, v in result.collections.items())
        + f"; store on disk {result.store_bytes / MB:.1f} MB"
    )
    if result.node_exporter_mb is not None:
        say(f"{NAME}: node_exporter RSS {result.node_exporter_mb:.1f} MB (not counted)")
    print(summary(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
