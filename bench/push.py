"""Push ingest: 10,000-sample exposition bodies from 4 concurrent clients, samples/s and p99.

``opscope serve`` runs as its own process on a free loopback port (system metrics off, the push
API on, a fresh data directory). Four clients — asyncio tasks of this process, each with its own
keep-alive HTTP connection — push to their own group (``/api/v1/push/bench/instance/cN``) as
fast as the server answers: every request is a ``PUT`` of 100 gauge families × 100 series =
10,000 samples (about 500 kB of text), with the same series and new values each time, as a
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
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

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


async def drive(name: str, url_of: list[str], texts: list[str], seconds: float) -> Outcome:
    """Push from ``CLIENTS`` tasks for ``seconds`` (after two warm-up pushes each)."""
    latencies: list[float] = []
    failures = 0
    samples = 0
    payloads = [t.encode() for t in texts]

    async def client(index: int, deadline: float | None, rounds: int) -> None:
        nonlocal failures, samples
        async with httpx.AsyncClient(timeout=30.0) as http:
            n = 0
            while (deadline is None and n < rounds) or (
                deadline is not None and time.perf_counter() < deadline
            ):
                body = payloads[(n + index) % len(payloads)]
                started = time.perf_counter()
                response = await http.put(
                    url_of[index], content=body, headers={"Content-Type": "text/plain"}
                )
                elapsed = time.perf_counter() - started
                n += 1
                if deadline is None:
                    continue
                if response.status_code in (200, 202):
                    latencies.append(elapsed)
                    samples += FAMILIES * SERIES
                else:
                    failures += 1
                    if failures == 1:
                        print(f"{name}: HTTP {response.status_code} {response.text[:200]}")

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
            results.append(asyncio.run(drive("opscope", urls, texts, args.seconds)))
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
                results.append(asyncio.run(drive("pushgateway", urls, texts, args.seconds)))
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
