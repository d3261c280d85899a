"""`opscope report`: one-off runs without a configuration file, configured runs, errors."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "opscope", *args],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=cwd,
        check=False,
    )


def test_one_off_sales_report_as_json(crm_dir: Path, tmp_path: Path) -> None:
    result = run_cli(
        "report",
        "sales_performance",
        "--data",
        str(crm_dir),
        "--mapping",
        "maven_crm",
        "--period",
        "2017-Q4",
        "--format",
        "json",
        "--out",
        str(tmp_path),
        "--json",
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    written = tmp_path / "sales_performance-2017-Q4.json"
    assert summary["written"] == [str(written)]
    doc = json.loads(written.read_text())
    with (crm_dir / "sales_pipeline.csv").open(newline="") as f:
        won = [
            r
            for r in csv.DictReader(f)
            if r["deal_stage"] == "Won" and r["close_date"] >= "2017-10-01"
        ]
    assert doc["metrics"]["revenue.won"] == sum(int(r["close_value"]) for r in won)
    assert doc["metrics"]["deals.won"] == len(won)
    assert doc["period"] == {
        "label": "2017-Q4",
        "start": "2017-10-01",
        "end": "2018-01-01",
        "timezone": "UTC",
        "partial": False,
    }


def test_a_configured_report(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "deals.csv").write_text(
        "Record ID,Deal Name,Deal Stage,Amount,Deal owner,Close Date,Create Date,Pipeline\n"
        '1,a,Closed Won,"$1,500.00",Ann,2017-12-04,2017-11-01,Sales\n'
        "2,b,Closed Lost,$0,Ann,2017-12-05,2017-11-01,Sales\n"
    )
    (tmp_path / "opscope.yaml").write_text(
        "sources:\n  hub: {path: data, mapping: hubspot_deals}\n"
        "reports:\n  weekly-sales: {report: sales_performance, period: weekly, "
        "timezone: Europe/Madrid}\n"
    )
    result = run_cli(
        "report",
        "weekly-sales",
        "-c",
        str(tmp_path / "opscope.yaml"),
        "--period",
        "2017-W49",
        "--format",
        "json",
        "--out",
        str(tmp_path / "out"),
    )
    assert result.returncode == 0, result.stderr
    doc = json.loads((tmp_path / "out" / "weekly-sales-2017-W49.json").read_text())
    assert (doc["metrics"]["revenue.won"], doc["metrics"]["win_rate"]) == (1500, 0.5)
    assert doc["period"]["timezone"] == "Europe/Madrid"


def test_configured_reports_write_their_own_formats_under_their_own_names(
    tmp_path: Path,
) -> None:
    (tmp_path / "deals.csv").write_text(
        "Record ID,Deal Name,Deal Stage,Amount,Deal owner,Close Date,Create Date,Pipeline\n"
        "1,a,Closed Won,1500,Ann,2017-12-04,2017-11-01,Sales\n"
        "2,b,Closed Won,700,Bob,2017-12-05,2017-11-01,Sales\n"
    )
    (tmp_path / "opscope.yaml").write_text(
        "sources:\n  hub: {path: deals.csv, mapping: hubspot_deals}\n"
        "reports:\n"
        "  weekly-sales: {report: sales_performance, formats: [json, html]}\n"
        "  weekly-sales-copy: {report: sales_performance, formats: [json]}\n"
    )
    out = tmp_path / "out"
    for key in ("weekly-sales", "weekly-sales-copy"):
        result = run_cli(
            "report", key, "-c", str(tmp_path / "opscope.yaml"), "--period", "2017-W49",
            "--out", str(out),
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
    # no --format: each writes its configured formats, named after its key
    assert sorted(p.name for p in out.iterdir()) == [
        "weekly-sales-2017-W49.html",
        "weekly-sales-2017-W49.json",
        "weekly-sales-copy-2017-W49.json",
    ]
    doc = json.loads((out / "weekly-sales-2017-W49.json").read_text())
    assert doc["metrics"]["revenue.won"] == 1500 + 700
    assert "$2,200.00" in (out / "weekly-sales-2017-W49.html").read_text()


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    data = str(tmp_path)
    result = run_cli("report", "sales_performance", "--data", data, "--period", "2017-Q5")
    assert (result.returncode, result.stderr.startswith("error: --period: unknown period")) == (
        2,
        True,
    )
    result = run_cli("report", "sales_performance", "--data", data, "--format", "docx")
    assert result.returncode == 2 and "unknown format docx" in result.stderr
    result = run_cli("report", "weekly", "--data", data)
    assert result.returncode == 2 and 'unknown report "weekly"' in result.stderr
    result = run_cli(
        "report", "sales_performance", "--data", str(tmp_path / "none"), "--period", "2017"
    )
    assert result.returncode == 1 and "no such file or folder" in result.stderr
    assert "Traceback" not in result.stderr


def test_one_off_report_in_every_format_shows_the_same_won_revenue(
    crm_dir: Path, tmp_path: Path
) -> None:
    # 10,005,534 = the sum of close_value over won deals in sales_pipeline.csv (issue figure)
    result = run_cli(
        "report", "sales_performance", "--data", str(crm_dir), "--mapping", "maven_crm",
        "--period", "2017", "--format", "json,html,xlsx,pptx,pdf", "--out", str(tmp_path),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    stem = tmp_path / "sales_performance-2017"
    document = json.loads(stem.with_suffix(".json").read_text())
    assert document["metrics"]["revenue.won"] == 10_005_534
    # no deal in the data closed before 2017-03: 2016 is "no data", so the
    # cards compare with nothing (n/a), not with a revenue of $0 ("new")
    card = document["sections"][0]["blocks"][0]["kpis"][0]
    assert (card["name"], card["previous"], card["trend"]) == ("Won revenue", None, "n/a")
    assert "$10,005,534.00" in stem.with_suffix(".html").read_text()

    import openpyxl
    import pptx
    import pypdf

    workbook = openpyxl.load_workbook(stem.with_suffix(".xlsx"))
    cells = [c.value for ws in workbook.worksheets for row in ws.iter_rows() for c in row]
    assert 10_005_534 in cells
    deck = pptx.Presentation(str(stem.with_suffix(".pptx")))
    texts = [
        shape.text_frame.text
        for slide in deck.slides
        for shape in slide.shapes
        if shape.has_text_frame
    ]
    assert any("$10,005,534" in t for t in texts)
    pages = [page.extract_text() for page in pypdf.PdfReader(stem.with_suffix(".pdf")).pages]
    assert "$10,005,534.00" in "".join(pages)
    # a table's caption stays on the page of its first rows (never stranded at a page's foot)
    for caption, first_row in (
        ("Stage conversion", "Prospecting 7,942"),
        ("Leaderboard", "Darcel Schlecht"),  # the top rep by won revenue in 2017
        ("By manager", "Melvin Marxen"),
        ("By region", "West 12 $3,568,647.00"),
    ):
        on = [i for i, text in enumerate(pages) if caption in text.splitlines()]
        assert on and first_row in pages[on[0]], (caption, on)
