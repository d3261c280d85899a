"""Loading edge cases found by a new user: multi-table Excel and SQL sources, non-finite and
locale-formatted amounts, relative database URLs, CSV read errors, preset detection. Every
expected figure is worked out by hand from the rows written in the test."""

from __future__ import annotations

import csv
import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import openpyxl
import pytest

from opscope.config.reports import MappingConfig, SourceConfig
from opscope.errors import SourceError
from opscope.report.sources import load_source
from tests.report.test_cli_report import run_cli

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


def _hubspot_csv(path: Path, amounts: list[str], *, delimiter: str = ",") -> Path:
    """One won deal per amount, closed 2024-01-10, owners Ann (first) and Bob (the rest)."""
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter=delimiter)
        writer.writerow(HUBSPOT_HEADER)
        for i, amount in enumerate(amounts, start=1):
            owner = "Ann" if i == 1 else "Bob"
            writer.writerow(
                [i, f"D{i}", "Closed Won", amount, owner, "2024-01-10", "2024-01-01", "P"]
            )
    return path


def _hubspot(path: Path, **deals: Any) -> SourceConfig:
    mapping = MappingConfig.model_validate({"preset": "hubspot_deals", "deals": deals})
    return SourceConfig(path=path, mapping=mapping)


def _amounts(data: object) -> dict[str, float | None]:
    con = data.con  # type: ignore[attr-defined]
    return dict(con.execute("SELECT id, amount FROM deals ORDER BY id").fetchall())


@pytest.mark.parametrize("bad", ["nan", "inf", "-inf", "1e309", "NaN"])
def test_a_non_finite_amount_is_not_a_number_and_is_reported(tmp_path: Path, bad: str) -> None:
    # The CSV has 100, the bad value and 500: won revenue by hand = 100 + 500.
    data = load_source(_hubspot(_hubspot_csv(tmp_path / "d.csv", ["100", bad, "500"])))
    assert _won(data) == 600.0
    assert _amounts(data)["2"] is None
    assert any("deals.amount: 1 value(s) are not numbers" in q for q in data.quality), data.quality


def test_a_non_finite_amount_among_currency_strings_is_reported(tmp_path: Path) -> None:
    data = load_source(_hubspot(_hubspot_csv(tmp_path / "d.csv", ["$100", "nan", "$1,500.25"])))
    assert _won(data) == 1600.25
    assert any("deals.amount: 1 value(s) are not numbers" in q for q in data.quality), data.quality


def test_native_excel_numbers_are_not_reparsed_with_a_decimal_comma(tmp_path: Path) -> None:
    path = tmp_path / "deals.xlsx"
    rows: list[list[Any]] = [
        [1, "A", "Closed Won", 1200.5, "Ann", "2024-01-10", "2024-01-01", "P"],
        [2, "B", "Closed Won", 799.99, "Bob", "2024-01-10", "2024-01-01", "P"],
        [3, "C", "Closed Won", "3.000,00 €", "Bob", "2024-01-10", "2024-01-01", "P"],
        [4, "D", "Closed Won", 5, "Bob", "2024-01-10", "2024-01-01", "P"],
    ]
    _write_xlsx(path, HUBSPOT_HEADER, rows)
    data = load_source(_hubspot(path, file="deals.xlsx", decimal=","))
    # By hand: 1200.50 + 799.99 + 3000.00 + 5.
    assert _amounts(data) == {"1": 1200.5, "2": 799.99, "3": 3000.0, "4": 5.0}


def test_a_decimal_comma_column_is_detected_without_a_decimal_setting(tmp_path: Path) -> None:
    path = _hubspot_csv(tmp_path / "d.csv", ["1.200,50 €", "300", "12,5"], delimiter=";")
    data = load_source(_hubspot(path))
    # By hand: 1200.50 + 300 + 12.50.
    assert _amounts(data) == {"1": 1200.5, "2": 300.0, "3": 12.5}
    assert any("decimal mark" in q and "1.200,50" in q for q in data.quality), data.quality


def test_a_column_mixing_decimal_styles_is_reported(tmp_path: Path) -> None:
    path = _hubspot_csv(tmp_path / "d.csv", ["1.200,50", "1,300.25"])
    data = load_source(_hubspot(path))
    assert any(
        "1 value(s) are written with a decimal comma" in q and "1 with a decimal point" in q
        for q in data.quality
    ), data.quality


def _report_json(tmp_path: Path, *args: str) -> dict[str, Any]:
    result = run_cli(
        "report", "sales_performance", *args, "--period", "2024-Q1", "--out", str(tmp_path / "out")
    )
    assert result.returncode == 0, result.stderr
    return dict(json.loads((tmp_path / "out" / "sales_performance-2024-Q1.json").read_text()))


def test_the_decimal_option_reads_data_amounts_with_a_decimal_comma(tmp_path: Path) -> None:
    # "1.200" and "300" alone decide nothing: with --decimal "," the first is 1200.
    path = _hubspot_csv(tmp_path / "d.csv", ["1.200", "300"], delimiter=";")
    doc = _report_json(
        tmp_path, "--data", str(path), "--mapping", "hubspot_deals", "--decimal", ","
    )
    assert doc["metrics"]["revenue.won"] == 1500.0
    result = run_cli("report", "sales_performance", "--data", str(path), "--decimal", ";")
    assert result.returncode == 2 and "--decimal" in result.stderr


def _sqlite_crm(db: Path) -> None:
    with sqlite3.connect(db) as lite:
        lite.execute(f"CREATE TABLE deals ({', '.join(MAVEN_DEALS_HEADER)})")
        lite.executemany("INSERT INTO deals VALUES (?, ?, ?, ?, ?, ?, ?, ?)", MAVEN_DEALS)


def test_a_relative_sqlite_url_is_read_from_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "cfg").mkdir()
    _sqlite_crm(tmp_path / "cfg" / "crm.sqlite")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    source = SourceConfig(url="sqlite:///crm.sqlite", mapping=MappingConfig(preset="maven_crm"))
    data = load_source(source, base=tmp_path / "cfg")
    assert _won(data) == MAVEN_WON
    data.close()
    assert list(elsewhere.iterdir()) == []  # nothing created in the current folder
    with pytest.raises(SourceError, match=r"database file not found: .*missing\.sqlite"):
        load_source(
            SourceConfig(url="sqlite:///missing.sqlite", mapping=MappingConfig(preset="maven_crm")),
            base=tmp_path / "cfg",
        )
    assert not (tmp_path / "cfg" / "missing.sqlite").exists()
    assert list(elsewhere.iterdir()) == []


def _maven_csv_lines(folder: Path, lines: list[bytes]) -> Path:
    folder.mkdir()
    header = ",".join(MAVEN_DEALS_HEADER).encode()
    (folder / "sales_pipeline.csv").write_bytes(b"\n".join([header, *lines]) + b"\n")
    return folder


def _maven_row(i: int, name: bytes = b"Ann Lee") -> bytes:
    return b"D%d,%s,GTX Pro,Acme,Won,2017-01-02,2017-02-01,100" % (i, name)


def _load_error(folder: Path) -> str:
    with pytest.raises(SourceError) as caught:
        load_source(SourceConfig(path=folder, mapping=MappingConfig(preset="maven_crm")))
    message = str(caught.value)
    assert "strict_mode" not in message and "LINE 1" not in message and "read_csv" not in message
    return message


def test_a_row_with_extra_fields_is_named_by_file_and_line(tmp_path: Path) -> None:
    # 5,000 good rows (lines 2-5001), then line 5002 with two extra fields.
    rows = [_maven_row(i) for i in range(5000)] + [_maven_row(5000) + b",x,y"]
    folder = _maven_csv_lines(tmp_path / "crm", rows)
    message = _load_error(folder)
    assert message.startswith(
        f"{folder / 'sales_pipeline.csv'}:5002: 10 field(s), the header has 8"
    )


def test_a_latin1_byte_is_named_by_file_and_line(tmp_path: Path) -> None:
    rows = [_maven_row(i) for i in range(3000)]
    rows[1765] = _maven_row(1765, "Jos\u00e9 Ruiz".encode("latin-1"))  # line 1767
    folder = _maven_csv_lines(tmp_path / "crm", rows)
    message = _load_error(folder)
    assert message.startswith(f"{folder / 'sales_pipeline.csv'}:1767: not UTF-8 text (byte 0xE9")


def test_an_empty_file_is_reported_as_empty(tmp_path: Path) -> None:
    folder = tmp_path / "crm"
    folder.mkdir()
    (folder / "sales_pipeline.csv").write_bytes(b"")
    assert _load_error(folder) == f"{folder / 'sales_pipeline.csv'} is empty"


def test_a_stray_quote_after_a_quoted_field_is_named_by_line(tmp_path: Path) -> None:
    rows = [_maven_row(1), b'D2,"Ann" Lee,GTX Pro,Acme,Won,2017-01-02,2017-02-01,100']
    folder = _maven_csv_lines(tmp_path / "crm", rows)
    assert _load_error(folder).startswith(f"{folder / 'sales_pipeline.csv'}:3: malformed quoting")


def test_a_missing_mapped_column_is_a_config_error_naming_file_and_line(tmp_path: Path) -> None:
    data = _hubspot_csv(tmp_path / "deals.csv", ["100"])
    config = tmp_path / "opscope.yaml"
    config.write_text(
        "sources:\n"
        "  hs:\n"
        "    path: deals.csv\n"
        "    mapping:\n"
        "      preset: hubspot_deals\n"
        "      deals:\n"
        "        columns: {amount: Amount USD}\n"
        "reports:\n"
        "  sales_performance: {source: hs}\n",
        encoding="utf-8",
    )
    result = run_cli("report", "sales_performance", "-c", str(config), "--period", "2024-Q1")
    assert result.returncode == 2
    # line 7 holds columns: {amount: …}
    assert f"{config}:7: sources.hs.mapping.deals.columns.amount" in result.stderr
    assert str(data) in result.stderr and "'Amount USD'" in result.stderr


def test_the_maven_preset_reads_a_folder_of_parquet_files(tmp_path: Path) -> None:
    import duckdb

    folder = tmp_path / "crm"
    folder.mkdir()
    csv_path = tmp_path / "deals.csv"
    with csv_path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([MAVEN_DEALS_HEADER, *MAVEN_DEALS])
    con = duckdb.connect()
    con.execute(
        f"COPY (SELECT * FROM read_csv('{csv_path}', all_varchar = true)) "
        f"TO '{folder / 'sales_pipeline.parquet'}' (FORMAT parquet)"
    )
    con.close()
    data = load_source(SourceConfig(path=folder, mapping=MappingConfig(preset="maven_crm")))
    assert _won(data) == MAVEN_WON


def test_the_maven_preset_reads_a_duckdb_file_by_the_export_table_names(tmp_path: Path) -> None:
    import duckdb

    db = tmp_path / "crm.duckdb"
    con = duckdb.connect(str(db))
    con.execute(
        f"CREATE TABLE sales_pipeline ({', '.join(f'{c} VARCHAR' for c in MAVEN_DEALS_HEADER)})"
    )
    con.executemany(
        "INSERT INTO sales_pipeline VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [[None if v is None else str(v) for v in row] for row in MAVEN_DEALS],
    )
    con.execute(f"CREATE TABLE sales_teams ({', '.join(f'{c} VARCHAR' for c in TEAMS_HEADER)})")
    con.executemany("INSERT INTO sales_teams VALUES (?, ?, ?)", TEAMS)
    con.close()
    data = load_source(SourceConfig(path=db, mapping=MappingConfig(preset="maven_crm")))
    assert _won(data) == MAVEN_WON
    assert _teams(data)["A3"] == "Melvin Marxen"


def test_optional_tables_in_a_data_folder_are_found_by_file_name(tmp_path: Path) -> None:
    folder = tmp_path / "crm"
    folder.mkdir()
    with (folder / "sales_pipeline.csv").open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([MAVEN_DEALS_HEADER, *MAVEN_DEALS])
    (folder / "nps_responses.csv").write_text(
        "date,score\n2017-02-01,10\n2017-02-02,3\n", encoding="utf-8"
    )
    data = load_source(SourceConfig(path=folder, mapping=MappingConfig(preset="maven_crm")))
    assert "nps_responses" in data.tables
    rows = data.con.execute("SELECT date::VARCHAR, score FROM nps_responses ORDER BY 1").fetchall()
    assert rows == [("2017-02-01", 10.0), ("2017-02-02", 3.0)]


def test_data_without_mapping_detects_the_preset_from_the_header(tmp_path: Path) -> None:
    path = _hubspot_csv(tmp_path / "export.csv", ["100", "250"])
    doc = _report_json(tmp_path, "--data", str(path))
    assert doc["metrics"]["revenue.won"] == 350.0
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n", encoding="utf-8")
    result = run_cli("report", "sales_performance", "--data", str(other), "--period", "2024-Q1")
    assert result.returncode == 2
    assert "--mapping maven_crm, hubspot_deals or salesforce_opportunities" in result.stderr


def test_excel_and_parquet_exports_are_detected_from_their_columns(tmp_path: Path) -> None:
    # HubSpot exports deals as .xlsx; a Salesforce Data Loader extract converted to Parquet.
    rows = [[1, "D1", "Closed Won", 120, "Ann", "2024-01-10", "2024-01-01", "P"]]
    rows.append([2, "D2", "Closed Lost", 80, "Bob", "2024-02-10", "2024-01-05", "P"])
    workbook = tmp_path / "hubspot-deals.xlsx"
    _write_xlsx(workbook, HUBSPOT_HEADER, rows)
    doc = _report_json(tmp_path / "x", "--data", str(workbook))
    assert (doc["metrics"]["revenue.won"], doc["metrics"]["win_rate"]) == (120.0, 0.5)
    parquet = tmp_path / "opportunities.parquet"
    with duckdb.connect() as con:
        con.execute(
            "COPY (SELECT * FROM (VALUES ('006A', 'Big', 'Closed Won', 300.0, 100, DATE '2024-03-01',"
            " DATE '2024-01-02', '005X', true, true, 'Closed')) t(Id, Name, StageName, Amount,"
            " Probability, CloseDate, CreatedDate, OwnerId, IsClosed, IsWon, ForecastCategoryName))"
            f" TO '{parquet}' (FORMAT parquet)"
        )
    doc = _report_json(tmp_path / "p", "--data", str(parquet))
    assert (doc["metrics"]["revenue.won"], doc["metrics"]["deals.won"]) == (300.0, 1)


def test_negative_won_amounts_and_outliers_are_reported(tmp_path: Path) -> None:
    path = _hubspot_csv(tmp_path / "d.csv", ["100", "-50", "200", "1000000"])
    data = load_source(_hubspot(path))
    # By hand: one negative won amount (-50); median of the positive amounts 100, 200,
    # 1,000,000 is 200, and only 1,000,000 exceeds 1000 × 200.
    assert "deals: 1 won deal(s) with a negative amount (total -50.00): counted as found" in (
        data.quality
    )
    assert any(
        q.startswith("deals.amount: 1 value(s) above 1,000 × the median amount 200.00 ")
        and "(total 1,000,000.00)" in q
        for q in data.quality
    ), data.quality


def test_report_json_errors_use_the_json_error_shape(tmp_path: Path) -> None:
    path = _hubspot_csv(tmp_path / "d.csv", ["100"])
    result = run_cli(
        "report", "sales_performance", "--data", str(path), "--period", "2024-Q5", "--json"
    )
    assert result.returncode == 2
    body = json.loads(result.stdout)
    assert body["status"] == "error" and body["errorType"] == "bad_data"
    assert body["error"].startswith("--period: ")


def test_out_pointing_at_a_file_says_so(tmp_path: Path) -> None:
    path = _hubspot_csv(tmp_path / "d.csv", ["100"])
    taken = tmp_path / "taken"
    taken.write_text("x", encoding="utf-8")
    result = run_cli(
        "report",
        "sales_performance",
        "--data",
        str(path),
        "--period",
        "2024-Q1",
        "--out",
        str(taken),
    )
    assert result.returncode == 2
    assert f"--out {taken} is a file, not a folder" in result.stderr


def test_error_text_in_square_brackets_is_printed(tmp_path: Path) -> None:
    missing = tmp_path / "crm[b]" / "deals.csv"
    result = run_cli("report", "sales_performance", "--data", str(missing), "--period", "2024-Q1")
    assert result.returncode == 1
    assert f"{missing}: no such file or folder" in " ".join(result.stderr.split())


def test_a_rare_category_value_close_to_a_frequent_one_is_a_possible_typo(tmp_path: Path) -> None:
    folder = tmp_path / "crm"
    folder.mkdir()
    with (folder / "sales_pipeline.csv").open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([MAVEN_DEALS_HEADER, *MAVEN_DEALS])
    sectors = ["technology"] * 5 + ["tecnolgy"] * 2 + ["retail"] * 3  # 2 edits, 1 edit away
    with (folder / "accounts.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["account", "sector", "office_location", "employees", "revenue"])
        writer.writerows(
            [f"Acc{i}", sector, "United States", "10", "1.5"] for i, sector in enumerate(sectors)
        )
    data = load_source(SourceConfig(path=folder, mapping=MappingConfig(preset="maven_crm")))
    typos = [q for q in data.quality if "possible typo" in q]
    assert typos == [
        "accounts.segment: 'tecnolgy' (2 row(s)) is close to the more frequent 'technology' (5): "
        "possible typo, kept as found"
    ]


def test_xlsx_summary_and_benchmarks_use_the_value_kinds_formats(tmp_path: Path) -> None:
    from opscope.config.reports import ReportConfig
    from opscope.report.building import ReportRequest, build_report
    from opscope.report.periods import parse_period
    from opscope.report.render.xlsx import write_xlsx

    path = _hubspot_csv(tmp_path / "d.csv", ["100", "300"])
    data = load_source(_hubspot(path))
    settings = ReportConfig.model_validate({"benchmarks": {"win_rate": 0.5}})
    request = ReportRequest(parse_period("2024-Q1", now=NOW), "UTC", NOW, settings=settings)
    doc = build_report("sales_performance", data, request)
    out = write_xlsx(doc, tmp_path / "r.xlsx")
    book = openpyxl.load_workbook(out)
    formats = {
        row[0].value: (row[1].value, row[1].number_format)
        for row in book["Summary"].iter_rows(min_col=1, max_col=2)
        if row[0].value in ("win_rate", "revenue.won", "deals.won")
    }
    # 2 won, 0 lost: win rate 100 %; revenue 100 + 300.
    assert formats["win_rate"][0] == 1.0 and "%" in formats["win_rate"][1]
    assert formats["revenue.won"][0] == 400.0 and formats["revenue.won"][1] != "General"
    assert formats["deals.won"][0] == 2 and formats["deals.won"][1] != "General"
    bench = next(s for s in doc.sections if s.id == "benchmarks").blocks[0]
    assert [r["kind"] for r in bench.rows] == ["ratio"]  # type: ignore[union-attr]


def test_names_missing_from_the_owners_table_use_an(tmp_path: Path) -> None:
    folder = tmp_path / "crm"
    folder.mkdir()
    with (folder / "sales_pipeline.csv").open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([MAVEN_DEALS_HEADER, *MAVEN_DEALS])
    with (folder / "sales_teams.csv").open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([TEAMS_HEADER, TEAMS[0]])  # no Bo Chan
    data = load_source(SourceConfig(path=folder, mapping=MappingConfig(preset="maven_crm")))
    assert any(
        q.startswith("deals.owner: 2 deal(s) name an owner that is not in owners")
        for q in data.quality
    ), data.quality


def test_the_backtest_reports_the_horizon_it_reached() -> None:
    from opscope.report.forecast import backtest

    history = [float(100 + 7 * i + (i % 3) * 5) for i in range(20)]
    result = backtest(history, horizon=12, season_length=1, origins=6)
    assert result is not None
    # 6 origins: cut-offs after points 14 … 19; the earliest has 20 - 14 = 6 points after it.
    assert (result.origins, result.horizon) == (6, 6)


def test_a_monthly_forecast_flags_the_days_after_the_last_whole_week(
    crm_dir: Path, tmp_path: Path
) -> None:
    result = run_cli(
        "report", "executive_summary", "--data", str(crm_dir), "--mapping", "maven_crm",
        "--period", "2017-03", "--format", "json", "--out", str(tmp_path),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    doc = json.loads((tmp_path / "executive_summary-2017-03.json").read_text())
    section = next(s for s in doc["sections"] if s["id"] == "forecast")
    notes = [item for b in section["blocks"] if b["type"] == "notes" for item in b["lines"]]
    # By hand with the csv module: won close_value of 2017-03-27 … 2017-03-31.
    with (crm_dir / "sales_pipeline.csv").open(newline="", encoding="utf-8") as f:
        tail = sum(
            float(r["close_value"])
            for r in csv.DictReader(f)
            if r["deal_stage"] == "Won" and "2017-03-27" <= r["close_date"] <= "2017-03-31"
        )
    assert any(
        "2017-03-27 … 2017-03-31" in n and f"(won revenue {tail:,.0f})" in n for n in notes
    ), notes
