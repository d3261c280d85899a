"""What every report shares: the request, the period block, KPI status and the data-quality
section, and :func:`build_report`, the one entry point from a name to a document."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from opscope.config.reports import ReportConfig
from opscope.errors import ReportError
from opscope.report.document import Kpi, Notes, Period, ReportDocument, Section, Status, Trend
from opscope.report.periods import ReportPeriod, local_today, partial_reason
from opscope.report.sources import Dataset

REPORT_NAMES = (
    "sales_performance",
    "executive_summary",
    "automation_impact",
    "competitive_analysis",
)
TITLES = {
    "sales_performance": "Sales performance",
    "executive_summary": "Executive summary",
    "automation_impact": "Automation impact",
    "competitive_analysis": "Competitive analysis",
}


@dataclass(frozen=True)
class ReportRequest:
    """What to report: the period, the timezone it is in, "now" (for partial periods and the
    generation stamp) and the report's settings (stages, probabilities, benchmarks, targets,
    forecast)."""

    period: ReportPeriod
    timezone: str
    now: datetime
    settings: ReportConfig = field(default_factory=ReportConfig)

    @property
    def stage_order(self) -> list[str]:
        """Funnel stages: the report's, else the mapping's (set by :func:`build_report`)."""
        return list(self.settings.stages)


def new_document(
    name: str, data: Dataset, request: ReportRequest, partial: str | None
) -> ReportDocument:
    """An empty document of report ``name`` with its period, currency, locale and the period
    metrics (``period.label``, ``period.start``, ``period.end``, ``period.partial``)."""
    p = request.period
    doc = ReportDocument(
        report=name,
        title=f"{TITLES[name]} — {p.label}",
        period=Period(
            p.label,
            p.start.isoformat(),
            p.end.isoformat(),
            request.timezone,
            partial=partial is not None,
        ),
        generated_at=request.now.isoformat(timespec="seconds"),
        currency=data.currency,
        locale=data.locale,
    )
    doc.metrics.update(
        {
            "period.label": p.label,
            "period.start": p.start.isoformat(),
            "period.end": p.end.isoformat(),
            "period.partial": int(partial is not None),
            "period.previous": p.previous().label,
            "period.last_year": p.same_period_last_year().label,
        }
    )
    return doc


def period_partial(
    data: Dataset, request: ReportRequest, first: object, last: object
) -> str | None:
    """Why the request's period is partial (see :func:`periods.partial_reason`)."""
    from datetime import date

    today = local_today(request.now, request.timezone)
    return partial_reason(
        request.period,
        today=today,
        first=first if isinstance(first, date) else None,
        last=last if isinstance(last, date) else None,
    )


def comparison_partial(
    request: ReportRequest, compared: ReportPeriod, first: object, last: object
) -> str | None:
    """Why a comparison period (previous, same period last year) holds only part of its data,
    or ``None`` when it is complete or wholly outside the data (then its figures are n/a, not
    partial). ``first``/``last`` are the data's first and last close dates."""
    from datetime import date

    if not (isinstance(first, date) and isinstance(last, date)):
        return None
    if compared.end <= first or compared.start > last:
        return None
    return partial_reason(
        compared,
        today=local_today(request.now, request.timezone),
        first=first,
        last=last,
    )


def flag_partial_comparisons(
    cards: list[Kpi],
    request: ReportRequest,
    span: tuple[object, object],
    metrics: dict[str, float | int | str | None],
    *,
    only: set[str] | None = None,
) -> list[str]:
    """Note on each KPI card (``only``: the cards of these names) that its previous period or
    same period last year is partial, set ``period.previous.partial`` and
    ``period.last_year.partial``, and return the data-quality lines saying so: a growth rate
    against a partial period overstates the change."""
    p = request.period
    lines: list[str] = []
    flags: list[str] = []
    for key, what, compared in (
        ("previous", "previous period", p.previous()),
        ("last_year", "same period last year", p.same_period_last_year()),
    ):
        reason = comparison_partial(request, compared, *span)
        metrics[f"period.{key}.partial"] = int(reason is not None)
        if reason is None:
            continue
        flags.append(f"{what} {compared.label} is partial")
        lines.append(
            f"comparison with the {what}: {reason}; growth against it is not like for like"
        )
    if flags:
        note = "; ".join(flags) + " (see data quality)"
        for card in cards:
            if only is None or card.name in only:
                card.note = note if card.note is None else f"{card.note}; {note}"
    return lines


def quality_section(doc: ReportDocument, data: Dataset, extra: list[str]) -> None:
    """Append the data-quality section (every report has one) and fill ``doc.data_quality``
    (each line once, in order: the previous period of a yearly report is also last year's)."""
    lines = list(dict.fromkeys([*data.quality, *extra]))
    doc.data_quality = lines
    doc.sections.append(
        Section(
            id="data_quality",
            title="Data quality",
            blocks=[Notes("Data quality", lines or ["no problems found"], style="warnings")],
        )
    )


def closing_sections(
    doc: ReportDocument,
    data: Dataset,
    recommendations: list[str],
    notes: list[str],
    *,
    closed_deals: int,
    period_label: str,
) -> None:
    """Append the last sections of a deal report: the recommendations ("no rule triggered"
    when none fired) and the data quality, noting when no deal closed in the period."""
    doc.sections.append(
        Section(
            "recommendations",
            "Recommendations",
            [
                Notes(
                    "Recommendations",
                    recommendations or ["no rule triggered"],
                    style="recommendations",
                )
            ],
        )
    )
    if closed_deals == 0:
        notes.append(f"no deals closed in {period_label}: closed-deal figures are n/a")
    quality_section(doc, data, notes)


Direction = Literal["higher", "lower"]


def growth(current: float | None, previous: float | None) -> float | None:
    """(current − previous) / previous; ``None`` when previous is missing or 0."""
    if current is None or previous is None or previous == 0:
        return None
    return (current - previous) / previous


def trend(current: float | None, previous: float | None) -> Trend:
    """``new`` when previous is 0 and current is not; ``up``/``down`` beyond ±1 %, else
    ``flat``; ``n/a`` when either is missing."""
    if current is None or previous is None:
        return "n/a"
    if previous == 0:
        return "new" if current != 0 else "flat"
    change = (current - previous) / abs(previous)
    if abs(change) < 0.01:
        return "flat"
    return "up" if change > 0 else "down"


def status(current: float | None, target: float | None, direction: Direction = "higher") -> Status:
    """On track at or past the target, at risk within 10 % of it, off track beyond
    (for ``lower`` metrics such as the sales cycle, the other way round)."""
    if target is None or current is None:
        return "no_target"
    if direction == "higher":
        if current >= target:
            return "on_track"
        return "at_risk" if current >= 0.9 * target else "off_track"
    if current <= target:
        return "on_track"
    return "at_risk" if current <= 1.1 * target else "off_track"


def kpi(
    name: str,
    kind: str,
    current: float | None,
    *,
    previous: float | None,
    last_year: float | None,
    target: float | None,
    direction: Direction = "higher",
) -> Kpi:
    """A KPI card with growth, trend and status computed by the rules above."""
    return Kpi(
        name=name,
        kind=kind,  # type: ignore[arg-type]
        current=current,
        previous=previous,
        same_period_last_year=last_year,
        target=target,
        growth=growth(current, previous),
        status=status(current, target, direction),
        trend=trend(current, previous),
    )


Builder = Callable[[Dataset, ReportRequest], ReportDocument]


def build_report(name: str, data: Dataset, request: ReportRequest) -> ReportDocument:
    """Compute report ``name`` over ``data`` for ``request``.

    Raises :class:`ReportError` for an unknown name.
    """
    from opscope.report import automation, competitive, executive, sales

    builders: dict[str, Builder] = {
        "sales_performance": sales.sales_performance,
        "executive_summary": executive.executive_summary,
        "automation_impact": automation.automation_impact,
        "competitive_analysis": competitive.competitive_analysis,
    }
    builder = builders.get(name)
    if builder is None:
        raise ReportError(f'unknown report "{name}" (reports: {", ".join(REPORT_NAMES)})')
    return builder(data, request)
