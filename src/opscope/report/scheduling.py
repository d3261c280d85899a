"""The report scheduler of ``opscope serve``: one named task per scheduled report.

Each task sleeps until its report's next run (:mod:`.schedule`, on the injected clock), claims
the run in the store (:mod:`opscope.store.runs` — a run another process claimed is skipped),
produces it in a worker thread (:mod:`.publishing`), records the files, and queues the
delivery to the report's ``to`` channels through the durable notification outbox (retried with
backoff until delivered or expired; see :mod:`opscope.notify.outbox`). A run that fails is
recorded ``failed`` with the error, and its channels are told.

At start, for each report:

1. a run left ``running`` by a process that has ended (same host, its pid gone) is taken over:
   run again when it is the report's latest run and ``catch_up`` is ``latest`` (deliveries
   already queued by the dead process are not queued twice), else recorded ``interrupted``;
2. with ``catch_up: latest``, the most recent scheduled time missed since the last recorded
   run — and since the scheduler first saw the schedule — runs once; older missed times do not.

A run that ends after later scheduled times passed skips them (logged), as collectors do.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from opscope.clock import Clock, SystemClock
from opscope.config.reports import ReportConfig, SourceConfig
from opscope.errors import OpscopeError
from opscope.report.publishing import (
    ReportMessage,
    failure_message,
    produce,
    report_message,
)
from opscope.report.schedule import Schedule
from opscope.store.runs import Owner, RunRecord, RunRecords, RunTrigger

log = logging.getLogger(__name__)

#: Longest single sleep (seconds): the clock is read again after it, so a clock that jumps
#: (suspend, NTP step) delays a run by at most this much.
MAX_SLEEP = 60.0


class MessageQueue(Protocol):
    """Where deliveries go: :meth:`opscope.notify.Notifier.queue_message`."""

    def queue_message(
        self,
        *,
        key: str,
        channels: Sequence[str],
        title: str,
        body: str,
        payload: dict[str, Any],
        attachments: Sequence[Path] = (),
    ) -> Sequence[Any]:
        """Queue a message to ``channels``; returns deliveries with ``id`` and ``channel``."""


@dataclass(frozen=True)
class ScheduledReport:
    """A report with a schedule, and where its data is."""

    name: str
    settings: ReportConfig
    source: SourceConfig
    schedule: Schedule


def scheduled_reports(
    reports: dict[str, ReportConfig], sources: dict[str, SourceConfig]
) -> list[ScheduledReport]:
    """The reports that have a ``schedule`` (a source left out when there is just one).

    Raises :class:`OpscopeError` for a report whose source cannot be found (a configuration
    that passed validation has none).
    """
    found = []
    for name, settings in reports.items():
        if settings.schedule is None:
            continue
        source_name = settings.source or (next(iter(sources)) if len(sources) == 1 else None)
        if source_name is None or source_name not in sources:
            raise OpscopeError(f"report {name}: no source to read")
        schedule = Schedule(settings.schedule, settings.timezone)
        found.append(ScheduledReport(name, settings, sources[source_name], schedule))
    return found


class ReportScheduler:
    """Runs scheduled reports and delivers them.

    ``base`` is the directory source paths are relative to (the configuration file's);
    ``base_url`` is where the server serves report files (links in deliveries). ``notifier``
    may be ``None`` only when no report has ``to`` channels.
    """

    def __init__(
        self,
        reports: list[ScheduledReport],
        *,
        runs: RunRecords,
        data_dir: Path,
        base: Path,
        base_url: str,
        notifier: MessageQueue | None,
        clock: Clock | None = None,
        owner: Owner | None = None,
    ) -> None:
        self.reports = {r.name: r for r in reports}
        self.runs = runs
        self.data_dir = Path(data_dir)
        self.base = base
        self.base_url = base_url
        self.notifier = notifier
        self.clock = clock or SystemClock()
        self.owner = owner or Owner.current()

    def next_run(self, name: str) -> float:
        """When report ``name`` next runs (Unix seconds)."""
        return self.reports[name].schedule.next_after(self.clock.time())

    async def run(self) -> None:
        """Run every scheduled report until cancelled."""
        async with asyncio.TaskGroup() as tasks:
            for name in self.reports:
                tasks.create_task(self._loop(name), name=f"report:{name}")

    async def _loop(self, name: str) -> None:
        report = self.reports[name]
        t = self.clock.time()
        try:
            await self.start(name, t)
        except Exception:  # a failing start must not stop the schedule
            log.exception("report %s: start-up runs failed", name)
        while True:
            due = report.schedule.next_after(t)
            while (now := self.clock.time()) < due:
                await self.clock.sleep(min(due - now, MAX_SLEEP))
            await self.run_once(name, due, trigger="schedule")
            t = due
            now = self.clock.time()
            skipped = sum(1 for _ in report.schedule.runs(due, now - 1.0))
            if skipped:
                log.warning("report %s: the run took long; skipping %d run(s)", name, skipped)
                t = now - 1.0

    async def start(self, name: str, now: float) -> None:
        """Start-up work of report ``name``: take over runs of dead processes, then catch up
        (see the module docstring)."""
        report = self.reports[name]
        since = self.runs.since(name, now)
        latest = self.runs.latest(name)
        for record in self.runs.running():
            if record.report != name or not record.owner.gone():
                continue
            taken = self.runs.take_over(record, owner=self.owner, now=now)
            if taken is None:
                continue
            is_latest = latest is not None and latest.scheduled_at == record.scheduled_at
            if is_latest and report.settings.catch_up == "latest":
                log.info("report %s: resuming run %s of an ended process", name, taken.run_id)
                await self._execute(report, taken)
            else:
                taken.state, taken.finished_at = "interrupted", now
                taken.error = "the process running it ended before it finished"
                self.runs.save(taken)
        if report.settings.catch_up == "none":
            return
        after = since if latest is None else max(since, float(latest.scheduled_at))
        missed = report.schedule.latest(now, after=after)
        if missed is not None:
            log.info("report %s: catching up the run missed at %s", name, missed)
            await self.run_once(name, missed, trigger="catch-up")

    async def run_once(self, name: str, scheduled_at: float, *, trigger: RunTrigger) -> bool:
        """Claim and run report ``name``'s run at ``scheduled_at``; ``False`` when another
        process (or an earlier run) claimed it first."""
        report = self.reports[name]
        record = self.runs.claim(
            name, scheduled_at, trigger=trigger, owner=self.owner, now=self.clock.time()
        )
        if record is None:
            log.info("report %s: run at %s was claimed before; skipped", name, scheduled_at)
            return False
        await self._execute(report, record)
        return True

    async def _execute(self, report: ScheduledReport, record: RunRecord) -> None:
        settings = report.settings
        try:
            publication = await asyncio.to_thread(
                produce,
                report.name,
                settings,
                report.source,
                base=self.base,
                data_dir=self.data_dir,
                scheduled_at=record.scheduled_at,
            )
            record.period = publication.document.period.label
            record.files = [str(p.relative_to(self.data_dir)) for p in publication.files]
            self.runs.save(record)  # the files are there even if delivery never happens
            message = report_message(publication, settings=settings, base_url=self.base_url)
            attachments = [p.resolve() for p in publication.files] if settings.attach else []
            self._deliver(report, record, message, attachments)
            record.state = "succeeded"
        except OpscopeError as exc:
            record.state, record.error = "failed", str(exc)
        except OSError as exc:
            record.state, record.error = "failed", f"{exc.strerror or exc}: {exc.filename}"
        except Exception as exc:  # a bug must not stop the schedule
            log.exception("report %s: run %s failed unexpectedly", report.name, record.run_id)
            record.state, record.error = "failed", f"internal error: {exc!r}"
        if record.state == "failed":
            log.error("report %s: run %s failed: %s", report.name, record.run_id, record.error)
            try:
                failure = failure_message(
                    report.name, record.scheduled_at, record.error, settings=settings
                )
                self._deliver(report, record, failure, [])
            except OpscopeError as exc:
                log.error("report %s: cannot queue the failure notice: %s", report.name, exc)
        record.finished_at = self.clock.time()
        if not self.runs.save(record):
            log.warning("report %s: run %s was taken over meanwhile", report.name, record.run_id)

    def _deliver(
        self,
        report: ScheduledReport,
        record: RunRecord,
        message: ReportMessage,
        attachments: Sequence[Path],
    ) -> None:
        channels = report.settings.to
        if not channels:
            return
        if self.notifier is None:
            raise OpscopeError("report delivery needs notify.channels")
        try:
            deliveries = self.notifier.queue_message(
                key=message.key,
                channels=channels,
                title=message.title,
                body=message.body,
                payload=message.payload,
                attachments=attachments,
            )
        except KeyError as exc:
            raise OpscopeError(
                f"unknown channel {exc.args[0]} in reports.{report.name}.to"
            ) from None
        record.deliveries += [{"channel": d.channel, "id": d.id} for d in deliveries]
