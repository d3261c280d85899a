"""The ``opscope report`` command: compute one report once and write it in some formats.

Registered on :data:`opscope.cli.app` by :func:`register`. Exit codes: 0 written; 1 the data
could not be read or a file not written; 2 usage or configuration error (unknown report,
period, format, timezone or preset).
"""

from __future__ import annotations

import importlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from opscope.cli import JsonOption, _fail, _load, err, out

_PERIOD_WORDS = {
    "daily": "yesterday",
    "weekly": "last-week",
    "monthly": "last-month",
    "quarterly": "last-quarter",
    "yearly": "last-year",
}
_FORMATS = ("json", "html", "pdf", "xlsx", "pptx")


def report(
    name: Annotated[
        str,
        typer.Argument(
            help="sales_performance, executive_summary, automation_impact, competitive_analysis, "
            "or a key of reports in the configuration."
        ),
    ],
    period: Annotated[
        str | None,
        typer.Option(
            "--period",
            "-p",
            help="2017-Q4, 2017-W49, 2017-12, 2017, 2017-12-05, last-week, this-quarter, … "
            "(default: the last complete period of the report's `period`).",
        ),
    ] = None,
    formats: Annotated[
        str | None,
        typer.Option(
            "--format",
            "-f",
            help="Comma-separated: json, html, pdf, xlsx, pptx (default: the configured "
            "report's formats, else json).",
        ),
    ] = None,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Directory to write.")] = Path("."),
    data: Annotated[
        Path | None,
        typer.Option("--data", help="Folder or file of the data (no configuration file needed)."),
    ] = None,
    mapping: Annotated[
        str | None,
        typer.Option(
            "--mapping",
            help="Mapping preset of --data: maven_crm, hubspot_deals, salesforce_opportunities.",
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            envvar="OPSCOPE_CONFIG",
            help="Configuration file (sources and reports).",
        ),
    ] = None,
    timezone: Annotated[
        str | None,
        typer.Option(
            "--timezone", help="IANA timezone of the period (default: the report's, else UTC)."
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Compute a report from real data and write it (JSON has every number)."""
    from pydantic import ValidationError

    from opscope.config.reports import ReportConfig, SourceConfig, report_kind
    from opscope.errors import ReportError, SourceError
    from opscope.report.building import REPORT_NAMES, ReportRequest, build_report
    from opscope.report.periods import WEEKDAYS, PeriodError, parse_period
    from opscope.report.periods import timezone as check_timezone
    from opscope.report.sources import load_source

    settings = ReportConfig()
    configured = False  # name is a key of the configuration's reports
    base = Path(".")
    if config is not None or data is None:
        loaded = _load(config or Path("opscope.yaml"))
        base = loaded.path.parent
        cfg = loaded.config
        if name in cfg.reports:
            settings = cfg.reports[name]
            configured = True
        kind = report_kind(name, settings)
        if kind is None:
            raise _fail(
                f'unknown report "{name}" (reports: {", ".join(REPORT_NAMES)}; '
                f"configured: {', '.join(cfg.reports) or 'none'})",
                2,
            )
        if data is None:
            source_name = settings.source or (
                next(iter(cfg.sources)) if len(cfg.sources) == 1 else None
            )
            if source_name is None or source_name not in cfg.sources:
                raise _fail(
                    "name the data: --data DIR, or a source in the configuration "
                    f"(sources: {', '.join(cfg.sources) or 'none'})",
                    2,
                )
            source = cfg.sources[source_name]
    else:
        kind = name
    if kind not in REPORT_NAMES:
        raise _fail(f'unknown report "{name}" (reports: {", ".join(REPORT_NAMES)})', 2)
    if data is not None:
        try:
            source = SourceConfig(path=data, mapping=mapping or "maven_crm")
        except ValidationError:
            raise _fail(
                f'--mapping: unknown preset "{mapping}" (maven_crm, hubspot_deals, '
                "salesforce_opportunities)",
                2,
            ) from None
        base = Path(".")
    elif mapping is not None:
        raise _fail("--mapping goes with --data", 2)

    if formats is None:
        # a configured report writes its own formats; a one-off run writes JSON
        formats = ",".join(settings.formats) if configured else "json"
    wanted = [f.strip().lower() for f in formats.split(",") if f.strip()]
    unknown = [f for f in wanted if f not in _FORMATS]
    if not wanted or unknown:
        raise _fail(
            f"--format: unknown format {', '.join(unknown) or '(none)'} "
            f"(formats: {', '.join(_FORMATS)})",
            2,
        )
    renderer = None
    if any(f != "json" for f in wanted):
        try:
            renderer = importlib.import_module("opscope.report.render")
        except ModuleNotFoundError:
            missing = ", ".join(f for f in wanted if f != "json")
            raise _fail(
                f"format {missing} not available in this version of opscope (json is)", 2
            ) from None

    tz = timezone or settings.timezone
    try:
        check_timezone(tz)
        now = datetime.now(UTC)
        week_start = WEEKDAYS.index(settings.week_start)
        chosen = period or _PERIOD_WORDS[settings.period]
        report_period = parse_period(chosen, now=now, tz=tz, week_start=week_start)
    except PeriodError as exc:
        raise _fail(f"{'--timezone' if 'timezone' in str(exc) else '--period'}: {exc}", 2) from None

    request = ReportRequest(period=report_period, timezone=tz, now=now, settings=settings)
    written: list[str] = []
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    ) as progress:
        task = progress.add_task("reading data", total=2 + len(wanted))

        def step(what: str) -> None:
            progress.update(task, description=what)

        try:
            dataset = load_source(source, base=base, timezone=tz, progress=step)
        except SourceError as exc:
            raise _fail(str(exc), 1) from None
        progress.update(task, advance=1, description=f"computing {kind}")
        try:
            doc = build_report(kind, dataset, request)
        except ReportError as exc:
            raise _fail(str(exc), 1) from None
        finally:
            dataset.close()
        progress.update(task, advance=1)
        # files are named after the configured key, so that two configured reports of the
        # same kind do not overwrite each other's files
        stem = f"{name if configured else kind}-{report_period.label}"
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            for fmt in wanted:
                progress.update(task, description=f"writing {fmt}")
                path = out_dir / f"{stem}.{fmt}"
                if fmt == "json":
                    path.write_text(
                        json.dumps(doc.to_dict(), indent=2, ensure_ascii=False) + "\n",
                        encoding="utf-8",
                    )
                else:
                    assert renderer is not None
                    renderer.render(doc, fmt, path)
                written.append(str(path))
                progress.update(task, advance=1)
        except OSError as exc:
            raise _fail(f"cannot write {out_dir}: {exc.strerror or exc}", 1) from None
    if as_json:
        payload: dict[str, Any] = {
            "report": kind,
            "period": doc.period.label,
            "partial": doc.period.partial,
            "written": written,
            "data_quality": doc.data_quality,
        }
        out.print_json(json.dumps(payload))
        return
    for line in doc.data_quality:
        err.print(f"[yellow]data:[/] {escape(line)}", highlight=False)
    for path_text in written:
        out.print(f"wrote {path_text}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add the report command to ``app``."""
    app.command()(report)
