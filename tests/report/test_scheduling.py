"""Scheduled reports end to end on a manual clock: runs at local time across DST, delivery by
email (a real SMTP server) and webhook (a real HTTP server), catch-up, take-over, failures,
and two processes racing for one run."""

from __future__ import annotations

import asyncio
import base64
import csv
import email
import email.policy
import hashlib
import json
import multiprocessing
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from opscope.clock import ManualClock
from opscope.config import parse_config
from opscope.notify import Notifier
from opscope.report.scheduling import ReportScheduler, scheduled_reports
from opscope.store import Store
from opscope.store.runs import Owner, RunRecords
from tests.conftest import LocalHTTPServer, Route, SMTPServer

# Deals closed in ISO weeks 2026-W13 (Mon 23 – Sun 29 March) and W14, W43 (19–25 October).
DEALS = [
    ("1", "a", "Closed Won", "$1,500.00", "Ann", "2026-03-24", "2026-02-01"),
    ("2", "b", "Closed Lost", "$0", "Ann", "2026-03-26", "2026-02-01"),
    ("3", "c", "Closed Won", "$2,000.00", "Bob", "2026-03-29", "2026-02-10"),
    ("4", "d", "Closed Won", "$700.00", "Bob", "2026-04-01", "2026-03-10"),
    ("5", "e", "Closed Won", "$900.00", "Ann", "2026-10-20", "2026-09-01"),
]


def utc(*parts: int) -> float:
    return datetime(*parts, tzinfo=UTC).timestamp()  # type: ignore[misc]


def write_data(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "deals.csv").open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(
            [
                "Record ID",
                "Deal Name",
                "Deal Stage",
                "Amount",
                "Deal owner",
                "Close Date",
                "Create Date",
                "Pipeline",
            ]
        )
        for row in DEALS:
            out.writerow([*row, "Sales"])


def config_text(channels: str, report: str) -> str:
    return (
        "sources:\n  hub: {path: data, mapping: hubspot_deals}\n"
        f"notify:\n  channels:\n{channels}"
        "reports:\n"
        "  weekly-sales:\n"
        "    report: sales_performance\n"
        "    period: weekly\n"
        "    schedule: '0 8 * * MON'\n"
        "    timezone: Europe/Madrid\n" + report
    )


@dataclass
class Harness:
    """A scheduler, a notifier delivering for real, and their store, on one manual clock."""

    scheduler: ReportScheduler
    notifier: Notifier
    runs: RunRecords
    store: Store
    clock: ManualClock
    data_dir: Path

    async def settle(self, predicate: Callable[[], bool], timeout: float = 60) -> None:
        """Let the tasks work (real threads compute reports) until ``predicate`` holds."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                pytest.fail("timed out waiting for the scheduler")
            await asyncio.sleep(0.02)

    def states(self) -> list[tuple[str, str]]:
        return [
            (datetime.fromtimestamp(r.scheduled_at, UTC).isoformat(), r.state)
            for r in reversed(self.runs.records("weekly-sales"))
        ]


Factory = Callable[..., Awaitable[Harness]]


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Factory]:
    """Build a scheduler from a config text; ``run=True`` starts it and the notifier."""
    started: list[tuple[Harness, list[asyncio.Task[None]]]] = []

    async def build(text: str, *, start: float, run: bool = True) -> Harness:
        write_data(tmp_path / "data")
        loaded = parse_config(text, environ={})
        config = loaded.config
        data_dir = tmp_path / "state"
        clock = ManualClock(start=start)
        store = Store.open(data_dir)
        runs = RunRecords(store.path)
        notifier = Notifier(config.notify, store, clock=clock)
        scheduler = ReportScheduler(
            scheduled_reports(config.reports, config.sources),
            runs=runs,
            data_dir=data_dir,
            base=tmp_path,
            base_url="http://opscope.example.com:8765",
            notifier=notifier,
            clock=clock,
        )
        h = Harness(scheduler, notifier, runs, store, clock, data_dir)
        tasks = []
        if run:
            tasks = [asyncio.create_task(notifier.run()), asyncio.create_task(scheduler.run())]
            await asyncio.sleep(0.05)
        started.append((h, tasks))
        return h

    yield build
    for h, tasks in started:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        h.runs.close()
        h.store.close()


def hook_bodies(server: LocalHTTPServer, path: str = "/hook") -> list[dict[str, Any]]:
    return [json.loads(body) for _, p, _, body in server.requests if p == path]


async def test_monday_0800_madrid_runs_at_local_0800_before_and_after_the_change_once_each(
    harness: Factory, http_server: LocalHTTPServer
) -> None:
    http_server.routes["/hook"] = Route(status=200)
    h = await harness(
        config_text(
            f"    hook: {{webhook: '{http_server.url}/hook'}}\n",
            "    formats: [json]\n    to: [hook]\n    attach: false\n",
        ),
        start=utc(2026, 3, 20, 12),  # a Friday; the scheduler first sees the report now
    )
    await h.clock.advance(utc(2026, 3, 23, 6, 59) - h.clock.time())
    await asyncio.sleep(0.1)
    assert h.states() == []  # 07:59 Madrid (CET): not yet
    await h.clock.advance(60)  # 08:00 CET = 07:00 UTC
    await h.settle(lambda: len(hook_bodies(http_server)) == 1)
    await h.clock.advance(utc(2026, 3, 30, 5, 59) - h.clock.time())
    await asyncio.sleep(0.1)
    assert len(h.states()) == 1  # 07:59 Madrid (CEST) on the 30th: not yet
    await h.clock.advance(60)  # 08:00 CEST = 06:00 UTC
    await h.settle(lambda: len(hook_bodies(http_server)) == 2)
    await h.clock.advance(3 * 86400)  # nothing more until the next Monday
    await asyncio.sleep(0.1)
    assert h.states() == [
        ("2026-03-23T07:00:00+00:00", "succeeded"),
        ("2026-03-30T06:00:00+00:00", "succeeded"),
    ]
    first, second = hook_bodies(http_server)
    # A run on Monday reports the week before: W12 (16–22 March), then W13 (23–29 March).
    assert (first["period"]["label"], second["period"]["label"]) == ("2026-W12", "2026-W13")
    assert second["scheduledAt"] == "2026-03-30T06:00:00Z"
    assert second["runUrl"] == (
        "http://opscope.example.com:8765/reports/weekly-sales/20260330T060000Z/"
    )
    (entry,) = second["files"]
    assert entry["name"] == "sales_performance-2026-W13.json"
    assert entry["url"] == second["runUrl"] + "sales_performance-2026-W13.json"
    written = h.data_dir / "reports/weekly-sales/20260330T060000Z" / entry["name"]
    assert entry["sha256"] == hashlib.sha256(written.read_bytes()).hexdigest()
    assert "attachments" not in second  # attach: false sends links only
    doc = json.loads(written.read_text())
    # W13 closed: won 1,500 (24th) + 2,000 (29th), lost one (26th).
    assert doc["metrics"]["revenue.won"] == 3500
    assert doc["metrics"]["win_rate"] == pytest.approx(2 / 3)


async def test_fall_back_week_runs_at_local_0800_once(
    harness: Factory, http_server: LocalHTTPServer
) -> None:
    http_server.routes["/hook"] = Route(status=200)
    h = await harness(
        config_text(
            f"    hook: {{webhook: '{http_server.url}/hook'}}\n",
            "    formats: [json]\n    to: [hook]\n",
        ),
        start=utc(2026, 10, 24, 12),
    )
    await h.clock.advance(utc(2026, 10, 26, 6) - h.clock.time())  # 07:00 CET: not yet
    await asyncio.sleep(0.1)
    assert h.states() == []
    await h.clock.advance(3600)  # 08:00 CET = 07:00 UTC
    await h.settle(lambda: len(hook_bodies(http_server)) == 1)
    await h.clock.advance(6 * 86400)
    await asyncio.sleep(0.1)
    assert h.states() == [("2026-10-26T07:00:00+00:00", "succeeded")]
    (body,) = hook_bodies(http_server)
    assert body["period"]["label"] == "2026-W43"
    # attach (the default): the file itself travels in the body, base64
    (attached,) = body["attachments"]
    path = h.data_dir / "reports/weekly-sales/20261026T070000Z" / attached["filename"]
    assert base64.b64decode(attached["content"]) == path.read_bytes()
    assert attached["contentType"] == "application/json"


async def test_email_carries_every_format_as_an_attachment(
    harness: Factory, smtp_server: SMTPServer
) -> None:
    h = await harness(
        config_text(
            f"    email: '{smtp_server.url}'\n",
            "    formats: [json, xlsx]\n    to: [email]\n",
        ),
        start=utc(2026, 3, 30, 5, 59),
    )
    await h.clock.advance(60)
    await h.settle(lambda: len(smtp_server.messages) == 1)
    message = email.message_from_bytes(smtp_server.messages[0], policy=email.policy.default)
    assert message["Subject"] == "Sales performance — 2026-W13"
    assert message["To"] == "ops@example.com"
    parts = {
        part.get_filename(): (part.get_content_type(), part.get_payload(decode=True))
        for part in message.iter_attachments()  # type: ignore[attr-defined]
    }
    folder = h.data_dir / "reports/weekly-sales/20260330T060000Z"
    assert parts == {
        "sales_performance-2026-W13.json": (
            "application/json",
            (folder / "sales_performance-2026-W13.json").read_bytes(),
        ),
        "sales_performance-2026-W13.xlsx": (
            # the media type registered for Office Open XML workbooks (IANA)
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            (folder / "sales_performance-2026-W13.xlsx").read_bytes(),
        ),
    }
    assert parts["sales_performance-2026-W13.xlsx"][1][:2] == b"PK"  # a zip, as xlsx files are
    text = message.get_body(preferencelist=("plain", "html"))
    assert text is not None
    assert (
        "http://opscope.example.com:8765/reports/weekly-sales/20260330T060000Z/"
        "sales_performance-2026-W13.xlsx" in text.get_content()
    )


async def test_an_smtp_outage_delays_the_report_it_does_not_drop_it(
    harness: Factory, smtp_server: SMTPServer
) -> None:
    smtp_server.stop()
    h = await harness(
        config_text(f"    email: '{smtp_server.url}'\n", "    formats: [json]\n    to: [email]\n"),
        start=utc(2026, 3, 30, 5, 59),
    )
    await h.clock.advance(60)
    await h.settle(lambda: any(d.attempts >= 1 for d in h.notifier.outbox.all()))
    (delivery,) = h.notifier.outbox.all()
    assert delivery.state == "pending" and smtp_server.messages == []
    (record,) = h.runs.records("weekly-sales")
    assert record.state == "succeeded"  # produced; its delivery is retried
    smtp_server.start()
    for _ in range(10):  # retries come due on the manual clock
        await h.clock.advance(60)
        await asyncio.sleep(0.05)
        if smtp_server.messages:
            break
    await h.settle(lambda: h.notifier.outbox.all()[0].state == "delivered")
    assert len(smtp_server.messages) == 1


async def test_at_start_only_the_latest_missed_run_runs(
    harness: Factory, http_server: LocalHTTPServer
) -> None:
    http_server.routes["/hook"] = Route(status=200)
    text = config_text(
        f"    hook: {{webhook: '{http_server.url}/hook'}}\n",
        "    formats: [json]\n    to: [hook]\n",
    )
    # The server saw the schedule on 1 March, ran the 2 March report, then was down until
    # Wednesday 8 April: 9, 16, 23, 30 March and 6 April were missed.
    h = await harness(text, start=utc(2026, 4, 8, 12), run=False)
    h.runs.since("weekly-sales", utc(2026, 3, 1))
    done = h.runs.claim(
        "weekly-sales", utc(2026, 3, 2, 7), trigger="schedule", owner=Owner.current(), now=0
    )
    assert done is not None
    done.state = "succeeded"
    h.runs.save(done)
    notify = asyncio.create_task(h.notifier.run())
    try:
        await h.scheduler.start("weekly-sales", h.clock.time())
        await h.settle(lambda: len(hook_bodies(http_server)) == 1)
    finally:
        notify.cancel()
        await asyncio.gather(notify, return_exceptions=True)
    assert h.states() == [
        ("2026-03-02T07:00:00+00:00", "succeeded"),
        ("2026-04-06T06:00:00+00:00", "succeeded"),
    ]
    (record,) = h.runs.records("weekly-sales", limit=1)
    assert record.trigger == "catch-up"
    assert hook_bodies(http_server)[0]["period"]["label"] == "2026-W14"


async def test_catch_up_none_and_a_first_start_run_nothing(
    harness: Factory, http_server: LocalHTTPServer
) -> None:
    http_server.routes["/hook"] = Route(status=200)
    channels = f"    hook: {{webhook: '{http_server.url}/hook'}}\n"
    h = await harness(
        config_text(channels, "    formats: [json]\n    to: [hook]\n    catch_up: none\n"),
        start=utc(2026, 4, 8, 12),
        run=False,
    )
    h.runs.since("weekly-sales", utc(2026, 3, 1))
    await h.scheduler.start("weekly-sales", h.clock.time())
    assert h.states() == []  # catch_up: none
    h2 = await harness(
        config_text(channels, "    formats: [json]\n    to: [hook]\n").replace(
            "weekly-sales", "other-sales"
        ),
        start=utc(2026, 4, 8, 12),
        run=False,
    )
    await h2.scheduler.start("other-sales", h2.clock.time())
    assert h2.runs.records("other-sales") == []  # never seen before: nothing was missed
    assert http_server.requests == []


async def test_a_failed_run_is_recorded_and_its_channels_are_told(
    harness: Factory, http_server: LocalHTTPServer, tmp_path: Path
) -> None:
    http_server.routes["/hook"] = Route(status=200)
    h = await harness(
        config_text(
            f"    hook: {{webhook: '{http_server.url}/hook'}}\n",
            "    formats: [json]\n    to: [hook]\n",
        ),
        start=utc(2026, 3, 30, 5, 59),
    )
    (tmp_path / "data" / "deals.csv").unlink()  # the export did not arrive
    await h.clock.advance(60)
    await h.settle(lambda: len(hook_bodies(http_server)) == 1)
    (record,) = h.runs.records("weekly-sales")
    assert record.state == "failed" and record.files == []
    assert "deals" in record.error
    (body,) = hook_bodies(http_server)
    assert (body["type"], body["status"], body["run"]) == ("report", "failed", "20260330T060000Z")
    assert body["error"] == record.error


async def test_a_run_left_by_a_dead_process_is_resumed_without_sending_twice(
    harness: Factory, http_server: LocalHTTPServer
) -> None:
    http_server.routes["/a"] = Route(status=200)
    http_server.routes["/b"] = Route(status=200)
    h = await harness(
        config_text(
            f"    a: {{webhook: '{http_server.url}/a'}}\n    b: {{webhook: '{http_server.url}/b'}}\n",
            "    formats: [json]\n    to: [a, b]\n",
        ),
        start=utc(2026, 3, 30, 6, 5),
        run=False,
    )
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    dead = Owner(Owner.current().host, child.pid, Owner.current().started)
    at = utc(2026, 3, 30, 6)
    claimed = h.runs.claim("weekly-sales", at, trigger="schedule", owner=dead, now=at)
    assert claimed is not None
    # The dead process had queued and delivered the report to channel a, not yet to b.
    delivered = h.notifier.outbox.new_message(
        key="report:weekly-sales:20260330T060000Z",
        channel="a",
        title="t",
        body="b",
        payload={},
        attachments=[],
        now=at,
    )
    delivered.state = "delivered"
    h.store.put_state(h.notifier.outbox.documents([delivered]), at=at)
    notify = asyncio.create_task(h.notifier.run())
    try:
        await h.scheduler.start("weekly-sales", h.clock.time())
        await h.settle(lambda: len(hook_bodies(http_server, "/b")) == 1)
    finally:
        notify.cancel()
        await asyncio.gather(notify, return_exceptions=True)
    assert hook_bodies(http_server, "/a") == []
    (record,) = h.runs.records("weekly-sales")
    assert (record.state, record.trigger, record.attempts) == ("succeeded", "resume", 2)
    assert record.owner == h.scheduler.owner
    assert sorted(d["channel"] for d in record.deliveries) == ["a", "b"]


def _contender(
    root: str, url: str, at: float, ready: Any, go: Any, results: Any
) -> None:  # pragma: no cover - runs in a child process
    async def main() -> bool:
        loaded = parse_config(
            config_text(
                f"    hook: {{webhook: '{url}/hook'}}\n", "    formats: [json]\n    to: [hook]\n"
            ),
            environ={},
        )
        config = loaded.config
        data_dir = Path(root) / "state"
        clock = ManualClock(start=at + 1)
        with Store.open(data_dir) as store, RunRecords(store.path) as runs:
            notifier = Notifier(config.notify, store, clock=clock)
            scheduler = ReportScheduler(
                scheduled_reports(config.reports, config.sources),
                runs=runs,
                data_dir=data_dir,
                base=Path(root),
                base_url="http://127.0.0.1:8765",
                notifier=notifier,
                clock=clock,
            )
            ready.set()
            go.wait()
            won = await scheduler.run_once("weekly-sales", at, trigger="schedule")
            if won:  # the process that ran the report sends it, as its server would
                for channel in notifier.channels.values():
                    await notifier.outbox.deliver_due(channel, clock.time())
            return won

    results.put(asyncio.run(main()))


def test_two_processes_due_at_the_same_time_send_the_report_once(
    tmp_path: Path, http_server: LocalHTTPServer
) -> None:
    http_server.routes["/hook"] = Route(status=200)
    write_data(tmp_path / "data")
    with Store.open(tmp_path / "state"):
        pass
    at = utc(2026, 3, 30, 6)
    ctx = multiprocessing.get_context("spawn")
    go, results = ctx.Event(), ctx.Queue()
    readies = [ctx.Event() for _ in range(2)]
    processes = [
        ctx.Process(target=_contender, args=(str(tmp_path), http_server.url, at, r, go, results))
        for r in readies
    ]
    for process in processes:
        process.start()
    for ready in readies:
        assert ready.wait(60)
    go.set()
    outcomes = sorted(results.get(timeout=90) for _ in processes)
    for process in processes:
        process.join(timeout=30)
    assert outcomes == [False, True]
    assert len(hook_bodies(http_server)) == 1
    with RunRecords(tmp_path / "state" / "opscope.db", readonly=True) as runs:
        (record,) = runs.records("weekly-sales")
    assert record.state == "succeeded" and len(record.deliveries) == 1
