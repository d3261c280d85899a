"""Report run records: one claim per (report, scheduled time), across processes."""

from __future__ import annotations

import multiprocessing
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from opscope.errors import StoreError
from opscope.store import Store
from opscope.store.runs import Owner, RunRecords, parse_run_id, run_id

MONDAY = 1_774_850_400  # 2026-03-30T06:00:00Z


def _race(path: str, times: list[int], start: object, results: object) -> None:
    """One contender: claim every time in ``times`` once the start event fires."""
    records = RunRecords(Path(path))
    owner = Owner.current()
    start.wait()  # type: ignore[attr-defined]
    won = [t for t in times if records.claim("weekly", t, trigger="schedule", owner=owner, now=0)]
    results.put((os.getpid(), won))  # type: ignore[attr-defined]
    records.close()


def test_two_processes_never_claim_the_same_run(tmp_path: Path) -> None:
    with Store.open(tmp_path):
        pass  # an existing store, as `opscope serve` leaves it
    path = tmp_path / "opscope.db"
    times = [MONDAY + 604_800 * i for i in range(40)]
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Event(), ctx.Queue()
    contenders = [
        ctx.Process(target=_race, args=(str(path), times, start, results)) for _ in range(3)
    ]
    for process in contenders:
        process.start()
    start.set()
    outcome = dict(results.get(timeout=60) for _ in contenders)
    for process in contenders:
        process.join(timeout=30)
        assert process.exitcode == 0
    claimed = sorted(t for won in outcome.values() for t in won)
    assert claimed == times  # every run claimed, none twice
    with RunRecords(path, readonly=True) as records:
        rows = records.records("weekly", limit=1000)
    assert len(rows) == 40
    assert {r.owner.pid for r in rows} <= set(outcome)
    for row in rows:
        assert row.scheduled_at in outcome[row.owner.pid]


def test_a_claimed_run_is_not_claimed_again_whatever_became_of_it(tmp_path: Path) -> None:
    first = RunRecords(tmp_path / "opscope.db")
    second = RunRecords(tmp_path / "opscope.db")
    me = Owner.current()
    record = first.claim("weekly", MONDAY, trigger="schedule", owner=me, now=MONDAY + 1)
    assert record is not None and record.state == "running"
    assert second.claim("weekly", MONDAY, trigger="catch-up", owner=me, now=MONDAY + 2) is None
    record.state, record.finished_at, record.error = "failed", MONDAY + 5.0, "data missing"
    assert first.save(record)
    assert second.claim("weekly", MONDAY, trigger="schedule", owner=me, now=MONDAY + 9) is None
    stored = second.get("weekly", MONDAY)
    assert stored is not None
    assert (stored.state, stored.error, stored.finished_at) == (
        "failed",
        "data missing",
        MONDAY + 5,
    )
    # another report at the same time is another run
    assert second.claim("daily", MONDAY, trigger="schedule", owner=me, now=MONDAY) is not None
    first.close()
    second.close()


def test_only_the_owner_writes_and_one_taker_wins(tmp_path: Path) -> None:
    records = RunRecords(tmp_path / "opscope.db")
    dead = Owner(socket.gethostname(), 999_999_999, 1.0)
    record = records.claim("weekly", MONDAY, trigger="schedule", owner=dead, now=MONDAY)
    assert record is not None
    a = Owner(socket.gethostname(), os.getpid(), 2.0)
    b = Owner(socket.gethostname(), os.getpid(), 3.0)
    taken = records.take_over(record, owner=a, now=MONDAY + 60)
    assert taken is not None and taken.owner == a and taken.attempts == 2
    assert taken.trigger == "resume"
    assert records.take_over(record, owner=b, now=MONDAY + 61) is None  # a was first
    record.state = "succeeded"
    assert not records.save(record)  # the dead owner's copy no longer writes
    taken.state, taken.files = "succeeded", ["reports/weekly/x/a.json"]
    assert records.save(taken)
    stored = records.get("weekly", MONDAY)
    assert stored is not None and stored.files == ["reports/weekly/x/a.json"]
    records.close()


def test_owner_gone_sees_dead_processes_and_not_live_or_remote_ones() -> None:
    assert not Owner.current().gone()
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert Owner(socket.gethostname(), child.pid, Owner.current().started).gone()
    # the pid of a live process that started at another time (a reused pid)
    assert Owner(socket.gethostname(), os.getpid(), 1.0).gone()
    assert not Owner("another-host.example", 1, 1.0).gone()


def test_schedule_since_is_kept_from_the_first_time(tmp_path: Path) -> None:
    with RunRecords(tmp_path / "opscope.db") as records:
        assert records.since("weekly", 100.0) == 100.0
        assert records.since("weekly", 500.0) == 100.0


def test_readonly_without_runs_lists_nothing_and_a_missing_store_is_an_error(
    tmp_path: Path,
) -> None:
    with Store.open(tmp_path):
        pass
    with RunRecords.open(tmp_path, readonly=True) as records:
        assert records.records() == []
    with pytest.raises(StoreError, match="no store"):
        RunRecords.open(tmp_path / "nowhere", readonly=True)


def test_run_ids_name_the_scheduled_time_in_utc() -> None:
    assert run_id(MONDAY) == "20260330T060000Z"
    assert parse_run_id("20260330T060000Z") == MONDAY
    assert parse_run_id("../../etc") is None
