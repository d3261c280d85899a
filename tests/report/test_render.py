"""The one entry point: every format, JSON exactly the document, files complete or absent."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from opscope.errors import RenderError
from opscope.report.document import Chart, Kpi, KpiCards, Section, Series
from opscope.report.render import FORMATS, render
from tests.conftest import require_tool
from tests.report.sample import empty_document, sales_document

MAGIC = {"html": b"<!DOCTYPE html>", "pdf": b"%PDF-", "xlsx": b"PK", "pptx": b"PK", "json": b"{"}


def strict_json(text: str) -> object:
    def refuse(name: str) -> object:
        raise AssertionError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def test_formats() -> None:
    assert FORMATS == ("html", "pdf", "xlsx", "pptx", "json")


def test_json_is_the_document(tmp_path: Path) -> None:
    doc = sales_document()
    data = strict_json(render(doc, "json", tmp_path / "r.json").read_text(encoding="utf-8"))
    assert data == doc.to_dict()
    assert data["sections"][3]["blocks"][0]["rows"][30]["agent"] == "Zoë Müller-Lüdenscheidt"  # type: ignore[index]


def test_json_turns_nan_and_inf_into_null(tmp_path: Path) -> None:
    doc = empty_document()
    doc.sections = [
        Section("k", "K", [KpiCards([Kpi("Win rate", "ratio", math.nan, growth=math.inf)])]),
        Section("c", "C", [Chart("C", "line", ["a", "b"], [Series("s", [1.0, -math.inf])])]),
    ]
    doc.metrics = {"win_rate": math.nan}
    data = strict_json((render(doc, "json", tmp_path / "r.json")).read_text())
    assert data["metrics"] == {"win_rate": None}  # type: ignore[index]
    kpi = data["sections"][0]["blocks"][0]["kpis"][0]  # type: ignore[index]
    assert (kpi["current"], kpi["growth"]) == (None, None)
    assert data["sections"][1]["blocks"][0]["series"][0]["values"] == [1.0, None]  # type: ignore[index]


@pytest.mark.parametrize("fmt", FORMATS)
def test_empty_report_renders_in_every_format(fmt: str, tmp_path: Path) -> None:
    if fmt == "pdf":
        require_tool("chromium")
    path = render(empty_document(), fmt, tmp_path / "new" / "dir" / f"empty.{fmt}")
    assert path.read_bytes().startswith(MAGIC[fmt])
    assert os.listdir(path.parent) == [path.name]  # no temporary file left behind


def test_unknown_format_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(
        RenderError, match="unknown report format 'docx'; expected one of html, pdf"
    ):
        render(sales_document(), "docx", tmp_path / "r.docx")
    assert os.listdir(tmp_path) == []


def test_unknown_locale_keeps_the_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "r.xlsx"
    target.write_bytes(b"previous")
    with pytest.raises(RenderError, match="unknown locale"):
        render(sales_document(locale="klingon"), "xlsx", target)
    assert target.read_bytes() == b"previous"
    assert os.listdir(tmp_path) == ["r.xlsx"]


def test_unwritable_directory_is_a_render_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(RenderError, match="cannot write"):
        render(sales_document(), "json", blocker / "r.json")


def test_growth_from_zero_reads_new_in_every_drawn_format(tmp_path: Path) -> None:
    import openpyxl
    from pptx import Presentation

    from opscope.report.building import kpi

    # 3 deals this period, 0 before: growth has no value, the change reads "new"
    card = kpi("Won deals", "count", 3, previous=0, last_year=None, target=None)
    assert (card.growth, card.trend) == (None, "new")
    doc = empty_document()
    doc.sections = [Section("kpis", "Headline KPIs", [KpiCards([card])])]
    html = render(doc, "html", tmp_path / "r.html").read_text()
    assert "<dt>Change</dt><dd>new</dd>" in html
    sheet = openpyxl.load_workbook(render(doc, "xlsx", tmp_path / "r.xlsx"))["Headline KPIs"]
    rows = [[c.value for c in row] for row in sheet.iter_rows()]
    header = next(r for r in rows if r[0] == "KPI")
    values = next(r for r in rows if r[0] == "Won deals")
    assert values[header.index("Change")] == "new"
    deck = Presentation(str(render(doc, "pptx", tmp_path / "r.pptx")))
    texts = [s.text_frame.text for sl in deck.slides for s in sl.shapes if s.has_text_frame]
    assert any("Previous 0 (new)" in t for t in texts)
