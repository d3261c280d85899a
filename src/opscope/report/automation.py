"""The automation impact report: hours and money saved by automated processes, and their ROI.

Input: the ``automations`` table, one row per process and period (``period`` is a label such as
``2017-12``, ``2017-Q4`` or a date; see :mod:`opscope.report.periods`). Per process:

* hours saved = runs × minutes saved per run / 60;
* cost saved = hours saved × hourly cost (of the people who did the work by hand);
* net saving = cost saved − running cost;
* **ROI** = (cost saved − running cost) / running cost (n/a when the running cost is 0).

Rows belong to the report's period when their own period starts inside it. Metrics:
``automation.runs``, ``automation.hours_saved``, ``automation.savings``, ``automation.cost``,
``automation.net``, ``automation.roi`` and ``automation.<process>.{runs,hours_saved,savings,
cost,roi}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from opscope.report.building import (
    Direction,
    ReportRequest,
    kpi,
    new_document,
    period_partial,
    quality_section,
)
from opscope.report.deals import ratio
from opscope.report.document import (
    Chart,
    Column,
    KpiCards,
    Notes,
    ReportDocument,
    Section,
    Series,
    Table,
)
from opscope.report.periods import PeriodError, ReportPeriod, parse_period
from opscope.report.sources import Dataset


@dataclass(frozen=True)
class ProcessImpact:
    """One process over some periods: runs, hours saved, savings, running cost, net, ROI."""

    process: str
    runs: float
    hours_saved: float
    savings: float
    cost: float

    @property
    def net(self) -> float:
        """Savings − running cost."""
        return self.savings - self.cost

    @property
    def roi(self) -> float | None:
        """(savings − cost) / cost; ``None`` when the cost is 0."""
        return ratio(self.net, self.cost)


#: The impact cards: title, value kind, field of the totals, which direction is good.
_CARDS: list[tuple[str, str, str, Direction]] = [
    ("Hours saved", "number", "hours_saved", "higher"),
    ("Cost saved", "money", "savings", "higher"),
    ("Running cost", "money", "cost", "lower"),
    ("ROI", "ratio", "roi", "higher"),
]


def _rows(
    data: Dataset, request: ReportRequest
) -> tuple[list[tuple[ReportPeriod, Any]], list[str]]:
    """Rows of ``automations`` with their parsed period; unreadable periods are reported."""
    rows = data.con.execute(
        "SELECT period, process, coalesce(runs, 0), coalesce(minutes_saved_per_run, 0), "
        "coalesce(hourly_cost, 0), coalesce(running_cost, 0) FROM automations"
    ).fetchall()
    parsed: list[tuple[ReportPeriod, Any]] = []
    bad: list[str] = []
    week_start = request.period.week_start
    for row in rows:
        try:
            period = parse_period(
                str(row[0]), now=request.now, tz=request.timezone, week_start=week_start
            )
        except PeriodError:
            bad.append(str(row[0]))
            continue
        parsed.append((period, row))
    notes = []
    if bad:
        notes.append(
            f"automations: {len(bad)} row(s) with an unreadable period (e.g. {bad[0]!r}): left out"
        )
    return parsed, notes


def impacts(data: Dataset, request: ReportRequest) -> tuple[list[ProcessImpact], list[str]]:
    """Per-process impact in the request's period, largest savings first, and notes."""
    parsed, notes = _rows(data, request)
    period = request.period
    totals: dict[str, list[float]] = {}
    for p, (_, process, runs, minutes, hourly, cost) in parsed:
        if not period.contains(p.start):
            continue
        hours = float(runs) * float(minutes) / 60
        t = totals.setdefault(process or "(none)", [0.0, 0.0, 0.0, 0.0])
        t[0] += float(runs)
        t[1] += hours
        t[2] += hours * float(hourly)
        t[3] += float(cost)
    result = [ProcessImpact(k, *v) for k, v in totals.items()]
    return sorted(result, key=lambda i: (-i.savings, i.process)), notes


def automation_impact(data: Dataset, request: ReportRequest) -> ReportDocument:
    """The automation impact report of ``request.period``."""
    doc = new_document(
        "automation_impact", data, request, period_partial(data, request, None, None)
    )
    if not data.has("automations"):
        doc.sections.append(
            Section("impact", "Automation impact", omitted="no automations table in the source")
        )
        quality_section(doc, data, [])
        return doc
    found, notes = impacts(data, request)
    m = doc.metrics
    total = _total(found) or ProcessImpact("total", 0.0, 0.0, 0.0, 0.0)
    period = request.period
    earlier = {
        key: _total(
            impacts(data, ReportRequest(p, request.timezone, request.now, request.settings))[0]
        )
        for key, p in (
            ("previous", period.previous()),
            ("last_year", period.same_period_last_year()),
        )
    }
    prev, year = earlier["previous"], earlier["last_year"]
    m.update(
        {
            "automation.runs": total.runs,
            "automation.hours_saved": total.hours_saved,
            "automation.savings": total.savings,
            "automation.cost": total.cost,
            "automation.net": total.net,
            "automation.roi": total.roi,
        }
    )
    for key, other in earlier.items():
        for name in ("runs", "hours_saved", "savings", "cost", "net", "roi"):
            m[f"automation.{name}.{key}"] = None if other is None else getattr(other, name)
    for i in found:
        for key, value in (
            ("runs", i.runs),
            ("hours_saved", i.hours_saved),
            ("savings", i.savings),
            ("cost", i.cost),
            ("roi", i.roi),
        ):
            m[f"automation.{i.process}.{key}"] = value
    if not found:
        doc.sections.append(
            Section(
                "impact",
                "Automation impact",
                omitted=f"no data: no automation rows for {request.period.label}",
            )
        )
    else:
        doc.sections.append(
            Section(
                "impact",
                "Automation impact",
                [
                    KpiCards(
                        [
                            kpi(
                                title,
                                kind,
                                getattr(total, field),
                                previous=None if prev is None else getattr(prev, field),
                                last_year=None if year is None else getattr(year, field),
                                target=None,
                                direction=direction,
                            )
                            for title, kind, field, direction in _CARDS
                        ]
                    ),
                    Table(
                        "Per process",
                        [
                            Column("process", "Process"),
                            Column("runs", "Runs", "count"),
                            Column("hours_saved", "Hours saved", "number"),
                            Column("savings", "Cost saved", "money"),
                            Column("cost", "Running cost", "money"),
                            Column("net", "Net saving", "money"),
                            Column("roi", "ROI", "ratio"),
                        ],
                        [
                            {
                                "process": i.process,
                                "runs": i.runs,
                                "hours_saved": i.hours_saved,
                                "savings": i.savings,
                                "cost": i.cost,
                                "net": i.net,
                                "roi": i.roi,
                            }
                            for i in found
                        ],
                    ),
                    Chart(
                        "ROI by process",
                        "bar",
                        [i.process for i in found],
                        [Series("ROI", [i.roi for i in found])],
                        value_kind="ratio",
                    ),
                    Notes(
                        "Method",
                        [
                            "Hours saved = runs × minutes saved per run / 60; cost saved = "
                            "hours saved × hourly cost; ROI = (cost saved − running cost) / "
                            "running cost.",
                            f"Compared with {period.previous().label} (previous period) and "
                            f"{period.same_period_last_year().label} (same period last year); "
                            "n/a where the data has no automation rows for them.",
                        ],
                    ),
                ],
            )
        )
    trend_rows = _trend(data, request)
    if trend_rows:
        labels = [label for label, _, _ in trend_rows]
        doc.sections.append(
            Section(
                "trend",
                "Trend",
                [
                    Chart(
                        "Savings and running cost by period",
                        "line",
                        labels,
                        [
                            Series("Cost saved", [s for _, s, _ in trend_rows]),
                            Series("Running cost", [c for _, _, c in trend_rows]),
                        ],
                        value_kind="money",
                    )
                ],
            )
        )
    quality_section(doc, data, notes)
    return doc


def _total(found: list[ProcessImpact]) -> ProcessImpact | None:
    """All processes together; ``None`` when there are none (no rows: n/a, not 0)."""
    if not found:
        return None
    return ProcessImpact(
        "total",
        sum(i.runs for i in found),
        sum(i.hours_saved for i in found),
        sum(i.savings for i in found),
        sum(i.cost for i in found),
    )


def _trend(data: Dataset, request: ReportRequest) -> list[tuple[str, float, float]]:
    """Savings and running cost per period label of the data, up to the report's period."""
    parsed, _ = _rows(data, request)
    by_label: dict[tuple[Any, str], list[float]] = {}
    for p, (_, _, runs, minutes, hourly, cost) in parsed:
        if p.start >= request.period.end:
            continue
        t = by_label.setdefault((p.start, p.label), [0.0, 0.0])
        t[0] += float(runs) * float(minutes) / 60 * float(hourly)
        t[1] += float(cost)
    return [(label, v[0], v[1]) for (_, label), v in sorted(by_label.items())]
