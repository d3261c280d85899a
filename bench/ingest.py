"""Ingest throughput: parsing and storing a 10,000-series Prometheus scrape.

A fixed payload — 100 metric families × 100 series (40 counters, 40 gauges, 20 histograms with
``_bucket``/``_sum``/``_count``), with HELP and TYPE lines and service/route/pod-style labels —
is generated from a fixed seed in a few variants that share their series and differ in their
values, as successive scrapes of one target do. A separate process serves the variants in turn
at ``/metrics`` over HTTP/1.1 (stdlib ``http.server`` on a free loopback port), so that its CPU
time is not counted here. Three measurements, each over ``--rounds`` rounds (default: as many as
fit in ``--min-seconds``), after warm-up rounds that fill the scrape cache and create the series:

(a) opscope parse + store — ``ScrapeDecoder.decode(text)``, the batch built as
    ``ScrapeCollector.collect`` builds it (payload ids/values + the five synthetic series), and
    ``Store.append([batch])`` into a real SQLite store in a temporary directory;
(b) opscope scrape + parse + store — ``ScrapeCollector.collect(now)`` against the local server
    (shared ``httpx.AsyncClient``) and ``Store.append(batches)``;
(c) baseline — ``prometheus_client.parser.text_string_to_metric_families`` over the same texts,
    iterating every sample (parse only: it stores nothing).

Reported per measurement: samples/s (payload samples, 10,000 per round, over wall-clock time) and
CPU-seconds per million samples (``time.process_time`` of this process). The target is
≥ 1,000,000 samples/s for (a) on one core; the ratio printed is (a) / (c) in samples/s.

Run: ``.venv/bin/python bench/ingest.py`` (``--json`` for a JSON object).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import multiprocessing
import random
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.connection import Connection
from pathlib import Path

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from _support import cpu_pressure_us, machine, print_json
from opscope.config import ScrapeConfig
from opscope.monitor.collectors.scrape import SYNTHETIC_SERIES, ScrapeCollector
from opscope.monitor.exposition import ScrapeDecoder, parse_exposition
from opscope.store import Batch, Store, label_set

NAME = "ingest"
#: Target throughput of opscope parse + store, samples per second on one core.
TARGET_SAMPLES_PER_S = 1_000_000
FAMILIES = 100
SERIES_PER_FAMILY = 100
#: Seconds between the (synthetic) timestamps of successive rounds, as a 15 s scrape interval.
ROUND_STEP_S = 15.0
#: Timestamp (Unix s) of the first round: fixed, so every run stores the same rows.
T0 = 1_700_000_000.0

SUBSYSTEMS = (
    "http", "db", "cache", "queue", "grpc", "worker", "auth", "storage", "scheduler", "billing",
)  # fmt: skip
COUNTERS = (
    ("requests_total", "Requests handled."),
    ("errors_total", "Requests that failed."),
    ("sent_bytes_total", "Bytes sent to clients."),
    ("retries_total", "Operations retried."),
)
GAUGES = (
    ("in_flight", "Operations in progress."),
    ("queue_depth", "Items waiting to be processed."),
    ("open_connections", "Connections currently open."),
    ("last_success_timestamp_seconds", "Unix time of the last successful run."),
)
HISTOGRAMS = (
    ("request_duration_seconds", "Time to handle a request."),
    ("response_size_bytes", "Size of the responses."),
)
METHODS = ("GET", "POST", "PUT", "DELETE")
ROUTES = (
    "/api/v1/orders",
    "/api/v1/orders/{id}",
    "/api/v1/customers/{id}/invoices",
    "/api/v1/search",
    "/healthz",
)
STATUSES = ("200", "201", "404", "500", "503")
ZONES = ("eu-west-1a", "eu-west-1b", "eu-west-1c", "us-east-1a", "us-east-1b")
BUCKETS = ("0.005", "0.01", "0.05", "0.1", "0.5", "1", "5", "+Inf")


# ------------------------------------------------------------------------------------ payload
def _value(v: float) -> str:
    return str(int(v)) if float(v).is_integer() and abs(v) < 1e15 else repr(float(v))


def generate_payloads(seed: int, variants: int) -> list[str]:
    """``variants`` exposition texts with the same 10,000 series and different values.

    Deterministic for a given ``seed``. Counters only grow from one variant to the next.
    """
    rng = random.Random(seed)
    pods = [
        f"blatam-{s}-{rng.getrandbits(32):08x}-{rng.getrandbits(20):05x}"
        for s in ("api", "web", "worker", "cron")
        for _ in range(5)
    ]
    # Per family: (name, type, help, [(series text before the value, base, step)]).
    families: list[tuple[str, str, str, list[tuple[str, float, float]]]] = []
    for sub in SUBSYSTEMS:
        for suffix, help_text in COUNTERS:
            name = f"blatam_{sub}_{suffix}"
            series = [
                (
                    f'{name}{{service="blatam-{sub}",method="{m}",route="{r}",status="{s}"}}',
                    float(rng.randrange(0, 10_000_000)),
                    float(rng.randrange(0, 5_000)),
                )
                for m in METHODS
                for r in ROUTES
                for s in STATUSES
            ]
            families.append((name, "counter", help_text, series))
        for suffix, help_text in GAUGES:
            name = f"blatam_{sub}_{suffix}"
            series = []
            for pod in pods:
                for zone in ZONES:
                    key = f'{name}{{service="blatam-{sub}",pod="{pod}",zone="{zone}"}}'
                    if suffix.endswith("timestamp_seconds"):
                        series.append((key, T0 + rng.randrange(0, 86_400) + 0.125, ROUND_STEP_S))
                    else:
                        series.append((key, round(rng.uniform(0, 500), 3), -1.0))
            families.append((name, "gauge", help_text, series))
        for suffix, help_text in HISTOGRAMS:
            name = f"blatam_{sub}_{suffix}"
            series = []
            for m in METHODS[:2]:
                for r in ROUTES:
                    labels = f'service="blatam-{sub}",method="{m}",route="{r}"'
                    count = 0.0
                    for le in BUCKETS:
                        count += rng.randrange(0, 20_000)
                        series.append((f'{name}_bucket{{{labels},le="{le}"}}', count, 100.0))
                    series.append((f"{name}_sum{{{labels}}}", round(count * 0.137, 6), 13.7))
                    series.append((f"{name}_count{{{labels}}}", count, 100.0))
            families.append((name, "histogram", help_text, series))
    assert len(families) == FAMILIES
    assert all(len(f[3]) == SERIES_PER_FAMILY for f in families)

    texts = []
    for variant in range(variants):
        vrng = random.Random(seed * 1000 + variant)
        lines = []
        for name, kind, help_text, series in families:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")
            for key, base, step in series:
                if step < 0:  # a gauge: any value
                    value = round(base * vrng.uniform(0.5, 1.5), 3)
                else:  # a counter (or a timestamp): grows by `step` per variant
                    value = base + step * variant
                lines.append(f"{key} {_value(value)}")
        texts.append("\n".join(lines) + "\n")
    return texts


# ----------------------------------------------------------------------------- target process
def serve_payloads(payloads: list[str], ready: Connection) -> None:
    """Serve ``payloads`` in turn at ``/metrics`` on a free loopback port until terminated.

    Runs in its own process; sends the port through ``ready``.
    """
    bodies = [p.encode() for p in payloads]
    counter = iter(range(1 << 62))

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            if self.path != "/metrics":
                self.send_error(404)
                return
            body = bodies[next(counter) % len(bodies)]
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ready.send(server.server_address[1])
    server.serve_forever()


# -------------------------------------------------------------------------------- measurement
@dataclass
class Measurement:
    """One measured loop: samples are payload samples (10,000 per round)."""

    label: str
    rounds: int
    samples: int
    wall_s: float
    cpu_s: float

    @property
    def samples_per_s(self) -> float:
        """Payload samples per wall-clock second."""
        return self.samples / self.wall_s

    @property
    def cpu_s_per_million(self) -> float:
        """CPU-seconds of this process per million payload samples."""
        return self.cpu_s / self.samples * 1e6

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly form, with the derived rates."""
        return {
            **asdict(self),
            "samples_per_s": round(self.samples_per_s),
            "cpu_s_per_million_samples": round(self.cpu_s_per_million, 4),
        }


def measure(
    label: str,
    step: Callable[[int], int],
    *,
    warmup: int,
    rounds: int | None,
    min_seconds: float,
) -> Measurement:
    """Run ``step(i)`` (returns samples handled) ``warmup`` times, then measure.

    With ``rounds`` set, exactly that many measured rounds; else rounds until ``min_seconds``
    of wall-clock time have passed.
    """
    i = 0
    for _ in range(warmup):
        step(i)
        i += 1
    gc.collect()
    samples = done = 0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    while True:
        samples += step(i)
        i += 1
        done += 1
        if rounds is not None:
            if done >= rounds:
                break
        elif time.perf_counter() - wall0 >= min_seconds:
            break
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return Measurement(label, done, samples, wall, cpu)


def opscope_parse_store(
    store: Store, payloads: list[str], target: str
) -> tuple[Callable[[int], int], ScrapeDecoder]:
    """A step doing what one scrape does after the HTTP response, on payload ``i % len``."""
    labels = {"job": "bench", "instance": target}
    decoder = ScrapeDecoder(store.series_id, labels)
    synthetic = np.array(
        [store.series_id(name, label_set(labels)) for name in SYNTHETIC_SERIES], dtype=np.int64
    )
    group = f"scrape/bench/{target}"
    live = np.zeros(0, dtype=np.int64)

    def step(i: int) -> int:
        nonlocal live
        started = time.perf_counter()
        decoded = decoder.decode(payloads[i % len(payloads)])
        ids, values = decoded.series_ids, decoded.values
        clash = np.isin(ids, synthetic)
        if clash.any():
            ids, values = ids[~clash], values[~clash]
        added = 0
        if not np.array_equal(ids, live):
            added = len(np.setdiff1d(ids, live, assume_unique=True))
            live = ids
        report = np.array(
            [1.0, time.perf_counter() - started, float(decoded.samples_scraped), len(ids), added]
        )
        batch = Batch(
            group=group,
            timestamp_ms=int((T0 + i * ROUND_STEP_S) * 1000),
            series_ids=np.concatenate([ids, synthetic]),
            values=np.concatenate([values, report]),
        )
        store.append([batch])
        return decoded.samples_scraped

    return step, decoder


def baseline_parse(payloads: list[str]) -> Callable[[int], int]:
    """A step parsing payload ``i % len`` with prometheus_client, touching every sample."""

    def step(i: int) -> int:
        n = 0
        for family in text_string_to_metric_families(payloads[i % len(payloads)]):
            for sample in family.samples:
                _ = sample.value
                n += 1
        return n

    return step


async def measure_scrape(
    store: Store, port: int, *, warmup: int, rounds: int | None, min_seconds: float
) -> Measurement:
    """(b): ``ScrapeCollector.collect`` + ``Store.append`` against the local server."""
    target = f"127.0.0.1:{port}"
    job = ScrapeConfig(
        job="bench", targets=[target], interval=timedelta(seconds=15), timeout=timedelta(seconds=10)
    )
    async with httpx.AsyncClient(limits=httpx.Limits(max_keepalive_connections=100)) as client:
        collector = ScrapeCollector(
            job=job,
            target=target,
            interval=15.0,
            timeout=10.0,
            resolve=store.series_id,
            client=client,
        )
        last_error = ""

        async def step(i: int) -> int:
            nonlocal last_error
            batches = await collector.collect(T0 + i * ROUND_STEP_S)
            store.append(batches)
            if collector.health.health != "up":
                last_error = collector.health.last_error
            return collector.health.last_samples

        i = 0
        for _ in range(warmup):
            await step(i)
            i += 1
        if last_error:
            raise RuntimeError(f"scrape of {collector.url} failed: {last_error}")
        gc.collect()
        samples = done = 0
        wall0, cpu0 = time.perf_counter(), time.process_time()
        while True:
            samples += await step(i)
            i += 1
            done += 1
            if rounds is not None:
                if done >= rounds:
                    break
            elif time.perf_counter() - wall0 >= min_seconds:
                break
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        if last_error:
            raise RuntimeError(f"scrape of {collector.url} failed: {last_error}")
    return Measurement("opscope scrape+parse+store", done, samples, wall, cpu)


# ------------------------------------------------------------------------------------- driver
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        prog="bench/ingest.py",
        description="Samples/s and CPU-s per million samples of opscope's scrape ingest "
        "(parse + store, and scrape + parse + store over loopback HTTP) against "
        "prometheus_client's text parser, on a deterministic 10,000-series payload.",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="measured rounds per measurement (default: as many as fit in --min-seconds)",
    )
    parser.add_argument(
        "--min-seconds",
        type=float,
        default=3.0,
        help="wall-clock seconds per measurement when --rounds is not given (default 3)",
    )
    parser.add_argument("--warmup", type=int, default=5, help="unmeasured rounds first (default 5)")
    parser.add_argument("--seed", type=int, default=20240601, help="payload seed")
    parser.add_argument(
        "--variants", type=int, default=4, help="payload variants served in turn (default 4)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.warmup < 1:
        parser.error("--warmup must be at least 1 (the first round fills the scrape cache)")
    if args.variants < 1 or (args.rounds is not None and args.rounds < 1):
        parser.error("--variants and --rounds must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the three measurements; print detail lines, then one summary line (or JSON)."""
    args = parse_args(argv)
    out = sys.stderr if args.json else sys.stdout

    def say(line: str) -> None:
        print(line, file=out, flush=True)

    payloads = generate_payloads(args.seed, args.variants)
    lines = sum(1 for line in payloads[0].split("\n") if line and line[0] != "#")
    say(
        f"{NAME}: payload {FAMILIES} families x {SERIES_PER_FAMILY} series = {lines} samples, "
        f"{len(payloads[0]) / 1e6:.2f} MB, {args.variants} variants (seed {args.seed})"
    )

    # The target: its own process, so its CPU time is not in time.process_time() here.
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    server = context.Process(target=serve_payloads, args=(payloads, send), daemon=True)
    server.start()
    try:
        if not receive.poll(30):
            raise RuntimeError("the payload server did not start")
        port = int(receive.recv())
        pressure0, wall0 = cpu_pressure_us(), time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="opscope-bench-ingest-") as tmp:
            results = run_all(Path(tmp), payloads, port, args, say)
        pressure1, wall = cpu_pressure_us(), time.perf_counter() - wall0
    finally:
        server.terminate()
        server.join(10)

    a, b, c, cold = results
    ratio = a.samples_per_s / c.samples_per_s
    met = a.samples_per_s >= TARGET_SAMPLES_PER_S
    for m in (a, b, c):
        say(
            f"{NAME}: {m.label:<28} {m.samples_per_s:>12,.0f} samples/s  "
            f"{m.cpu_s_per_million:6.3f} CPU-s/M samples  ({m.rounds} rounds, {m.wall_s:.2f} s)"
        )
    say(
        f"{NAME}: first scrape (cold cache, {lines} new series, validating parser): "
        f"{cold['first_round_s']:.3f} s; parse_exposition alone "
        f"{cold['parse_exposition_samples_per_s']:,.0f} samples/s"
    )
    pressure = (
        None
        if pressure0 is None or pressure1 is None
        else round((pressure1 - pressure0) / 1e6 / wall * 100, 1)
    )
    say(
        f"{NAME}: machine: {machine()}; tasks waited for a CPU "
        f"{'n/a' if pressure is None else f'{pressure}%'} of the run (PSI)"
    )
    summary = (
        f"{NAME}: opscope parse+store {a.samples_per_s:,.0f} samples/s "
        f"({a.cpu_s_per_million:.3f} CPU-s/M), scrape+parse+store {b.samples_per_s:,.0f} "
        f"samples/s ({b.cpu_s_per_million:.3f} CPU-s/M), prometheus_client parse "
        f"{c.samples_per_s:,.0f} samples/s ({c.cpu_s_per_million:.3f} CPU-s/M); "
        f"opscope/baseline {ratio:.1f}x; target >= {TARGET_SAMPLES_PER_S:,} samples/s "
        f"parse+store on one core: {'met' if met else 'MISSED'}"
    )
    if args.json:
        print_json(
            {
                "benchmark": NAME,
                "payload": {
                    "families": FAMILIES,
                    "series_per_family": SERIES_PER_FAMILY,
                    "samples": lines,
                    "bytes": len(payloads[0].encode()),
                    "variants": args.variants,
                    "seed": args.seed,
                },
                "parse_store": a.as_dict(),
                "scrape_parse_store": b.as_dict(),
                "baseline_prometheus_client": c.as_dict(),
                "cold": cold,
                "ratio_parse_store_to_baseline": round(ratio, 2),
                "target_samples_per_s": TARGET_SAMPLES_PER_S,
                "target_met": met,
                "machine": machine(),
                "cpu_pressure_percent": pressure,
                "summary": summary,
            }
        )
    else:
        print(summary)
    return 0


def run_all(
    tmp: Path,
    payloads: list[str],
    port: int,
    args: argparse.Namespace,
    say: Callable[[str], None],
) -> tuple[Measurement, Measurement, Measurement, dict[str, float]]:
    """Run (a), (b), (c) and the cold-start detail; stores live under ``tmp``."""
    timing = {"warmup": args.warmup, "rounds": args.rounds, "min_seconds": args.min_seconds}

    # Cold: the first round of (a) creates 10,000 series through the validating parser.
    with Store.open(tmp / "parse-store") as store:
        step, _ = opscope_parse_store(store, payloads, "127.0.0.1:9")
        started = time.perf_counter()
        first = step(0)
        first_round_s = time.perf_counter() - started
        assert first == len(store.index) - len(SYNTHETIC_SERIES)
        say(f"{NAME}: measuring (a) opscope parse+store ...")
        a = measure("opscope parse+store", lambda i: step(i + 1), **timing)
        a_stored = store.oldest_timestamp() is not None
    assert a_stored

    parse_start = time.perf_counter()
    parsed = len(parse_exposition(payloads[0]))
    parse_exposition_rate = parsed / (time.perf_counter() - parse_start)

    say(f"{NAME}: measuring (b) opscope scrape+parse+store over HTTP ...")
    with Store.open(tmp / "scrape-store") as store:
        b = asyncio.run(measure_scrape(store, port, **timing))

    say(f"{NAME}: measuring (c) prometheus_client text_string_to_metric_families ...")
    c = measure("prometheus_client parse", baseline_parse(payloads), **timing)
    if c.samples != a.samples // a.rounds * c.rounds:
        raise RuntimeError(f"baseline saw {c.samples} samples in {c.rounds} rounds")
    cold = {
        "first_round_s": round(first_round_s, 4),
        "parse_exposition_samples_per_s": round(parse_exposition_rate),
    }
    return a, b, c, cold


if __name__ == "__main__":
    sys.exit(main())
