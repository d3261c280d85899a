"""Report runs in the store: one record per (report, scheduled time), claimed atomically.

A scheduled report runs only after its record is *claimed*: an ``INSERT`` of the row keyed by
``(report, scheduled_at)`` in one SQLite transaction, which fails when the row exists. Two
processes sharing a data directory (or two schedulers by mistake) can both try; exactly one
insert succeeds, and only its owner runs and sends the report. The owner then records the files
it wrote, the deliveries it queued and the outcome — every later write of the row is
conditional on the owner, so a record taken over (see :meth:`RunRecords.take_over`) cannot be
overwritten by the process it was taken from.

Tables (in the store's SQLite file, beside the time series)::

    report_runs(report, scheduled_at, period, trigger, state, owner, started_at, finished_at,
                files, deliveries, error, attempts)       PRIMARY KEY (report, scheduled_at)
    report_schedules(report, since)       when the scheduler first saw a report's schedule

Times are Unix seconds; ``scheduled_at`` is whole seconds (the run's key). ``owner`` is the
JSON of :class:`Owner`; ``files`` a JSON list of paths relative to the data directory;
``deliveries`` a JSON list of ``{"channel", "id"}`` (ids in the notification outbox).
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import psutil

from opscope.errors import StoreError

RunState = Literal["running", "succeeded", "failed", "interrupted"]
#: Why a run started: its time came, it was missed while the server was down, or a run
#: interrupted by a dead process was taken over.
RunTrigger = Literal["schedule", "catch-up", "resume"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS report_runs (
    report TEXT NOT NULL,
    scheduled_at INTEGER NOT NULL,
    period TEXT NOT NULL DEFAULT '',
    trigger TEXT NOT NULL,
    state TEXT NOT NULL,
    owner TEXT NOT NULL,
    started_at REAL NOT NULL,
    finished_at REAL,
    files TEXT NOT NULL DEFAULT '[]',
    deliveries TEXT NOT NULL DEFAULT '[]',
    error TEXT NOT NULL DEFAULT '',
    attempts INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (report, scheduled_at)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS report_schedules (
    report TEXT PRIMARY KEY,
    since REAL NOT NULL
);
"""
_COLUMNS = (
    "report, scheduled_at, period, trigger, state, owner, started_at, finished_at, files, "
    "deliveries, error, attempts"
)


@dataclass(frozen=True)
class Owner:
    """The process that runs a report: host name, pid and the process's start time (Unix
    seconds, so a reused pid is not mistaken for the owner)."""

    host: str
    pid: int
    started: float

    @classmethod
    def current(cls) -> Owner:
        """This process."""
        return cls(socket.gethostname(), os.getpid(), psutil.Process().create_time())

    def to_json(self) -> str:
        """The stored form."""
        return json.dumps({"host": self.host, "pid": self.pid, "started": self.started})

    @classmethod
    def from_json(cls, text: str) -> Owner:
        """An owner from its stored form."""
        data = json.loads(text)
        return cls(str(data["host"]), int(data["pid"]), float(data["started"]))

    def gone(self) -> bool:
        """Whether this owner is known to have ended: same host, and no process with its pid
        and start time. An owner on another host is never judged gone (it cannot be seen)."""
        if self.host != socket.gethostname():
            return False
        try:
            return abs(psutil.Process(self.pid).create_time() - self.started) > 1.0
        except psutil.NoSuchProcess:
            return True


def run_id(scheduled_at: float) -> str:
    """The name of a run: its scheduled time in UTC, ``20260330T060000Z``."""
    return datetime.fromtimestamp(scheduled_at, UTC).strftime("%Y%m%dT%H%M%SZ")


def parse_run_id(text: str) -> int | None:
    """The scheduled time of a run name (``None`` when it is not one)."""
    try:
        return int(datetime.strptime(text, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp())
    except ValueError:
        return None


@dataclass
class RunRecord:
    """One run of one scheduled report."""

    report: str
    scheduled_at: int
    trigger: RunTrigger
    state: RunState
    owner: Owner
    started_at: float
    period: str = ""
    finished_at: float | None = None
    files: list[str] = field(default_factory=list)
    deliveries: list[dict[str, str]] = field(default_factory=list)
    error: str = ""
    attempts: int = 1

    @property
    def run_id(self) -> str:
        """``20260330T060000Z`` (see :func:`run_id`)."""
        return run_id(self.scheduled_at)

    def to_dict(self, deliveries: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
        """JSON-ready form (times as RFC 3339 in UTC); ``deliveries`` (delivery id → what
        became of it, as the outbox tells) is merged into each delivery."""

        def iso(t: float | None) -> str | None:
            if t is None:
                return None
            stamp = datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")
            return stamp.replace("+00:00", "Z")

        return {
            "report": self.report,
            "run": self.run_id,
            "scheduled_at": iso(self.scheduled_at),
            "period": self.period,
            "trigger": self.trigger,
            "state": self.state,
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "files": list(self.files),
            "deliveries": [
                {
                    **d,
                    **{
                        k: iso(v) if k.endswith("_at") else v
                        for k, v in (deliveries or {}).get(d["id"], {"state": "unknown"}).items()
                    },
                }
                for d in self.deliveries
            ],
            "error": self.error,
            "attempts": self.attempts,
            "owner": f"{self.owner.host} pid {self.owner.pid}",
        }


def _record(row: tuple[Any, ...]) -> RunRecord:
    (report, scheduled, period, trigger, state, owner, started, finished, files, deliveries,
     error, attempts) = row  # fmt: skip
    return RunRecord(
        report=report,
        scheduled_at=int(scheduled),
        period=period,
        trigger=trigger,
        state=state,
        owner=Owner.from_json(owner),
        started_at=float(started),
        finished_at=None if finished is None else float(finished),
        files=json.loads(files),
        deliveries=json.loads(deliveries),
        error=error,
        attempts=int(attempts),
    )


class RunRecords:
    """The run records of one store file, on a connection of their own.

    Thread-safe. ``readonly=True`` reads beside a running server (a store that never had
    scheduled reports lists none). Raises :class:`StoreError` when the file cannot be used.
    """

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = path
        self.readonly = readonly
        self._lock = threading.Lock()
        try:
            if readonly:
                self._db = sqlite3.connect(
                    f"file:{path}?mode=ro", uri=True, check_same_thread=False, isolation_level=None
                )
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA busy_timeout = 10000")
            if not readonly:
                self._db.execute("PRAGMA journal_mode = WAL")
                self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the report runs of {path}: {exc}") from exc

    @classmethod
    def open(cls, data_dir: Path, *, readonly: bool = False) -> RunRecords:
        """The run records of the store in ``data_dir`` (``opscope.db``)."""
        path = Path(data_dir) / "opscope.db"
        if readonly and not path.exists():
            raise StoreError(f"no store at {path} (has `opscope serve` run with this data dir?)")
        return cls(path, readonly=readonly)

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> RunRecords:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.OperationalError as exc:
                if self.readonly and "no such table" in str(exc):
                    return []
                raise StoreError(f"cannot read report runs: {exc}") from exc

    def _write(self, sql: str, args: tuple[Any, ...]) -> int:
        """Run one statement in its own immediate transaction; returns the rows changed."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    changed = self._db.execute(sql, args).rowcount
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.IntegrityError:
                return 0
            except sqlite3.Error as exc:
                raise StoreError(f"cannot write report runs: {exc}") from exc
            return changed

    # ------------------------------------------------------------------------------- claiming
    def claim(
        self,
        report: str,
        scheduled_at: float,
        *,
        trigger: RunTrigger,
        owner: Owner,
        now: float,
        period: str = "",
    ) -> RunRecord | None:
        """Take the run of ``report`` at ``scheduled_at`` for ``owner``: the new record, or
        ``None`` when any process claimed that run before (whatever became of it)."""
        record = RunRecord(
            report=report,
            scheduled_at=int(scheduled_at),
            trigger=trigger,
            state="running",
            owner=owner,
            started_at=now,
            period=period,
        )
        inserted = self._write(
            "INSERT INTO report_runs (report, scheduled_at, period, trigger, state, owner, "
            "started_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (report, record.scheduled_at, period, trigger, "running", owner.to_json(), now),
        )
        return record if inserted == 1 else None

    def take_over(self, record: RunRecord, *, owner: Owner, now: float) -> RunRecord | None:
        """Take a run left ``running`` by ``record.owner`` (a process that died): the record,
        now ``owner``'s and attempted once more, or ``None`` when someone else changed it
        first (compare-and-swap on the owner)."""
        changed = self._write(
            "UPDATE report_runs SET owner = ?, trigger = 'resume', started_at = ?, "
            "attempts = attempts + 1 WHERE report = ? AND scheduled_at = ? AND owner = ? "
            "AND state = 'running'",
            (owner.to_json(), now, record.report, record.scheduled_at, record.owner.to_json()),
        )
        if changed != 1:
            return None
        return self.get(record.report, record.scheduled_at)

    def save(self, record: RunRecord) -> bool:
        """Write the record's state, period, files, deliveries, error and finish time, if
        ``record.owner`` still owns it; returns whether it did."""
        changed = self._write(
            "UPDATE report_runs SET state = ?, period = ?, files = ?, deliveries = ?, error = ?, "
            "finished_at = ? WHERE report = ? AND scheduled_at = ? AND owner = ?",
            (
                record.state,
                record.period,
                json.dumps(record.files),
                json.dumps(record.deliveries),
                record.error,
                record.finished_at,
                record.report,
                record.scheduled_at,
                record.owner.to_json(),
            ),
        )
        return changed == 1

    # -------------------------------------------------------------------------------- reading
    def get(self, report: str, scheduled_at: float) -> RunRecord | None:
        """One record."""
        rows = self._query(
            f"SELECT {_COLUMNS} FROM report_runs WHERE report = ? AND scheduled_at = ?",
            (report, int(scheduled_at)),
        )
        return _record(rows[0]) if rows else None

    def records(self, report: str | None = None, *, limit: int = 100) -> list[RunRecord]:
        """Records, newest scheduled time first (of one report, or of all)."""
        if report is None:
            rows = self._query(
                f"SELECT {_COLUMNS} FROM report_runs ORDER BY scheduled_at DESC, report LIMIT ?",
                (limit,),
            )
        else:
            rows = self._query(
                f"SELECT {_COLUMNS} FROM report_runs WHERE report = ? "
                "ORDER BY scheduled_at DESC LIMIT ?",
                (report, limit),
            )
        return [_record(row) for row in rows]

    def latest(self, report: str) -> RunRecord | None:
        """The record of the latest scheduled time of ``report``."""
        found = self.records(report, limit=1)
        return found[0] if found else None

    def running(self) -> list[RunRecord]:
        """Records still marked running (by live or dead processes)."""
        rows = self._query(f"SELECT {_COLUMNS} FROM report_runs WHERE state = 'running'")
        return [_record(row) for row in rows]

    def since(self, report: str, now: float) -> float:
        """When the scheduler first saw ``report`` scheduled (recorded as ``now`` the first
        time): runs before it were never missed."""
        self._write(
            "INSERT OR IGNORE INTO report_schedules (report, since) VALUES (?, ?)", (report, now)
        )
        rows = self._query("SELECT since FROM report_schedules WHERE report = ?", (report,))
        return float(rows[0][0])
