"""The report document: what every report builds and every renderer draws.

A report (sales performance, executive summary, automation impact, competitive analysis) is
computed into a :class:`ReportDocument` — plain data, no formatting — and each output format
(JSON, HTML, PDF, XLSX, PPTX) is a function of that document alone. So the numbers a script reads
from the JSON are exactly the numbers the spreadsheet and the slides show.

Shapes:

* a document has sections, in order; a section has blocks, in order;
* blocks are :class:`KpiCards`, :class:`Table`, :class:`Chart` or :class:`Notes`;
* a missing number is ``None`` everywhere (never NaN or ±Inf: :func:`clean` turns those into
  ``None`` so that zero denominators show as "n/a" and charts show gaps, not zeros);
* money is a plain float in the document's ``currency``; ratios are fractions (0.6315, not
  63.15); durations of sales cycles are days.

Errors: constructors do not validate numbers; :meth:`ReportDocument.to_dict` runs :func:`clean`
over every value so that nothing non-finite leaves the document.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, cast

#: How a value is meant to be shown. ``money`` in the document's currency, ``ratio`` as a
#: percentage of 1, ``days`` as a duration in days, ``count`` as an integer, ``number`` as a
#: plain decimal, ``text`` as is, ``date`` as an ISO date string.
ValueKind = Literal["money", "ratio", "days", "count", "number", "text", "date"]

#: Chart kinds every renderer draws natively (plotly in HTML/PDF, Excel charts in XLSX, PowerPoint
#: charts in PPTX). ``funnel`` is drawn as a bar chart where a format has no funnel type;
#: ``gauge`` carries one value and its ``target``/``maximum``.
ChartKind = Literal["line", "bar", "stacked_bar", "pie", "funnel", "gauge"]

Status = Literal["on_track", "at_risk", "off_track", "no_target"]
Trend = Literal["up", "down", "flat", "new", "n/a"]


def clean(value: Any) -> Any:
    """Return ``value`` with every NaN or ±Inf float (at any depth) replaced by ``None``."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    return value


@dataclass(slots=True)
class Kpi:
    """One KPI card: current value against the previous period and the target.

    ``growth`` = (current − previous) / previous as a fraction; ``None`` when previous is
    missing or 0 (shown as "new" when current is non-zero, per ``trend``). ``status`` compares
    current with ``target`` (``no_target`` when there is none).
    """

    name: str
    kind: ValueKind
    current: float | None
    previous: float | None = None
    same_period_last_year: float | None = None
    target: float | None = None
    growth: float | None = None
    status: Status = "no_target"
    trend: Trend = "n/a"
    note: str | None = None


@dataclass(slots=True)
class KpiCards:
    """A row of KPI cards."""

    kpis: list[Kpi]
    type: Literal["kpis"] = "kpis"


@dataclass(slots=True)
class Column:
    """A table column: ``key`` indexes the row dicts, ``title`` is shown, ``kind`` formats;
    ``kind_key``, when set, names the row key holding the cell's kind instead (a table whose
    rows are different metrics, such as the benchmarks)."""

    key: str
    title: str
    kind: ValueKind = "text"
    kind_key: str | None = None

    def kind_of(self, row: dict[str, Any]) -> ValueKind:
        """The kind of this column's cell in ``row``."""
        if self.kind_key is None:
            return self.kind
        return cast(ValueKind, row.get(self.kind_key) or self.kind)


_RATIO = {"win_rate", "conversion", "lowest_conversion", "growth", "share", "roi", "margin"}
_COUNT = {"won", "lost", "count", "reached", "rank", "without_deals", "deals", "runs"}
_MONEY = {
    "value", "weighted", "average", "average_deal", "revenue", "velocity", "savings",
    "running_cost", "amount",
}  # fmt: skip


def metric_kind(name: str) -> ValueKind:
    """The kind of the metric ``name`` (a key of ``ReportDocument.metrics``), from its last
    part: rates and conversions are ratios, ``*_days`` days, counts of deals counts, revenue
    and pipeline values money; anything else a plain number."""
    parts = name.split(".")
    while len(parts) > 1 and parts[-1] in ("previous", "last_year"):
        parts.pop()
    last = parts[-1]
    if last in _RATIO or last.endswith("_rate"):
        return "ratio"
    if last.endswith("_days"):
        return "days"
    if last in _COUNT:
        return "count"
    if parts[0] == "revenue" or last in _MONEY:
        return "money"
    return "number"


@dataclass(slots=True)
class Table:
    """A table of rows (dicts keyed by :attr:`Column.key`); ``None`` cells show as "n/a"."""

    title: str
    columns: list[Column]
    rows: list[dict[str, Any]]
    note: str | None = None
    type: Literal["table"] = "table"


@dataclass(slots=True)
class Series:
    """One data series of a chart: ``values[i]`` belongs to the chart's ``categories[i]``;
    ``None`` is a gap. ``lower``/``upper`` (same length) draw a band, e.g. a prediction
    interval; ``role`` tells renderers how to draw it."""

    name: str
    values: list[float | None]
    lower: list[float | None] | None = None
    upper: list[float | None] | None = None
    role: Literal["actual", "forecast", "target", "other"] = "actual"


@dataclass(slots=True)
class Chart:
    """A chart over shared categories (period labels, stage names, products …)."""

    title: str
    kind: ChartKind
    categories: list[str]
    series: list[Series]
    value_kind: ValueKind = "number"
    target: float | None = None
    maximum: float | None = None
    note: str | None = None
    type: Literal["chart"] = "chart"


@dataclass(slots=True)
class Notes:
    """Plain-text lines: recommendations, warnings, methods. ``style`` tells renderers how to
    present them."""

    title: str
    lines: list[str]
    style: Literal["recommendations", "warnings", "info"] = "info"
    type: Literal["notes"] = "notes"


Block = KpiCards | Table | Chart | Notes


@dataclass(slots=True)
class Section:
    """A titled part of a report. A section without data keeps its title and says why in
    ``omitted`` (e.g. "no NPS responses in the source") instead of showing invented numbers."""

    id: str
    title: str
    blocks: list[Block] = field(default_factory=list)
    omitted: str | None = None


@dataclass(slots=True)
class Period:
    """The reporting period: ``label`` like ``2017-Q4``, ``start`` inclusive and ``end``
    exclusive as ISO dates in the report's timezone; ``partial`` when the data does not cover
    the whole period."""

    label: str
    start: str
    end: str
    timezone: str
    partial: bool = False


@dataclass(slots=True)
class ReportDocument:
    """A computed report, ready for any renderer.

    ``metrics`` holds every headline number by a stable dotted name (``win_rate``,
    ``revenue.won`` …) for scripts and tests; ``data_quality`` lists rows dropped and why,
    unmatched joins, renamed values and partial periods.
    """

    report: str
    title: str
    period: Period
    generated_at: str
    currency: str = "USD"
    locale: str = "en_US"
    sections: list[Section] = field(default_factory=list)
    metrics: dict[str, float | int | str | None] = field(default_factory=dict)
    data_quality: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The document as JSON-ready data (non-finite floats become ``None``)."""
        return clean(asdict(self))  # type: ignore[no-any-return]
