"""The workbook read back with openpyxl: sheets, values, number formats, native charts."""

from __future__ import annotations

import math
import zipfile
from pathlib import Path
from typing import Any

import pytest

from opscope.report.document import Chart, Column, Kpi, KpiCards, Section, Series, Table
from opscope.report.render import render
from opscope.report.render.xlsx import sheet_names
from tests.report.sample import REPS, empty_document, leaderboard, revenue_forecast, sales_document

openpyxl = pytest.importorskip("openpyxl")

USD = '"$"#,##0.00'
EUR_DE = '#,##0.00" €"'


def rows_of(sheet: Any) -> list[list[Any]]:
    return [[cell.value for cell in row] for row in sheet.iter_rows()]


def find(sheet: Any, value: Any) -> Any:
    """The first cell holding ``value``."""
    for row in sheet.iter_rows():
        for cell in row:
            if cell.value == value:
                return cell
    raise AssertionError(f"{value!r} not on sheet {sheet.title}")


@pytest.fixture(scope="module")
def workbook(tmp_path_factory: pytest.TempPathFactory) -> Any:
    path = render(sales_document(), "xlsx", tmp_path_factory.mktemp("xlsx") / "sales.xlsx")
    return openpyxl.load_workbook(path)


def test_one_sheet_per_section_between_summary_and_data_quality(workbook: Any) -> None:
    assert workbook.sheetnames == [
        "Summary",
        "Headline KPIs",
        "Funnel",
        "Revenue trend and forecast",
        "Team performance",
        "Products and sectors",
        "Customer satisfaction (NPS)",
        "Recommendations",
        "Data quality",
    ]
    summary = workbook["Summary"]
    assert find(summary, "Partial period").offset(column=1).value.startswith("yes")
    assert find(summary, "win_rate").offset(column=1).value == pytest.approx(0.6315)
    assert find(summary, "pipeline_velocity").offset(column=1).value == "n/a"
    nps = rows_of(workbook["Customer satisfaction (NPS)"])
    assert ["Omitted: no NPS responses in the source"] in [[v for v in r if v] for r in nps]
    quality = [r[0] for r in rows_of(workbook["Data quality"]) if r[0]]
    assert "12 opportunities dropped: close_date before engage_date." in quality


def test_leaderboard_values_and_formats(workbook: Any) -> None:
    sheet = workbook["Team performance"]
    header = find(sheet, "Sales agent")
    titles = [c.value for c in sheet[header.row]]
    assert titles == [
        "#",
        "Sales agent",
        "Won deals",
        "Revenue",
        "Win rate",
        "Average deal size",
        "Sales cycle",
    ]
    expected = leaderboard().rows
    for offset, data in enumerate(expected, start=1):
        cells = sheet[header.row + offset]
        assert [c.value for c in cells[:3]] == [data["rank"], data["agent"], data["won"]]
        assert cells[3].value == pytest.approx(data["revenue"])
        assert cells[4].value == pytest.approx(data["win_rate"])
        assert [c.number_format for c in cells] == [
            "#,##0",
            "General",
            "#,##0",
            USD,
            "0.0%",
            USD,
            '#,##0.0" d"',
        ]
    # the non-ASCII names survive
    names = [sheet.cell(header.row + i, 2).value for i in range(1, 36)]
    assert names == REPS


def test_kpis_keep_numbers_and_show_n_a_for_missing(workbook: Any) -> None:
    sheet = workbook["Headline KPIs"]
    revenue = find(sheet, "Revenue")
    assert revenue.offset(column=1).value == 1_234_567.5
    assert revenue.offset(column=1).number_format == USD
    assert revenue.offset(column=5).value == pytest.approx(0.12233)
    assert revenue.offset(column=5).number_format == "0.0%"
    velocity = find(sheet, "Pipeline velocity")
    assert [velocity.offset(column=i).value for i in range(1, 6)] == ["n/a"] * 5
    cycle = find(sheet, "Sales cycle")
    assert cycle.offset(column=1).number_format == '#,##0.0" d"'


def test_chart_data_has_gaps_not_zeros(workbook: Any) -> None:
    sheet = workbook["Revenue trend and forecast"]
    category = find(sheet, "Category")
    headers = [c.value for c in sheet[category.row]][: 1 + 7]
    assert headers == [
        "Category",
        "Revenue",
        "Forecast",
        "Forecast lower",
        "Forecast upper",
        "Target",
        "Forecast band base",
        "Forecast band height",
    ]
    chart = revenue_forecast()
    for i, quarter in enumerate(chart.categories):
        row = sheet[category.row + 1 + i]
        assert row[0].value == quarter
        assert row[1].value == (
            pytest.approx(chart.series[0].values[i])
            if chart.series[0].values[i] is not None
            else None
        )
    assert sheet.cell(category.row + 1 + 5, 2).value is None  # the quarter without data
    # the band: base = lower, height = upper - lower; it fans out from the last actual value
    first_forecast = category.row + 1 + 56
    assert sheet.cell(first_forecast, 7).value == pytest.approx(chart.series[1].lower[56])
    assert sheet.cell(first_forecast, 8).value == pytest.approx(18_000)
    assert sheet.cell(first_forecast - 1, 7).value == pytest.approx(chart.series[0].values[55])
    assert sheet.cell(first_forecast - 1, 8).value == 0


def chart_xml(path: Path) -> list[str]:
    with zipfile.ZipFile(path) as archive:
        names = sorted(n for n in archive.namelist() if n.startswith("xl/charts/chart"))
        return [archive.read(n).decode() for n in names]


def test_native_charts_by_kind(workbook: Any) -> None:
    def kinds(sheet: str) -> list[tuple[str, ...]]:
        return [tuple(c.tagname for c in chart._charts) for chart in workbook[sheet]._charts]

    assert kinds("Funnel") == [("barChart",), ("barChart",)]
    assert [(c.type, c.grouping) for c in workbook["Funnel"]._charts] == [
        ("bar", "clustered"),
        ("col", "stacked"),
    ]
    # forecast band (stacked area) under the lines: revenue, forecast, target
    assert kinds("Revenue trend and forecast") == [("areaChart", "lineChart")]
    trend = workbook["Revenue trend and forecast"]._charts[0]
    area, lines = trend._charts
    assert area.grouping == "stacked"
    assert [s.tx.strRef.f.split("!")[1] for s in lines.series] == ["$B$5", "$C$5", "$F$5"]
    assert kinds("Products and sectors") == [("barChart",), ("pieChart",), ("barChart",)]
    assert kinds("Team performance") == []


def test_line_charts_show_empty_cells_as_gaps(tmp_path: Path) -> None:
    path = render(sales_document(), "xlsx", tmp_path / "r.xlsx")
    xml = chart_xml(path)
    assert len(xml) == 6
    [trend] = [x for x in xml if "<c:lineChart>" in x]
    # Excel (and XlsxWriter) leave out <c:dispBlanksAs> for Excel's default, gaps; "zero" or
    # "span" would be written out.
    assert "dispBlanksAs" not in trend
    # the cached points of "Revenue" skip the quarter without data (index 5): no point, no 0
    revenue = trend[trend.index("<c:lineChart>") :].split("</c:ser>")[0]
    assert "$B$5" in revenue
    assert '<c:ptCount val="60"/>' in revenue
    assert '<c:pt idx="4">' in revenue and '<c:pt idx="6">' in revenue
    assert '<c:pt idx="5">' not in revenue.split("<c:numCache>")[1]


def test_currency_format_follows_locale(tmp_path: Path) -> None:
    path = render(sales_document(locale="de_DE", currency="EUR"), "xlsx", tmp_path / "de.xlsx")
    sheet = openpyxl.load_workbook(path)["Team performance"]
    header = find(sheet, "Revenue")
    assert sheet.cell(header.row + 1, header.column).number_format == EUR_DE
    assert sheet.cell(header.row + 1, header.column).value == pytest.approx(48_000.5)


def test_nan_and_inf_never_reach_cells(tmp_path: Path) -> None:
    nan, inf = math.nan, math.inf
    doc = sales_document()
    doc.sections = [
        Section(
            "k", "KPIs", [KpiCards([Kpi("Win rate", "ratio", nan, previous=inf, growth=-inf)])]
        ),
        Section(
            "t", "Table", [Table("T", [Column("v", "Value", "money")], [{"v": nan}, {"v": inf}])]
        ),
        Section(
            "c", "Chart", [Chart("C", "line", ["a", "b", "c"], [Series("s", [1.0, nan, inf])])]
        ),
        Section("e", "Empty chart", [Chart("E", "bar", ["a"], [Series("s", [nan])])]),
    ]
    doc.metrics = {"x": nan, "y": inf}
    path = render(doc, "xlsx", tmp_path / "nan.xlsx")
    book = openpyxl.load_workbook(path)
    for sheet in book:
        for row in sheet.iter_rows():
            for cell in row:
                assert not (isinstance(cell.value, float) and not math.isfinite(cell.value))
    kpi = find(book["KPIs"], "Win rate")
    assert [kpi.offset(column=i).value for i in (1, 2, 5)] == ["n/a", "n/a", "n/a"]
    assert [c.value for c in book["Table"]["A"]][-2:] == ["n/a", "n/a"]
    chart_rows = rows_of(book["Chart"])
    assert ["b", None] in [r[:2] for r in chart_rows]
    assert ["No data for this chart."] in [
        [v for v in r if v] for r in rows_of(book["Empty chart"])
    ]
    assert [len(book[s]._charts) for s in ("Chart", "Empty chart")] == [1, 0]


def test_empty_report(tmp_path: Path) -> None:
    book = openpyxl.load_workbook(render(empty_document(), "xlsx", tmp_path / "e.xlsx"))
    assert book.sheetnames == ["Summary", "Headline KPIs", "Revenue", "Operations", "Data quality"]
    assert book["Operations"]["A3"].value == "Omitted: no data for this section."
    assert book["Revenue"]["A3"].value == "Omitted: no closed opportunities in the period"


@pytest.mark.parametrize(
    ("titles", "expected"),
    [
        (["Revenue: Q4/2017 [draft]?"], ["Revenue Q4 2017 draft"]),
        (["A" * 40], ["A" * 31]),
        (["Team", "team", "TEAM"], ["Team", "team (2)", "TEAM (3)"]),
        (["B" * 31, "B" * 31], ["B" * 31, "B" * 27 + " (2)"]),
        (["History"], ["History (section)"]),
        (["'quoted'"], ["quoted"]),
        (["***"], ["Section"]),
        (["summary"], ["summary (2)"]),
    ],
)
def test_sheet_names_follow_excel_rules(titles: list[str], expected: list[str]) -> None:
    assert sheet_names(titles, taken=("Summary",)) == expected
