"""Snapshots of loaded sources: a second load of unchanged files is read from the snapshot the
first kept, gives the same reports to the byte, and any change to the files (or the settings)
is read afresh."""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import time
from pathlib import Path

import pytest

from opscope.config.reports import SourceConfig
from opscope.report import snapshot
from opscope.report.building import ReportRequest, build_report
from opscope.report.periods import parse_period
from opscope.report.sources import Dataset, load_source
from tests.report.conftest import NOW
from tests.report.test_cli_report import run_cli


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


def _load(folder: Path, cache: Path, **settings: str) -> Dataset:
    source = SourceConfig(path=folder, mapping="maven_crm")
    data = load_source(source, timezone=settings.get("timezone", "UTC"), cache=cache)
    return data


def _copy(crm_dir: Path, folder: Path) -> Path:
    shutil.copytree(crm_dir, folder)
    return folder


def _won_revenue(data: Dataset) -> float:
    row = data.con.execute("SELECT sum(amount) FROM deals WHERE status = 'won'").fetchone()
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
    assert _reports(first) == expected
    first.close()  # waits for the snapshot
    kept = list(cache.glob("*.duckdb"))
    assert len(kept) == 1
    second = _load(crm_dir, cache)
    try:
        assert _database(second) == str(kept[0])
        assert _reports(second) == expected
        assert second.quality == quality
        # the acceptance figures (computed independently from the CSV) hold on the snapshot
        assert _won_revenue(second) == 10_005_534
        assert second.has("owners") and second.has("products") and second.has("accounts")
    finally:
        second.close()


def test_a_changed_value_of_the_same_size_is_read_afresh(crm_dir: Path, tmp_path: Path) -> None:
    folder, cache = _copy(crm_dir, tmp_path / "crm"), tmp_path / "cache"
    _load(folder, cache).close()
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
        assert _won_revenue(data) == 10_005_534 + (int(rows[won][7]) - old)
    finally:
        data.close()
    assert len(list(cache.glob("*.duckdb"))) == 1  # the old snapshot was replaced


def test_a_file_added_to_the_folder_is_read(crm_dir: Path, tmp_path: Path) -> None:
    folder, cache = _copy(crm_dir, tmp_path / "crm"), tmp_path / "cache"
    data = _load(folder, cache)
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
    _load(crm_dir, cache).close()
    other = _load(crm_dir, cache, timezone="Asia/Tokyo")
    assert _database(other) == ""  # not the UTC snapshot
    other.close()
    assert len(list(cache.glob("*.duckdb"))) == 2
    again = _load(crm_dir, cache, timezone="Asia/Tokyo")
    try:
        assert _database(again).endswith(".duckdb")
        row = again.con.execute("SELECT current_setting('TimeZone')").fetchone()
        assert row == ("Asia/Tokyo",)
    finally:
        again.close()


def test_an_unreadable_snapshot_is_replaced(
    crm_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "cache"
    _load(crm_dir, cache).close()
    (kept,) = cache.glob("*.duckdb")
    kept.write_bytes(kept.read_bytes()[:5000])  # truncated
    with caplog.at_level(logging.WARNING, logger="opscope.report.snapshot"):
        data = _load(crm_dir, cache)
    try:
        assert _database(data) == ""
        assert _won_revenue(data) == 10_005_534
        assert "cannot be read" in caplog.text
    finally:
        data.close()
    again = _load(crm_dir, cache)
    try:
        assert _database(again) == str(kept)
    finally:
        again.close()


def test_a_cache_that_cannot_be_written_does_not_stop_the_report(
    crm_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "not-a-folder"
    cache.write_text("")
    with caplog.at_level(logging.WARNING, logger="opscope.report.snapshot"):
        data = _load(crm_dir, cache)
        try:
            assert _won_revenue(data) == 10_005_534
        finally:
            data.close()
    assert "not written" in caplog.text


def test_a_large_file_modified_just_now_gets_no_snapshot_until_it_is_older(
    crm_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Files above HASHED_SIZE are known by their times; one written within the last
    # RACY_NS could change again within its timestamp's tick, unseen.
    monkeypatch.setattr(snapshot, "HASHED_SIZE", 0)
    folder, cache = _copy(crm_dir, tmp_path / "crm"), tmp_path / "cache"
    (folder / "sales_pipeline.csv").touch()
    _load(folder, cache).close()
    assert list(cache.glob("*.duckdb")) == []
    past = time.time_ns() - 60 * 10**9
    for path in folder.iterdir():
        os.utime(path, ns=(past, past))
    _load(folder, cache).close()
    assert len(list(cache.glob("*.duckdb"))) == 1


def test_the_cli_keeps_snapshots_in_the_cache_folder_unless_told_not_to(
    crm_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("OPSCOPE_CACHE_DIR", str(cache))
    args = ["report", "sales_performance", "--data", str(crm_dir), "--mapping", "maven_crm"]
    args += ["--period", "2017-Q4", "--format", "json"]
    for flags, out in (["--no-cache"], "a"), ([], "b"), ([], "c"):
        result = run_cli(*args, *flags, "--out", str(tmp_path / out))
        assert result.returncode == 0, result.stderr
        assert len(list(cache.glob("*.duckdb"))) == (0 if flags else 1)
    name = "sales_performance-2017-Q4.json"
    first = json.loads((tmp_path / "a" / name).read_text())
    later = json.loads((tmp_path / "c" / name).read_text())
    assert {**later, "generated_at": None} == {**first, "generated_at": None}
    with (crm_dir / "sales_pipeline.csv").open(newline="", encoding="utf-8") as f:
        won = [
            int(r["close_value"])
            for r in csv.DictReader(f)
            if r["deal_stage"] == "Won" and "2017-10-01" <= r["close_date"] < "2018-01-01"
        ]
    assert first["metrics"]["revenue.won"] == sum(won)
