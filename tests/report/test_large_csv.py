"""Large CSV exports: values that break the typed reading of a column far past the rows
DuckDB's sniffer samples, and repeated ids far apart, which parallel reading must not reorder.
Expected values are written by hand next to each row."""

from __future__ import annotations

import csv
from datetime import date
from pathlib import Path

import pytest

from opscope.config.reports import SourceConfig
from opscope.report.sources import load_source

HEADER = [
    "opportunity_id",
    "sales_agent",
    "product",
    "account",
    "deal_stage",
    "engage_date",
    "close_date",
    "close_value",
]
ROWS = 60_000  # the sniffer samples about 20,000 rows


def plain_row(i: int) -> list[str]:
    """A lost deal engaged on 2016-12-01 and closed on 2017-01-10 (value 0)."""
    return [f"D{i:06d}", "Ann Lee", "GTX Pro", "Acme", "Lost", "2016-12-01", "2017-01-10", "0"]


def write(path: Path, special: dict[int, list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(HEADER)
        for i in range(ROWS):
            writer.writerow(special.get(i, plain_row(i)))
    return path


def test_late_values_that_are_not_plain_dates_or_numbers(tmp_path: Path) -> None:
    path = write(
        tmp_path / "deals.csv",
        {
            # 23:30 at UTC−5 is 04:30 the next day in UTC: the close date is 2017-03-02.
            50_000: [
                "T1",
                "Ann Lee",
                "GTX Pro",
                "Acme",
                "Won",
                "2017-01-05",
                "2017-03-01T23:30:00-05:00",
                "1500",
            ],
            # Currency text: $1,200.50 → 1200.5.
            55_000: [
                "T2",
                "Ann Lee",
                "GTX Pro",
                "Acme",
                "Won",
                "2017-01-05",
                "2017-03-05",
                "$1,200.50",
            ],
            # Not a number: left empty and counted.
            59_000: [
                "T3",
                "Ann Lee",
                "GTX Pro",
                "Acme",
                "Won",
                "2017-01-05",
                "2017-03-06",
                "about 5k",
            ],
        },
    )
    data = load_source(SourceConfig(path=path, mapping="maven_crm"), timezone="UTC")
    rows = dict(
        (r[0], r[1:])
        for r in data.con.execute(
            "SELECT id, close_date, amount FROM deals WHERE id IN ('T1', 'T2', 'T3')"
        ).fetchall()
    )
    assert rows == {
        "T1": (date(2017, 3, 2), 1500.0),
        "T2": (date(2017, 3, 5), 1200.5),
        "T3": (date(2017, 3, 6), None),
    }
    assert data.con.execute("SELECT count(*) FROM deals").fetchone() == (ROWS,)
    assert "deals.amount: 1 value(s) are not numbers (e.g. 'about 5k'): left empty" in data.quality
    # The plain rows were parsed too: 59,997 lost deals on 2017-01-10.
    assert data.con.execute(
        "SELECT count(*) FROM deals WHERE status = 'lost' AND close_date = DATE '2017-01-10'"
    ).fetchone() == (ROWS - 3,)


@pytest.mark.parametrize("dirty", [False, True])
def test_the_first_of_repeated_ids_is_kept_in_file_order(tmp_path: Path, dirty: bool) -> None:
    # D000010 appears again at row 45,000 as a won deal; D050000 first appears at row 50,000
    # (a lost deal) and again at row 59,990 (won). The first row of each is kept. With
    # ``dirty`` a late unparseable date sends the file through the text reading instead.
    special = {
        45_000: ["D000010", "Bo Chan", "GTX Pro", "Acme", "Won", "2017-01-05", "2017-02-01", "700"],
        59_990: ["D050000", "Bo Chan", "GTX Pro", "Acme", "Won", "2017-01-05", "2017-02-01", "900"],
    }
    if dirty:
        special[58_000] = [
            "X1",
            "Ann Lee",
            "GTX Pro",
            "Acme",
            "Lost",
            "2016-12-01",
            "31/02/2017",
            "0",
        ]
    path = write(tmp_path / "deals.csv", special)
    data = load_source(SourceConfig(path=path, mapping="maven_crm"), timezone="UTC")
    kept = dict(
        data.con.execute(
            "SELECT id, status::VARCHAR FROM deals WHERE id IN ('D000010', 'D050000')"
        ).fetchall()
    )
    assert kept == {"D000010": "lost", "D050000": "lost"}
    assert data.con.execute("SELECT count(*) FROM deals").fetchone() == (ROWS - 2,)
    assert "deals: 2 row(s) repeat an earlier id: dropped (first kept)" in data.quality
    assert data.con.execute("SELECT count(*) FROM deals WHERE status = 'won'").fetchone() == (0,)
