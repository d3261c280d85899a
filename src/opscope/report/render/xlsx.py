"""XLSX: a workbook with a summary sheet, one sheet per section and a data-quality sheet.

Written with XlsxWriter. Sheets, in order:

* ``Summary`` — title, period (with the partial-period flag), generation time, currency,
  locale, links to the section sheets, then every entry of ``metrics``;
* one sheet per section, named after its title (Excel's rules: at most 31 characters, none of
  ``[]:*?/\\``, not starting or ending with ``'``, unique ignoring case, not ``History``;
  see :func:`sheet_names`), with its blocks top to bottom: KPI rows, tables, chart data next to a
  native Excel chart, notes; an omitted section says why;
* ``Data quality`` — one line per entry of ``data_quality``.

Numbers stay numbers, formatted by :meth:`NumberStyle.excel_format` (money in the document's
currency, ratios as ``0.0%``, days as ``0.0" d"``). A missing value is the text ``n/a`` in KPI
rows and tables, and an empty cell in chart data, so that Excel draws a gap (line charts are set
to show empty cells as gaps) instead of a zero. NaN and ±Inf are never written.

Charts: ``line`` → line chart (a series with ``lower``/``upper`` adds a shaded band, drawn as a
stacked area of "band base" = lower and "band height" = upper − lower, helper columns next to the
data, with the line chart combined on top; the band starts at the last actual value so it
fans out from it); ``bar`` → clustered columns; ``stacked_bar`` → stacked columns; ``pie`` →
pie of the first series; ``funnel`` → horizontal bars, first stage on top; ``gauge`` → one
column for the value and one for the target on an axis up to ``maximum``; ``Chart.target``
adds a dotted "Target" line.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

import xlsxwriter
from xlsxwriter.chart import Chart as XlsxChart
from xlsxwriter.exceptions import FileCreateError
from xlsxwriter.format import Format
from xlsxwriter.utility import quote_sheetname
from xlsxwriter.workbook import Workbook
from xlsxwriter.worksheet import Worksheet

from opscope.errors import RenderError
from opscope.report.document import (
    Chart,
    KpiCards,
    Notes,
    ReportDocument,
    Section,
    Table,
    ValueKind,
    metric_kind,
)
from opscope.report.render.figures import PALETTE, ROLE_COLOURS, series_colour
from opscope.report.render.locales import MISSING, NumberStyle, finite

SUMMARY_SHEET = "Summary"
DATA_QUALITY_SHEET = "Data quality"
_INVALID_SHEET_CHARS = re.compile(r"[\[\]:*?/\\]")
_CHART_ROWS = 18  # a chart is 18 rows tall (20 px each), 8 columns wide
_MAX_WIDTH = 60
_EXCEL_RESERVED = {"history"}


def sheet_names(titles: list[str], *, taken: tuple[str, ...] = ()) -> list[str]:
    """Valid, unique Excel sheet names for ``titles``, in order.

    Excel's rules: 1–31 characters, none of ``[ ] : * ? / \\``, no leading or trailing
    apostrophe, unique without regard to case, and not the reserved ``History``. Invalid
    characters become spaces; a clash gets `` (2)``, `` (3)`` … within the 31 characters.
    ``taken`` names are already used (e.g. ``Summary``).
    """
    used = {name.casefold() for name in taken}
    names = []
    for title in titles:
        base = _INVALID_SHEET_CHARS.sub(" ", title)
        base = re.sub(r"\s+", " ", base).strip().strip("'").strip()[:31].strip() or "Section"
        if base.casefold() in _EXCEL_RESERVED:
            base = f"{base} (section)"
        name, number = base, 1
        while name.casefold() in used:
            number += 1
            suffix = f" ({number})"
            name = base[: 31 - len(suffix)].rstrip() + suffix
        used.add(name.casefold())
        names.append(name)
    return names


class _Formats:
    """Workbook cell formats, created once per (kind, variant)."""

    def __init__(self, workbook: Workbook, style: NumberStyle) -> None:
        self.workbook = workbook
        self.style = style
        self._cache: dict[tuple[str, str], Format] = {}
        self.title = workbook.add_format({"bold": True, "font_size": 16})
        self.heading = workbook.add_format({"bold": True, "font_size": 12, "font_color": "#0072B2"})
        self.header = workbook.add_format(
            {"bold": True, "bg_color": "#F1F3F6", "bottom": 2, "bottom_color": "#D8DDE3"}
        )
        self.missing = workbook.add_format({"font_color": "#5B6470", "align": "right"})
        self.muted = workbook.add_format({"font_color": "#5B6470", "italic": True})
        self.warning = workbook.add_format({"font_color": "#B35900", "bold": True})
        self.link = workbook.add_format({"font_color": "#0072B2", "underline": 1})
        self.wrap = workbook.add_format({"text_wrap": True, "valign": "top"})

    def number(self, kind: ValueKind) -> Format:
        key = ("number", kind)
        if key not in self._cache:
            self._cache[key] = self.workbook.add_format(
                {"num_format": self.style.excel_format(kind)}
            )
        return self._cache[key]


class _SheetWriter:
    """Writes blocks top to bottom on one sheet and sizes its columns at the end."""

    def __init__(self, sheet: Worksheet, formats: _Formats, workbook: Workbook) -> None:
        self.sheet = sheet
        self.formats = formats
        self.workbook = workbook
        self.row = 0
        self.widths: dict[int, int] = {}

    def text(self, row: int, col: int, text: str, fmt: Format | None = None) -> None:
        self.sheet.write_string(row, col, text, fmt)
        self._widen(col, len(text))

    def value(
        self, row: int, col: int, value: Any, kind: ValueKind, *, blank: bool = False
    ) -> None:
        """A value of ``kind``: a number with its format, a date, text, or "n/a" (or nothing,
        when ``blank``) when it is missing."""
        if kind == "text":
            if value is None:
                self._missing(row, col, blank=blank)
            else:
                self.text(row, col, str(value))
            return
        if kind == "date":
            date = _iso_date(value)
            if date is not None:
                self.sheet.write_datetime(row, col, date, self.formats.number("date"))
                self._widen(col, 10)
            elif value is None or (finite(value) is None and not isinstance(value, str)):
                self._missing(row, col, blank=blank)
            else:
                self.text(row, col, str(value))
            return
        number = finite(value)
        if number is None:
            self._missing(row, col, blank=blank)
            return
        self.sheet.write_number(row, col, number, self.formats.number(kind))
        self._widen(col, len(self.formats.style.format(number, kind)))

    def _missing(self, row: int, col: int, *, blank: bool) -> None:
        if not blank:
            self.sheet.write_string(row, col, MISSING, self.formats.missing)

    def _widen(self, col: int, length: int) -> None:
        self.widths[col] = max(self.widths.get(col, 0), min(length, _MAX_WIDTH))

    def finish(self) -> None:
        for col, width in self.widths.items():
            self.sheet.set_column(col, col, max(width + 2, 9))

    # -- blocks -----------------------------------------------------------------------------

    def kpis(self, block: KpiCards) -> None:
        headers = [
            "KPI",
            "Current",
            "Previous",
            "Same period last year",
            "Target",
            "Change",
            "Status",
            "Trend",
            "Note",
        ]
        for col, header in enumerate(headers):
            self.text(self.row, col, header, self.formats.header)
        for kpi in block.kpis:
            self.row += 1
            self.text(self.row, 0, kpi.name)
            self.value(self.row, 1, kpi.current, kpi.kind)
            self.value(self.row, 2, kpi.previous, kpi.kind)
            self.value(self.row, 3, kpi.same_period_last_year, kpi.kind)
            self.value(self.row, 4, kpi.target, kpi.kind)
            if kpi.trend == "new":
                self.text(self.row, 5, "new")
            else:
                self.value(self.row, 5, kpi.growth, "ratio")
            self.text(self.row, 6, NumberStyle.status(kpi.status))
            self.text(self.row, 7, NumberStyle.trend(kpi.trend))
            if kpi.note:
                self.text(self.row, 8, kpi.note)
        self.row += 2

    def table(self, block: Table) -> None:
        self.text(self.row, 0, block.title, self.formats.heading)
        self.row += 1
        for col, column in enumerate(block.columns):
            self.text(self.row, col, column.title, self.formats.header)
        header_row = self.row
        for data in block.rows:
            self.row += 1
            for col, column in enumerate(block.columns):
                self.value(self.row, col, data.get(column.key), column.kind_of(data))
        if not block.rows:
            self.row += 1
            self.text(self.row, 0, "No rows.", self.formats.muted)
        elif block.columns:
            self.sheet.autofilter(header_row, 0, self.row, len(block.columns) - 1)
        if block.note:
            self.row += 1
            self.text(self.row, 0, block.note, self.formats.muted)
        self.row += 2

    def notes(self, block: Notes) -> None:
        fmt = self.formats.warning if block.style == "warnings" else self.formats.heading
        self.text(self.row, 0, block.title, fmt)
        for line in block.lines:
            self.row += 1
            self.text(self.row, 0, line)
        self.row += 2

    def chart(self, block: Chart) -> None:
        """The chart's data as a small table, with the native chart to its right."""
        self.text(self.row, 0, block.title, self.formats.heading)
        if block.note:
            self.text(self.row + 1, 0, block.note, self.formats.muted)
            self.row += 1
        top = self.row + 1
        columns = _chart_columns(block)
        self.text(top, 0, "Category", self.formats.header)
        for col, (title, _) in enumerate(columns, start=1):
            self.text(top, col, title, self.formats.header)
        categories = _chart_categories(block)
        for index, category in enumerate(categories):
            self.text(top + 1 + index, 0, category)
            for col, (_, cells) in enumerate(columns, start=1):
                self.value(top + 1 + index, col, cells[index], block.value_kind, blank=True)
        last = top + len(categories)
        chart = _excel_chart(
            self.workbook, self.sheet.name, block, columns, top, last, self.formats.style
        )
        if chart is None:
            self.text(top + 1 + len(categories), 0, "No data for this chart.", self.formats.muted)
            self.row = last + 3
            return
        self.sheet.insert_chart(top, len(columns) + 2, chart, {"x_scale": 1.25, "y_scale": 1.2})
        self.row = max(last, top + _CHART_ROWS) + 2


def _chart_categories(chart: Chart) -> list[str]:
    if chart.kind == "gauge":
        return ["Current", "Target", "Maximum"]
    return [str(c) for c in chart.categories]


def _chart_columns(chart: Chart) -> list[tuple[str, list[float | None]]]:
    """The data columns of ``chart`` (title, one cell per category): series values, their
    interval bounds, the band helpers of line charts, the target."""
    n = len(chart.categories)

    def fit(cells: list[Any] | None) -> list[float | None]:
        cells = list(cells or [])[:n]
        return [finite(v) for v in cells] + [None] * (n - len(cells))

    if chart.kind == "gauge":
        first = [finite(v) for v in chart.series[0].values] if chart.series else []
        current = next((v for v in first if v is not None), None)
        name = chart.series[0].name if chart.series else chart.title
        return [(name, [current, finite(chart.target), finite(chart.maximum)])]
    if chart.kind in ("pie", "funnel"):
        return [(s.name, fit(s.values)) for s in chart.series[:1]]
    columns: list[tuple[str, list[float | None]]] = []
    bands: list[tuple[str, list[float | None]]] = []
    actual = next((fit(s.values) for s in chart.series if s.role == "actual"), [None] * n)
    for series in chart.series:
        columns.append((series.name, fit(series.values)))
        if series.lower is None or series.upper is None:
            continue
        lower, upper = fit(series.lower), fit(series.upper)
        columns.append((f"{series.name} lower", lower))
        columns.append((f"{series.name} upper", upper))
        if chart.kind == "line":
            base = [
                lo if lo is not None and up is not None else None
                for lo, up in zip(lower, upper, strict=True)
            ]
            height = [
                up - lo if lo is not None and up is not None else None
                for lo, up in zip(lower, upper, strict=True)
            ]
            start = next((i for i, v in enumerate(base) if v is not None), None)
            if start and actual[start - 1] is not None:  # fan out from the last actual value
                base[start - 1], height[start - 1] = actual[start - 1], 0.0
            if start is not None:
                bands.append((f"{series.name} band base", base))
                bands.append((f"{series.name} band height", height))
    if finite(chart.target) is not None:
        columns.append(("Target", [finite(chart.target)] * n))
    return columns + bands


def _excel_chart(
    workbook: Workbook,
    sheet: str,
    chart: Chart,
    columns: list[tuple[str, list[float | None]]],
    top: int,
    last: int,
    style: NumberStyle,
) -> XlsxChart | None:
    if not any(v is not None for _, cells in columns for v in cells) or last <= top:
        return None
    quoted = quote_sheetname(sheet)
    categories = [quoted, top + 1, 0, last, 0]

    def ref(col: int) -> list[Any]:
        return [quoted, top + 1, col, last, col]

    def name(col: int) -> list[Any]:
        return [quoted, top, col]

    num_format = style.excel_format(chart.value_kind)
    titles = [title for title, _ in columns]
    kind = chart.kind
    if kind == "pie":
        pie = workbook.add_chart({"type": "pie"})
        assert pie is not None
        pie.add_series(
            {
                "name": name(1),
                "categories": categories,
                "values": ref(1),
                "data_labels": {"percentage": True, "category": True},
                "points": [
                    {"fill": {"color": PALETTE[i % len(PALETTE)]}} for i in range(last - top)
                ],
            }
        )
        return _finish(pie, chart)
    if kind == "funnel":
        bars = workbook.add_chart({"type": "bar"})
        assert bars is not None
        bars.add_series(
            {
                "name": name(1),
                "categories": categories,
                "values": ref(1),
                "fill": {"color": PALETTE[0]},
                "data_labels": {"value": True},
            }
        )
        bars.set_x_axis({"reverse": True})
        bars.set_y_axis({"num_format": num_format})
        bars.set_legend({"none": True})
        return _finish(bars, chart)
    if kind == "gauge":
        gauge = workbook.add_chart({"type": "column"})
        assert gauge is not None
        gauge.add_series(
            {
                "name": name(1),
                "categories": [quoted, top + 1, 0, top + 2, 0],
                "values": [quoted, top + 1, 1, top + 2, 1],
                "points": [
                    {"fill": {"color": PALETTE[0]}},
                    {"fill": {"color": ROLE_COLOURS["target"]}},
                ],
                "data_labels": {"value": True},
            }
        )
        maximum = finite(chart.maximum)
        gauge.set_y_axis(
            {"num_format": num_format, "min": 0, **({"max": maximum} if maximum else {})}
        )
        gauge.set_legend({"none": True})
        return _finish(gauge, chart)

    lines = workbook.add_chart({"type": "line"})
    assert lines is not None
    lines.show_blanks_as("gap")
    primary: XlsxChart = lines
    bars_chart: XlsxChart | None = None
    if kind in ("bar", "stacked_bar"):
        options: dict[str, str] = {"type": "column"}
        if kind == "stacked_bar":
            options["subtype"] = "stacked"
        bars_chart = workbook.add_chart(options)
        assert bars_chart is not None
        primary = bars_chart
    band_cols = [
        i for i, t in enumerate(titles, start=1) if t.endswith((" band base", " band height"))
    ]
    area: XlsxChart | None = None
    if band_cols:
        area = workbook.add_chart({"type": "area", "subtype": "stacked"})
        assert area is not None
        for col in band_cols:
            is_base = titles[col - 1].endswith(" band base")
            area.add_series(
                {
                    "name": name(col),
                    "categories": categories,
                    "values": ref(col),
                    "fill": {"none": True} if is_base else {"color": "#E69F00", "transparency": 78},
                    "border": {"none": True},
                }
            )
        primary = area
    series_by_title = {s.name: (i, s) for i, s in enumerate(chart.series)}
    has_lines = False
    for col, title in enumerate(titles, start=1):
        if col in band_cols:
            continue
        if title == "Target" and title not in series_by_title:
            lines.add_series(
                {
                    "name": name(col),
                    "categories": categories,
                    "values": ref(col),
                    "line": {
                        "color": ROLE_COLOURS["target"],
                        "dash_type": "round_dot",
                        "width": 1.75,
                    },
                    "marker": {"type": "none"},
                }
            )
            has_lines = True
            continue
        if title not in series_by_title:  # interval bounds: data only, drawn by the band
            if band_cols or chart.kind != "line":
                continue
            lines.add_series(
                {
                    "name": name(col),
                    "categories": categories,
                    "values": ref(col),
                    "line": {"color": "#E69F00", "dash_type": "dash", "width": 0.75},
                    "marker": {"type": "none"},
                }
            )
            has_lines = True
            continue
        index, series = series_by_title[title]
        colour = series_colour(series, index)
        if bars_chart is not None and series.role != "target":
            bars_chart.add_series(
                {
                    "name": name(col),
                    "categories": categories,
                    "values": ref(col),
                    "fill": {"color": colour},
                    "border": {"none": True},
                }
            )
            continue
        dash = {"forecast": "dash", "target": "round_dot"}.get(series.role, "solid")
        lines.add_series(
            {
                "name": name(col),
                "categories": categories,
                "values": ref(col),
                "line": {"color": colour, "dash_type": dash, "width": 2},
                "marker": {
                    "type": "circle",
                    "size": 4,
                    "fill": {"color": colour},
                    "border": {"color": colour},
                },
            }
        )
        has_lines = True
    if primary is not lines and has_lines:
        primary.combine(lines)
    primary.show_blanks_as("gap")
    primary.set_y_axis(
        {
            "num_format": num_format,
            "major_gridlines": {"visible": True, "line": {"color": "#E5E5E5"}},
        }
    )
    primary.set_x_axis({"num_font": {"rotation": -45} if len(chart.categories) > 12 else {}})
    if area is not None:
        primary.set_legend(
            {
                "position": "bottom",
                "delete_series": [
                    band_cols.index(c) for c in band_cols if titles[c - 1].endswith(" band base")
                ],
            }
        )
    else:
        primary.set_legend({"position": "bottom"})
    return _finish(primary, chart)


def _finish(chart: XlsxChart, block: Chart) -> XlsxChart:
    chart.set_title({"name": block.title, "name_font": {"size": 12, "bold": True}})
    return chart


def _iso_date(value: Any) -> dt.date | None:
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value[:10]) if len(value) == 10 else None
        except ValueError:
            return None
    return None


def write_xlsx(doc: ReportDocument, path: Path) -> Path:
    """Write ``doc`` as an XLSX workbook to ``path`` and return ``path``.

    Raises :class:`~opscope.errors.RenderError` for an unknown locale or currency; OSError
    when ``path`` cannot be written.
    """
    style = NumberStyle(doc.locale, doc.currency)
    workbook = xlsxwriter.Workbook(
        str(path),
        {"strings_to_numbers": False, "strings_to_formulas": False, "strings_to_urls": False},
    )
    try:
        formats = _Formats(workbook, style)
        names = sheet_names(
            [s.title for s in doc.sections], taken=(SUMMARY_SHEET, DATA_QUALITY_SHEET)
        )
        _summary(workbook, formats, doc, names)
        for section, name in zip(doc.sections, names, strict=True):
            _section(workbook, formats, section, name)
        _data_quality(workbook, formats, doc)
    finally:
        try:
            workbook.close()
        except FileCreateError as exc:
            raise RenderError(f"cannot write {path}: {exc}") from exc
    return path


def _summary(workbook: Workbook, formats: _Formats, doc: ReportDocument, names: list[str]) -> None:
    sheet = workbook.add_worksheet(SUMMARY_SHEET)
    out = _SheetWriter(sheet, formats, workbook)
    out.text(0, 0, doc.title, formats.title)
    period = doc.period
    facts = [
        ("Report", doc.report),
        ("Period", period.label),
        ("Start", period.start),
        ("End (exclusive)", period.end),
        ("Time zone", period.timezone),
        (
            "Partial period",
            "yes: the data does not cover the whole period" if period.partial else "no",
        ),
        ("Generated at", doc.generated_at),
        ("Currency", doc.currency),
        ("Locale", doc.locale),
    ]
    row = 2
    for label, value in facts:
        out.text(row, 0, label, formats.header)
        out.text(
            row, 1, value, formats.warning if label == "Partial period" and period.partial else None
        )
        row += 1
    row += 1
    out.text(row, 0, "Sections", formats.heading)
    for section, name in zip(doc.sections, names, strict=True):
        row += 1
        sheet.write_url(
            row, 0, f"internal:{quote_sheetname(name)}!A1", formats.link, string=section.title
        )
        out._widen(0, len(section.title))
        if section.omitted:
            out.text(row, 1, f"omitted: {section.omitted}", formats.muted)
    row += 2
    out.text(row, 0, "Metric", formats.header)
    out.text(row, 1, "Value", formats.header)
    for metric, metric_value in doc.metrics.items():
        row += 1
        out.text(row, 0, metric)
        number = finite(metric_value)
        if isinstance(metric_value, str):
            out.text(row, 1, metric_value)
        elif number is None:
            out._missing(row, 1, blank=False)
        else:
            out.value(row, 1, number, metric_kind(metric))
    out.finish()


def _section(workbook: Workbook, formats: _Formats, section: Section, name: str) -> None:
    sheet = workbook.add_worksheet(name)
    out = _SheetWriter(sheet, formats, workbook)
    out.text(0, 0, section.title, formats.title)
    out.widths[0] = 12  # the title does not size the first column
    out.row = 2
    if section.omitted or not section.blocks:
        out.text(
            out.row, 0, f"Omitted: {section.omitted or 'no data for this section.'}", formats.muted
        )
        out.widths[0] = 12
    else:
        for block in section.blocks:
            if isinstance(block, KpiCards):
                out.kpis(block)
            elif isinstance(block, Table):
                out.table(block)
            elif isinstance(block, Chart):
                out.chart(block)
            else:
                out.notes(block)
    out.finish()


def _data_quality(workbook: Workbook, formats: _Formats, doc: ReportDocument) -> None:
    sheet = workbook.add_worksheet(DATA_QUALITY_SHEET)
    out = _SheetWriter(sheet, formats, workbook)
    out.text(0, 0, "Data quality", formats.title)
    lines = doc.data_quality or ["No rows dropped, unmatched or renamed."]
    for row, line in enumerate(lines, start=2):
        out.text(row, 0, line)
    out.finish()
