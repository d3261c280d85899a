"""Build crm.db, the example's CRM database, from deals.csv (run it after editing the CSV).

    python3 examples/blatam/data/make_crm.py

The table is ``deals(id INTEGER, region TEXT, amount REAL, status TEXT, closed_at TEXT)``:
``status`` is won, lost or open, ``closed_at`` is ``YYYY-MM-DD HH:MM:SS`` (UTC; empty: still
open). The file is rebuilt from scratch, so it always holds exactly the CSV's rows.
"""

from __future__ import annotations

import csv
import sqlite3
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def build(csv_path: Path = HERE / "deals.csv", db_path: Path = HERE / "crm.db") -> None:
    """Write ``db_path`` (replacing it) with the rows of ``csv_path``."""
    with csv_path.open(newline="", encoding="utf-8") as handle:
        rows = [
            (
                int(r["id"]),
                r["region"],
                float(r["amount"]),
                r["status"],
                r["closed_at"] or None,
            )
            for r in csv.DictReader(handle)
        ]
    tmp = db_path.with_suffix(".db.tmp")
    tmp.unlink(missing_ok=True)
    connection = sqlite3.connect(tmp)
    try:
        connection.execute(
            "CREATE TABLE deals (id INTEGER PRIMARY KEY, region TEXT NOT NULL, "
            "amount REAL NOT NULL, status TEXT NOT NULL, closed_at TEXT)"
        )
        connection.executemany("INSERT INTO deals VALUES (?, ?, ?, ?, ?)", rows)
        connection.commit()
        connection.execute("VACUUM")
    finally:
        connection.close()
    tmp.replace(db_path)


if __name__ == "__main__":
    build(*(Path(a) for a in sys.argv[1:3]))
