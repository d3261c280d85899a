"""The report routes: configured reports, their runs, and the files of each run (read-only).

* ``GET /api/v1/reports`` — every configured report: kind, formats, schedule, timezone, next
  run, channels, and its latest run;
* ``GET /api/v1/reports/{name}/runs?limit=`` — its run records, newest first, each delivery
  with its state in the outbox;
* ``GET /reports/{name}/{run}/`` — the files of one run (JSON: name, size, content type, url);
* ``GET /reports/{name}/{run}/{file}`` — one file, as written (the links in deliveries).

Only files of configured reports, under ``<data_dir>/reports/<name>/<run>/``, are served: a
run name must be a UTC time (``20260330T060000Z``) and a file name a plain name.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from opscope.config.reports import ReportConfig, report_kind
from opscope.notify.outbox import delivery_states
from opscope.report.publishing import content_type, file_url
from opscope.report.schedule import Schedule
from opscope.server.alerting_api import NotFound
from opscope.server.api import JSONBody, success
from opscope.store import Store
from opscope.store.runs import RunRecord, RunRecords, parse_run_id


@dataclass
class ReportsContext:
    """What the report routes need."""

    reports: dict[str, ReportConfig]
    runs: RunRecords
    store: Store
    data_dir: Path
    base_url: str
    now: Callable[[], float]


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def run_json(record: RunRecord, store: Store) -> dict[str, Any]:
    """A run record with the outbox state of each of its deliveries."""
    states = delivery_states(store, [d["id"] for d in record.deliveries])
    return record.to_dict(states)


def reports_router(ctx: ReportsContext) -> APIRouter:
    """Routes of the reports (mounted at the application's root)."""
    router = APIRouter()

    def need_report(name: str) -> ReportConfig:
        settings = ctx.reports.get(name)
        if settings is None:
            raise NotFound(f"no report {name} (reports: {', '.join(ctx.reports) or 'none'})")
        return settings

    def run_dir(name: str, run: str) -> Path:
        need_report(name)
        if parse_run_id(run) is None:
            raise NotFound(f"no run {run} of report {name} (runs are named like 20260330T060000Z)")
        directory = ctx.data_dir / "reports" / name / run
        if not directory.is_dir():
            raise NotFound(f"no run {run} of report {name}")
        return directory

    @router.get("/api/v1/reports", summary="Configured reports, their schedules and last runs")
    async def reports() -> JSONBody:
        def build() -> JSONBody:
            now = ctx.now()
            items = []
            for name, settings in ctx.reports.items():
                latest = ctx.runs.latest(name)
                next_run = None
                if settings.schedule is not None:
                    next_run = _iso(Schedule(settings.schedule, settings.timezone).next_after(now))
                items.append(
                    {
                        "name": name,
                        "report": report_kind(name, settings),
                        "period": settings.period,
                        "formats": list(settings.formats),
                        "schedule": settings.schedule,
                        "timezone": settings.timezone,
                        "nextRun": next_run,
                        "to": list(settings.to),
                        "catchUp": settings.catch_up,
                        "lastRun": None if latest is None else run_json(latest, ctx.store),
                    }
                )
            return success(items)

        return await run_in_threadpool(build)

    @router.get("/api/v1/reports/{name}/runs", summary="Runs of one report, newest first")
    async def runs(name: str, limit: Annotated[int, Query(ge=1, le=10_000)] = 100) -> JSONBody:
        need_report(name)

        def build() -> JSONBody:
            records = ctx.runs.records(name, limit=limit)
            return success([run_json(r, ctx.store) for r in records])

        return await run_in_threadpool(build)

    @router.get("/reports/{name}/{run}/", summary="The files of one run")
    async def run_files(name: str, run: str) -> JSONBody:
        directory = run_dir(name, run)
        scheduled = parse_run_id(run)
        assert scheduled is not None
        files = [
            {
                "name": path.name,
                "size": path.stat().st_size,
                "contentType": content_type(path),
                "url": file_url(ctx.base_url, name, scheduled, path.name),
            }
            for path in sorted(directory.iterdir())
            if path.is_file() and not path.name.startswith(".")
        ]
        return JSONBody(json.dumps({"status": "success", "data": files}))

    @router.get("/reports/{name}/{run}/{filename}", summary="One file of a run")
    async def run_file(name: str, run: str, filename: str) -> FileResponse:
        directory = run_dir(name, run)
        path = directory / filename
        if (
            filename.startswith(".")
            or "/" in filename
            or "\\" in filename
            or path.resolve().parent != directory.resolve()
            or not path.is_file()
        ):
            raise NotFound(f"no file {filename} in run {run} of report {name}")
        return FileResponse(
            path,
            media_type=content_type(path),
            filename=filename,
            content_disposition_type="inline",
        )

    return router
