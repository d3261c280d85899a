"""Loading edge cases found by a new user: multi-table Excel and SQL sources, non-finite and
locale-formatted amounts, relative database URLs, CSV read errors, preset detection. Every
expected figure is worked out by hand from the rows written in the test."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import openpyxl

from opscope.config.reports import MappingConfig, SourceConfig
from opscope.report.sources import load_source

NOW = datetime(2026, 1, 15, tzinfo=UTC)

MAVEN_DEALS_HEADER = [
    "opportunity_id",
    "sales_agent",
    "product",
    "account",
    "deal_stage",
    "engage_date",
    "close_date",
    "close_value",
]
MAVEN_DEALS: list[list[Any]] = [
    ["A1", "Ann Lee", "GTX Pro", "Acme", "Won", "2017-01-02", "2017-02-01", 1200],
    ["A2", "Ann Lee", "GTX Pro", "Acme", "Lost", "2017-01-03", "2017-02-02", 0],
    ["A3", "Bo Chan", "MG Special", "Bolt", "Won", "2017-01-04", "2017-02-03", 55],
    ["A4", "Bo Chan", "MG Special", "Bolt", "Engaging", "2017-01-05", None, None],
]
# By hand: won revenue 1200 + 55.
MAVEN_WON = 1255.0
TEAMS_HEADER = ["sales_agent", "manager", "regional_office"]
TEAMS = [["Ann Lee", "Dustin Brinkmann", "Central"], ["Bo Chan", "Melvin Marxen", "West"]]


def _mapping(tables: dict[str, dict[str, str]]) -> MappingConfig:
    return MappingConfig.model_validate({"preset": "maven_crm", **tables})


def _write_xlsx(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(header)
    for row in rows:
        sheet.append(row)
    book.save(path)


def _won(data: object) -> float:
    con = data.con  # type: ignore[attr-defined]
    return float(con.execute("SELECT sum(amount) FROM deals WHERE status = 'won'").fetchall()[0][0])


def _teams(data: object) -> dict[str, str]:
    con = data.con  # type: ignore[attr-defined]
    return dict(con.execute("SELECT id, team FROM deals ORDER BY id").fetchall())


def test_an_excel_source_with_several_workbooks_loads_every_table(tmp_path: Path) -> None:
    _write_xlsx(tmp_path / "sales_pipeline.xlsx", MAVEN_DEALS_HEADER, MAVEN_DEALS)
    _write_xlsx(tmp_path / "sales_teams.xlsx", TEAMS_HEADER, TEAMS)
    mapping = _mapping(
        {"deals": {"file": "sales_pipeline.xlsx"}, "owners": {"file": "sales_teams.xlsx"}}
    )
    data = load_source(SourceConfig(path=tmp_path, mapping=mapping))
    assert "owners" in data.tables
    assert _won(data) == MAVEN_WON
    teams = _teams(data)
    assert teams["A1"] == "Dustin Brinkmann" and teams["A3"] == "Melvin Marxen"


def test_a_sqlite_source_with_several_tables_loads_every_table(tmp_path: Path) -> None:
    db = tmp_path / "crm.sqlite"
    with sqlite3.connect(db) as lite:
        lite.execute(f"CREATE TABLE sales_pipeline ({', '.join(MAVEN_DEALS_HEADER)})")
        lite.executemany("INSERT INTO sales_pipeline VALUES (?, ?, ?, ?, ?, ?, ?, ?)", MAVEN_DEALS)
        lite.execute(f"CREATE TABLE sales_teams ({', '.join(TEAMS_HEADER)})")
        lite.executemany("INSERT INTO sales_teams VALUES (?, ?, ?)", TEAMS)
    mapping = _mapping({"deals": {"table": "sales_pipeline"}, "owners": {"table": "sales_teams"}})
    data = load_source(SourceConfig(url=f"sqlite:///{db}", mapping=mapping))
    assert "owners" in data.tables
    assert _won(data) == MAVEN_WON
    assert _teams(data)["A3"] == "Melvin Marxen"
