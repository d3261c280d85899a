"""Loading real export shapes: currency strings, date formats, renaming, name matching, file
kinds (CSV, Parquet, Excel), SQL databases and DuckDB files, timezones."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import openpyxl
import pytest

from opscope.config.reports import MappingConfig, SourceConfig
from opscope.errors import SourceError
from opscope.report.building import ReportRequest
from opscope.report.periods import parse_period
from opscope.report.sales import sales_performance
from opscope.report.sources import load_source

NOW = datetime(2026, 1, 15, tzinfo=UTC)

HUBSPOT_HEADER = [
    "Record ID",
    "Deal Name",
    "Deal Stage",
    "Amount",
    "Deal owner",
    "Close Date",
    "Create Date",
    "Pipeline",
]
HUBSPOT_ROWS = [
    [
        "101",
        "Acme renewal",
        "closedwon",
        "$1,200.50",
        "Ann Lee",
        "12/05/2017",
        "10/01/2017",
        "Sales",
    ],
    ["102", "Bolt upsell", "closedwon", "£9000", "ann lee", "12/20/2017", "11/02/2017", "Sales"],
    ["103", "Crane", "closedlost", "$0", "Bo Chan", "12/21/2017", "11/15/2017", "Sales"],
    ["104", "Dyno", "Contract Sent", "$2,000", "Bo Chan", "", "11/20/2017", "Sales"],
    ["105", "Echo", "closedwon", "about 5k", "Bo Chan", "12/28/2017", "12/01/2017", "Sales"],
    ["", "No id", "closedwon", "$10", "Bo Chan", "12/28/2017", "12/01/2017", "Sales"],
]
# By hand: won 101 (1200.50), 102 (9000), 105 (amount unreadable); lost 103; open 104.
WON_REVENUE = 1200.50 + 9000
HUBSPOT_MAPPING = MappingConfig.model_validate(
    {
        "preset": "hubspot_deals",
        "deals": {
            "date_format": "%m/%d/%Y",
            "rename": {"stage": {"closedwon": "Closed Won", "closedlost": "Closed Lost"}},
        },
    }
)


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    import csv

    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def q4(data: object) -> dict[str, object]:
    period = parse_period("2017-Q4", now=NOW)
    return sales_performance(data, ReportRequest(period, "UTC", NOW)).metrics  # type: ignore[arg-type]


def test_a_hubspot_export_with_currency_strings_dates_and_renamed_stages(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "hubspot-crm-exports-all-deals.csv", HUBSPOT_HEADER, HUBSPOT_ROWS)
    data = load_source(SourceConfig(path=path, mapping=HUBSPOT_MAPPING))
    m = q4(data)
    assert m["revenue.won"] == pytest.approx(WON_REVENUE)
    assert (m["deals.won"], m["deals.lost"]) == (3, 1)
    assert m["win_rate"] == pytest.approx(3 / 4)
    # The average is over won deals with an amount: (1200.50 + 9000) / 2.
    assert m["deal_size.average"] == pytest.approx(WON_REVENUE / 2)
    assert m["pipeline.open.count"] == 1 and m["pipeline.open.value"] == 2000
    # HubSpot's default probability of "Contract Sent" is 90 %.
    assert m["pipeline.weighted"] == pytest.approx(1800)
    quality = "\n".join(data.quality)
    assert "1 row(s) without an id dropped" in quality
    assert "deals.amount: 1 value(s) are not numbers (e.g. 'about 5k')" in quality
    assert "spell 'ann lee', unified with 'Ann Lee'" in quality
    assert "won deal(s) without an amount" in quality


def test_parquet_and_excel_files_read_like_csv(tmp_path: Path) -> None:
    csv_path = write_csv(tmp_path / "deals.csv", HUBSPOT_HEADER, HUBSPOT_ROWS)
    parquet = tmp_path / "deals.parquet"
    duckdb.sql(f"COPY (SELECT * FROM read_csv('{csv_path}', all_varchar=true)) TO '{parquet}'")
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(HUBSPOT_HEADER)
    for row in HUBSPOT_ROWS:
        sheet.append([int(row[0]) if row[0] else None, *row[1:]])
    book.save(tmp_path / "deals.xlsx")
    for name in ("deals.parquet", "deals.xlsx"):
        data = load_source(SourceConfig(path=tmp_path / name, mapping=HUBSPOT_MAPPING))
        assert q4(data)["revenue.won"] == pytest.approx(WON_REVENUE), name


def salesforce_rows() -> list[tuple[object, ...]]:
    return [
        (
            "006A",
            "Alpha",
            "Closed Won",
            1000.0,
            100,
            "2017-12-31T23:30:00Z",
            "2017-11-01T09:00:00Z",
            "005X",
            1,
            1,
            "Closed",
        ),
        (
            "006B",
            "Beta",
            "Closed Lost",
            500.0,
            0,
            "2017-12-15T10:00:00Z",
            "2017-11-03T09:00:00Z",
            "005X",
            1,
            0,
            "Omitted",
        ),
        (
            "006C",
            "Gamma",
            "Negotiation/Review",
            4000.0,
            90,
            None,
            "2017-12-01T09:00:00Z",
            "005Y",
            0,
            0,
            "Commit",
        ),
    ]


SF_COLUMNS = (
    "Id",
    "Name",
    "StageName",
    "Amount",
    "Probability",
    "CloseDate",
    "CreatedDate",
    "OwnerId",
    "IsClosed",
    "IsWon",
    "ForecastCategoryName",
)


def test_a_salesforce_database_in_a_timezone_east_of_utc(tmp_path: Path) -> None:
    db = tmp_path / "crm.sqlite"
    with sqlite3.connect(db) as con:
        con.execute(f"CREATE TABLE Opportunity ({', '.join(SF_COLUMNS)})")
        con.executemany(
            f"INSERT INTO Opportunity VALUES ({', '.join('?' * 11)})", salesforce_rows()
        )
    source = SourceConfig(url=f"sqlite:///{db}", mapping="salesforce_opportunities")
    # Alpha closed at 2017-12-31 23:30 UTC: 2018-01-01 08:30 in Tokyo.
    tokyo = load_source(source, timezone="Asia/Tokyo")
    day = parse_period("2018-01-01", now=NOW)
    m = sales_performance(tokyo, ReportRequest(day, "Asia/Tokyo", NOW)).metrics
    assert (m["deals.won"], m["revenue.won"]) == (1, 1000)
    utc = load_source(source, timezone="UTC")
    m = sales_performance(
        utc, ReportRequest(parse_period("2017-12-31", now=NOW), "UTC", NOW)
    ).metrics
    assert (m["deals.won"], m["revenue.won"]) == (1, 1000)
    # Won/lost from IsWon/IsClosed; the open deal weighted by its own probability (90 %).
    m = q4(utc)
    assert (m["deals.won"], m["deals.lost"], m["win_rate"]) == (1, 1, 0.5)
    assert m["pipeline.weighted"] == pytest.approx(3600)


def test_a_duckdb_database_file(tmp_path: Path) -> None:
    db = tmp_path / "crm.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute(
            "CREATE TABLE Opportunity (Id VARCHAR, Name VARCHAR, StageName VARCHAR, "
            "Amount DOUBLE, Probability DOUBLE, CloseDate DATE, CreatedDate TIMESTAMP, "
            "OwnerId VARCHAR, IsClosed BOOLEAN, IsWon BOOLEAN, ForecastCategoryName VARCHAR)"
        )
        con.execute(
            "INSERT INTO Opportunity VALUES ('1', 'a', 'Closed Won', 700, 100, "
            "DATE '2017-11-02', TIMESTAMP '2017-10-01 10:00', 'u', true, true, 'Closed')"
        )
    data = load_source(SourceConfig(path=db, mapping="salesforce_opportunities"))
    m = q4(data)
    assert (m["revenue.won"], m["sales_cycle.mean_days"]) == (700, 32)


def test_a_mapped_column_missing_from_the_file_is_named(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "deals.csv", ["Record ID", "Stage"], [["1", "x"]])
    with pytest.raises(
        SourceError,
        match=r"deals: mapped column name → 'Deal Name' is not in the source \(columns: Record ID, Stage\)",
    ):
        load_source(SourceConfig(path=path, mapping="hubspot_deals"))
    with pytest.raises(SourceError, match="no such file or folder"):
        load_source(SourceConfig(path=tmp_path / "nope", mapping="maven_crm"))
