"""The deck read back with python-pptx: slides, split tables, native charts, gaps not zeros."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest
from pptx import Presentation
from pptx.enum.chart import XL_CHART_TYPE
from pptx.util import Emu, Inches

from opscope.report.document import Chart, Column, Kpi, KpiCards, Section, Series, Table
from opscope.report.render import render
from tests.report.sample import REPS, empty_document, sales_document

SLIDE_WIDTH, SLIDE_HEIGHT = Inches(13.333), Inches(7.5)


def slide_title(slide: Any) -> str:
    return next(s.text_frame.text for s in slide.shapes if s.has_text_frame)


def charts(slide: Any) -> list[Any]:
    return [s.chart for s in slide.shapes if s.has_chart]


def tables(slide: Any) -> list[Any]:
    return [s for s in slide.shapes if s.has_table]


@pytest.fixture(scope="module")
def deck(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return Presentation(render(sales_document(), "pptx", tmp_path_factory.mktemp("p") / "s.pptx"))


def test_title_slide_and_slides_per_section(deck: Any) -> None:
    slides = list(deck.slides)
    title = [s.text_frame.text for s in slides[0].shapes if s.has_text_frame]
    assert title[0] == "Sales performance"
    assert "Partial period: the data does not cover the whole of 2017-Q4." in title
    titles = [slide_title(s) for s in slides[1:]]
    # every section starts a slide; the 35-row leaderboard continues on further slides
    assert [t for t in titles if not t.endswith("(continued)")] == [
        "Headline KPIs",
        "Funnel",
        "Revenue trend and forecast",
        "Team performance",
        "Products and sectors",
        "Customer satisfaction (NPS)",
        "Recommendations",
        "Data quality",
    ]
    nps = slides[1 + titles.index("Customer satisfaction (NPS)")]
    assert "Omitted: no NPS responses in the source" in [
        s.text_frame.text for s in nps.shapes if s.has_text_frame
    ]


def test_long_table_is_split_with_its_header_and_nothing_overflows(deck: Any) -> None:
    names: list[str] = []
    table_slides = 0
    for slide in deck.slides:
        for shape in tables(slide):
            table_slides += 1
            table = shape.table
            assert [c.text for c in table.rows[0].cells][:2] == ["#", "Sales agent"]
            names += [row.cells[1].text for row in list(table.rows)[1:]]
            assert shape.top + sum(r.height for r in table.rows) <= Inches(7.0)
            assert shape.left + sum(c.width for c in table.columns) <= SLIDE_WIDTH
        for shape in slide.shapes:  # nothing leaves the slide
            assert shape.left >= 0 and shape.top >= 0
            assert shape.left + shape.width <= SLIDE_WIDTH + Emu(10)
            assert shape.top + shape.height <= SLIDE_HEIGHT
    assert names == REPS  # every row once, in order, non-ASCII names intact
    assert table_slides >= 2


def test_native_charts_of_each_kind(deck: Any) -> None:
    kinds = [c.chart_type for slide in deck.slides for c in charts(slide)]
    # python-pptx calls a line chart whose bound lines have no markers LINE, not LINE_MARKERS
    assert kinds == [
        XL_CHART_TYPE.BAR_CLUSTERED,  # funnel
        XL_CHART_TYPE.COLUMN_STACKED,
        XL_CHART_TYPE.LINE,
        XL_CHART_TYPE.COLUMN_CLUSTERED,
        XL_CHART_TYPE.PIE,
        XL_CHART_TYPE.COLUMN_CLUSTERED,  # gauge: current and target
    ]
    funnel = charts(next(s for s in deck.slides if slide_title(s) == "Funnel"))[0]
    assert list(funnel.plots[0].categories) == ["Prospecting", "Engaging", "Won"]
    assert funnel.category_axis.reverse_order is True  # first stage on top


def test_missing_value_is_a_gap_not_a_zero(deck: Any) -> None:
    trend = next(s for s in deck.slides if slide_title(s) == "Revenue trend and forecast")
    [chart] = charts(trend)
    names = [s.name for s in chart.plots[0].series]
    assert names == ["Revenue", "Forecast", "Forecast lower", "Forecast upper", "Target"]
    revenue = chart.plots[0].series[0]
    assert revenue.values[5] is None and revenue.values[4] == pytest.approx(121639.46140238)
    xml = chart._chartSpace.xml
    first_series = xml.split("</c:ser>")[0]
    values = first_series.split("<c:val>")[1]
    assert '<c:ptCount val="60"/>' in values
    assert re.search(r'<c:pt idx="5">', values) is None
    assert re.search(r'<c:pt idx="4">', values) is not None
    assert '<c:dispBlanksAs val="gap"/>' in xml
    # the embedded workbook PowerPoint edits the data in has an empty cell there too
    openpyxl = pytest.importorskip("openpyxl")
    import io

    sheet = openpyxl.load_workbook(io.BytesIO(chart.part.chart_workbook.xlsx_part.blob)).active
    assert sheet.cell(2 + 5, 2).value is None
    assert sheet.cell(2 + 4, 2).value == pytest.approx(121639.46140238)


def test_every_chart_shows_blanks_as_gaps(deck: Any) -> None:
    for slide in deck.slides:
        for chart in charts(slide):
            assert '<c:dispBlanksAs val="gap"/>' in chart._chartSpace.xml


def test_kpi_cards_show_formatted_values(deck: Any) -> None:
    slide = next(s for s in deck.slides if slide_title(s) == "Headline KPIs")
    texts = [s.text_frame.text for s in slide.shapes if s.has_text_frame]
    revenue = next(t for t in texts if t.startswith("Revenue\n"))
    assert "$1,234,567.50" in revenue and "(+12.2%)" in revenue
    velocity = next(t for t in texts if t.startswith("Pipeline velocity\n"))
    assert velocity.split("\n")[1] == "n/a"


def test_nan_and_inf_are_missing_points(tmp_path: Path) -> None:
    nan, inf = math.nan, math.inf
    doc = sales_document()
    doc.sections = [
        Section("k", "KPIs", [KpiCards([Kpi("Win rate", "ratio", nan, growth=inf)])]),
        Section("t", "T", [Table("T", [Column("v", "Value", "money")], [{"v": nan}])]),
        Section("c", "C", [Chart("C", "line", ["a", "b", "c"], [Series("s", [1.0, nan, -inf])])]),
    ]
    deck = Presentation(render(doc, "pptx", tmp_path / "nan.pptx"))
    [chart] = [c for s in deck.slides for c in charts(s)]
    xml = chart._chartSpace.xml.lower()
    assert "nan" not in xml and "inf" not in xml
    assert list(chart.plots[0].series[0].values) == [1.0, None, None]
    [table] = [t for s in deck.slides for t in tables(s)]
    assert table.table.cell(1, 0).text == "n/a"


def test_empty_report(tmp_path: Path) -> None:
    deck = Presentation(render(empty_document(), "pptx", tmp_path / "e.pptx"))
    assert [slide_title(s) for s in list(deck.slides)[1:]] == [
        "Headline KPIs",
        "Revenue",
        "Operations",
        "Data quality",
    ]
    assert sum(len(charts(s)) + len(tables(s)) for s in deck.slides) == 0
