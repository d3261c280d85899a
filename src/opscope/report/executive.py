"""The executive summary: KPI cards, revenue breakdowns, forecast, dashboard, recommendations.

Sections (ids): ``kpis``, ``revenue_breakdown``, ``forecast``, ``dashboard`` (the 2×2 of four
charts, always in this order: revenue trend with target line, funnel, automation ROI, NPS
gauge — a chart whose data is absent has no series and says why in its ``note``), ``nps``,
``automation``, ``recommendations``, ``data_quality``.

KPI cards carry current, previous period, same period last year, target (``targets`` table
row for the period label and metric, else ``reports.NAME.targets``), growth ("new" trend and no
growth when the previous value is 0), status against the target and trend
(:mod:`opscope.report.building`). **NPS** = % promoters (9–10) − % detractors (0–6) of the
period's responses (Bain & Company's definition), from −100 to 100.

Metrics: those of the KPI cards (``revenue.won``, ``deals.won``, ``win_rate``,
``deal_size.average``, ``sales_cycle.mean_days``, ``pipeline.open.value``, ``nps``,
``automation.savings``) each with ``.previous``, ``.last_year``, ``.target``, ``.growth``;
``revenue.by_product.<p>``, ``revenue.by_region.<r>``, ``revenue.by_segment.<s>``;
``forecast.model``, ``forecast.<label>.{mean,lower80,upper80,lower95,upper95}``,
``forecast.backtest.{mase,mae,naive_mae,origins,points}``; ``nps.responses``.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from opscope.report import automation
from opscope.report.building import (
    ReportRequest,
    closing_sections,
    flag_partial_comparisons,
    kpi,
    new_document,
    period_partial,
)
from opscope.report.deals import (
    NO_DATA,
    by_dimension,
    close_date_span,
    closed_deals,
    closed_in,
    funnel,
    open_pipelines,
)
from opscope.report.document import (
    Chart,
    Column,
    Kpi,
    KpiCards,
    Notes,
    ReportDocument,
    Section,
    Series,
    Table,
)
from opscope.report.forecast import forecast
from opscope.report.periods import Granularity, ReportPeriod, local_today, period_containing
from opscope.report.sales import recommendations, stage_checks
from opscope.report.sources import Dataset

#: Bucket of the revenue series per report granularity.
_BUCKET: dict[str, Granularity] = {
    "year": "month",
    "quarter": "month",
    "month": "week",
    "week": "day",
    "day": "day",
}
#: KPI metrics not computed from the deals closed in the period.
_NOT_CLOSED_DEALS = ("nps", "automation.savings", "pipeline.open.value")
_SEASON = {"day": 7, "week": 52, "month": 12, "quarter": 4, "year": 1}


def _target(data: Dataset, request: ReportRequest, label: str, metric: str) -> float | None:
    if data.has("targets"):
        row = data.con.execute(
            "SELECT value FROM targets WHERE period = ? AND metric = ? AND value IS NOT NULL "
            "LIMIT 1",
            [label, metric],
        ).fetchone()
        if row is not None:
            return float(row[0])
    if label == request.period.label:
        value = request.settings.targets.get(metric)
        return None if value is None else float(value)
    return None


def nps(data: Dataset, start: date, end: date) -> tuple[float | None, int]:
    """NPS of the responses dated in ``[start, end)`` and how many there were."""
    row = data.con.execute(
        "SELECT count(*), count(*) FILTER (score >= 9), count(*) FILTER (score <= 6) "
        "FROM nps_responses WHERE date >= ? AND date < ? AND score BETWEEN 0 AND 10",
        [start, end],
    ).fetchone()
    assert row is not None
    total = int(row[0])
    if not total:
        return None, 0
    return 100.0 * (int(row[1]) - int(row[2])) / total, total


def nps_quality(data: Dataset) -> list[str]:
    """Data-quality lines on ``nps_responses``: answers outside the 0–10 scale and answers
    without a score, both left out of the NPS."""
    row = data.con.execute(
        "SELECT count(*) FILTER (score NOT BETWEEN 0 AND 10), "
        "list(DISTINCT score ORDER BY score) FILTER (score NOT BETWEEN 0 AND 10), "
        "count(*) FILTER (score IS NULL) FROM nps_responses"
    ).fetchone()
    assert row is not None
    lines = []
    if row[0]:
        shown = ", ".join(f"{v:g}" for v in row[1][:5])
        lines.append(f"nps_responses: {row[0]:,} response(s) outside 0–10 dropped (score {shown})")
    if row[2]:
        lines.append(f"nps_responses: {row[2]:,} response(s) without a score dropped")
    return lines


def executive_summary(data: Dataset, request: ReportRequest) -> ReportDocument:
    """The executive summary of ``request.period`` over ``data``."""
    period = request.period
    span = close_date_span(data)
    partial = period_partial(data, request, *span)
    doc = new_document("executive_summary", data, request, partial)
    notes: list[str] = [partial] if partial else []
    m = doc.metrics
    settings = request.settings
    order = list(settings.stages) or list(data.stage_order)
    probabilities = dict(settings.stage_probabilities) or dict(data.stage_probabilities)
    prev_p, year_p = period.previous(), period.same_period_last_year()

    now = closed_deals(data, period.start, period.end)
    prev_or_none = closed_in(data, prev_p.start, prev_p.end, span)
    year_or_none = closed_in(data, year_p.start, year_p.end, span)
    prev, year = prev_or_none or NO_DATA, year_or_none or NO_DATA

    pipe_now, pipe_prev, pipe_year = open_pipelines(
        data, [period.end, prev_p.end, year_p.end], probabilities
    )
    values: dict[str, tuple[str, str, Any, Any, Any]] = {
        "revenue.won": ("Revenue", "money", now.revenue, prev.revenue, year.revenue),
        "deals.won": ("Won deals", "count", now.won, prev.won, year.won),
        "win_rate": ("Win rate", "ratio", now.win_rate, prev.win_rate, year.win_rate),
        "deal_size.average": (
            "Average deal",
            "money",
            now.average_deal,
            prev.average_deal,
            year.average_deal,
        ),
        "sales_cycle.mean_days": (
            "Sales cycle (days)",
            "days",
            now.cycle_mean_days,
            prev.cycle_mean_days,
            year.cycle_mean_days,
        ),
        "pipeline.open.value": (
            "Open pipeline",
            "money",
            pipe_now.value,
            pipe_prev.value,
            pipe_year.value,
        ),
    }
    if data.has("nps_responses"):
        notes += nps_quality(data)
        values["nps"] = (
            "NPS",
            "number",
            nps(data, period.start, period.end)[0],
            nps(data, prev_p.start, prev_p.end)[0],
            nps(data, year_p.start, year_p.end)[0],
        )
    auto_now: list[automation.ProcessImpact] = []
    if data.has("automations"):
        auto_now, auto_notes = automation.impacts(data, request)
        notes += auto_notes
        prev_req = ReportRequest(prev_p, request.timezone, request.now, settings)
        year_req = ReportRequest(year_p, request.timezone, request.now, settings)
        values["automation.savings"] = (
            "Automation savings",
            "money",
            sum(i.savings for i in auto_now) if auto_now else None,
            sum(i.savings for i in automation.impacts(data, prev_req)[0]) or None,
            sum(i.savings for i in automation.impacts(data, year_req)[0]) or None,
        )
    cards: list[Kpi] = []
    for name, (title, kind, cur, given_before, given_last_year) in values.items():
        deal_metric = name not in _NOT_CLOSED_DEALS
        before = None if deal_metric and prev_or_none is None else given_before
        last_year = None if deal_metric and year_or_none is None else given_last_year
        card = kpi(
            title,
            kind,
            cur,
            previous=before,
            last_year=last_year,
            target=_target(data, request, period.label, name),
            direction="lower" if name == "sales_cycle.mean_days" else "higher",
        )
        cards.append(card)
        m[name], m[f"{name}.previous"], m[f"{name}.last_year"] = cur, before, last_year
        m[f"{name}.target"], m[f"{name}.growth"] = card.target, card.growth
    closed_cards = {values[k][0] for k in values if k not in _NOT_CLOSED_DEALS}
    notes += flag_partial_comparisons(cards, request, span, m, only=closed_cards)
    doc.sections.append(
        Section(
            "kpis",
            "Key figures",
            [
                KpiCards(cards),
                Notes(
                    "Comparisons",
                    [
                        f"Previous period: {prev_p.label}; same period last year: {year_p.label}.",
                        "Growth = (current − previous) / previous; "
                        '"new" when the previous value is 0.',
                        "Status: on track at or past the target, at risk within 10 % of it, "
                        "off track beyond.",
                    ],
                ),
            ],
        )
    )

    _breakdown(doc, data, period)
    history, labels, fc_lines = _forecast_section(doc, data, request, span)
    notes += fc_lines
    _dashboard(doc, data, request, order, history, labels, auto_now)

    if data.has("nps_responses"):
        score, responses = nps(data, period.start, period.end)
        m["nps.responses"] = responses
        if responses:
            doc.sections.append(
                Section(
                    "nps",
                    "Net Promoter Score",
                    [
                        Chart(
                            "NPS",
                            "gauge",
                            ["NPS"],
                            [Series("NPS", [score])],
                            value_kind="number",
                            target=_target(data, request, period.label, "nps"),
                            maximum=100.0,
                            note=f"{responses} response(s); NPS = % promoters (9–10) − "
                            "% detractors (0–6)",
                        )
                    ],
                )
            )
        else:
            doc.sections.append(
                Section(
                    "nps",
                    "Net Promoter Score",
                    omitted=f"no data: no NPS responses in {period.label}",
                )
            )
    else:
        doc.sections.append(
            Section("nps", "Net Promoter Score", omitted="no nps_responses table in the source")
        )
    if not data.has("automations"):
        doc.sections.append(
            Section("automation", "Automation impact", omitted="no automations table in the source")
        )

    notes += stage_checks(data, order, probabilities, period.start, period.end)
    recs = recommendations(
        now,
        prev,
        funnel(data, period.start, period.end, order),
        [],
        pipe_now.value,
        settings.benchmarks,
    )
    for card in cards:
        if card.status == "off_track":
            recs.append(
                f"[target_missed] {card.name} is {_fmt(card.current)} against a target "
                f"of {_fmt(card.target)}: off track."
            )
    fc_mean = m.get("forecast.next_period.mean")
    if isinstance(fc_mean, float) and now.revenue > 0 and fc_mean < 0.9 * now.revenue:
        recs.append(
            f"[forecast_decline] The revenue forecast for the next period "
            f"({fc_mean:,.0f}) is {1 - fc_mean / now.revenue:.0%} under this period's "
            f"({now.revenue:,.0f})."
        )
    closing_sections(
        doc, data, recs, notes, closed_deals=now.won + now.lost, period_label=period.label
    )
    return doc


def _fmt(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.1%}" if abs(value) <= 1 else f"{value:,.2f}"


def _breakdown(doc: ReportDocument, data: Dataset, period: ReportPeriod) -> None:
    blocks: list[Any] = []
    for column, title in (
        ("product", "Product"),
        ("region", "Region"),
        ("segment", "Account segment"),
    ):
        rows = by_dimension(data, column, period.start, period.end)
        if not rows or all(r["key"] == "(none)" for r in rows):
            blocks.append(
                Notes(
                    f"Revenue by {title.lower()}",
                    [f"the source has no {column} for the period's deals"],
                )
            )
            continue
        for r in rows:
            doc.metrics[f"revenue.by_{column}.{r['key']}"] = r["revenue"]
        blocks.append(
            Table(
                f"Revenue by {title.lower()}",
                [
                    Column("key", title),
                    Column("revenue", "Revenue", "money"),
                    Column("won", "Won", "count"),
                    Column("lost", "Lost", "count"),
                    Column("win_rate", "Win rate", "ratio"),
                ],
                rows,
            )
        )
        blocks.append(
            Chart(
                f"Revenue by {title.lower()}",
                "bar",
                [r["key"] for r in rows],
                [Series("Revenue", [r["revenue"] for r in rows])],
                value_kind="money",
            )
        )
    doc.sections.append(Section("revenue_breakdown", "Revenue breakdown", blocks))


def _history(
    data: Dataset, request: ReportRequest, span: tuple[date | None, date | None]
) -> list[ReportPeriod]:
    """Complete buckets from the one holding the first close date to the period's end."""
    first, last = span
    if first is None or last is None:
        return []
    bucket = request.settings.forecast.granularity or _BUCKET[request.period.granularity]
    today = local_today(request.now, request.timezone)
    end = min(request.period.end, today)
    current = period_containing(bucket, first, request.period.week_start)
    found = []
    while current.end <= end and current.start <= last:
        found.append(current)
        current = current.shifted(1)
    return found


def _alignment_notes(
    data: Dataset, request: ReportRequest, buckets: list[ReportPeriod], first: date | None
) -> list[str]:
    """Notes where the history's buckets do not cover the report period exactly: days of the
    period after the last complete bucket (with their won revenue, left out of the history),
    and a first bucket the data covers only in part."""
    from opscope.report.deals import revenue_series

    notes: list[str] = []
    granularity = buckets[0].granularity
    end = min(request.period.end, local_today(request.now, request.timezone))
    tail_start = buckets[-1].end
    if tail_start < end:
        (revenue,) = revenue_series(data, [(tail_start, end)])
        notes.append(
            f"The {granularity}s do not align with {request.period.label}: "
            f"{tail_start.isoformat()} … {(end - timedelta(days=1)).isoformat()} "
            f"(won revenue {revenue:,.0f}) is after the last complete {granularity} "
            f"({buckets[-1].label}) and not in the history."
        )
    if first is not None and buckets[0].start < first:
        notes.append(
            f"The first {granularity} ({buckets[0].label}) is partial: the data starts on "
            f"{first.isoformat()}."
        )
    return notes


def _forecast_section(
    doc: ReportDocument,
    data: Dataset,
    request: ReportRequest,
    span: tuple[date | None, date | None],
) -> tuple[list[float], list[str], list[str]]:
    from opscope.report.deals import revenue_series

    buckets = _history(data, request, span)
    history = revenue_series(data, [(b.start, b.end) for b in buckets])
    labels = [b.label for b in buckets]
    settings = request.settings.forecast
    if not buckets:
        doc.sections.append(
            Section(
                "forecast",
                "Revenue forecast",
                omitted="no data: no won revenue before the period's end",
            )
        )
        return history, labels, []
    granularity = buckets[0].granularity
    alignment = _alignment_notes(data, request, buckets, span[0])
    next_period = request.period.shifted(1)
    horizon = settings.horizon or len(
        [b for b in next_period.buckets(granularity) if b.start >= buckets[-1].end]
    )
    horizon = max(horizon, 1)
    future = [buckets[-1].shifted(k + 1) for k in range(horizon)]
    result = forecast(
        history,
        horizon=horizon,
        season_length=_SEASON[granularity],
        origins=settings.backtest_origins,
    )
    m = doc.metrics
    if result is None:
        doc.sections.append(
            Section(
                "forecast",
                "Revenue forecast",
                omitted=(
                    f"no forecast: {len(history)} {granularity}(s) of history, at least 3 needed"
                ),
            )
        )
        return history, labels, []
    m["forecast.model"] = result.model
    for k, p in enumerate(future):
        for key in ("mean", "lower80", "upper80", "lower95", "upper95"):
            m[f"forecast.{p.label}.{key}"] = getattr(result, key)[k]
    in_next = [k for k, p in enumerate(future) if next_period.contains(p.start)]
    if in_next:
        m["forecast.next_period.mean"] = sum(result.mean[k] for k in in_next)
    bt = result.backtest
    if bt is not None:
        m.update(
            {
                "forecast.backtest.mase": bt.mase,
                "forecast.backtest.mae": bt.mae,
                "forecast.backtest.naive_mae": bt.naive_mae,
                "forecast.backtest.origins": bt.origins,
                "forecast.backtest.points": bt.points,
            }
        )
    categories = labels + [p.label for p in future]
    gap: list[float | None] = [None] * len(labels)
    chart = Chart(
        "Revenue and forecast",
        "line",
        categories,
        [
            Series("Revenue", [*history, *([None] * horizon)], role="actual"),
            Series(
                "Forecast (80 %)",
                [*gap, *result.mean],
                [*gap, *result.lower80],
                [*gap, *result.upper80],
                role="forecast",
            ),
            Series(
                "Forecast (95 %)",
                [*gap, *result.mean],
                [*gap, *result.lower95],
                [*gap, *result.upper95],
                role="forecast",
            ),
        ],
        value_kind="money",
    )
    table = Table(
        "Forecast",
        [
            Column("period", "Period"),
            Column("mean", "Forecast", "money"),
            Column("lower80", "80 % low", "money"),
            Column("upper80", "80 % high", "money"),
            Column("lower95", "95 % low", "money"),
            Column("upper95", "95 % high", "money"),
        ],
        [
            {
                "period": p.label,
                "mean": result.mean[k],
                "lower80": result.lower80[k],
                "upper80": result.upper80[k],
                "lower95": result.lower95[k],
                "upper95": result.upper95[k],
            }
            for k, p in enumerate(future)
        ],
    )
    accuracy = (
        [
            f"Backtest (rolling origin, {bt.origins} origin(s), {bt.points} forecast(s), up to "
            f"{bt.horizon} step(s) ahead): MASE "
            f"{'n/a' if bt.mase is None else f'{bt.mase:.2f}'} (below 1 beats the naive "
            f"forecast); MAE {bt.mae:,.0f} against the naive forecast's {bt.naive_mae:,.0f}."
        ]
        if bt
        else ["Backtest: history too short to hold out any period."]
    )
    doc.sections.append(
        Section(
            "forecast",
            "Revenue forecast",
            [
                chart,
                table,
                Notes(
                    "Method and accuracy",
                    [
                        f"Model {result.model} (statsmodels ETSModel, additive errors) fitted on "
                        f"{len(history)} {granularity}(s) of won revenue "
                        f"({labels[0]} … {labels[-1]}).",
                        *alignment,
                        *accuracy,
                        *result.warnings,
                    ],
                ),
            ],
        )
    )
    return history, labels, [f"forecast: {w}" for w in result.warnings]


def _dashboard(
    doc: ReportDocument,
    data: Dataset,
    request: ReportRequest,
    order: list[str],
    history: list[float],
    labels: list[str],
    auto: list[automation.ProcessImpact],
) -> None:
    period = request.period
    recent = list(zip(labels, history, strict=True))[-12:]
    targets = [_target(data, request, label, "revenue.won") for label, _ in recent]
    trend_series = [Series("Revenue", [v for _, v in recent])]
    if any(t is not None for t in targets):
        trend_series.append(Series("Target", targets, role="target"))
    trend_chart = Chart(
        "Revenue trend",
        "line",
        [label for label, _ in recent],
        trend_series,
        value_kind="money",
        note=None if recent else "no won revenue before the period's end",
    )
    if not recent:
        trend_chart.series = []
    steps = funnel(data, period.start, period.end, order)
    funnel_chart = Chart(
        "Funnel",
        "funnel",
        [s.stage for s in steps],
        [Series("Deals", [float(s.reached) for s in steps])] if steps and steps[0].reached else [],
        value_kind="count",
        note=None if steps and steps[0].reached else "no deals created in the period",
    )
    roi_chart = Chart(
        "Automation ROI",
        "bar",
        [i.process for i in auto],
        [Series("ROI", [i.roi for i in auto])] if auto else [],
        value_kind="ratio",
        note=None
        if auto
        else (
            "no automations table in the source"
            if not data.has("automations")
            else f"no automation rows for {period.label}"
        ),
    )
    score, responses = (
        nps(data, period.start, period.end) if data.has("nps_responses") else (None, 0)
    )
    gauge = Chart(
        "NPS",
        "gauge",
        ["NPS"],
        [Series("NPS", [score])] if responses else [],
        value_kind="number",
        target=_target(data, request, period.label, "nps"),
        maximum=100.0,
        note=None
        if responses
        else (
            "no nps_responses table in the source"
            if not data.has("nps_responses")
            else f"no NPS responses in {period.label}"
        ),
    )
    doc.sections.append(
        Section("dashboard", "Executive dashboard", [trend_chart, funnel_chart, roi_chart, gauge])
    )
