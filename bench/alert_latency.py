"""Alert latency: from a breaching sample stored to its email arriving at an SMTP server.

One process runs ``OpscopeServer`` (the same code as ``opscope serve``), a local HTTP target
serving one gauge, and a real SMTP server (aiosmtpd) on loopback. The rule is
``breach_value > 50`` with ``for: 0``; notifications go to the SMTP server through apprise with
``group_wait: 0``. Scrapes and rule evaluation run every 100 ms. For each trial the gauge goes
above 50; the time the first breaching sample is committed to the store (a store listener) and the
time the email reaches the SMTP server are recorded; then the gauge goes back down and the alert
resolves. Trials are 6 s apart because apprise spaces emails through one channel by 5.5 s.
Target: ≤ 1 s from stored to delivered.

Run: ``.venv/bin/python bench/alert_latency.py [--trials N] [--json]``.
"""

from __future__ import annotations

import argparse
import asyncio
import http.server
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from aiosmtpd.controller import Controller

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _support import free_port
from opscope.config import parse_config
from opscope.server.running import OpscopeServer
from opscope.store import Batch


class Gauge(http.server.BaseHTTPRequestHandler):
    """Serves ``breach_value <value>``; the bench sets :attr:`value`."""

    value = 10.0

    def do_GET(self) -> None:
        body = f"breach_value {Gauge.value}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class Inbox:
    """An SMTP handler recording when each message arrives."""

    def __init__(self) -> None:
        self.arrivals: list[float] = []

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        self.arrivals.append(time.time())
        return "250 OK"


async def run(trials: int) -> list[float]:
    target = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Gauge)
    threading.Thread(target=target.serve_forever, daemon=True).start()
    inbox = Inbox()
    smtp_port = free_port()
    smtp = Controller(inbox, hostname="127.0.0.1", port=smtp_port)
    smtp.start()
    config = parse_config(
        "monitor:\n"
        "  interval: 100ms\n"
        "  evaluation_interval: 100ms\n"
        "  system: {enabled: false}\n"
        f"  scrape: [{{job: gauge, targets: ['127.0.0.1:{target.server_address[1]}'],"
        " timeout: 100ms}]\n"
        "  rules:\n"
        "    - {alert: Breach, expr: 'breach_value > 50'}\n"
        "notify:\n"
        "  group_wait: 0s\n"
        "  group_interval: 100ms\n"
        "  channels:\n"
        f"    email: {{url: 'mailto://127.0.0.1:{smtp_port}?from=opscope@example.com"
        "&to=ops@example.com&mode=insecure', send_resolved: false}\n"
        "  channels_default: [email]\n",
        environ={},
    )
    delays = []
    with tempfile.TemporaryDirectory(prefix="opscope-bench-alert-") as data:
        server = OpscopeServer(config, port=0, data_dir=Path(data))
        await server.start()
        assert server.store is not None
        breach_ids = {
            server.store.series_id(
                "breach_value",
                (("instance", f"127.0.0.1:{target.server_address[1]}"), ("job", "gauge")),
            )
        }
        stored: list[float] = []

        def on_commit(batches: Sequence[Batch]) -> None:
            for batch in batches:
                for sid, value in zip(
                    batch.series_ids.tolist(), batch.values.tolist(), strict=True
                ):
                    if sid in breach_ids and value > 50 and Gauge.value > 50 and not waiting[0]:
                        stored.append(time.time())
                        waiting[0] = True

        waiting = [False]
        server.store.add_listener(on_commit)
        try:
            await asyncio.sleep(1.0)
            for _ in range(trials):
                waiting[0] = False
                before = len(inbox.arrivals)
                Gauge.value = 90.0
                deadline = time.time() + 10
                while len(inbox.arrivals) == before and time.time() < deadline:
                    await asyncio.sleep(0.005)
                if len(inbox.arrivals) > before and stored:
                    delays.append(inbox.arrivals[-1] - stored[-1])
                Gauge.value = 10.0
                await asyncio.sleep(6.0)
        finally:
            await server.stop()
            smtp.stop()
            target.shutdown()
    return delays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=8, help="alerts fired and emailed")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    delays = asyncio.run(run(args.trials))
    if not delays:
        print("alert_latency: no email arrived", file=sys.stderr)
        raise SystemExit(1)
    ms = sorted(d * 1000 for d in delays)
    p50, worst = statistics.median(ms), ms[-1]
    met = "met" if worst <= 1000 else "MISSED"
    if args.json:
        print(
            json.dumps(
                {
                    "trials": args.trials,
                    "delivered": len(ms),
                    "median_ms": p50,
                    "max_ms": worst,
                    "target_met": met == "met",
                }
            )
        )
        return
    print("alert_latency: stored -> email arrived, ms: " + ", ".join(f"{d:.0f}" for d in ms))
    print(
        f"alert_latency: {len(ms)}/{args.trials} alerts emailed; stored -> delivered median "
        f"{p50:.0f} ms, max {worst:.0f} ms (for: 0, group_wait: 0, 100 ms evaluation); "
        f"target <= 1000 ms: {met}"
    )


if __name__ == "__main__":
    main()
