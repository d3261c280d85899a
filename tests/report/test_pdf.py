"""The PDF printed by headless Chromium, read back page by page with pypdf: table rows and
charts are never cut across pages."""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path

import pytest

from opscope.errors import RenderError
from opscope.report.render import render
from tests.conftest import require_tool
from tests.report.sample import empty_document, leaderboard, sales_document

pypdf = pytest.importorskip("pypdf")
pytestmark = pytest.mark.browser

A4 = (595.3, 841.9)  # points


def pages_text(path: Path) -> list[list[str]]:
    """Each page's text lines; ligatures (ﬃ) unfolded."""
    reader = pypdf.PdfReader(path)
    return [
        [line.strip() for line in unicodedata.normalize("NFKC", page.extract_text()).splitlines()]
        for page in reader.pages
    ]


def page_of(pages: list[list[str]], line: str) -> list[int]:
    """The pages (1-based) on which ``line`` is a whole line."""
    return [n for n, lines in enumerate(pages, start=1) if line in lines]


def pages_with(pages: list[list[str]], text: str) -> list[int]:
    return [n for n, lines in enumerate(pages, start=1) if any(text in x for x in lines)]


@pytest.fixture(scope="module")
def sales_pdf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_tool("chromium")
    out = tmp_path_factory.mktemp("pdf") / "sales.pdf"
    return render(sales_document(extra_charts=8, chart_points=24), "pdf", out)


def test_a4_pages(sales_pdf: Path) -> None:
    reader = pypdf.PdfReader(sales_pdf)
    box = reader.pages[0].mediabox
    assert (float(box.width), float(box.height)) == pytest.approx(A4, abs=1)
    # 6 KPI cards, 15 charts of about a third of a page each, 35 rows, notes: 8 to 12 pages
    assert 8 <= len(reader.pages) <= 12


def test_every_leaderboard_row_is_whole_on_one_page(sales_pdf: Path) -> None:
    pages = pages_text(sales_pdf)
    header = "# Sales agent Won deals Revenue Win rate Average deal size Sales cycle"
    row_pages = set()
    for row in leaderboard().rows:
        # the row as a reader sees it, formatted here with Python's own en_US formatting
        line = (
            f"{row['rank']} {row['agent']} {row['won']} ${row['revenue']:,.2f} "
            f"{row['win_rate']:.1%} ${row['deal_size']:,.2f} {row['cycle']:.1f} d"
        )
        found = page_of(pages, line)
        assert len(found) == 1, f"row {row['rank']} ({row['agent']}) found whole on {found}"
        row_pages.add(found[0])
    # the table crosses a page break (so the test sees one) and its header repeats there
    assert len(row_pages) >= 2
    assert set(page_of(pages, header)) == row_pages


def test_charts_are_whole_on_one_page(sales_pdf: Path) -> None:
    pages = pages_text(sales_pdf)
    # (title at the top of the chart's frame, text at its bottom: x-axis labels or the note)
    boxes = [
        ("Stage conversion", "4238"),  # the last stage's value (KPIs print 4,238)
        ("Deals by region and outcome", "Central"),
        ("Revenue by quarter", "2017-Q3"),
        ("Revenue by quarter", "Forecast with 80 % prediction interval."),
        ("Revenue by product", "MG Advanced"),
        ("Revenue share by sector", "retail technology medical software"),
        ("Quota attainment", "82.3%"),
    ] + [
        (f"Won deals per quarter, team {k}", f"Closed won deals of team {k}, by close date.")
        for k in range(1, 9)
    ]
    breaks = set()
    for title, bottom in boxes:
        [top_page] = page_of(pages, title)
        assert top_page in pages_with(pages, bottom), f"{title!r} is cut across pages"
        breaks.add(top_page)
    assert len(breaks) >= 4  # the charts spread over several pages: page breaks fell between them


def test_empty_report_prints(tmp_path: Path) -> None:
    require_tool("chromium")
    pages = pages_text(render(empty_document(), "pdf", tmp_path / "empty.pdf"))
    assert len(pages) == 1
    assert "Omitted: no closed opportunities in the period" in pages[0]
    assert "Omitted: no data for this section." in pages[0]


def test_missing_chromium_is_a_clear_error_and_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "report.pdf"
    target.write_bytes(b"%PDF- last week's report")
    monkeypatch.setenv("OPSCOPE_CHROMIUM", "no-such-chromium")
    with pytest.raises(
        RenderError, match="OPSCOPE_CHROMIUM='no-such-chromium' is not an executable"
    ):
        render(sales_document(), "pdf", target)
    monkeypatch.setenv("OPSCOPE_CHROMIUM", "false")  # runs and fails
    with pytest.raises(RenderError, match="Chromium exited with status 1 without a PDF"):
        render(sales_document(), "pdf", target)
    assert target.read_bytes() == b"%PDF- last week's report"
    assert os.listdir(tmp_path) == ["report.pdf"]


def test_a_table_caption_is_never_stranded_at_the_foot_of_a_page(tmp_path: Path) -> None:
    # Tables after notes of 1, 2, … 24 lines fall at every height of a page, so some caption
    # meets a page's foot; each must print on the page of its header and first row.
    require_tool("chromium")
    from opscope.report.document import Column, Notes, Period, ReportDocument, Section, Table

    blocks: list[Notes | Table] = []
    for n in range(1, 25):
        blocks.append(Notes(f"Filler {n}", [f"line {i} of {n}" for i in range(n)]))
        rows = [{"name": f"row {n}.{i}", "value": float(i)} for i in range(20)]
        columns = [Column("name", "Name"), Column("value", "Value", "number")]
        blocks.append(Table(f"Table {n}", columns, rows))
    doc = ReportDocument(
        report="sales_performance",
        title="Layout",
        period=Period("2017", "2017-01-01", "2018-01-01", "UTC"),
        generated_at="2018-01-01T00:00:00+00:00",
        sections=[Section("tables", "Tables", blocks)],  # type: ignore[arg-type]
    )
    pages = pages_text(render(doc, "pdf", tmp_path / "tables.pdf"))
    assert len(pages) >= 8  # enough page ends to meet captions at every height
    for n in range(1, 25):
        caption = page_of(pages, f"Table {n}")
        assert caption == pages_with(pages, f"row {n}.0")[:1], f"Table {n}"
