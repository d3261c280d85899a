"""The ``opscope report`` command: compute one report once and write it in some formats.

Registered on :data:`opscope.cli.app` by :func:`register`. Exit codes: 0 written; 1 the data
could not be read or a file not written; 2 usage or configuration error (unknown report,
period, format, timezone or preset).
"""

from __future__ import annotations

import importlib
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, cast

import typer
import typer.core
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
            help="Mapping preset of --data: maven_crm, hubspot_deals, salesforce_opportunities "
            "(default: detected from the data's file names or header).",
        ),
    ] = None,
    decimal: Annotated[
        str | None,
        typer.Option(
            "--decimal",
            help='Decimal mark of amounts written as text in --data: "." or "," '
            '(default: detected per column where the values decide it, else ".").',
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
    cache: Annotated[
        bool,
        typer.Option(
            "--cache/--no-cache",
            help="Keep a snapshot of loaded files and reuse it while they are unchanged "
            "(in $OPSCOPE_CACHE_DIR, else $XDG_CACHE_HOME/opscope/sources).",
        ),
    ] = True,
    as_json: JsonOption = False,
) -> None:
    """Compute a report from real data and write it (JSON has every number)."""
    from pydantic import ValidationError

    from opscope.config.reports import ReportConfig, SourceConfig, report_kind
    from opscope.errors import MappingError, ReportError, SourceError
    from opscope.report.building import REPORT_NAMES, ReportRequest, build_report
    from opscope.report.periods import WEEKDAYS, PeriodError, parse_period
    from opscope.report.periods import timezone as check_timezone
    from opscope.report.snapshot import default_cache_dir
    from opscope.report.sources import detect_preset, load_source

    def fail(message: str, code: int) -> typer.Exit:
        # --json: the error in the API's JSON error shape on stdout, the exit code as usual
        if not as_json:
            return _fail(message, code)
        error_type = "bad_data" if code == 2 else "execution"
        out.print_json(json.dumps({"status": "error", "errorType": error_type, "error": message}))
        return typer.Exit(code)

    settings = ReportConfig()
    config_file: Path | None = None  # the configuration file and the source's name in it
    source_name: str | None = None
    preset: str | None = mapping
    undetected: str | None = None  # --data without --mapping whose preset is not recognised
    configured = False  # name is a key of the configuration's reports
    base = Path(".")
    if config is not None or data is None:
        if as_json:
            from opscope.config import load_config
            from opscope.errors import ConfigError

            try:
                loaded = load_config(config or Path("opscope.yaml"))
            except ConfigError as exc:
                raise fail(str(exc), 2) from None
        else:
            loaded = _load(config or Path("opscope.yaml"))
        config_file = loaded.path
        base = loaded.path.parent
        cfg = loaded.config
        if name in cfg.reports:
            settings = cfg.reports[name]
            configured = True
        kind = report_kind(name, settings)
        if kind is None:
            raise fail(
                f'unknown report "{name}" (reports: {", ".join(REPORT_NAMES)}; '
                f"configured: {', '.join(cfg.reports) or 'none'})",
                2,
            )
        if data is None:
            source_name = settings.source or (
                next(iter(cfg.sources)) if len(cfg.sources) == 1 else None
            )
            if source_name is None or source_name not in cfg.sources:
                raise fail(
                    "name the data: --data DIR, or a source in the configuration "
                    f"(sources: {', '.join(cfg.sources) or 'none'})",
                    2,
                )
            source = cfg.sources[source_name]
    else:
        kind = name
    if kind not in REPORT_NAMES:
        raise fail(f'unknown report "{name}" (reports: {", ".join(REPORT_NAMES)})', 2)
    if decimal is not None and decimal not in (".", ","):
        raise fail(f'--decimal: "{decimal}" is not a decimal mark (give "." or ",")', 2)
    if data is not None:
        preset = mapping or detect_preset(data)
        if preset is None and data.exists():  # reported after the other options are checked
            undetected = (
                f"--mapping: cannot tell which export {data} is from its header; give "
                "--mapping maven_crm, hubspot_deals or salesforce_opportunities"
            )
        preset = preset or "maven_crm"  # a missing path is reported by the loader
        try:
            if decimal is None:
                source = SourceConfig(path=data, mapping=preset)
            else:
                source = SourceConfig(path=data, mapping=_with_decimal(preset, decimal))
        except ValidationError:
            raise fail(
                f'--mapping: unknown preset "{mapping}" (maven_crm, hubspot_deals, '
                "salesforce_opportunities)",
                2,
            ) from None
        base = Path(".")
    elif mapping is not None or decimal is not None:
        raise fail(f"{'--mapping' if mapping is not None else '--decimal'} goes with --data", 2)

    if formats is None:
        # a configured report writes its own formats; a one-off run writes JSON
        formats = ",".join(settings.formats) if configured else "json"
    wanted = [f.strip().lower() for f in formats.split(",") if f.strip()]
    unknown = [f for f in wanted if f not in _FORMATS]
    if not wanted or unknown:
        raise fail(
            f"--format: unknown format {', '.join(unknown) or '(none)'} "
            f"(formats: {', '.join(_FORMATS)})",
            2,
        )
    if out_dir.exists() and not out_dir.is_dir():
        raise fail(f"--out {out_dir} is a file, not a folder", 2)
    renderer = None
    if any(f != "json" for f in wanted):
        try:
            renderer = importlib.import_module("opscope.report.render")
        except ModuleNotFoundError:
            missing = ", ".join(f for f in wanted if f != "json")
            raise fail(
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
        raise fail(f"{'--timezone' if 'timezone' in str(exc) else '--period'}: {exc}", 2) from None

    if undetected is not None:
        raise fail(undetected, 2)
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
            dataset = load_source(
                source,
                base=base,
                timezone=tz,
                progress=step,
                cache=default_cache_dir() if cache else None,
            )
        except MappingError as exc:
            if config_file is None or source_name is None or data is not None:
                raise fail(f"--mapping {preset}: {exc}", 2) from None
            raise fail(_mapping_problem(config_file, source_name, exc), 2) from None
        except SourceError as exc:
            raise fail(str(exc), 1) from None
        progress.update(task, advance=1, description=f"computing {kind}")
        # The dataset is closed once the files are written: a snapshot of the source being
        # kept meanwhile (see load_source) is finished by then.
        try:
            try:
                doc = build_report(kind, dataset, request)
            except ReportError as exc:
                raise fail(str(exc), 1) from None
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
            except FileExistsError:
                raise fail(f"--out {out_dir} is a file, not a folder", 2) from None
            except OSError as exc:
                raise fail(f"cannot write {out_dir}: {exc.strerror or exc}", 1) from None
        finally:
            dataset.close()
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


def _mapping_problem(config_file: Path, source_name: str, exc: Any) -> str:
    """``FILE:LINE: sources.NAME.mapping.TABLE.columns.COLUMN: message`` for a mapped column
    the data lacks (``exc``: a ``MappingError``); the line of the mapping's entry, else of the
    source's mapping (the column came from a preset)."""
    from opscope.config.yamlfile import read_yaml

    loc: tuple[str, ...] = ("sources", source_name, "mapping", exc.table, "columns", exc.column)
    try:
        _, positions = read_yaml(config_file.read_text(encoding="utf-8"), str(config_file))
    except Exception:  # noqa: BLE001 - the file was valid a moment ago; the message still helps
        return f"{config_file}: {'.'.join(loc)}: {exc}"
    line = None
    for depth in range(len(loc), 1, -1):
        if loc[:depth] in positions.keys or loc[:depth] in positions.values:
            loc = loc[:depth]
            line = positions.of(loc, key=True)[0]
            break
    where = f"{config_file}:{line}" if line is not None else str(config_file)
    return f"{where}: {'.'.join(loc)}: {exc}"


def _with_decimal(preset: str, decimal: str) -> dict[str, Any]:
    """The mapping ``preset`` with ``decimal`` set on each of its tables (an unknown preset is
    left to the mapping's validation)."""
    from opscope.config.reports import CANONICAL_COLUMNS
    from opscope.report.schema import PRESETS

    mapping: dict[str, Any] = {"preset": preset}
    known = PRESETS.get(cast(Any, preset))
    if known is not None:
        for table in CANONICAL_COLUMNS:
            if getattr(known, table) is not None:
                mapping[table] = {"decimal": decimal}
    return mapping


def runs(
    name: Annotated[
        str | None, typer.Argument(help="A key of reports (default: every report).")
    ] = None,
    config: Annotated[
        Path,
        typer.Option("--config", "-c", envvar="OPSCOPE_CONFIG", help="Configuration file."),
    ] = Path("opscope.yaml"),
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", help="Store directory (default: data_dir of the config)."),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="Most runs to list.")] = 20,
    as_json: JsonOption = False,
) -> None:
    """List the runs of scheduled reports: when, outcome, files and deliveries (piped: one
    per line, tab-separated)."""
    from rich.table import Table

    from opscope.errors import StoreError
    from opscope.notify.outbox import delivery_states
    from opscope.store import Store
    from opscope.store.runs import RunRecords

    if data_dir is None:
        loaded = _load(config)
        data_dir = loaded.config.data_dir
        if name is not None and name not in loaded.config.reports:
            configured = ", ".join(loaded.config.reports) or "none"
            raise _fail(f'unknown report "{name}" (reports: {configured})', 2)
    try:
        with RunRecords.open(data_dir, readonly=True) as records:
            found = records.records(name, limit=limit)
        with Store.open(data_dir, readonly=True) as store:
            ids = [d["id"] for r in found for d in r.deliveries]
            states = delivery_states(store, ids)
    except StoreError as exc:
        raise _fail(str(exc), 1) from None
    rows = [r.to_dict(states) for r in found]
    if as_json:
        out.print_json(json.dumps(rows))
        return
    if not rows:
        err.print("no runs recorded", highlight=False)
        return
    lines = [
        (
            row["report"],
            row["scheduled_at"],
            row["period"],
            row["state"] + (f" ({' '.join(row['error'].split())})" if row["error"] else ""),
            row["started_at"],
            row["finished_at"] or "",
            " ".join(Path(f).name for f in row["files"]),
            ", ".join(f"{d['channel']}: {d['state']}" for d in row["deliveries"]),
        )
        for row in rows
    ]
    if not out.is_terminal:  # for scripts: one run per line, tab-separated, nothing cut
        for line in lines:
            sys.stdout.write("\t".join(line) + "\n")
        return
    table = Table(
        "report", "scheduled", "period", "outcome", "started", "finished", "files", "deliveries"
    )
    for index in (1, 4, 5):  # whole times
        table.columns[index].no_wrap = True
        table.columns[index].min_width = max((len(line[index]) for line in lines), default=0)
    table.columns[6].overflow = "fold"
    for line in lines:
        table.add_row(*(escape(cell) for cell in line))
    out.print(table)


def _report_group() -> type[typer.core.TyperGroup]:
    class ReportGroup(typer.core.TyperGroup):
        """``opscope report NAME …`` runs ``report run NAME …``; ``report runs`` lists runs."""

        def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
            if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
                args = ["run", *args]
            return super().parse_args(ctx, args)

    return ReportGroup


def register(app: typer.Typer) -> None:
    """Add the report commands to ``app``: ``report [run] NAME`` and ``report runs``."""
    group = typer.Typer(
        cls=_report_group(),
        no_args_is_help=True,
        help="Compute a report (`opscope report NAME`, the same as `report run NAME`) or list "
        "the runs of scheduled reports (`opscope report runs`).",
    )
    group.command("run")(report)
    group.command("runs")(runs)
    app.add_typer(group, name="report")
