"""One scheduled run of a report: compute it, write its files, and say what to deliver.

A run scheduled at instant *t* reports the last complete period before *t* in the report's
timezone (``period: weekly`` run on Monday 2026-03-30 08:00 Europe/Madrid reports 2026-W13),
computed as of *t* — a run caught up later reports what the on-time run would have. Its files
are written to ``<data_dir>/reports/<name>/<run>/`` (``<run>`` is *t* in UTC,
``20260330T060000Z``), one per configured format, named ``<report>-<period>.<format>``.

What is delivered (:func:`report_message`) is a short text with a link per file, and a JSON
payload for webhooks::

    {"type": "report", "version": "1", "report": "weekly-sales", "kind": "sales_performance",
     "title": "Sales performance — 2026-W13", "period": {...}, "scheduledAt": "…Z",
     "run": "20260330T060000Z", "runUrl": "…/reports/weekly-sales/20260330T060000Z/",
     "files": [{"name", "contentType", "size", "sha256", "url"}], "dataQuality": […],
     "idempotencyKey": "report:weekly-sales:20260330T060000Z"}

(channels that take files add the files themselves, see :mod:`opscope.notify.channels`).
"""

from __future__ import annotations

import hashlib
import mimetypes
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from opscope.config.reports import ReportConfig, SourceConfig, report_kind
from opscope.errors import ReportError
from opscope.report.document import ReportDocument
from opscope.store.runs import run_id

#: What a scheduled run of each ``period`` reports (see :func:`periods.parse_period`).
SCHEDULED_PERIOD = {
    "daily": "yesterday",
    "weekly": "last-week",
    "monthly": "last-month",
    "quarterly": "last-quarter",
    "yearly": "last-year",
}


@dataclass(frozen=True)
class Publication:
    """What one run produced: the document and the files written (absolute paths)."""

    name: str
    scheduled_at: float
    document: ReportDocument
    files: list[Path] = field(default_factory=list)


def run_directory(data_dir: Path, name: str, scheduled_at: float) -> Path:
    """``<data_dir>/reports/<name>/<run>``."""
    return Path(data_dir) / "reports" / name / run_id(scheduled_at)


def produce(
    name: str,
    settings: ReportConfig,
    source: SourceConfig,
    *,
    base: Path,
    data_dir: Path,
    scheduled_at: float,
) -> Publication:
    """Compute report ``name`` for the run at ``scheduled_at`` and write its formats.

    Blocking (DuckDB, statsmodels, Chromium for PDF): run it in a worker thread. Raises
    :class:`ReportError` (its subclasses :class:`SourceError` for unreadable data) or
    :class:`RenderError` when a format cannot be written.
    """
    from opscope.report.building import ReportRequest, build_report
    from opscope.report.periods import WEEKDAYS, PeriodError, parse_period
    from opscope.report.render import render
    from opscope.report.sources import load_source

    kind = report_kind(name, settings)
    if kind is None:
        raise ReportError(f'"{name}" is not a report: set its `report`')
    now = datetime.fromtimestamp(scheduled_at, UTC)
    try:
        period = parse_period(
            SCHEDULED_PERIOD[settings.period],
            now=now,
            tz=settings.timezone,
            week_start=WEEKDAYS.index(settings.week_start),
        )
    except PeriodError as exc:
        raise ReportError(str(exc)) from exc
    request = ReportRequest(period=period, timezone=settings.timezone, now=now, settings=settings)
    dataset = load_source(
        source, base=base, timezone=settings.timezone, cache=data_dir / "cache" / "sources"
    )
    try:
        document = build_report(kind, dataset, request)
        directory = run_directory(data_dir, name, scheduled_at)
        files = [
            render(document, fmt, directory / f"{kind}-{period.label}.{fmt}")
            for fmt in settings.formats
        ]
    finally:
        dataset.close()  # after rendering: a snapshot of the source is kept meanwhile
    return Publication(name, scheduled_at, document, files)


def content_type(path: Path) -> str:
    """The MIME type of a report file, from its name (``application/pdf``, …)."""
    return mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def file_url(base_url: str, name: str, scheduled_at: float, filename: str = "") -> str:
    """Where the server serves a run's file (or, without ``filename``, lists the run)."""
    run = f"{base_url.rstrip('/')}/reports/{quote(name, safe='')}/{run_id(scheduled_at)}/"
    return run + quote(filename, safe="")


def message_key(name: str, scheduled_at: float) -> str:
    """The idempotency key of a run's delivery: ``report:<name>:<run>``."""
    return f"report:{name}:{run_id(scheduled_at)}"


@dataclass(frozen=True)
class ReportMessage:
    """What a run delivers: title, plain text and the webhook payload."""

    key: str
    title: str
    body: str
    payload: dict[str, Any]


def report_message(
    publication: Publication, *, settings: ReportConfig, base_url: str
) -> ReportMessage:
    """The delivery of a finished run (see the module docstring for the payload)."""
    doc = publication.document
    name, at = publication.name, publication.scheduled_at
    local = datetime.fromtimestamp(at, ZoneInfo(settings.timezone))
    files = []
    for path in publication.files:
        data = path.read_bytes()
        files.append(
            {
                "name": path.name,
                "contentType": content_type(path),
                "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
                "url": file_url(base_url, name, at, path.name),
            }
        )
    key = message_key(name, at)
    lines = [
        f"{doc.title} ({name})",
        f"Period: {doc.period.start} to {doc.period.end} (end exclusive), {doc.period.timezone}"
        + (" — partial" if doc.period.partial else ""),
        f"Scheduled: {local:%Y-%m-%d %H:%M %Z}",
        "",
        "Files:",
        *(f"- {f['name']}: {f['url']}" for f in files),
    ]
    if doc.data_quality:
        lines += ["", f"Data quality ({len(doc.data_quality)}):"]
        lines += [f"- {line}" for line in doc.data_quality[:10]]
        if len(doc.data_quality) > 10:
            lines.append(f"- … {len(doc.data_quality) - 10} more in the report")
    lines += ["", f"run {key}"]
    payload = {
        "type": "report",
        "version": "1",
        "report": name,
        "kind": doc.report,
        "title": doc.title,
        "period": {
            "label": doc.period.label,
            "start": doc.period.start,
            "end": doc.period.end,
            "timezone": doc.period.timezone,
            "partial": doc.period.partial,
        },
        "scheduledAt": _rfc3339(at),
        "run": run_id(at),
        "runUrl": file_url(base_url, name, at),
        "files": files,
        "dataQuality": list(doc.data_quality),
        "idempotencyKey": key,
    }
    return ReportMessage(key, doc.title, "\n".join(lines), payload)


def failure_message(
    name: str, scheduled_at: float, error: str, *, settings: ReportConfig
) -> ReportMessage:
    """The delivery telling a report's channels that its run failed (no files)."""
    local = datetime.fromtimestamp(scheduled_at, ZoneInfo(settings.timezone))
    key = message_key(name, scheduled_at) + ":failed"
    title = f"[FAILED] report {name}"
    body = (
        f"The report {name} scheduled {local:%Y-%m-%d %H:%M %Z} could not be produced:\n"
        f"{error}\n\nrun {key}"
    )
    payload = {
        "type": "report",
        "version": "1",
        "report": name,
        "status": "failed",
        "scheduledAt": _rfc3339(scheduled_at),
        "run": run_id(scheduled_at),
        "error": error,
        "idempotencyKey": key,
    }
    return ReportMessage(key, title, body, payload)


def _rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")
