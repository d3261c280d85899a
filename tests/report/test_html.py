"""The HTML page: self-contained, escaped, and drawn by plotly offline in headless Chromium."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest

from opscope.report.document import Chart, Column, Kpi, KpiCards, Section, Series, Table
from opscope.report.render import render
from opscope.report.render.figures import figure
from opscope.report.render.html import render_html
from opscope.report.render.locales import NumberStyle
from tests.report.conftest import Browser
from tests.report.sample import empty_document, sales_document

ISLAND = re.compile(r'<script type="application/json" data-chart="([^"]+)">(.*?)</script>', re.S)


def page_without_plotly(html: str) -> str:
    """The page with the inlined plotly.js bundle cut out (it contains words like NaN)."""
    start = html.index("<script>/**\n* plotly.js")
    end = html.index("</script>", start)
    return html[:start] + html[end:]


def test_plotly_is_inlined_once_and_nothing_is_fetched() -> None:
    html = render_html(sales_document())
    assert html.count("* plotly.js v") == 1
    rest = page_without_plotly(html)
    assert re.search(r"""(src|href)=["']?(https?:)?//""", rest) is None
    assert "<link" not in rest


def test_text_is_escaped_and_chart_data_cannot_close_its_script() -> None:
    doc = sales_document()
    evil = "</script><script>alert(1)</script>"
    doc.title = f"Q4 <b>{evil}"
    doc.sections[0].blocks.append(
        Table("T", [Column("name", "Name <i>")], [{"name": evil}, {"name": "Ørjan & Zoë"}])
    )
    doc.sections[1].blocks[0].categories[0] = evil
    html = page_without_plotly(render_html(doc))
    assert "alert(1)</script>" not in html.replace("&lt;/script&gt;", "")
    assert "<title>Q4 &lt;b&gt;&lt;/script&gt;" in html
    assert "<th>Name &lt;i&gt;</th>" in html
    assert "Ørjan &amp; Zoë" in html
    islands = ISLAND.findall(html)
    assert len(islands) == 6  # every chart of the sample has data
    for _, text in islands:
        assert "</" not in text
    funnel = json.loads(islands[0][1])
    assert funnel["data"][0]["y"][0] == evil  # the JSON island still carries the real text


def test_figures_are_valid_plotly() -> None:
    go = pytest.importorskip("plotly.graph_objects")
    style = NumberStyle("de_DE", "EUR")
    for section in sales_document().sections:
        for block in section.blocks:
            if isinstance(block, Chart):
                spec = figure(block, style)
                assert spec is not None
                go.Figure(spec)  # plotly's validator raises on any unknown property or value


def test_forecast_figure_has_band_gap_and_target() -> None:
    doc = sales_document()
    chart = doc.sections[2].blocks[0]
    spec = figure(chart, NumberStyle("de_DE", "EUR"))
    assert spec is not None
    names = [t["name"] for t in spec["data"]]
    assert names == ["Revenue", "Forecast lower", "Forecast interval", "Forecast", "Target"]
    revenue, lower, upper, forecast, target = spec["data"]
    assert revenue["y"][5] is None and revenue["connectgaps"] is False
    assert upper["fill"] == "tonexty" and lower.get("fill") is None
    assert upper["y"][56] - lower["y"][56] == pytest.approx(18_000)
    assert forecast["line"]["dash"] == "dash"
    assert target["y"] == [180_000.0] * 60
    assert spec["layout"]["separators"] == ",."  # decimal comma, group dot
    assert spec["layout"]["yaxis"]["ticksuffix"] == "\xa0€"


def test_kpis_notes_omitted_sections_and_partial_flag() -> None:
    html = page_without_plotly(render_html(sales_document(locale="de_DE", currency="EUR")))
    assert '<div class="value">1.234.567,50\xa0€</div>' in html
    assert '<div class="value">63,2\xa0%</div>' in html
    assert '<div class="value">12,3 d</div>' in html
    assert "<dt>Change</dt><dd>+12,2\xa0%</dd>" in html
    assert '<p class="omitted">Omitted: no NPS responses in the source</p>' in html
    assert 'data-partial="true"' in html
    assert "<li>product &#39;GTXPro&#39; renamed to &#39;GTX Pro&#39; (1,480 rows).</li>" in html
    assert '<td class="num">31</td><td class="">Zoë Müller-Lüdenscheidt</td>' in html
    assert '<td class="num">212.100,50\xa0€</td>' in html


def nan_document() -> Any:
    nan, inf = math.nan, math.inf
    doc = sales_document()
    doc.sections = [
        Section("k", "KPIs", [KpiCards([Kpi("Win rate", "ratio", nan, previous=inf, growth=nan)])]),
        Section("t", "T", [Table("T", [Column("v", "Value", "money")], [{"v": nan}, {"v": -inf}])]),
        Section("c", "C", [Chart("C", "line", ["a", "b", "c"], [Series("s", [1.0, nan, inf])])]),
        Section("g", "G", [Chart("G", "gauge", ["x"], [Series("s", [nan])], target=inf)]),
    ]
    doc.metrics = {"x": nan}
    return doc


def test_nan_and_inf_never_reach_the_page() -> None:
    html = page_without_plotly(render_html(nan_document()))
    assert re.search(r"\bNaN\b|Infinity|\binf\b|\bnan\b", html) is None
    [(_, island)] = ISLAND.findall(html)
    assert json.loads(island)["data"][0]["y"] == [1.0, None, None]
    assert html.count('<div class="chart-empty">No data for this chart.</div>') == 1


@pytest.mark.browser
def test_offline_page_draws_every_chart(tmp_path: Path, offline_browser: Browser) -> None:
    path = render(sales_document(), "html", tmp_path / "report.html")
    page = offline_browser.open(path.as_uri())
    page.wait_for_function("document.body.dataset.chartsRendered === '6'", timeout=30_000)
    # plotly drew an SVG per chart: the funnel's stages, the line chart's band, the pie slices
    assert page.locator(".chart-plot .main-svg").count() >= 6
    trend = page.locator("figure.chart", has_text="Revenue by quarter")
    assert trend.locator("path.js-fill").count() >= 1  # the shaded interval
    assert trend.locator(".xtick text").count() > 0
    assert (
        page.locator("figure.chart", has_text="Revenue share by sector")
        .locator("path.surface")
        .count()
        == 4
    )
    assert page.evaluate("document.getElementById('chart-3').data[0].y[5]") is None
    visible = page.inner_text("main")
    assert "Omitted: no NPS responses in the source" in visible
    assert "Partial period:" in visible
    assert "NaN" not in visible
    assert offline_browser.requests == []
    assert offline_browser.errors == []


@pytest.mark.browser
def test_empty_and_nan_pages_load_without_errors(tmp_path: Path, offline_browser: Browser) -> None:
    for name, doc, charts in (("empty", empty_document(), "0"), ("nan", nan_document(), "1")):
        path = render(doc, "html", tmp_path / f"{name}.html")
        page = offline_browser.open(path.as_uri())
        page.wait_for_function(f"document.body.dataset.chartsRendered === '{charts}'")
        assert "NaN" not in page.inner_text("main")
    assert offline_browser.errors == []
    assert offline_browser.requests == []
