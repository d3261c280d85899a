"""Snapshots of loaded sources: once the same files have been loaded twice, later loads read
the snapshot, with the same reports to the byte; any change to the files (or the settings) is
read afresh, and a snapshot is never kept of files that changed while they were read."""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from opscope.config.reports import SourceConfig
from opscope.report import snapshot
from opscope.report.building import ReportRequest, build_report
from opscope.report.periods import parse_period
from opscope.report.sources import Dataset, Progress, load_source
from tests.conftest import require_tool
from tests.report.conftest import NOW
from tests.report.test_cli_report import run_cli

WON_REVENUE = 10_005_534  # the CRM dataset's won revenue (acceptance figure of the issue)


def _database(data: Dataset) -> str:
    """The file the dataset's tables are read from ("" for an in-memory database)."""
    row = data.con.execute(
        "SELECT coalesce(path, '') FROM duckdb_databases() WHERE database_name = current_database()"
    ).fetchone()
    assert row is not None
    return str(row[0])


def _reports(data: Dataset, period: str = "2017-Q4") -> str:
    request = ReportRequest(parse_period(period, now=NOW), "UTC", NOW)
    documents = [build_report(k, data, request) for k in ("sales_performance", "executive_summary")]
    return json.dumps([d.to_dict() for d in documents], sort_keys=True)


def _load(
    folder: Path, cache: Path, timezone: str = "UTC", progress: Progress | None = None
) -> Dataset:
    source = SourceConfig(path=folder, mapping="maven_crm")
    return load_source(source, timezone=timezone, cache=cache, progress=progress)


def _kept(folder: Path, cache: Path, timezone: str = "UTC") -> Path:
    """Load ``folder`` twice (the second load of the same files writes the snapshot) and
    return the snapshot."""
    before = set(cache.glob("*.duckdb"))
    for _ in range(2):
        _load(folder, cache, timezone).close()
    (kept,) = set(cache.glob("*.duckdb")) - before
    return kept


def _copy(crm_dir: Path, folder: Path) -> Path:
    shutil.copytree(crm_dir, folder)
    return folder


def _won_revenue(data: Dataset) -> float:
    row = data.con.execute(
        "SELECT coalesce(sum(amount), 0) FROM deals WHERE status = 'won'"
    ).fetchone()
    assert row is not None
    return float(row[0])


def test_unchanged_files_are_read_from_the_snapshot_with_the_same_reports(
    crm_dir: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    fresh = load_source(SourceConfig(path=crm_dir, mapping="maven_crm"), timezone="UTC")
    expected, quality = _reports(fresh), list(fresh.quality)
    fresh.close()
    first = _load(crm_dir, cache)
    assert _database(first) == ""  # read from the CSV files
    first.close()
    assert list(cache.glob("*.duckdb")) == []  # a one-off load keeps no snapshot
    second = _load(crm_dir, cache)
    assert _database(second) == ""
    assert _reports(second) == expected
    second.close()  # waits for the snapshot
    (kept,) = cache.glob("*.duckdb")
    third = _load(crm_dir, cache)
    try:
        assert _database(third) == str(kept)
        assert _reports(third) == expected
        assert third.quality == quality
        # the acceptance figure (computed independently from the CSV) holds on the snapshot
        assert _won_revenue(third) == WON_REVENUE
        assert third.has("owners") and third.has("products") and third.has("accounts")
    finally:
        third.close()


def test_a_changed_value_of_the_same_size_is_read_afresh(crm_dir: Path, tmp_path: Path) -> None:
    folder, cache = _copy(crm_dir, tmp_path / "crm"), tmp_path / "cache"
    _kept(folder, cache)
    pipeline = folder / "sales_pipeline.csv"
    with pipeline.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    won = next(i for i, r in enumerate(rows) if r[4] == "Won" and len(r[7]) == 4)
    old = int(rows[won][7])
    rows[won][7] = str(old + 1 if old < 9999 else old - 1)  # same number of digits
    before = pipeline.stat()
    with pipeline.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)
    # the edit keeps the file's size and times, as an edit within one clock tick can
    os.utime(pipeline, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert pipeline.stat().st_size == before.st_size
    data = _load(folder, cache)
    try:
        assert _database(data) == ""
        assert _won_revenue(data) == WON_REVENUE + (int(rows[won][7]) - old)
    finally:
        data.close()


def test_files_that_change_while_being_read_get_no_snapshot(crm_dir: Path, tmp_path: Path) -> None:
    # An export job rewrites the file while a run reads it, then writes the old bytes back:
    # a snapshot kept under the old bytes' fingerprint would hold the rewritten data.
    folder, cache = _copy(crm_dir, tmp_path / "crm"), tmp_path / "cache"
    pipeline = folder / "sales_pipeline.csv"
    original = pipeline.read_bytes()
    _load(folder, cache).close()  # seen once: the next load would keep a snapshot

    def rewrite(step: str) -> None:
        if step == "reading deals":
            pipeline.write_bytes(b"\n".join(original.split(b"\n")[:2000]) + b"\n")

    cut = _load(folder, cache, progress=rewrite)
    assert _won_revenue(cut) < WON_REVENUE  # it read the rewritten file
    cut.close()
    assert list(cache.glob("*.duckdb")) == []
    pipeline.write_bytes(original)
    data = _load(folder, cache)
    try:
        assert _won_revenue(data) == WON_REVENUE
    finally:
        data.close()


def test_a_file_added_to_the_folder_is_read_and_unrelated_files_are_ignored(
    crm_dir: Path, tmp_path: Path
) -> None:
    folder, cache = _copy(crm_dir, tmp_path / "crm"), tmp_path / "cache"
    kept = _kept(folder, cache)
    # files no table is read from (a report written next to the data) keep the snapshot
    (folder / "sales_performance-2017-Q4.json").write_text("{}")
    (folder / "notes.csv").write_text("a,b\n1,2\n")
    data = _load(folder, cache)
    assert _database(data) == str(kept)
    assert not data.has("targets")
    data.close()
    (folder / "targets.csv").write_text("period,metric,value\n2017-Q4,revenue,3000000\n")
    data = _load(folder, cache)
    try:
        assert _database(data) == ""
        assert data.has("targets")
    finally:
        data.close()


def test_other_settings_have_their_own_snapshot(crm_dir: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    _kept(crm_dir, cache)
    other = _load(crm_dir, cache, timezone="Asia/Tokyo")
    assert _database(other) == ""  # not the UTC snapshot
    other.close()
    tokyo = _kept(crm_dir, cache, timezone="Asia/Tokyo")
    assert len(list(cache.glob("*.duckdb"))) == 2
    again = _load(crm_dir, cache, timezone="Asia/Tokyo")
    try:
        assert _database(again) == str(tokyo)
        row = again.con.execute("SELECT current_setting('TimeZone')").fetchone()
        assert row == ("Asia/Tokyo",)
    finally:
        again.close()


@pytest.mark.parametrize("damage", ["truncated", "bytes overwritten inside"])
def test_a_damaged_snapshot_is_replaced(
    crm_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    cache = tmp_path / "cache"
    kept = _kept(crm_dir, cache)
    body = kept.read_bytes()
    if damage == "truncated":
        kept.write_bytes(body[:5000])
    else:  # DuckDB would find this only when a query reads the block, mid-report
        middle = len(body) // 2
        kept.write_bytes(body[:middle] + b"\0" * 20000 + body[middle + 20000 :])
    with caplog.at_level(logging.WARNING, logger="opscope.report.snapshot"):
        data = _load(crm_dir, cache)
    try:
        assert _database(data) == ""
        assert _reports(data)  # every query of both reports runs
        assert _won_revenue(data) == WON_REVENUE
        assert "cannot be read" in caplog.text
    finally:
        data.close()
    assert not kept.exists()


def test_a_snapshot_that_cannot_be_removed_is_skipped(crm_dir: Path, tmp_path: Path) -> None:
    # Where the folder refuses removal (another user's cache), the source is read all the same.
    cache = tmp_path / "cache"
    kept = _kept(crm_dir, cache)
    kept.unlink()
    kept.mkdir()  # an entry of the snapshot's name that neither opens nor unlinks
    (kept / "x").write_text("")
    data = _load(crm_dir, cache)
    try:
        assert _database(data) == ""
        assert _won_revenue(data) == WON_REVENUE
    finally:
        data.close()


def test_a_cache_that_cannot_be_written_does_not_stop_the_report(
    crm_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "not-a-folder"
    cache.write_text("")
    with caplog.at_level(logging.WARNING, logger="opscope.report.snapshot"):
        for _ in range(2):
            data = _load(crm_dir, cache)
            try:
                assert _won_revenue(data) == WON_REVENUE
            finally:
                data.close()
    assert "not written" in caplog.text


def test_writing_a_snapshot_tidies_the_cache_folder(
    crm_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    day = 86400
    a, b, c, d, e, f = (ch * 24 for ch in "abcdef")
    left = {  # name → age in seconds
        f".{a}-{b}.x1.tmp": 2 * 3600,  # left by a writer killed two hours ago
        f".{a}-{b}.x1.tmp.wal": 2 * 3600,
        f".{a}-{c}.x2.tmp": 10,  # a writer at work now
        f"{a}-{b}-{c}.duckdb": 31 * day,  # unused for a month
        f"{d}-{e}.seen": 31 * day,
        f"{b}-{c}-{d}.duckdb": 2 * day,  # used recently
        f"{c}-{d}-{e}.duckdb": 1 * day,
        f"{d}-{e}-{f}.duckdb": 40,
        # not opscope's: never touched, whatever their age or size
        "warehouse.duckdb": 40 * day,
        "notes.seen": 40 * day,
        ".vimswap.tmp": 2 * 3600,
    }
    for name, age in left.items():
        path = cache / name
        path.write_bytes(b"x" * 1000)
        past = time.time() - age
        os.utime(path, (past, past))
    # room for the new snapshot and 2,000 bytes: the two least recently used go
    monkeypatch.setattr(snapshot, "MAX_BYTES", 0)
    kept = _kept(crm_dir, tmp_path / "measure")
    monkeypatch.setattr(snapshot, "MAX_BYTES", kept.stat().st_size + 2000)
    kept = _kept(crm_dir, cache)
    assert sorted(p.name for p in cache.iterdir()) == sorted(
        [
            f".{a}-{c}.x2.tmp",
            f"{c}-{d}-{e}.duckdb",
            f"{d}-{e}-{f}.duckdb",
            "warehouse.duckdb",
            "notes.seen",
            ".vimswap.tmp",
            kept.name,
        ]
    )


def test_a_large_file_modified_just_now_gets_no_snapshot_until_it_is_older(
    crm_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Files above HASHED_SIZE are known by their times; one written within the last
    # RACY_NS could change again within its timestamp's tick, unseen.
    monkeypatch.setattr(snapshot, "HASHED_SIZE", 0)
    folder, cache = _copy(crm_dir, tmp_path / "crm"), tmp_path / "cache"
    (folder / "sales_pipeline.csv").touch()
    for _ in range(2):
        _load(folder, cache).close()
    assert list(cache.glob("*.duckdb")) == []
    past = time.time_ns() - 60 * 10**9
    for path in folder.iterdir():
        os.utime(path, ns=(past, past))
    _kept(folder, cache)


def test_the_cli_keeps_snapshots_in_the_cache_folder_unless_told_not_to(
    crm_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("OPSCOPE_CACHE_DIR", str(cache))
    args = ["report", "sales_performance", "--data", str(crm_dir), "--mapping", "maven_crm"]
    args += ["--period", "2017-Q4", "--format", "json"]
    # (flags, output folder, snapshots after the run): none with --no-cache, and the second
    # cached run over the same files writes the one the third reads
    runs = [
        (["--no-cache"], "a", 0),
        (["--no-cache"], "b", 0),
        ([], "c", 0),
        ([], "d", 1),
        ([], "e", 1),
    ]
    for flags, out, snapshots in runs:
        result = run_cli(*args, *flags, "--out", str(tmp_path / out))
        assert result.returncode == 0, result.stderr
        assert len(list(cache.glob("*.duckdb"))) == snapshots
    name = "sales_performance-2017-Q4.json"
    first = json.loads((tmp_path / "a" / name).read_text())
    later = json.loads((tmp_path / "e" / name).read_text())  # from the snapshot
    assert {**later, "generated_at": None} == {**first, "generated_at": None}
    with (crm_dir / "sales_pipeline.csv").open(newline="", encoding="utf-8") as f:
        won = [
            int(r["close_value"])
            for r in csv.DictReader(f)
            if r["deal_stage"] == "Won" and "2017-10-01" <= r["close_date"] < "2018-01-01"
        ]
    assert first["metrics"]["revenue.won"] == sum(won)


def test_a_rep_whose_deals_name_two_teams_is_shown_in_the_latest_one(tmp_path: Path) -> None:
    # Row order differs between a fresh load (the file's) and a snapshot (by close date):
    # the rep's team must not depend on it.
    folder, cache = tmp_path / "deals", tmp_path / "cache"
    folder.mkdir()
    lines = ["id,owner,team,region,stage,engaged_date,close_date,amount"]
    for rep in ("Ann", "Bob", "Cy"):
        for i in range(15):  # moved from West/South to East/North in November
            lines.append(f"{rep}-e{i},{rep},East,North,Won,2017-10-01,2017-11-{i + 10},100")
            lines.append(f"{rep}-w{i},{rep},West,South,Won,2017-09-01,2017-10-{i + 1:02},100")
    (folder / "deals.csv").write_text("\n".join(lines) + "\n")
    past = time.time() - 60
    os.utime(folder / "deals.csv", (past, past))
    mapping = {"deals": {"file": "deals.csv", "won_stages": ["Won"], "lost_stages": ["Lost"]}}
    source = SourceConfig.model_validate({"path": str(folder), "mapping": mapping})
    request = ReportRequest(parse_period("2017-Q4", now=NOW), "UTC", NOW)
    boards = []
    for _ in range(3):  # fresh, fresh (keeps the snapshot), from the snapshot
        data = load_source(source, cache=cache)
        doc = build_report("sales_performance", data, request)
        boards.append(
            {k: v for k, v in doc.metrics.items() if k.startswith(("team.", "region.", "rep."))}
        )
        data.close()
    assert len(list(cache.glob("*.duckdb"))) == 1
    assert boards[0] == boards[1] == boards[2]
    assert boards[2]["team.East.revenue"] == 9000  # 3 reps × 30 deals × 100, all in East
    assert "team.West.revenue" not in boards[2]


def test_a_one_file_source_whose_name_looks_like_a_pattern_is_fingerprinted(
    crm_dir: Path, tmp_path: Path
) -> None:
    folder, cache = _copy(crm_dir, tmp_path / "crm"), tmp_path / "cache"
    deals = folder / "pipeline[1].csv"  # as a pattern, "[1]" would match "pipeline1.csv"
    (folder / "sales_pipeline.csv").rename(deals)
    _kept(deals, cache)
    deals.write_text(deals.read_text(encoding="utf-8").replace(",Won,", ",Lost,"))
    data = _load(deals, cache)
    try:
        assert _database(data) == ""
        assert _won_revenue(data) == 0
    finally:
        data.close()


def test_a_cache_folder_that_cannot_be_entered_does_not_stop_the_report(
    crm_dir: Path, tmp_path: Path
) -> None:
    # As another user than the cache's owner (a cache left by a `sudo` run): every access
    # to the folder is refused, and the report is computed all the same.
    locked = tmp_path / "locked"
    (locked / "cache").mkdir(parents=True)
    script = (
        "from pathlib import Path\n"
        "from opscope.config.reports import SourceConfig\n"
        "from opscope.report.sources import load_source\n"
        f"source = SourceConfig(path=Path({str(crm_dir)!r}), mapping='maven_crm')\n"
        "for _ in range(3):\n"
        f"    data = load_source(source, cache=Path({str(locked / 'cache')!r}))\n"
        "    print(data.con.execute(\"SELECT sum(amount) FROM deals WHERE status = 'won'\")"
        ".fetchone()[0])\n"
        "    data.close()\n"
    )
    locked.chmod(0o000)
    command = [sys.executable, "-c", script]
    if os.geteuid() == 0:  # root enters any folder: without the capabilities that allow it
        setpriv = require_tool("setpriv")
        command = [setpriv, "--bounding-set", "-dac_override,-dac_read_search", "--", *command]
    try:
        result = subprocess.run(command, check=False, capture_output=True, text=True, timeout=120)
    finally:
        locked.chmod(0o700)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["10005534.0"] * 3
    assert "Permission denied" in result.stderr  # logged as a warning
