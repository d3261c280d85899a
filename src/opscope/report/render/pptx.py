"""PPTX: a 16:9 deck with a title slide, slides per section and a data-quality slide.

Written with python-pptx. Each section starts on a new slide titled with the section's title;
its blocks flow top to bottom (KPI cards in rows of up to six, charts two side by side, tables,
notes), and a block that does not fit the rest of the slide moves to a continuation slide
("… (continued)"). A table longer than a slide is split across slides, its header row repeated.
Row heights are estimated from the text length and the column width (10 pt text), so that a
table never runs off its slide; a cell's text is never cut.

Charts are native PowerPoint charts (their data is embedded as a workbook, editable in
PowerPoint): ``line`` → line with markers (``forecast`` dashed; ``lower``/``upper`` as thin
dashed bound lines, since a python-pptx chart has one chart type and cannot shade a band;
``Chart.target`` as a dotted "Target" series); ``bar``/``stacked_bar`` → clustered/stacked
columns (the target goes into the chart title); ``pie``; ``funnel`` → horizontal bars, first
stage on top; ``gauge`` → two columns, current and target, on an axis up to ``maximum``.

A missing value is a missing point — python-pptx omits the ``<c:pt>`` of a ``None`` value —
and every chart is set to show missing points as gaps (``<c:dispBlanksAs val="gap"/>``; the
OOXML default when the element is absent is "zero").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pptx import Presentation
from pptx.chart.data import CategoryChartData
from pptx.dml.color import RGBColor
from pptx.enum.chart import XL_CHART_TYPE, XL_LEGEND_POSITION, XL_MARKER_STYLE
from pptx.enum.dml import MSO_LINE_DASH_STYLE
from pptx.enum.shapes import MSO_SHAPE
from pptx.enum.text import PP_ALIGN
from pptx.oxml.ns import qn
from pptx.oxml.xmlchemy import OxmlElement
from pptx.presentation import Presentation as PresentationType
from pptx.slide import Slide
from pptx.util import Emu, Inches, Pt

from opscope.report.document import Chart, KpiCards, Notes, ReportDocument, Table
from opscope.report.render.figures import PALETTE, ROLE_COLOURS, series_colour
from opscope.report.render.locales import MISSING, NumberStyle, finite

SLIDE_WIDTH = 13.333  # inches, 16:9
SLIDE_HEIGHT = 7.5
MARGIN = 0.5
CONTENT_TOP = 1.2
CONTENT_BOTTOM = 6.95
CONTENT_WIDTH = SLIDE_WIDTH - 2 * MARGIN
GAP = 0.2
KPI_HEIGHT = 1.45
CHART_HEIGHT = 2.75
TABLE_FONT = 10  # pt
LINE_HEIGHT = 0.24  # inches per text line at 10 pt, with cell margins added per row
ROW_PADDING = 0.1
CHAR_WIDTH = 0.075  # inches per character at 10 pt (DejaVu/Calibri average, generous)
MIN_TABLE_ROWS = 3  # fewer rows than this at the bottom of a slide: start a new slide
INK = RGBColor(0x1B, 0x1F, 0x24)
MUTED = RGBColor(0x5B, 0x64, 0x70)
WARN = RGBColor(0xB3, 0x59, 0x00)
ACCENT = RGBColor(0x00, 0x72, 0xB2)


def _rgb(hex_colour: str) -> RGBColor:
    return RGBColor.from_string(hex_colour.lstrip("#").upper())


@dataclass
class _Deck:
    """The presentation being written and where the next block goes."""

    prs: PresentationType
    doc: ReportDocument
    style: NumberStyle
    slide: Slide | None = None
    title: str = ""
    y: float = CONTENT_TOP

    def new_slide(self, title: str) -> Slide:
        slide = self.prs.slides.add_slide(self.prs.slide_layouts[6])  # blank
        _text(slide, title, MARGIN, 0.35, CONTENT_WIDTH, 0.7, size=26, bold=True)
        footer = f"{self.doc.title} · {self.doc.period.label}"
        if self.doc.period.partial:
            footer += " (partial period)"
        _text(slide, footer, MARGIN, 7.05, 9.0, 0.3, size=9, colour=MUTED)
        _text(
            slide,
            str(len(self.prs.slides)),
            SLIDE_WIDTH - MARGIN - 1.0,
            7.05,
            1.0,
            0.3,
            size=9,
            colour=MUTED,
            align=PP_ALIGN.RIGHT,
        )
        self.slide, self.title, self.y = slide, title, CONTENT_TOP
        return slide

    def room(self) -> float:
        return CONTENT_BOTTOM - self.y

    def place(self, height: float) -> Slide:
        """The slide to draw a block of ``height`` inches on: this one when it fits (or the
        slide is empty), else a continuation slide."""
        if self.slide is None:
            return self.new_slide(self.title)
        if height > self.room() and self.y > CONTENT_TOP:
            self.new_slide(_continued(self.title))
        assert self.slide is not None
        return self.slide


def _continued(title: str) -> str:
    return title if title.endswith("(continued)") else f"{title} (continued)"


def write_pptx(doc: ReportDocument, path: Path) -> Path:
    """Write ``doc`` as a PPTX deck to ``path`` and return ``path``.

    Raises :class:`~opscope.errors.RenderError` for an unknown locale or currency; OSError
    when ``path`` cannot be written.
    """
    style = NumberStyle(doc.locale, doc.currency)
    prs = Presentation()
    prs.slide_width = Inches(SLIDE_WIDTH)
    prs.slide_height = Inches(SLIDE_HEIGHT)
    deck = _Deck(prs, doc, style)
    _title_slide(deck)
    for section in doc.sections:
        deck.new_slide(section.title)
        if section.omitted or not section.blocks:
            reason = section.omitted or "no data for this section."
            _text(
                deck.slide,
                f"Omitted: {reason}",
                MARGIN,
                CONTENT_TOP,
                CONTENT_WIDTH,
                0.5,
                size=16,
                italic=True,
                colour=MUTED,
            )
            continue
        pending: list[Chart] = []
        for block in section.blocks:
            if isinstance(block, Chart):
                pending.append(block)
                if len(pending) == 2:
                    _charts(deck, pending)
                    pending = []
                continue
            if pending:
                _charts(deck, pending)
                pending = []
            if isinstance(block, KpiCards):
                _kpis(deck, block)
            elif isinstance(block, Table):
                _table(deck, block)
            elif isinstance(block, Notes):
                _notes(deck, block.title, block.lines, warn=block.style == "warnings")
        if pending:
            _charts(deck, pending)
    deck.new_slide("Data quality")
    _notes(deck, "", doc.data_quality or ["No rows dropped, unmatched or renamed."])
    prs.save(str(path))
    return path


# -- text -----------------------------------------------------------------------------------


def _text(
    slide: Slide | None,
    text: str,
    left: float,
    top: float,
    width: float,
    height: float,
    *,
    size: float = 14,
    bold: bool = False,
    italic: bool = False,
    colour: RGBColor = INK,
    align: Any = None,
) -> Any:
    assert slide is not None
    box = slide.shapes.add_textbox(Inches(left), Inches(top), Inches(width), Inches(height))
    frame = box.text_frame
    frame.word_wrap = True
    paragraph = frame.paragraphs[0]
    paragraph.text = text
    if align is not None:
        paragraph.alignment = align
    font = paragraph.runs[0].font if paragraph.runs else paragraph.font
    font.size = Pt(size)
    font.bold = bold
    font.italic = italic
    font.color.rgb = colour
    return box


def _lines_needed(text: str, width: float, size: float = TABLE_FONT) -> int:
    per_line = max(int(width / (CHAR_WIDTH * size / TABLE_FONT)), 1)
    return max(1, sum(max(1, math.ceil(len(part) / per_line)) for part in text.split("\n")))


def _title_slide(deck: _Deck) -> None:
    doc = deck.doc
    slide = deck.prs.slides.add_slide(deck.prs.slide_layouts[6])
    _text(slide, doc.title, MARGIN, 2.2, CONTENT_WIDTH, 1.2, size=40, bold=True)
    period = doc.period
    _text(
        slide,
        f"{period.label} · {period.start} to {period.end} (end exclusive, {period.timezone})",
        MARGIN,
        3.5,
        CONTENT_WIDTH,
        0.5,
        size=18,
        colour=MUTED,
    )
    _text(
        slide,
        f"Generated {doc.generated_at} · amounts in {doc.currency}",
        MARGIN,
        4.0,
        CONTENT_WIDTH,
        0.5,
        size=14,
        colour=MUTED,
    )
    if period.partial:
        _text(
            slide,
            f"Partial period: the data does not cover the whole of {period.label}.",
            MARGIN,
            4.6,
            CONTENT_WIDTH,
            0.5,
            size=16,
            bold=True,
            colour=WARN,
        )


# -- blocks ---------------------------------------------------------------------------------


def _kpis(deck: _Deck, block: KpiCards) -> None:
    per_row = min(max(len(block.kpis), 1), 6)
    width = (CONTENT_WIDTH - GAP * (per_row - 1)) / per_row
    for start in range(0, len(block.kpis), per_row):
        slide = deck.place(KPI_HEIGHT)
        for i, kpi in enumerate(block.kpis[start : start + per_row]):
            left = MARGIN + i * (width + GAP)
            card = slide.shapes.add_shape(
                MSO_SHAPE.ROUNDED_RECTANGLE,
                Inches(left),
                Inches(deck.y),
                Inches(width),
                Inches(KPI_HEIGHT),
            )
            card.fill.solid()
            card.fill.fore_color.rgb = RGBColor(0xF6, 0xF7, 0xF9)
            card.line.color.rgb = RGBColor(0xD8, 0xDD, 0xE3)
            card.adjustments[0] = 0.08
            frame = card.text_frame
            frame.word_wrap = True
            lines = [
                (kpi.name, 11, False, MUTED),
                (deck.style.format(kpi.current, kpi.kind), 20, True, INK),
                (
                    f"{deck.style.status(kpi.status)} · {deck.style.trend(kpi.trend)}",
                    10,
                    False,
                    MUTED,
                ),
                (
                    f"Previous {deck.style.format(kpi.previous, kpi.kind)} "
                    f"({deck.style.change(kpi)})",
                    10,
                    False,
                    MUTED,
                ),
                (f"Target {deck.style.format(kpi.target, kpi.kind)}", 10, False, MUTED),
            ]
            for n, (text, size, bold, colour) in enumerate(lines):
                paragraph = frame.paragraphs[0] if n == 0 else frame.add_paragraph()
                run = paragraph.add_run()
                run.text = text
                run.font.size = Pt(size)
                run.font.bold = bold
                run.font.color.rgb = colour
        deck.y += KPI_HEIGHT + GAP


def _charts(deck: _Deck, charts: list[Chart]) -> None:
    slide = deck.place(CHART_HEIGHT)
    width = CONTENT_WIDTH if len(charts) == 1 else (CONTENT_WIDTH - GAP) / 2
    for i, chart in enumerate(charts):
        left = MARGIN + i * (width + GAP)
        _chart(deck, slide, chart, left, deck.y, width, CHART_HEIGHT)
    deck.y += CHART_HEIGHT + GAP


def _chart(
    deck: _Deck, slide: Slide, chart: Chart, left: float, top: float, width: float, height: float
) -> None:
    number_format = deck.style.excel_format(chart.value_kind)
    data = CategoryChartData(number_format=number_format)
    title = chart.title
    n = len(chart.categories)

    def fit(cells: list[Any] | None) -> list[float | None]:
        cells = list(cells or [])[:n]
        return [finite(v) for v in cells] + [None] * (n - len(cells))

    kind = chart.kind
    roles: list[tuple[str, str]] = []  # per chart series: (role, colour)
    if kind == "gauge":
        first = [finite(v) for v in chart.series[0].values] if chart.series else []
        data.categories = ["Current", "Target"]
        data.add_series(
            chart.series[0].name if chart.series else title,
            [next((v for v in first if v is not None), None), finite(chart.target)],
        )
        roles.append(("actual", PALETTE[0]))
        chart_type = XL_CHART_TYPE.COLUMN_CLUSTERED
    elif kind in ("pie", "funnel"):
        data.categories = [str(c) for c in chart.categories]
        first_values = fit(chart.series[0].values) if chart.series else [None] * n
        data.add_series(chart.series[0].name if chart.series else title, first_values)
        roles.append(("actual", PALETTE[0]))
        chart_type = XL_CHART_TYPE.PIE if kind == "pie" else XL_CHART_TYPE.BAR_CLUSTERED
    else:
        data.categories = [str(c) for c in chart.categories]
        for index, series in enumerate(chart.series):
            colour = series_colour(series, index)
            data.add_series(series.name, fit(series.values))
            roles.append((series.role, colour))
            if kind == "line" and series.lower is not None and series.upper is not None:
                data.add_series(f"{series.name} lower", fit(series.lower))
                data.add_series(f"{series.name} upper", fit(series.upper))
                roles += [("bound", colour), ("bound", colour)]
        target = finite(chart.target)
        if target is not None:
            if kind == "line":
                data.add_series("Target", [target] * n)
                roles.append(("target", ROLE_COLOURS["target"]))
            else:
                title += f" (target {deck.style.format(target, chart.value_kind)})"
        chart_type = {
            "line": XL_CHART_TYPE.LINE_MARKERS,
            "bar": XL_CHART_TYPE.COLUMN_CLUSTERED,
            "stacked_bar": XL_CHART_TYPE.COLUMN_STACKED,
        }[kind]
    has_values = any(v is not None for s in data for v in s.values)
    if not has_values or (n == 0 and kind != "gauge"):
        _text(slide, title, left, top, width, 0.4, size=12, bold=True)
        _text(
            slide,
            "No data for this chart.",
            left,
            top + 0.5,
            width,
            0.4,
            size=12,
            italic=True,
            colour=MUTED,
        )
        return
    frame: Any = slide.shapes.add_chart(
        chart_type,
        Inches(left),
        Inches(top),
        Inches(width),
        Inches(height),
        data,  # type: ignore[arg-type]
    )
    drawn = frame.chart
    drawn.has_title = True
    drawn.chart_title.text_frame.text = title
    drawn.chart_title.text_frame.paragraphs[0].runs[0].font.size = Pt(12)
    drawn.chart_title.text_frame.paragraphs[0].runs[0].font.bold = True
    drawn.font.size = Pt(9)
    chart_element = drawn._chartSpace.chart
    blanks = chart_element.find(qn("c:dispBlanksAs"))
    if blanks is None:  # every python-pptx chart template has one; keep the schema order
        blanks = OxmlElement("c:dispBlanksAs")
        chart_element.insert_element_before(blanks, "c:showDLblsOverMax", "c:extLst")
    blanks.set("val", "gap")
    if kind == "pie":
        drawn.has_legend = True
        drawn.legend.position = XL_LEGEND_POSITION.RIGHT
        drawn.legend.include_in_layout = False
        plot = drawn.plots[0]
        plot.has_data_labels = True
        plot.data_labels.show_percentage = True
        plot.data_labels.show_value = False
        plot.data_labels.number_format = "0%"
        plot.data_labels.number_format_is_linked = False
        for i, point in enumerate(plot.series[0].points):
            point.format.fill.solid()
            point.format.fill.fore_color.rgb = _rgb(PALETTE[i % len(PALETTE)])
        return
    value_axis = drawn.value_axis
    value_axis.tick_labels.number_format = number_format
    value_axis.tick_labels.number_format_is_linked = False
    value_axis.has_major_gridlines = True
    value_axis.major_gridlines.format.line.color.rgb = RGBColor(0xE5, 0xE5, 0xE5)
    if kind == "funnel":
        drawn.category_axis.reverse_order = True
    if kind == "gauge":
        value_axis.minimum_scale = 0
        maximum = finite(chart.maximum)
        if maximum:
            value_axis.maximum_scale = maximum
    drawn.has_legend = kind not in ("funnel", "gauge")
    if drawn.has_legend:
        drawn.legend.position = XL_LEGEND_POSITION.BOTTOM
        drawn.legend.include_in_layout = False
    for series, (role, colour) in zip(drawn.plots[0].series, roles, strict=False):
        rgb = _rgb(colour)
        if chart_type in (XL_CHART_TYPE.LINE_MARKERS,):
            line = series.format.line
            line.color.rgb = rgb
            line.width = Pt(0.75 if role == "bound" else 2)
            if role in ("forecast", "bound"):
                line.dash_style = MSO_LINE_DASH_STYLE.DASH
            elif role == "target":
                line.dash_style = MSO_LINE_DASH_STYLE.ROUND_DOT
            series.smooth = False
            marker = series.marker
            if role in ("bound", "target"):
                marker.style = XL_MARKER_STYLE.NONE
            else:
                marker.style = XL_MARKER_STYLE.CIRCLE
                marker.size = 5
                marker.format.fill.solid()
                marker.format.fill.fore_color.rgb = rgb
        else:
            series.format.fill.solid()
            series.format.fill.fore_color.rgb = rgb
    if kind == "gauge":
        points = drawn.plots[0].series[0].points
        points[1].format.fill.solid()
        points[1].format.fill.fore_color.rgb = _rgb(ROLE_COLOURS["target"])


def _table(deck: _Deck, block: Table) -> None:
    columns = block.columns
    cells = [
        [deck.style.format(row.get(c.key), c.kind_of(row)) for c in columns] for row in block.rows
    ]
    # Column widths in proportion to their longest text (title or cell), at least 0.6 inch.
    longest = [
        max([len(c.title), *(len(r[i]) for r in cells)]) if columns else 1
        for i, c in enumerate(columns)
    ]
    total = sum(max(n, 4) for n in longest) or 1
    widths = [max(CONTENT_WIDTH * max(n, 4) / total, 0.6) for n in longest]
    scale = CONTENT_WIDTH / sum(widths) if widths else 1.0
    widths = [w * scale for w in widths]

    def row_height(texts: list[str]) -> float:
        lines = max(
            (_lines_needed(t, w - 0.2) for t, w in zip(texts, widths, strict=True)), default=1
        )
        return lines * LINE_HEIGHT + ROW_PADDING

    header_height = row_height([c.title for c in columns])
    heights = [row_height(r) for r in cells]
    title_height = 0.4
    start = 0
    first = True
    while first or start < len(cells):
        needed_min = title_height + header_height + sum(heights[start : start + MIN_TABLE_ROWS])
        deck.place(needed_min)
        slide = deck.slide
        assert slide is not None
        room = deck.room() - title_height - header_height
        end, used = start, 0.0
        while end < len(cells) and used + heights[end] <= room:
            used += heights[end]
            end += 1
        if end == start and start < len(cells):  # one row taller than a slide: place it alone
            end, used = start + 1, heights[start]
        caption = block.title if first else f"{block.title} (continued)"
        _text(slide, caption, MARGIN, deck.y, CONTENT_WIDTH, title_height, size=14, bold=True)
        top = deck.y + title_height
        count = end - start
        shape = slide.shapes.add_table(
            count + 1 + (0 if cells else 1),
            max(len(columns), 1),
            Inches(MARGIN),
            Inches(top),
            Inches(CONTENT_WIDTH),
            Inches(header_height + used),
        )
        table = shape.table
        for i, width in enumerate(widths):
            table.columns[i].width = Emu(int(Inches(width)))
        table.rows[0].height = Emu(int(Inches(header_height)))
        for i, column in enumerate(columns):
            _cell(
                table.cell(0, i), column.title, bold=True, right=column.kind not in ("text", "date")
            )
        for r, index in enumerate(range(start, end), start=1):
            table.rows[r].height = Emu(int(Inches(heights[index])))
            for i, column in enumerate(columns):
                text = cells[index][i]
                _cell(
                    table.cell(r, i),
                    text,
                    right=column.kind not in ("text", "date"),
                    muted=text == MISSING,
                )
        if not cells:
            _cell(table.cell(1, 0), "No rows.", muted=True)
        deck.y = top + header_height + used + GAP
        if block.note and end >= len(cells):
            deck.place(0.4)
            _text(
                deck.slide, block.note, MARGIN, deck.y, CONTENT_WIDTH, 0.35, size=10, colour=MUTED
            )
            deck.y += 0.4
        start, first = end, False


def _cell(
    cell: Any, text: str, *, bold: bool = False, right: bool = False, muted: bool = False
) -> None:
    cell.text = text
    cell.margin_top = cell.margin_bottom = Inches(0.03)
    paragraph = cell.text_frame.paragraphs[0]
    paragraph.alignment = PP_ALIGN.RIGHT if right else PP_ALIGN.LEFT
    for run in paragraph.runs:
        run.font.size = Pt(TABLE_FONT)
        run.font.bold = bold
        if muted:
            run.font.color.rgb = MUTED


def _notes(deck: _Deck, title: str, lines: list[str], *, warn: bool = False) -> None:
    title_height = 0.45 if title else 0.0
    heights = [_lines_needed(line, CONTENT_WIDTH - 0.4, 14) * 0.3 + 0.08 for line in lines]
    start = 0
    while start < len(lines) or start == 0:
        deck.place(title_height + (heights[start] if heights else 0.3))
        room = deck.room() - title_height
        end, used = start, 0.0
        while end < len(lines) and used + heights[end] <= room:
            used += heights[end]
            end += 1
        end = max(end, min(start + 1, len(lines)))
        if title:
            _text(
                deck.slide,
                title,
                MARGIN,
                deck.y,
                CONTENT_WIDTH,
                title_height,
                size=16,
                bold=True,
                colour=WARN if warn else ACCENT,
            )
        box = _text(
            deck.slide, "", MARGIN, deck.y + title_height, CONTENT_WIDTH, max(used, 0.3), size=14
        )
        frame = box.text_frame
        for n, line in enumerate(lines[start:end]):
            paragraph = frame.paragraphs[0] if n == 0 else frame.add_paragraph()
            run = paragraph.add_run()
            run.text = f"• {line}"
            run.font.size = Pt(14)
            run.font.color.rgb = INK
        deck.y += title_height + used + GAP
        if end >= len(lines):
            break
        start = end
        deck.new_slide(_continued(deck.title))
