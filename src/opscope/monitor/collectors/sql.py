"""SQL queries as collectors: each row of a named query is one sample (sql_exporter's model).

Per query and run:

* the value column (``value_column``, default ``value``) is the sample value — integers,
  floats, decimals and booleans are numbers, and so is text that spells a number (SQLite
  ``TEXT '1054'``, ``'2.5e3'``, ``'NaN'``, ``'+Inf'``: what Go's ``strconv.ParseFloat`` takes,
  as sql_exporter converts it); a NULL value leaves the row out; anything else fails the run;
* every other column is a label (its text; NULL: the label is absent) beside ``job`` and the
  configured ``labels``; a column named like a target label (``job``, ``instance``) is stored
  as ``exported_job`` / ``exported_instance``, as Prometheus does with ``honor_labels: false``,
  so a query never changes whose series it writes; a column name that is not a valid label
  name fails the run (give the expression an alias); two rows with the same labels fail the
  run, like a duplicate series in a scrape;
* ``up`` (1 or 0) and ``sql_query_duration_seconds`` are written with the labels ``job`` and
  ``instance`` (the query's name), so a failing query is visible as ``up == 0`` — and on
  ``/api/v1/targets`` with its error, like a failed scrape;
* series of the previous run that are missing now get a staleness marker; a failed run stores
  nothing from the query and marks them all stale.

Queries only read: SQLite and DuckDB files are opened read-only (a missing file fails the run
with "database file not found", it is never created), and every run's transaction is rolled
back. A server database (PostgreSQL, MySQL) should still be queried as a read-only user: MySQL
commits DDL whatever the transaction.

Queries run on a thread pool of their own, through one SQLAlchemy engine per database URL
(pooled, except DuckDB files: connected per run so that the application owning the file can
take DuckDB's write lock between runs), so a slow database never blocks the event loop, the
store or the other collectors. A
query still running at its timeout is cancelled through the driver — ``interrupt()`` for SQLite
and DuckDB, ``cancel()`` for PostgreSQL drivers — and the run fails with a timeout error.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

import numpy as np
from sqlalchemy import URL, Engine, NullPool, create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, NoSuchModuleError, SQLAlchemyError

from opscope.config.business import SqlQueryConfig
from opscope.config.types import LABEL_NAME
from opscope.errors import CollectError
from opscope.monitor.collectors.base import TargetHealth
from opscope.redaction import hide_url_secrets
from opscope.store import STALE_NAN, Batch, LabelSet, label_set
from opscope.store.database import FloatArray, IntArray

log = logging.getLogger(__name__)

#: The synthetic series written for every run of a query, in the order written.
SQL_SERIES = ("up", "sql_query_duration_seconds")
#: A query returning more rows than this fails (protects the store, like ``sample_limit``).
MAX_ROWS = 100_000
#: Seconds to wait for a cancelled query to give its thread back.
CANCEL_GRACE = 5.0
#: Optional drivers, by SQLAlchemy dialect, and the extra that installs each.
_EXTRAS = {"postgresql": "postgres", "mysql": "mysql", "mariadb": "mysql"}


class SqlError(CollectError):
    """A query failed: driver error, bad result shape, timeout."""


def display_url(url: str) -> str:
    """``url`` with its password — user info or a query parameter such as libpq's
    ``?password=`` — replaced by ``***``, fit for logs and the API."""
    try:
        make_url(url)
    except SQLAlchemyError:
        return "(invalid database URL)"
    return hide_url_secrets(url)


def database_file(url: str) -> Path | None:
    """The file of a SQLite or DuckDB URL (``sqlite:///crm.db``, ``duckdb:///crm.duckdb``,
    ``sqlite:///file:crm.db?uri=true``); ``None`` for in-memory and server databases."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    database = parsed.database or ""
    if backend not in ("sqlite", "duckdb") or database in ("", ":memory:"):
        return None
    if backend == "sqlite" and database.startswith("file:"):
        path = urlsplit(database).path
        return Path(unquote(path)) if path and path != ":memory:" else None
    return Path(database)


def _create_engine(url: str) -> Engine:
    """An engine whose connections cannot change a SQLite or DuckDB file.

    SQLite files open with ``mode=ro`` (never created, every write refused) and
    ``PRAGMA query_only``; DuckDB files with ``read_only=True`` and external access off (no
    ``COPY … TO`` a file, no ``read_csv``), one connection per run (``NullPool``). Server
    databases get a pooled engine; :meth:`SqlCollector._execute` rolls back every run.
    """
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    path = database_file(url)
    if backend == "sqlite" and path is not None:
        return create_engine(
            "sqlite://", creator=lambda: _sqlite_read_only(parsed), pool_pre_ping=True
        )
    if backend == "sqlite":  # in memory: nothing to read, but no file may be written either
        return create_engine("sqlite://", creator=_sqlite_in_memory, pool_pre_ping=True)
    if backend == "duckdb" and path is not None:
        # Read-only, and no file access beside the database: COPY … TO cannot write files.
        args = {"read_only": True, "config": {"enable_external_access": False}}
        return create_engine(url, connect_args=args, poolclass=NullPool)
    if backend == "duckdb":  # in memory: no COPY … TO, read_csv or ATTACH of files either
        args = {"config": {"enable_external_access": False}}
        return create_engine(url, connect_args=args, poolclass=NullPool)
    return create_engine(url, pool_pre_ping=True)


def _sqlite_in_memory() -> sqlite3.Connection:
    """An in-memory SQLite database that can attach nothing (``VACUUM INTO`` and ``ATTACH``
    would create files)."""
    connection = sqlite3.connect(":memory:", check_same_thread=False)
    connection.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
    return connection


def _sqlite_read_only(parsed: URL) -> sqlite3.Connection:
    """A SQLite connection that opens the file read-only (``mode=ro``: SQLite never creates
    it, and refuses every write) with ``PRAGMA query_only`` and no database to attach (``ATTACH``
    and ``VACUUM INTO`` would create files)."""
    database = parsed.database or ""
    if not database.startswith("file:"):
        database = "file:" + quote(database)
    split = urlsplit(database)
    params = [(k, v) for k, v in parse_qsl(split.query) if k != "mode"]
    uri = split._replace(query=urlencode([*params, ("mode", "ro")])).geturl()
    connection = sqlite3.connect(uri, uri=True, check_same_thread=False)
    connection.execute("PRAGMA query_only = ON")
    connection.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
    return connection


class SqlEngines:
    """One pooled SQLAlchemy engine per database URL, created on first use (thread-safe).

    A driver that is not installed fails each run of its queries with a message naming the
    extra to install (``pip install 'opscope[postgres]'``).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._engines: dict[str, Engine] = {}

    def get(self, url: str) -> Engine:
        """The engine of ``url``; raises :class:`SqlError` when it cannot be created.

        SQLite and DuckDB files are opened read-only (see :func:`_create_engine`); a DuckDB
        file is connected per run and never kept open (DuckDB lets no other process open a
        file while a connection holds it for writing, and no writer in while one holds it
        for reading: between runs, the application that owns the file can write).
        """
        with self._lock:
            engine = self._engines.get(url)
            if engine is None:
                try:
                    engine = _create_engine(url)
                except (NoSuchModuleError, ImportError) as exc:
                    dialect = make_url(url).get_backend_name()
                    extra = _EXTRAS.get(dialect)
                    hint = f" (pip install 'opscope[{extra}]')" if extra else ""
                    raise SqlError(f"no driver for {dialect}{hint}: {exc}") from exc
                except (SQLAlchemyError, ValueError) as exc:
                    raise SqlError(f"cannot use database {display_url(url)}: {exc}") from exc
                self._engines[url] = engine
            return engine

    def dispose(self) -> None:
        """Close every pooled connection."""
        with self._lock:
            for engine in self._engines.values():
                engine.dispose()
            self._engines.clear()


@dataclass
class _Run:
    """One run of a query, shared between the event loop and the worker thread: the raw
    driver connection once the worker has it, so the loop can cancel the statement."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    connection: Any = None
    cancelled: bool = False

    def attach(self, connection: Any) -> None:
        with self.lock:
            if self.cancelled:
                raise SqlError("cancelled before it started")
            self.connection = connection

    def cancel(self) -> bool:
        """Ask the driver to stop the running statement; ``False`` when it cannot."""
        with self.lock:
            self.cancelled = True
            connection = self.connection
        if connection is None:
            return True
        for method in ("interrupt", "cancel"):  # SQLite/DuckDB; psycopg, psycopg2, asyncpg
            stop = getattr(connection, method, None)
            if callable(stop):
                stop()
                return True
        return False


#: Text that is a number: decimal with optional exponent, or NaN / Inf / Infinity with a sign
#: (case-insensitive) — what Go's ``strconv.ParseFloat`` accepts in base 10.
_NUMBER_TEXT = re.compile(
    r"[+-]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|inf(?:inity)?)|nan", re.IGNORECASE
)
#: Labels a target sets on its samples; a column of one of these names gets ``exported_``.
TARGET_LABELS = ("job", "instance")


def _number(value: Any) -> float | None:
    """A value cell as a float: numbers and text spelling a number; ``None`` for NULL."""
    if value is None:
        return None
    if isinstance(value, bool | int | float | Decimal):
        return float(value)
    if isinstance(value, str) and _NUMBER_TEXT.fullmatch(value):
        return float(value)
    raise SqlError(f"value {str(value)[:40]!r} is not a number")


def _exported(name: str, taken: set[str]) -> str:
    """``name``, prefixed with ``exported_`` while it clashes with a target label or another
    column (Prometheus's ``honor_labels: false`` renaming)."""
    while name in TARGET_LABELS or name in taken:
        name = "exported_" + name
    return name


def _label_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray | memoryview):  # a BLOB: its text, else its hex
        data = bytes(value)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return data.hex()
    if hasattr(value, "isoformat"):
        return str(value.isoformat())
    return str(value)


def rows_to_samples(
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    value_column: str,
    extra_labels: dict[str, str],
    redact: Callable[[str], str] = str,
) -> list[tuple[LabelSet, float]]:
    """The samples of a result: ``(labels, value)`` per row whose value is not NULL; label
    values pass through ``redact`` (a secret a query selects is not stored).

    ``value_column`` is matched exactly, else ignoring case (PostgreSQL folds unquoted
    names to lower case). A column named ``job`` or ``instance`` becomes the label
    ``exported_job`` / ``exported_instance`` (``exported_exported_job`` when that name is taken
    too). Raises :class:`SqlError` for a missing value column, a column name that is not a label
    name, a value that is not a number, or two rows with equal labels.
    """
    index = next((i for i, c in enumerate(columns) if c == value_column), None)
    if index is None:
        index = next((i for i, c in enumerate(columns) if c.lower() == value_column.lower()), None)
    if index is None:
        raise SqlError(
            f'the result has no column "{value_column}" (columns: {", ".join(columns)}); '
            "alias the value, e.g. sum(amount) AS value"
        )
    label_columns = [(i, c) for i, c in enumerate(columns) if i != index]
    repeated = sorted({c for c in columns if list(columns).count(c) > 1})
    if repeated:
        raise SqlError(f'the column name "{repeated[0]}" appears twice; give one an alias')
    for _, name in label_columns:
        if not LABEL_NAME.match(name) or name.startswith("__"):
            raise SqlError(f'column "{name}" is not a valid label name; give it an alias')
    names = {c for _, c in label_columns}
    label_columns = [
        (i, _exported(c, names - {c}) if c in TARGET_LABELS else c) for i, c in label_columns
    ]
    samples: list[tuple[LabelSet, float]] = []
    seen: dict[LabelSet, int] = {}
    for number, row in enumerate(rows, start=1):
        try:
            value = _number(row[index])
        except SqlError as exc:
            raise SqlError(f"row {number}: {exc}") from None
        if value is None:
            continue
        labels = dict(extra_labels)
        for i, name in label_columns:
            if row[i] is None:
                labels.pop(name, None)
            else:
                labels[name] = redact(_label_value(row[i]))
        key = label_set(labels)
        if key in seen:
            raise SqlError(f"rows {seen[key]} and {number} have the same labels {dict(key)}")
        seen[key] = number
        samples.append((key, value))
    return samples


class SqlCollector:
    """Runs one named query against its database at an interval."""

    def __init__(
        self,
        *,
        query: SqlQueryConfig,
        engines: SqlEngines,
        executor: Executor,
        interval: float,
        timeout: float,
        resolve: Callable[[str, LabelSet], int],
        redact: Callable[[str], str] = str,
    ) -> None:
        self._query = query
        self._redact = redact
        self._engines = engines
        self._executor = executor
        self._interval = interval
        self._timeout = min(timeout, interval)
        self._resolve = resolve
        self.group = f"sql/{query.job}/{query.name}"
        target_labels = {"job": query.job, "instance": query.name}
        self.health = TargetHealth(
            kind="sql",
            job=query.job,
            instance=query.name,
            url=display_url(redact(query.url)),
            interval=interval,
            labels={**query.labels, **target_labels},
        )
        self._sample_labels = {**query.labels, "job": query.job}
        self._synthetic = np.array(
            [resolve(name, label_set(target_labels)) for name in SQL_SERIES], dtype=np.int64
        )
        self._ids: dict[LabelSet, int] = {}
        self._live = np.zeros(0, dtype=np.int64)

    @property
    def interval(self) -> float:
        """Seconds between runs."""
        return self._interval

    async def aclose(self) -> None:
        """Nothing to release: engines and the thread pool belong to the monitor."""

    def _execute(self, run: _Run) -> tuple[list[str], list[Sequence[Any]]]:
        """Run the query (in a worker thread); the rows, at most ``MAX_ROWS``.

        The statement runs in a transaction that is always rolled back (PostgreSQL's is
        also declared read-only), on a read-only connection for SQLite and DuckDB files.
        """
        path = database_file(self._query.url)
        if path is not None and not path.exists():
            raise SqlError(f"database file not found: {path}")
        engine = self._engines.get(self._query.url)
        try:
            with engine.connect() as connection:
                if engine.dialect.name == "postgresql":
                    connection.execution_options(postgresql_readonly=True)  # in place
                run.attach(connection.connection.dbapi_connection)
                if engine.dialect.name == "sqlite":  # wait for a lock no longer than the run
                    connection.exec_driver_sql(f"PRAGMA busy_timeout = {int(self._timeout * 1000)}")
                try:
                    result = connection.exec_driver_sql(self._query.query)
                    if not result.returns_rows:
                        raise SqlError("the statement returns no rows (expected a SELECT)")
                    columns = list(result.keys())
                    rows = result.fetchmany(MAX_ROWS + 1)
                    result.close()
                finally:
                    connection.rollback()
        except DBAPIError as exc:
            cause = exc.orig if exc.orig is not None else exc
            raise SqlError(f"{type(cause).__name__}: {cause}".strip()) from exc
        except SQLAlchemyError as exc:
            raise SqlError(str(exc).split("\n", 1)[0]) from exc
        if len(rows) > MAX_ROWS:
            raise SqlError(f"the query returned more than {MAX_ROWS} rows")
        return columns, list(rows)

    def _samples(self, run: _Run) -> tuple[IntArray, FloatArray]:
        columns, rows = self._execute(run)
        samples = rows_to_samples(
            columns,
            rows,
            value_column=self._query.value_column,
            extra_labels=self._sample_labels,
            redact=self._redact,
        )
        ids = np.empty(len(samples), dtype=np.int64)
        values = np.empty(len(samples), dtype=np.float64)
        for i, (labels, value) in enumerate(samples):
            series_id = self._ids.get(labels)
            if series_id is None:
                series_id = self._ids[labels] = self._resolve(self._query.name, labels)
            ids[i] = series_id
            values[i] = value
        return ids, values

    async def _run_with_timeout(self) -> tuple[IntArray, FloatArray]:
        run = _Run()
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, self._samples, run)
        try:
            return await asyncio.wait_for(asyncio.shield(future), self._timeout)
        except (TimeoutError, asyncio.CancelledError) as exc:
            await self._cancel(run, future)
            if isinstance(exc, TimeoutError):
                raise SqlError(
                    f"the query ran longer than its timeout of {self._timeout:g}s and was cancelled"
                ) from None
            raise

    async def _cancel(self, run: _Run, future: asyncio.Future[Any]) -> None:
        """Cancel the running statement and wait for its thread to come back (a statement may
        start just after a first interrupt, so interrupt until it does)."""
        deadline = time.monotonic() + CANCEL_GRACE
        while not future.done() and time.monotonic() < deadline:
            if not run.cancel():
                log.warning(
                    "%s: the %s driver cannot cancel a running statement; it runs on until "
                    "the database ends it",
                    self.group,
                    display_url(self._query.url).split(":", 1)[0],
                )
                break
            await asyncio.wait({future}, timeout=0.1)
        # The interrupted statement's error is expected: retrieve it, now or when it comes.
        future.add_done_callback(lambda f: f.cancelled() or f.exception())

    async def collect(self, now: float) -> list[Batch]:
        """Run the query once, stamped ``now``; never raises for database failures."""
        started = time.perf_counter()
        error = ""
        try:
            ids, values = await self._run_with_timeout()
        except SqlError as exc:
            error = str(exc)
            ids = np.zeros(0, dtype=np.int64)
            values = np.zeros(0, dtype=np.float64)
        duration = time.perf_counter() - started
        clash = np.isin(ids, self._synthetic)
        if clash.any():  # a query named like a synthetic series: the synthetic one wins
            ids, values = ids[~clash], values[~clash]
        stale = np.setdiff1d(self._live, ids, assume_unique=True)
        self._live = ids
        batch = Batch(
            group=self.group,
            timestamp_ms=int(now * 1000),
            series_ids=np.concatenate([ids, stale, self._synthetic]),
            values=np.concatenate(
                [values, np.full(len(stale), STALE_NAN), [0.0 if error else 1.0, duration]]
            ),
        )
        self.health.record(ok=not error, at=now, duration=duration, samples=len(ids), error=error)
        return [batch]
