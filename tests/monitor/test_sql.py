"""SQL collectors over real SQLite and DuckDB files holding the CRM dataset."""

from __future__ import annotations

import csv
import os
import sqlite3
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from opscope.clock import ManualClock
from opscope.config import parse_config
from opscope.monitor import Monitor
from opscope.monitor.collectors.sql import SqlError, display_url, rows_to_samples
from opscope.redaction import Redactor
from opscope.store import Store, instant_query, label_set, parse_selector

from ..conftest import ON_CI

NOW = 1_800_000_000.0
CRM = Path(os.environ.get("OPSCOPE_CRM_DATA", Path(__file__).parents[2] / ".." / "shared/data/crm"))
#: Won revenue per regional office over the whole dataset, computed independently (DuckDB's
#: own CSV reader and SQL over the raw files; the same figures as a spreadsheet pivot).
WON_BY_OFFICE = {"Central": 3_346_293.0, "East": 3_090_594.0, "West": 3_568_647.0}
WON_QUERY = (
    "SELECT t.regional_office AS region, sum(p.close_value) AS value "
    "FROM sales_pipeline p JOIN sales_teams t ON t.sales_agent = p.sales_agent "
    "WHERE p.deal_stage = 'Won' GROUP BY t.regional_office"
)


def crm_dir() -> Path:
    if not (CRM / "sales_pipeline.csv").exists():
        message = f"the CRM dataset is not at {CRM} (set OPSCOPE_CRM_DATA)"
        if ON_CI:
            pytest.fail(message)
        pytest.skip(message)
    return CRM


@pytest.fixture(scope="module")
def crm_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The pipeline and the teams in a SQLite file, loaded with the csv module."""
    source = crm_dir()
    path = tmp_path_factory.mktemp("crm") / "crm.db"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE sales_pipeline (opportunity_id TEXT, sales_agent TEXT, product TEXT, "
            "account TEXT, deal_stage TEXT, engage_date TEXT, close_date TEXT, close_value INTEGER)"
        )
        db.execute(
            "CREATE TABLE sales_teams (sales_agent TEXT, manager TEXT, regional_office TEXT)"
        )
        with (source / "sales_pipeline.csv").open(newline="") as f:
            rows = [[*r[:7], int(r[7]) if r[7] else None] for r in list(csv.reader(f))[1:]]
        db.executemany("INSERT INTO sales_pipeline VALUES (?,?,?,?,?,?,?,?)", rows)
        with (source / "sales_teams.csv").open(newline="") as f:
            db.executemany("INSERT INTO sales_teams VALUES (?,?,?)", list(csv.reader(f))[1:])
    return path


@pytest.fixture(scope="module")
def crm_duckdb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same tables in a DuckDB file, loaded with DuckDB's CSV reader."""
    source = crm_dir()
    path = tmp_path_factory.mktemp("crm") / "crm.duckdb"
    with duckdb.connect(str(path)) as db:
        for table in ("sales_pipeline", "sales_teams"):
            db.execute(
                f"CREATE TABLE {table} AS SELECT * FROM read_csv(?)", [str(source / f"{table}.csv")]
            )
    return path


def monitor_for(tmp_path: Path, sql_yaml: str, store: Store) -> Monitor:
    config = parse_config(
        f"monitor:\n  system: {{enabled: false}}\n  push: {{enabled: false}}\n  sql:\n{sql_yaml}",
        environ={},
    ).config
    return Monitor(config.monitor, store, clock=ManualClock(start=NOW))


def current(store: Store, selector: str) -> dict[str, float]:
    found = instant_query(store, parse_selector(selector), int(NOW * 1000), lookback_ms=300_000)
    return {dict(s.ref.labels).get("region", ""): s.value for s in found}


@pytest.mark.parametrize("kind", ["sqlite", "duckdb"])
async def test_won_revenue_per_regional_office(
    kind: str, crm_sqlite: Path, crm_duckdb: Path, tmp_path: Path
) -> None:
    path = crm_sqlite if kind == "sqlite" else crm_duckdb
    with Store.open(tmp_path) as store:
        monitor = monitor_for(
            tmp_path,
            f'    - {{name: revenue_won, url: "{kind}:///{path}", query: "{WON_QUERY}", '
            "job: crm, labels: {team: sales}}\n",
            store,
        )
        await monitor.collect_all()
        await monitor.aclose()
        assert current(store, "revenue_won") == WON_BY_OFFICE
        (sample, *_) = instant_query(
            store, parse_selector('revenue_won{region="East"}'), int(NOW * 1000)
        )
        assert dict(sample.ref.labels) == {"job": "crm", "region": "East", "team": "sales"}
        (up,) = instant_query(store, parse_selector("up"), int(NOW * 1000))
        assert up.value == 1.0 and dict(up.ref.labels) == {"job": "crm", "instance": "revenue_won"}
        (target,) = monitor.targets
        assert (target.kind, target.health, target.last_samples) == ("sql", "up", 3)
        assert target.url == f"{kind}:///{path}"


async def test_a_failing_and_a_slow_query_do_not_stop_the_others(
    crm_sqlite: Path, crm_duckdb: Path, tmp_path: Path
) -> None:
    endless_sqlite = "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r) SELECT count(*) AS value FROM r"
    endless_duckdb = "SELECT count(*) AS value FROM range(1000000000000) a"
    with Store.open(tmp_path) as store:
        monitor = monitor_for(
            tmp_path,
            f'    - {{name: revenue_won, url: "sqlite:///{crm_sqlite}", query: "{WON_QUERY}"}}\n'
            f'    - {{name: broken, url: "sqlite:///{crm_sqlite}", query: "SELECT x FROM nowhere"}}\n'
            f'    - {{name: slow_sqlite, url: "sqlite:///{crm_sqlite}", query: "{endless_sqlite}", '
            "timeout: 500ms}\n"
            f'    - {{name: slow_duckdb, url: "duckdb:///{crm_duckdb}", query: "{endless_duckdb}", '
            "timeout: 500ms}\n",
            store,
        )
        started = time.monotonic()
        await monitor.collect_all()
        elapsed = time.monotonic() - started
        health = {t.instance: t for t in monitor.targets}
        assert health["revenue_won"].health == "up"
        assert health["revenue_won"].last_duration is not None
        assert health["revenue_won"].last_duration < 0.5  # not held up by the slow ones
        assert current(store, "revenue_won") == WON_BY_OFFICE
        assert health["broken"].health == "down"
        assert "no such table: nowhere" in health["broken"].last_error
        for slow in ("slow_sqlite", "slow_duckdb"):
            assert health[slow].health == "down"
            assert "timeout of 0.5s and was cancelled" in health[slow].last_error
        # Cancelled, not abandoned: the cycle ends soon after the timeout.
        assert elapsed < 3.0
        ups = {
            dict(s.ref.labels)["instance"]: s.value
            for s in instant_query(store, parse_selector("up"), int(NOW * 1000))
        }
        assert ups == {"revenue_won": 1.0, "broken": 0.0, "slow_sqlite": 0.0, "slow_duckdb": 0.0}
        # The interrupted connections go back to the pool usable: the next cycle works.
        await monitor.collect_all()
        assert health["revenue_won"].health == "up"
        await monitor.aclose()


async def test_a_query_that_starts_failing_marks_its_series_stale(tmp_path: Path) -> None:
    db = tmp_path / "deals.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE deals (region TEXT, amount REAL)")
        conn.executemany("INSERT INTO deals VALUES (?, ?)", [("North", 10.5), ("South", 4.0)])
    query = "SELECT region, sum(amount) AS value FROM deals GROUP BY region"
    with Store.open(tmp_path / "data") as store:
        monitor = monitor_for(
            tmp_path,
            f'    - {{name: deals_amount, url: "sqlite:///{db}", query: "{query}"}}\n',
            store,
        )
        await monitor.collect_all()
        assert current(store, "deals_amount") == {"North": 10.5, "South": 4.0}
        with sqlite3.connect(db) as conn:
            conn.execute("DROP TABLE deals")
        assert isinstance(monitor.clock, ManualClock)
        await monitor.clock.advance(10)
        await monitor.collect_all()
        later = instant_query(
            store, parse_selector("deals_amount"), int((NOW + 10) * 1000), lookback_ms=300_000
        )
        assert later == []  # stale at once, not 5 minutes later
        await monitor.aclose()


def test_rows_become_samples_with_labels_from_the_other_columns() -> None:
    samples = rows_to_samples(
        ["Region", "VALUE", "closed"],
        [("North", Decimal("2.5"), None), ("South", 3, "2017-03-01"), ("East", None, "x")],
        value_column="value",
        extra_labels={"job": "sql"},
    )
    assert samples == [
        (label_set({"job": "sql", "Region": "North"}), 2.5),
        (label_set({"job": "sql", "Region": "South", "closed": "2017-03-01"}), 3.0),
    ]


@pytest.mark.parametrize(
    ("columns", "rows", "message"),
    [
        (["region", "total"], [("a", 1)], 'no column "value"'),
        (["sum(amount)", "value"], [(1, 1)], 'column "sum(amount)" is not a valid label name'),
        (["region", "value"], [("a", "lots")], "row 1: value 'lots' is not a number"),
        (["region", "value"], [("a", 1), ("a", 2)], "rows 1 and 2 have the same labels"),
        (["k", "k", "value"], [("a", "b", 1)], 'the column name "k" appears twice'),
    ],
)
def test_result_shapes_that_cannot_be_samples(
    columns: list[str], rows: list[tuple[object, ...]], message: str
) -> None:
    with pytest.raises(SqlError, match=message.replace("(", r"\(").replace(")", r"\)")):
        rows_to_samples(columns, rows, value_column="value", extra_labels={})


def test_a_password_in_the_url_is_never_shown() -> None:
    shown = display_url("postgresql+psycopg://ops:s3cret@db.example.com/crm")
    assert shown == "postgresql+psycopg://ops:***@db.example.com/crm"


def collect_one(tmp_path: Path, url: str, query: str) -> tuple[Monitor, Store]:
    """A monitor with the one query ``query`` on ``url`` (the caller closes both)."""
    store = Store.open(tmp_path / "data")
    monitor = monitor_for(
        tmp_path, f'    - {{name: probe_query, url: "{url}", query: "{query}"}}\n', store
    )
    return monitor, store


@pytest.mark.parametrize(
    ("kind", "statement"),
    [
        ("sqlite", "DROP TABLE deals"),
        ("sqlite", "DELETE FROM deals RETURNING 1 AS value"),
        ("duckdb", "DROP TABLE deals"),
        ("duckdb", "DELETE FROM deals RETURNING 1 AS value"),
    ],
)
async def test_queries_cannot_change_the_database(
    kind: str, statement: str, tmp_path: Path
) -> None:
    path = tmp_path / f"crm.{kind}"
    connect = sqlite3.connect if kind == "sqlite" else duckdb.connect
    db = connect(str(path))
    db.execute("CREATE TABLE deals (region TEXT, amount REAL)")
    db.execute("INSERT INTO deals VALUES ('North', 10.5)")
    if kind == "sqlite":
        db.commit()  # type: ignore[union-attr]
    db.close()
    monitor, store = collect_one(tmp_path, f"{kind}:///{path}", statement)
    with store:
        await monitor.collect_all()
        await monitor.aclose()
        (target,) = monitor.targets
        assert target.health == "down"
        assert "read-only" in target.last_error or "readonly" in target.last_error
    db = connect(str(path))
    assert db.execute("SELECT region, amount FROM deals").fetchall() == [("North", 10.5)]
    db.close()


async def test_duckdb_queries_write_no_files_and_leave_the_file_to_its_writer(
    tmp_path: Path,
) -> None:
    path = tmp_path / "crm.duckdb"
    with duckdb.connect(str(path)) as db:
        db.execute("CREATE TABLE deals AS SELECT 'North' AS region, 10.5 AS value")
    written = tmp_path / "written.csv"
    store = Store.open(tmp_path / "data")
    monitor = monitor_for(
        tmp_path,
        f'    - {{name: deals, url: "duckdb:///{path}", query: "SELECT region, value FROM deals"}}\n'
        f'    - {{name: copier, url: "duckdb:///{path}", '
        f"query: \"COPY (SELECT 1 AS value) TO '{written}'\"}}\n",
        store,
    )
    with store:
        await monitor.collect_all()
        health = {t.instance: t for t in monitor.targets}
        assert health["deals"].health == "up"
        assert health["copier"].health == "down"
        assert not written.exists()
        # Between runs the file is free: another process takes DuckDB's write lock.
        script = f"import duckdb; duckdb.connect({str(path)!r}).execute('INSERT INTO deals VALUES (1, 2)')"
        writer = subprocess.run(
            [sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=60
        )
        assert writer.returncode == 0, writer.stderr
        await monitor.aclose()


@pytest.mark.parametrize("kind", ["sqlite", "duckdb"])
async def test_a_missing_database_file_is_an_error_and_is_not_created(
    kind: str, tmp_path: Path
) -> None:
    missing = tmp_path / "no_such_dir" / f"does_not_exist.{kind}"
    monitor, store = collect_one(tmp_path, f"{kind}:///{missing}", "SELECT 1 AS value")
    with store:
        await monitor.collect_all()
        await monitor.aclose()
        (target,) = monitor.targets
        assert (target.health, target.last_error) == ("down", f"database file not found: {missing}")
        (up,) = instant_query(store, parse_selector("up"), int(NOW * 1000))
        assert up.value == 0.0
    assert not missing.exists() and not missing.parent.exists()


async def test_numbers_stored_as_text_are_numbers(tmp_path: Path) -> None:
    """SQLite keeps what it is given: a TEXT column of figures is read as numbers, as
    sql_exporter does (Go's strconv.ParseFloat); text that is no number still fails the run."""
    db = tmp_path / "text.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE figures (region TEXT, value TEXT)")
        conn.executemany(
            "INSERT INTO figures VALUES (?, ?)",
            [("North", "1054"), ("South", "-2.5e3"), ("East", ".5"), ("West", "+Inf")],
        )
        conn.execute("CREATE TABLE words (region TEXT, value TEXT)")
        conn.execute("INSERT INTO words VALUES ('North', '12 apples')")
    monitor, store = collect_one(tmp_path, f"sqlite:///{db}", "SELECT * FROM figures")
    with store:
        await monitor.collect_all()
        await monitor.aclose()
        assert current(store, "probe_query") == {
            "North": 1054.0,
            "South": -2500.0,
            "East": 0.5,
            "West": float("inf"),
        }
    monitor, store = collect_one(tmp_path, f"sqlite:///{db}", "SELECT * FROM words")
    with store:
        await monitor.collect_all()
        await monitor.aclose()
        (target,) = monitor.targets
        assert (target.health, target.last_error) == (
            "down",
            "row 1: value '12 apples' is not a number",
        )


async def test_a_job_or_instance_column_is_exported_not_honored(tmp_path: Path) -> None:
    """Prometheus's honor_labels: false — a label of the target's own (job, instance) found
    in the data is kept as exported_job / exported_instance; the series stay the query's."""
    db = tmp_path / "jobs.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE runs (job TEXT, instance TEXT, exported_job TEXT, n INT)")
        conn.execute("INSERT INTO runs VALUES ('nightly', 'host-1', 'other', 3)")
    query = "SELECT job, instance, exported_job, n AS value FROM runs"
    monitor, store = collect_one(tmp_path, f"sqlite:///{db}", query)
    with store:
        await monitor.collect_all()
        await monitor.aclose()
        (sample,) = instant_query(store, parse_selector("probe_query"), int(NOW * 1000))
        assert dict(sample.ref.labels) == {
            "job": "sql",
            "exported_exported_job": "nightly",
            "exported_instance": "host-1",
            "exported_job": "other",
        }
        assert sample.value == 3.0


@pytest.mark.parametrize(
    "statement",
    [
        "ATTACH DATABASE '{dir}/evil.db' AS e",
        "VACUUM INTO '{dir}/copy.db'",
        "ATTACH 'file:{dir}/u.db?mode=rwc' AS u",
    ],
)
async def test_sqlite_queries_create_no_files(statement: str, tmp_path: Path) -> None:
    path = tmp_path / "crm.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE deals (region TEXT, amount REAL)")
    db.commit()
    db.close()
    files = tmp_path / "files"
    files.mkdir()
    monitor, store = collect_one(tmp_path, f"sqlite:///{path}", statement.format(dir=files))
    with store:
        await monitor.collect_all()
        await monitor.aclose()
        (target,) = monitor.targets
        assert target.health == "down"
    assert list(files.iterdir()) == []


async def test_a_locked_sqlite_file_fails_the_run_within_its_timeout(tmp_path: Path) -> None:
    """Another process holds an exclusive lock: the query gives up after its own timeout (1 s),
    not after sqlite3's default busy timeout of 5 s."""
    path = tmp_path / "crm.db"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys\n"
            "db = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
            "db.execute('CREATE TABLE deals (amount REAL)')\n"
            "db.execute('BEGIN EXCLUSIVE')\n"
            "print('locked', flush=True)\n"
            "sys.stdin.readline()\n",  # holds the lock until the test closes its stdin
            str(path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    store = Store.open(tmp_path / "data")
    monitor = monitor_for(
        tmp_path,
        f'    - {{name: locked, url: "sqlite:///{path}", '
        'query: "SELECT count(*) AS value FROM deals", timeout: 1s, interval: 10s}\n',
        store,
    )
    try:
        with store:
            started = time.monotonic()
            await monitor.collect_all()
            elapsed = time.monotonic() - started
            await monitor.aclose()
            (target,) = monitor.targets
            assert target.health == "down"
            assert "locked" in target.last_error or "timeout" in target.last_error
            assert elapsed < 4.0, f"the run took {elapsed:.1f} s"
    finally:
        holder.communicate("\n", timeout=10)


def test_a_secret_a_query_selects_is_not_stored_as_a_label() -> None:
    secret = "db-label-Secret-77"
    redact = Redactor([secret])
    samples = rows_to_samples(
        ["k", "value"],
        [(secret, 1.0), ("plain", 2.0)],
        value_column="value",
        extra_labels={},
        redact=redact,
    )
    assert [dict(labels)["k"] for labels, _ in samples] == ["***", "plain"]


def test_blob_labels_are_their_text_or_hex() -> None:
    samples = rows_to_samples(
        ["b", "value"], [(b"North", 1.0), (b"\x00\xff", 2.0)], value_column="value", extra_labels={}
    )
    assert [dict(labels)["b"] for labels, _ in samples] == ["North", "00ff"]


@pytest.mark.parametrize(
    ("url", "statement", "made"),
    [
        ("sqlite:///:memory:", "VACUUM INTO '{dir}/vac.db'", "vac.db"),
        ("sqlite://", "ATTACH DATABASE '{dir}/att.db' AS e", "att.db"),
        ("duckdb:///:memory:", "COPY (SELECT 42 AS value) TO '{dir}/duck.csv'", "duck.csv"),
    ],
)
async def test_in_memory_databases_write_no_files(
    url: str, statement: str, made: str, tmp_path: Path
) -> None:
    files = tmp_path / "files"
    files.mkdir()
    monitor, store = collect_one(tmp_path, url, statement.format(dir=files))
    with store:
        await monitor.collect_all()
        await monitor.aclose()
        (target,) = monitor.targets
        assert target.health == "down"
    assert not (files / made).exists()


async def test_in_memory_duckdb_reads_no_files(tmp_path: Path) -> None:
    secret_file = tmp_path / "private.csv"
    secret_file.write_text("value\n42\n")
    monitor, store = collect_one(
        tmp_path, "duckdb:///:memory:", f"SELECT value FROM read_csv('{secret_file}')"
    )
    with store:
        await monitor.collect_all()
        await monitor.aclose()
        (target,) = monitor.targets
        assert target.health == "down"
