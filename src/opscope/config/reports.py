"""The ``sources`` and ``reports`` sections: where business data comes from, what to report.

::

    sources:
      crm: {path: data/crm, mapping: maven_crm}            # CSV files of a folder
      hubspot:
        path: exports/hubspot-deals.csv
        mapping: {preset: hubspot_deals, deals: {date_format: "%m/%d/%Y"}}
      warehouse:
        url: "postgresql://reader:${PGPASSWORD}@db/sales"
        mapping: salesforce_opportunities
    reports:
      sales_performance:
        source: crm
        period: weekly                # what a scheduled run reports: the last complete week
        formats: [xlsx, html]
        schedule: "0 8 * * MON"       # cron (croniter), in `timezone`
        timezone: Europe/Madrid
        to: [ops-email]               # notify.channels
        stage_probabilities: {Prospecting: 0.1, Engaging: 0.4}
        benchmarks: {win_rate: 0.6}

A report's key is its name; ``report`` says which report it is when the key is another name
(``weekly-sales: {report: sales_performance, …}``). A mapping is a preset name or the tables of
a preset (``preset``) with fields replaced, or a mapping written out in full: per canonical table
the file (or SQL table) it comes from and ``columns`` (canonical name → source column). The
canonical tables and columns are listed in :data:`CANONICAL_COLUMNS`.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel import Locale, UnknownLocaleError
from babel.numbers import is_currency
from croniter import croniter
from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    StrictBool,
    StrictInt,
    model_validator,
)
from pydantic_core import PydanticCustomError

from opscope.config.types import Model

#: Mapping presets (defined in :mod:`opscope.report.schema`).
MappingPreset = Literal["maven_crm", "hubspot_deals", "salesforce_opportunities"]
#: Reports opscope computes.
ReportName = Literal[
    "sales_performance", "executive_summary", "automation_impact", "competitive_analysis"
]
#: Output formats; ``json`` carries every number.
ReportFormat = Literal["json", "html", "pdf", "xlsx", "pptx"]
Weekday = Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
PeriodUnit = Literal["day", "week", "month", "quarter", "year"]
#: How often a scheduled report covers (``weekly``: the last complete week).
ReportPeriodName = Literal["daily", "weekly", "monthly", "quarterly", "yearly"]

#: Canonical tables → their columns. ``deals`` is required; the others are optional and their
#: sections are omitted (with a note) when absent.
CANONICAL_COLUMNS: dict[str, tuple[str, ...]] = {
    "deals": (
        "id",
        "name",
        "owner",
        "team",
        "region",
        "product",
        "account",
        "segment",
        "stage",
        "status",
        "created_date",
        "engaged_date",
        "close_date",
        "amount",
        "probability",
        "source",
        "pipeline",
        "is_won",
        "is_closed",
    ),
    "owners": ("owner", "team", "region"),
    "products": ("product", "series", "list_price"),
    "accounts": ("account", "segment", "country", "employees", "revenue"),
    "leads": ("id", "created_date", "mql_date", "sql_date", "opportunity_date", "source"),
    "targets": ("period", "metric", "value"),
    "automations": (
        "process",
        "period",
        "runs",
        "minutes_saved_per_run",
        "hourly_cost",
        "running_cost",
    ),
    "nps_responses": ("date", "score"),
    "competitors": ("competitor", "product", "price", "features"),
}


def _timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise PydanticCustomError(
            "timezone",
            'unknown IANA timezone "{name}" (e.g. Europe/Madrid, America/New_York, UTC)',
            {"name": name},
        ) from None
    return name


def _cron(expression: str) -> str:
    if len(expression.split()) != 5 or not croniter.is_valid(expression):
        raise PydanticCustomError(
            "cron",
            "expected a cron expression of five fields (minute hour day month weekday), like "
            '"0 8 * * MON", got "{expr}"',
            {"expr": expression},
        )
    return expression


def _fraction(value: float) -> float:
    if not (math.isfinite(value) and 0 <= value <= 1):
        raise PydanticCustomError(
            "fraction", "expected a fraction from 0 to 1, got {v}", {"v": value}
        )
    return value


#: Directives DuckDB's ``strptime`` reads (a table's ``date_format`` goes to it; ``%%`` is a
#: literal ``%``), and those it also reads without padding (``%-d``).
STRPTIME_DIRECTIVES = frozenset("abcdfghjmnpuwxyzABGHIMSTUVWXYZ%")
UNPADDED_DIRECTIVES = frozenset("dmyHIMSj")


def _date_format(fmt: str | None) -> str | None:
    if fmt is None:
        return None
    bad = [
        m.group(0)
        for m in re.finditer(r"%(-?)(.?)", fmt)
        if m.group(2) not in (UNPADDED_DIRECTIVES if m.group(1) else STRPTIME_DIRECTIVES)
    ]
    if bad or "%" not in fmt:
        raise PydanticCustomError(
            "date_format",
            'not a strptime date format ({why}; e.g. "%m/%d/%Y", "%d.%m.%Y %H:%M")',
            {"why": f"unknown directive {bad[0]}" if bad else "no %-directive"},
        )
    return fmt


def _number(value: object) -> object:
    # one message for a value that is not a number (not one per member of a union)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PydanticCustomError("number", "expected a number", {})
    return value


def _currency(code: str) -> str:
    if not is_currency(code):
        raise PydanticCustomError(
            "currency", "not an ISO 4217 currency code (e.g. USD, EUR, GBP, CHF)", {}
        )
    return code


def _locale(name: str) -> str:
    try:
        Locale.parse(name)
    except (UnknownLocaleError, ValueError):
        raise PydanticCustomError(
            "locale", "not a locale known to CLDR (e.g. en_US, de_DE, fr_FR, de_CH)", {}
        ) from None
    return name


#: An IANA timezone name, checked with :mod:`zoneinfo`.
TimezoneName = Annotated[str, AfterValidator(_timezone)]
#: A five-field cron expression, checked with croniter.
CronExpression = Annotated[str, AfterValidator(_cron)]
#: A number (an int or a float, not a string or a bool).
Number = Annotated[float, BeforeValidator(_number)]
Fraction = Annotated[float, BeforeValidator(_number), AfterValidator(_fraction)]
#: A strptime format of dates, its directives checked.
DateFormat = Annotated[str | None, AfterValidator(_date_format)]


class TableMapping(Model):
    """Where one canonical table comes from and how its columns are read."""

    file: str | None = None
    """File of a folder source (a glob such as ``*deals*.csv`` must match one file); for a
    single-file source it may be left out. CSV, Parquet (``.parquet``) or Excel (``.xlsx``)."""
    sheet: str | None = None
    """Worksheet of an Excel file (default: the first)."""
    table: str | None = None
    """Table or view of an SQL or DuckDB source."""
    columns: dict[str, str] = Field(default_factory=dict)
    """Canonical column → column name in the source. Unlisted canonical columns are taken from
    a source column of the same name when there is one."""
    date_format: DateFormat = None
    """strptime format of the date columns (``%m/%d/%Y``); default: ISO 8601 dates or
    timestamps (a timestamp with an offset is converted to the report's timezone, one without
    is taken as local time there)."""
    decimal: Literal[".", ","] = "."
    """Decimal mark of amounts written as text (``$1,200.50`` with ``.``, ``1.200,50 €`` with
    ``,``); currency symbols, codes and thousands separators are removed. When not given, a
    column whose amounts can only be read with ``,`` (``1.200,50``, ``12,5``) is read with
    ``,`` (noted in the data-quality log). Native Excel numbers are never re-read."""
    rename: dict[str, dict[str, str]] = Field(default_factory=dict)
    """Canonical column → {value in the source: value in reports} (stage renaming, say)."""


class DealsMapping(TableMapping):
    """The ``deals`` table: also how its stages are ordered and which of them close a deal."""

    won_stages: list[str] = Field(default_factory=list)
    """Stages (after ``rename``) of won deals; compared case-insensitively. Not needed when
    ``is_won``/``is_closed`` columns are mapped."""
    lost_stages: list[str] = Field(default_factory=list)
    """Stages of lost deals."""
    stage_order: list[str] = Field(default_factory=list)
    """The funnel's stages, first to last (the last one is usually the won stage)."""
    stage_probabilities: dict[str, Fraction] = Field(default_factory=dict)
    """Win probability of an open deal per stage, for the weighted pipeline (a report's
    ``stage_probabilities`` replaces these)."""
    probability_percent: StrictBool = False
    """The ``probability`` column is in percent (Salesforce) rather than a fraction."""


class MappingConfig(Model):
    """Canonical tables of a source: a preset's, with the tables given here replacing fields
    of the preset's (or written out in full without a preset)."""

    preset: MappingPreset | None = None
    """Start from this preset."""
    deals: DealsMapping | None = None
    """Opportunities / deals (required, from here or the preset)."""
    owners: TableMapping | None = None
    """Sales reps: owner, team (manager), region — reps without deals still appear."""
    products: TableMapping | None = None
    """Products: product, series, list price."""
    accounts: TableMapping | None = None
    """Accounts: account, segment, country."""
    leads: TableMapping | None = None
    """Leads with created, MQL, SQL and opportunity dates."""
    targets: TableMapping | None = None
    """Targets: period label (``2017-Q4``), metric name, value."""
    automations: TableMapping | None = None
    """Automated processes: runs, minutes saved per run, hourly cost, running cost, period."""
    nps_responses: TableMapping | None = None
    """NPS survey answers: date, score 0–10."""
    competitors: TableMapping | None = None
    """Competitors: competitor, product, price, features (``;``-separated)."""


def _preset_name(value: object) -> object:
    return {"preset": value} if isinstance(value, str) else value


class SourceConfig(Model):
    """A data source: files (CSV, Parquet, Excel) or a database, read into DuckDB."""

    kind: Literal["files", "sql", "duckdb"] | None = None
    """``files`` (a folder or one file), ``sql`` (a SQLAlchemy URL) or ``duckdb`` (a DuckDB
    database file). Default: ``sql`` with ``url``, ``duckdb`` for a ``.duckdb``/``.db`` path,
    else ``files``."""
    path: Path | None = None
    """Folder or file, relative to the configuration file."""
    url: str | None = None
    """SQLAlchemy database URL (``postgresql://user:${PW}@host/db``, ``sqlite:///crm.db``)."""
    mapping: Annotated[MappingConfig, BeforeValidator(_preset_name)] = Field(
        default_factory=lambda: MappingConfig(preset="maven_crm")
    )
    """Column mapping: a preset name (``maven_crm``, ``hubspot_deals``,
    ``salesforce_opportunities``) or a mapping."""
    currency: Annotated[str, AfterValidator(_currency)] = "USD"
    """ISO 4217 code of the amounts (checked with Babel)."""
    locale: Annotated[str, AfterValidator(_locale)] = "en_US"
    """Locale the renderers format numbers and money in (``de_DE``: 1.234,56 €)."""

    @model_validator(mode="after")
    def _where(self) -> SourceConfig:
        if (self.path is None) == (self.url is None):
            raise PydanticCustomError("source", "give exactly one of path and url", {})
        if self.kind == "sql" and self.url is None:
            raise PydanticCustomError("source", "kind sql needs a url", {})
        if self.kind in ("files", "duckdb") and self.path is None:
            raise PydanticCustomError("source", "kind {k} needs a path", {"k": self.kind})
        return self


class ForecastConfig(Model):
    """The executive summary's revenue forecast."""

    granularity: PeriodUnit | None = None
    """Bucket of the revenue series (default: month for quarters and years, week for months,
    day for weeks and days)."""
    horizon: StrictInt | None = Field(default=None, ge=1, le=60)
    """Buckets to forecast (default: those of the period after the report's)."""
    backtest_origins: StrictInt = Field(default=6, ge=1, le=50)
    """Most rolling-origin backtest origins (the latest ones)."""


class ReportConfig(Model):
    """One report: what it computes, over which data and period, and when it is sent."""

    report: ReportName | None = None
    """Which report (default: the key, which must then be a report name)."""
    source: str | None = None
    """Key of ``sources`` (may be left out when there is exactly one source)."""
    period: ReportPeriodName = "monthly"
    """What a scheduled run covers: the last complete day, week, month, quarter or year before
    the run."""
    formats: list[ReportFormat] = Field(default_factory=lambda: ["html"], min_length=1)  # type: ignore[arg-type]
    """Output formats."""
    schedule: CronExpression | None = None
    """When ``opscope serve`` runs it: a cron expression in ``timezone``."""
    timezone: TimezoneName = "UTC"
    """IANA timezone of the period boundaries and of the schedule."""
    to: list[str] = Field(default_factory=list)
    """Channels (keys of ``notify.channels``) the report is delivered to."""
    catch_up: Literal["latest", "none"] = "latest"
    """Scheduled runs missed while ``opscope serve`` was down: ``latest`` runs the most recent
    missed one, once, when the server starts (never every missed one); ``none`` skips them."""
    attach: StrictBool = True
    """Deliver the files themselves: email attachments, base64 in webhook bodies (and in apprise
    services that take files). Links to the server's copy are always included; ``false`` sends
    the links alone."""
    week_start: Weekday = "monday"
    """First day of a week (ISO 8601: Monday)."""
    stages: list[str] = Field(default_factory=list)
    """Funnel stage order (default: the mapping's ``stage_order``)."""
    stage_probabilities: dict[str, Fraction] = Field(default_factory=dict)
    """Win probability per open stage for the weighted pipeline (default: the mapping's)."""
    benchmarks: dict[str, Number] = Field(default_factory=dict)
    """Reference values by metric name (``win_rate: 0.3``, ``sales_cycle.mean_days: 60``):
    shown next to the metric and used by the recommendations; the names are those of
    :data:`BENCHMARK_NAMES`."""
    targets: dict[str, Number] = Field(default_factory=dict)
    """Targets per period by metric name (``revenue.won: 2500000``); a ``targets`` table in the
    source takes precedence for the periods it lists."""
    forecast: ForecastConfig = Field(default_factory=ForecastConfig)
    """Revenue forecast of the executive summary."""
    own_company: str = "us"
    """The ``competitor`` value of one's own rows in the ``competitors`` table."""


#: Names ``benchmarks`` accepts: metrics of the reports, and thresholds of two
#: recommendation rules (``pipeline_coverage``: open pipeline / won revenue, default 3;
#: ``stage_conversion``: the lowest stage-to-stage conversion, default 0.5).
BENCHMARK_NAMES = (
    "revenue.won",
    "deals.won",
    "deals.lost",
    "win_rate",
    "deal_size.average",
    "sales_cycle.mean_days",
    "sales_cycle.median_days",
    "pipeline.open.count",
    "pipeline.open.value",
    "pipeline.weighted",
    "pipeline.velocity",
    "pipeline_coverage",
    "stage_conversion",
)


def report_kind(name: str, report: ReportConfig) -> str | None:
    """The report a ``reports`` entry computes, or ``None`` when neither ``report`` nor the
    key names one."""
    if report.report is not None:
        return report.report
    return name if name in ReportName.__args__ else None  # type: ignore[attr-defined]


def report_problems(
    sources: dict[str, SourceConfig], reports: dict[str, ReportConfig], channels: set[str]
) -> list[tuple[tuple[str | int, ...], str]]:
    """Checks across sections, as ``(location, message)``: each report names a known report,
    an existing source (or there is exactly one) and existing channels."""
    found: list[tuple[tuple[str | int, ...], str]] = []
    names = ", ".join(ReportName.__args__)  # type: ignore[attr-defined]
    for key, report in reports.items():
        if report_kind(key, report) is None:
            found.append((("reports", key), f'"{key}" is not a report ({names}): set report'))
        if report.source is None and len(sources) != 1:
            found.append(
                (("reports", key), f"name its source ({', '.join(sources) or 'no sources'})")
            )
        elif report.source is not None and report.source not in sources:
            found.append(
                (
                    ("reports", key, "source"),
                    f'unknown source "{report.source}" (sources: {", ".join(sources) or "none"})',
                )
            )
        for bench in report.benchmarks:
            if bench not in BENCHMARK_NAMES:
                found.append(
                    (
                        ("reports", key, "benchmarks", bench),
                        f'unknown benchmark "{bench}" (benchmarks: {", ".join(BENCHMARK_NAMES)})',
                    )
                )
        stages = {s.casefold() for s in report.stages}
        for stage in report.stage_probabilities if stages else ():
            if stage.casefold() not in stages:
                found.append(
                    (
                        ("reports", key, "stage_probabilities", stage),
                        f'stage "{stage}" is not one of the report\'s stages '
                        f"({', '.join(report.stages)})",
                    )
                )
        for index, channel in enumerate(report.to):
            if channel not in channels:
                found.append(
                    (
                        ("reports", key, "to", index),
                        f'unknown channel "{channel}" (notify.channels: '
                        f"{', '.join(sorted(channels)) or 'none'})",
                    )
                )
    return found
