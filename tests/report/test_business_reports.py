"""Automation impact, competitive analysis and the executive summary from small hand-written
CSV inputs, with hand-computed expected numbers; absent data omitted with a note."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from opscope.config.reports import MappingConfig, ReportConfig, SourceConfig
from opscope.report.building import ReportRequest, build_report
from opscope.report.document import Chart
from opscope.report.periods import parse_period
from opscope.report.sources import Dataset, load_source

NOW = datetime(2026, 1, 15, tzinfo=UTC)

DEALS = """id,owner,product,stage,created,closed,amount
1,Ann,Widget,Won,2017-09-01,2017-10-10,1000
2,Ann,Widget,Lost,2017-09-05,2017-11-01,0
3,Bo,Gadget,Won,2017-10-01,2017-12-01,"$3,000"
4,Bo,Gadget,Engaging,2017-11-01,,
5,Ann,Widget,Won,2017-06-01,2017-08-15,500
"""
AUTOMATIONS = """process,period,runs,minutes_saved_per_run,hourly_cost,running_cost
Invoice matching,2017-10,300,10,40,500
Invoice matching,2017-11,330,10,40,500
Lead routing,2017-Q4,1200,2,30,0
Lead routing,2017-Q3,1000,2,30,0
"""
COMPETITORS = """competitor,product,price,features
us,CRM,100,import;reports;api
Rival,CRM,80,import;reports;api;mobile
Other,CRM,120,import;mobile
"""
NPS = """date,score
2017-10-02,10
2017-10-03,9
2017-11-04,8
2017-11-05,3
2017-12-06,10
"""


def source(tmp_path: Path, **extra: str) -> Dataset:
    (tmp_path / "deals.csv").write_text(DEALS)
    tables: dict[str, object] = {
        "deals": {
            "file": "deals.csv",
            "columns": {"created_date": "created", "close_date": "closed"},
            "won_stages": ["Won"],
            "lost_stages": ["Lost"],
            "stage_order": ["Engaging", "Won"],
        },
    }
    for name, text in extra.items():
        (tmp_path / f"{name}.csv").write_text(text)
        tables[name] = {"file": f"{name}.csv"}
    return load_source(SourceConfig(path=tmp_path, mapping=MappingConfig.model_validate(tables)))


def run(data: Dataset, name: str, period: str = "2017-Q4", **settings: object) -> object:
    request = ReportRequest(
        parse_period(period, now=NOW), "UTC", NOW, ReportConfig.model_validate(settings)
    )
    return build_report(name, data, request)


def test_automation_impact_by_hand(tmp_path: Path) -> None:
    doc = run(source(tmp_path, automations=AUTOMATIONS), "automation_impact")
    m = doc.metrics  # type: ignore[attr-defined]
    # Invoice matching, Q4: 630 runs × 10 min = 105 h × 40 = 4,200 saved; cost 1,000;
    # ROI (4,200 − 1,000) / 1,000 = 3.2. Lead routing, Q4: 1,200 × 2 min = 40 h × 30 = 1,200
    # saved at no running cost: ROI n/a.
    assert m["automation.Invoice matching.hours_saved"] == pytest.approx(105)
    assert m["automation.Invoice matching.savings"] == pytest.approx(4200)
    assert m["automation.Invoice matching.roi"] == pytest.approx(3.2)
    assert m["automation.Lead routing.roi"] is None
    assert m["automation.hours_saved"] == pytest.approx(145)
    assert m["automation.savings"] == pytest.approx(5400)
    assert m["automation.roi"] == pytest.approx((5400 - 1000) / 1000)


def test_competitive_analysis_by_hand(tmp_path: Path) -> None:
    doc = run(source(tmp_path, competitors=COMPETITORS), "competitive_analysis")
    m = doc.metrics  # type: ignore[attr-defined]
    assert m["price.CRM.competitor_mean"] == pytest.approx(100)  # (80 + 120) / 2
    assert m["price.CRM.index"] == pytest.approx(1.0)
    assert m["price.CRM.rank"] == 2  # Rival is cheaper
    assert (m["features.us.count"], m["features.Rival.count"]) == (3, 4)
    threats = next(s for s in doc.sections if s.id == "threats").blocks[0].lines  # type: ignore[attr-defined]
    # Rival is 20 % cheaper with 4 features against 3; "mobile" is offered by 2 of 2 rivals.
    assert any(t.startswith("[cheaper_with_features] Rival") and "20%" in t for t in threats)
    assert any(t.startswith("[missing_feature] 2 of 2 competitors offer 'mobile'") for t in threats)
    assert m["threats.count"] == 2


def test_executive_summary_kpis_nps_and_dashboard(tmp_path: Path) -> None:
    data = source(tmp_path, nps_responses=NPS, automations=AUTOMATIONS)
    doc = run(data, "executive_summary", targets={"revenue.won": 5000})
    m = doc.metrics  # type: ignore[attr-defined]
    # Q4 won: deal 1 (1,000) and 3 (3,000); Q3 won: deal 5 (500).
    assert (m["revenue.won"], m["revenue.won.previous"]) == (4000, 500)
    assert m["revenue.won.growth"] == pytest.approx(7.0)
    assert m["revenue.won.target"] == 5000
    kpis = next(s for s in doc.sections if s.id == "kpis").blocks[0].kpis  # type: ignore[attr-defined]
    revenue = next(k for k in kpis if k.name == "Revenue")
    assert (revenue.status, revenue.trend) == ("off_track", "up")  # 4,000 < 90 % of 5,000
    # NPS Q4: promoters 3 (10, 9, 10), detractors 1 (3) of 5 → (3 − 1) / 5 = 40.
    assert m["nps"] == pytest.approx(40)
    dashboard = next(s for s in doc.sections if s.id == "dashboard").blocks
    assert [b.title for b in dashboard] == ["Revenue trend", "Funnel", "Automation ROI", "NPS"]  # type: ignore[union-attr]
    gauge = dashboard[3]
    assert isinstance(gauge, Chart) and gauge.kind == "gauge" and gauge.series[0].values == [40.0]


def test_absent_data_is_omitted_with_a_note_and_zero_denominators_are_na(tmp_path: Path) -> None:
    data = source(tmp_path)
    doc = run(data, "executive_summary", period="2016-Q1")
    omitted = {s.id: s.omitted for s in doc.sections if s.omitted}  # type: ignore[attr-defined]
    assert omitted["nps"] == "no nps_responses table in the source"
    assert omitted["automation"] == "no automations table in the source"
    sales = run(data, "sales_performance", period="2016-Q1")
    m = sales.metrics  # type: ignore[attr-defined]
    assert (m["win_rate"], m["deal_size.average"], m["sales_cycle.mean_days"]) == (None, None, None)
    assert "nan" not in str(sales.to_dict()).lower()  # type: ignore[attr-defined]
    assert any("no deals closed in 2016-Q1" in line for line in sales.data_quality)  # type: ignore[attr-defined]
    assert (
        run(data, "automation_impact").sections[0].omitted == "no automations table in the source"
    )  # type: ignore[attr-defined]


def test_misspelt_stages_are_data_quality_warnings(tmp_path: Path) -> None:
    data = source(tmp_path)
    # Created in 2017-Q4: deal 3 (won) and deal 4 (open, Engaging), which a misspelt stage
    # order would leave out of the funnel without a word.
    doc = run(data, "sales_performance", stages=["Engagin", "Won"])
    quality = doc.data_quality  # type: ignore[attr-defined]
    assert (
        "stage order: no deal is in stage(s) 'Engagin' (stages in the data: Engaging, Lost, Won)"
        in quality
    )
    assert (
        "funnel: 1 open deal(s) created in the period are in stages not in the stage order "
        "('Engaging': 1): left out of the funnel"
    ) in quality
    assert doc.metrics["funnel.Engagin.reached"] == 1  # type: ignore[attr-defined]
    doc = run(data, "executive_summary", stage_probabilities={"Engagng": 0.5})
    assert any(
        line.startswith("stage_probabilities: no deal is in stage(s) 'Engagng'")
        for line in doc.data_quality  # type: ignore[attr-defined]
    )
    # spelt right: no warning
    doc = run(data, "sales_performance", stages=["Engaging", "Won"])
    assert not any("stage" in line for line in doc.data_quality)  # type: ignore[attr-defined]


def test_a_rule_threshold_benchmark_is_compared_with_its_metric(tmp_path: Path) -> None:
    # Open at the end of 2017-Q3: deal 1 (won later, 1,000) and deal 2 (lost later, no list
    # price: 0); won in 2017-Q3: deal 5 (500). Coverage = 1,000 / 500 = 2.
    doc = run(
        source(tmp_path), "sales_performance", period="2017-Q3", benchmarks={"pipeline_coverage": 3}
    )
    bench = next(s for s in doc.sections if s.id == "benchmarks").blocks[0]  # type: ignore[attr-defined]
    assert bench.rows == [
        {
            "metric": "pipeline_coverage",
            "value": 2.0,
            "benchmark": 3.0,
            "difference": -1.0,
            "kind": "number",
        }
    ]


def test_automation_impact_is_compared_with_the_previous_period(tmp_path: Path) -> None:
    doc = run(source(tmp_path, automations=AUTOMATIONS), "automation_impact")
    m = doc.metrics  # type: ignore[attr-defined]
    # 2017-Q3: Lead routing only, 1,000 runs × 2 min = 33.3 h × 30 = 1,000 saved, no running
    # cost; 2016-Q4 has no rows: n/a, not 0.
    assert m["automation.hours_saved.previous"] == pytest.approx(1000 * 2 / 60)
    assert m["automation.savings.previous"] == pytest.approx(1000)
    assert m["automation.cost.previous"] == 0
    assert m["automation.savings.last_year"] is None
    kpis = doc.sections[0].blocks[0].kpis  # type: ignore[attr-defined]
    saved = next(k for k in kpis if k.name == "Cost saved")
    assert (saved.current, saved.same_period_last_year) == (5400, None)
    assert saved.previous == pytest.approx(1000)
    assert saved.growth == pytest.approx((5400 - 1000) / 1000)
    assert saved.trend == "up"


def test_nps_answers_outside_the_scale_are_reported(tmp_path: Path) -> None:
    answers = NPS + "2017-12-30,11\n2017-12-31,\n"
    doc = run(source(tmp_path, nps_responses=answers), "executive_summary")
    # the five answers on the scale: (3 promoters − 1 detractor) / 5
    assert doc.metrics["nps"] == pytest.approx(40)  # type: ignore[attr-defined]
    assert doc.metrics["nps.responses"] == 5  # type: ignore[attr-defined]
    quality = doc.data_quality  # type: ignore[attr-defined]
    assert "nps_responses: 1 response(s) outside 0–10 dropped (score 11)" in quality
    assert "nps_responses: 1 response(s) without a score dropped" in quality


def test_the_data_quality_lines_are_shown_once(tmp_path: Path) -> None:
    import openpyxl
    from pptx import Presentation

    from opscope.report.render import render

    # 2016 is both the previous period and the same period last year of 2017: its note once.
    doc = run(source(tmp_path), "sales_performance", period="2017")
    line = "no closed deals in the data for 2016: comparisons with it are n/a"
    assert doc.data_quality.count(line) == 1  # type: ignore[attr-defined]
    html = render(doc, "html", tmp_path / "r.html").read_text()  # type: ignore[arg-type]
    assert html.count(line) == 1 and html.count("<h2>Data quality</h2>") == 1
    book = openpyxl.load_workbook(render(doc, "xlsx", tmp_path / "r.xlsx"))  # type: ignore[arg-type]
    assert [n for n in book.sheetnames if n.startswith("Data quality")] == ["Data quality"]
    deck = Presentation(str(render(doc, "pptx", tmp_path / "r.pptx")))  # type: ignore[arg-type]
    texts = [
        shape.text_frame.text
        for slide in deck.slides
        for shape in slide.shapes
        if shape.has_text_frame
    ]
    assert sum(t.count(line) for t in texts) == 1


def test_reps_without_deals_come_last_in_the_leaderboard(tmp_path: Path) -> None:
    data = source(tmp_path, owners="owner,team\nAnn,T\nBo,T\nCy,T\nDee,T\n")
    data.con.execute(
        "INSERT INTO deals (id, owner, product, stage, status, created_date, close_date, amount) "
        "VALUES ('6', 'Cy', 'Widget', 'Won', 'won', DATE '2017-10-01', DATE '2017-10-20', -200)"
    )
    doc = run(data, "sales_performance")
    board = next(s for s in doc.sections if s.id == "leaderboard").blocks[0]  # type: ignore[attr-defined]
    # 2017-Q4 revenue: Bo 3,000, Ann 1,000 (and a lost deal), Cy -200; Dee closed nothing.
    assert [(r["owner"], r["revenue"], r["rank"]) for r in board.rows] == [
        ("Bo", 3000, 1),
        ("Ann", 1000, 2),
        ("Cy", -200, 3),
        ("Dee", 0, None),
    ]


def test_own_rows_spelt_differently_are_one_company(tmp_path: Path) -> None:
    rows = COMPETITORS + "Us,Helpdesk,50,tickets\nRival,Helpdesk,,tickets;chat\n"
    doc = run(source(tmp_path, competitors=rows), "competitive_analysis")
    matrix = next(s for s in doc.sections if s.id == "features").blocks[0]  # type: ignore[attr-defined]
    # one column per company: us (import, reports, api, tickets), Other, Rival
    assert [c.title for c in matrix.columns] == ["Feature", "us", "Other", "Rival"]
    assert doc.metrics["features.us.count"] == 4  # type: ignore[attr-defined]
    assert doc.metrics["price.Helpdesk.ours"] == 50  # type: ignore[attr-defined]
    assert doc.metrics["price.Helpdesk.competitor_mean"] is None  # type: ignore[attr-defined]
    assert (
        "competitors: 1 row(s) without a price (Rival/Helpdesk): left out of the price comparison"
        in doc.data_quality  # type: ignore[attr-defined]
    )
