"""Acceptance on the real CRM dataset (mapping maven_crm): figures computed independently here
with the csv module, or hand-verified."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest

from opscope.config.reports import SourceConfig
from opscope.report.building import ReportRequest
from opscope.report.periods import parse_period
from opscope.report.sales import sales_performance
from opscope.report.sources import Dataset, load_source
from tests.report.conftest import NOW


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def crm(crm_dir: Path) -> Dataset:
    return load_source(SourceConfig(path=crm_dir, mapping="maven_crm"), timezone="UTC")


def sales(data: Dataset, period: str) -> Any:
    return sales_performance(data, ReportRequest(parse_period(period, now=NOW), "UTC", NOW))


def test_won_revenue_win_rate_and_average_deal(crm: Dataset, crm_dir: Path) -> None:
    deals = rows(crm_dir / "sales_pipeline.csv")
    won = [d for d in deals if d["deal_stage"] == "Won"]
    lost = [d for d in deals if d["deal_stage"] == "Lost"]
    revenue = sum(int(d["close_value"]) for d in won)
    assert (revenue, len(won), len(lost)) == (10_005_534, 4_238, 2_473)
    # Every closed deal closed in 2017, so the year 2017 holds them all.
    assert {d["close_date"][:4] for d in won + lost} == {"2017"}
    doc = sales(crm, "2017")
    m = doc.metrics
    assert m["revenue.won"] == revenue
    assert (m["deals.won"], m["deals.lost"]) == (4_238, 2_473)
    assert m["win_rate"] == pytest.approx(0.6315, abs=5e-5)
    assert m["win_rate"] == pytest.approx(4_238 / 6_711)
    assert m["deal_size.average"] == pytest.approx(2_360.91, abs=0.005)


def test_gtxpro_deals_are_matched_to_gtx_pro_with_a_warning(crm: Dataset, crm_dir: Path) -> None:
    spelled = [d for d in rows(crm_dir / "sales_pipeline.csv") if d["product"] == "GTXPro"]
    assert len(spelled) == 1_480
    assert "GTXPro" not in {p["product"] for p in rows(crm_dir / "products.csv")}
    count = crm.con.execute("SELECT count(*) FROM deals WHERE product = 'GTX Pro'").fetchone()
    assert count == (1_480,)
    assert crm.con.execute("SELECT count(*) FROM deals").fetchone() == (8_800,)
    doc = sales(crm, "2017")
    assert any(
        "1,480" in line and "'GTXPro'" in line and "'GTX Pro'" in line for line in doc.data_quality
    )


def test_the_misspelt_sector_is_flagged_and_kept(crm: Dataset, crm_dir: Path) -> None:
    sectors = {a["sector"] for a in rows(crm_dir / "accounts.csv")}
    assert "technolgy" in sectors and "technology" not in sectors
    doc = sales(crm, "2017")
    flagged = [line for line in doc.data_quality if "'technolgy'" in line]
    assert len(flagged) == 1 and "'Technology'" in flagged[0] and "kept as found" in flagged[0]
    # No other sector of the file is reported as a misspelling.
    assert [line for line in doc.data_quality if "misspelling of the industry" in line] == flagged
    kept = crm.con.execute("SELECT count(*) FROM accounts WHERE segment = 'technolgy'").fetchone()
    assert kept == (sum(1 for a in rows(crm_dir / "accounts.csv") if a["sector"] == "technolgy"),)


def test_agents_without_deals_are_in_the_leaderboard(crm: Dataset, crm_dir: Path) -> None:
    agents = {t["sales_agent"] for t in rows(crm_dir / "sales_teams.csv")}
    with_deals = {d["sales_agent"] for d in rows(crm_dir / "sales_pipeline.csv")}
    idle = agents - with_deals
    assert len(idle) == 5
    doc = sales(crm, "2017")
    board = next(s for s in doc.sections if s.id == "leaderboard").blocks[0]
    listed = {r["owner"]: r for r in board.rows}
    assert set(listed) == agents
    for name in idle:
        assert listed[name]["win_rate"] is None and listed[name]["rank"] is None
        assert listed[name]["revenue"] == 0 and listed[name]["won"] == 0
    assert doc.metrics["reps.without_deals"] == 5
    # No NaN or Inf anywhere in what scripts read.
    text = str(doc.to_dict())
    assert "nan" not in text and "inf" not in text.replace("info", "")


def test_2017_q1_is_flagged_partial(crm: Dataset) -> None:
    doc = sales(crm, "2017-Q1")
    assert doc.period.partial is True
    assert doc.metrics["period.partial"] == 1
    assert any("2017-Q1 is partial" in line and "2017-03-01" in line for line in doc.data_quality)
    assert sales(crm, "2017-Q4").period.partial is False


def test_q4_figures_match_a_hand_count(crm: Dataset, crm_dir: Path) -> None:
    deals = rows(crm_dir / "sales_pipeline.csv")
    q4 = [
        d for d in deals if d["close_date"] >= "2017-10-01" and d["deal_stage"] in ("Won", "Lost")
    ]
    won = [d for d in q4 if d["deal_stage"] == "Won"]
    m = sales(crm, "2017-Q4").metrics
    assert m["deals.won"] == len(won)
    assert m["revenue.won"] == sum(int(d["close_value"]) for d in won)
    assert m["win_rate"] == pytest.approx(len(won) / len(q4))


def open_pipeline_by_hand(crm_dir: Path, end: str, *, now: bool) -> tuple[int, float]:
    """Deals open at the start of ``end`` from the CSV files: engaged before ``end`` and not
    closed by then, valued at close_value, else (open deals, and lost deals whose 0 is a
    close value) at the product's list price; deals without a date count only ``now``."""
    prices = {p["product"]: float(p["sales_price"]) for p in rows(crm_dir / "products.csv")}
    count, value = 0, 0.0
    for d in rows(crm_dir / "sales_pipeline.csv"):
        if not d["engage_date"]:
            if not now or d["deal_stage"] in ("Won", "Lost"):
                continue
        elif d["engage_date"] >= end:
            continue
        if d["deal_stage"] in ("Won", "Lost") and d["close_date"] < end:
            continue
        price = prices["GTX Pro" if d["product"] == "GTXPro" else d["product"]]
        count += 1
        value += float(d["close_value"]) if d["deal_stage"] == "Won" else price
    return count, value


def test_open_pipeline_at_past_period_ends(crm: Dataset, crm_dir: Path) -> None:
    # 2017-Q3: 2,409 deals (376 of them lost later, valued at list price, not at 0);
    # the 500 Prospecting deals without any date are not known to be open then.
    count, value = open_pipeline_by_hand(crm_dir, "2017-10-01", now=False)
    assert (count, value) == (2_409, 5_767_673)
    m = sales(crm, "2017-Q3").metrics
    assert (m["pipeline.open.count"], m["pipeline.open.value"]) == (count, value)
    # Long before the data: nothing was open.
    m = sales(crm, "2010-Q1").metrics
    assert (m["pipeline.open.count"], m["pipeline.open.value"]) == (0, 0)
    # 2017-Q4 holds the data's last date: the current pipeline, undated deals included.
    count, value = open_pipeline_by_hand(crm_dir, "2018-01-01", now=True)
    assert (count, value) == (1_589 + 500, 4_966_215)
    doc = sales(crm, "2017-Q4")
    assert (doc.metrics["pipeline.open.count"], doc.metrics["pipeline.open.value"]) == (
        count,
        value,
    )
    method = next(s for s in doc.sections if s.id == "pipeline").blocks[1]
    assert any("500 open deal(s) have no created or engaged date" in x for x in method.lines)
    # The executive summary compares 2017-Q4's pipeline with 2017-Q3's.
    from opscope.report.executive import executive_summary

    request = ReportRequest(parse_period("2017-Q4", now=NOW), "UTC", NOW)
    m = executive_summary(crm, request).metrics
    assert m["pipeline.open.value.previous"] == 5_767_673


def test_growth_against_a_partial_previous_period_is_flagged(crm: Dataset, crm_dir: Path) -> None:
    from opscope.report.executive import executive_summary

    won = [d for d in rows(crm_dir / "sales_pipeline.csv") if d["deal_stage"] == "Won"]
    q1 = [d for d in won if "2017-01-01" <= d["close_date"] < "2017-04-01"]
    q2 = [d for d in won if "2017-04-01" <= d["close_date"] < "2017-07-01"]
    # 2017-Q1 holds March only: the first close date of the data is 2017-03-01.
    assert min(d["close_date"] for d in won) == "2017-03-01"
    assert {d["close_date"][:7] for d in q1} == {"2017-03"}
    request = ReportRequest(parse_period("2017-Q2", now=NOW), "UTC", NOW)
    doc = executive_summary(crm, request)
    m = doc.metrics
    assert m["revenue.won"] == sum(int(d["close_value"]) for d in q2)
    assert m["revenue.won.previous"] == sum(int(d["close_value"]) for d in q1)
    assert (m["period.previous.partial"], m["period.last_year.partial"]) == (1, 0)
    card = doc.sections[0].blocks[0].kpis[0]
    assert card.name == "Revenue"
    assert card.note is not None and "previous period 2017-Q1 is partial" in card.note
    assert any(
        "previous period: 2017-Q1 is partial: the data covers 2017-03-01 … 2017-03-31" in line
        for line in doc.data_quality
    )
    # The same in the sales report; a complete previous period (2017-Q3 for 2017-Q4) is not.
    doc = sales(crm, "2017-Q2")
    assert doc.metrics["period.previous.partial"] == 1
    assert "2017-Q1 is partial" in (doc.sections[0].blocks[0].kpis[0].note or "")
    doc = sales(crm, "2017-Q4")
    assert doc.metrics["period.previous.partial"] == 0
    assert all(k.note is None for k in doc.sections[0].blocks[0].kpis)
