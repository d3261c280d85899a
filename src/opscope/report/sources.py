"""Loading a data source into DuckDB as canonical tables, with a data-quality log.

:func:`load_source` reads files (CSV, Parquet, Excel), a SQL database (SQLAlchemy URL) or a
DuckDB database file, applies the mapping (:mod:`opscope.report.schema`) and leaves one DuckDB
table per canonical table in an in-memory database: ``deals`` (always), and ``owners``,
``products``, ``accounts``, ``leads``, ``targets``, ``automations``, ``nps_responses``,
``competitors`` when the mapping has them.

Parsing rules (what real exports need):

* amounts: currency symbols and codes, spaces and thousands separators are removed
  (``$1,200.50`` → 1200.5, ``£9000`` → 9000, ``1.200,50 €`` with ``decimal: ","``, or without
  it when the column's values can only be read that way: :func:`_decimal_mark`); a value in
  parentheses is negative; anything else that is not a number (also ``nan``, ``inf``,
  ``1e309``) becomes empty and is counted; native Excel numbers keep their value;
* dates: ISO 8601 dates or timestamps, or the mapping's ``date_format``; a timestamp with an
  offset is converted to the report's timezone before its calendar day is taken, one without is
  taken as local time there;
* text: trimmed; empty text is missing; ``rename`` maps values (stage renaming);
* deal status: ``won``/``lost``/``open`` from ``is_won``/``is_closed`` when mapped, else from
  ``won_stages``/``lost_stages`` (case-insensitive).

Names a deal gives for its owner, product or account are matched to the lookup table
(``owners``, ``products``, ``accounts``): a spelling that differs only in case, spaces or
punctuation (``GTXPro`` for ``GTX Pro``) is replaced by the table's spelling with a warning;
names that still match nothing are kept and reported. Without a lookup table, spellings of one
name that differ that way are unified to the most frequent one, with a warning. Every such
decision, rows dropped (no id, duplicate id), unparseable values, values that look like typos
(kept as found) and reps without deals go to :attr:`Dataset.quality`.

How (for speed on large exports): DuckDB's CSV reader types the date and number columns
itself where the file allows (see ``_Reader._csv_view``; the first value it refuses sends the
file through the text parsing above, so the rules and counts are the same either way); the
deals are joined to the lookup tables (team, region, segment) as they are read; the checks are
set-based queries over the whole table (one counts ids, one counts deals per stage, owner,
product and account with ``GROUPING SETS``); and a corrected name is written by an update of
the deals that spell it otherwise (joined from a table of spellings), not by rewriting the
table.
"""

from __future__ import annotations

import csv
import difflib
import glob
import logging
import re
import threading
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

import duckdb

from opscope.config.reports import (
    CANONICAL_COLUMNS,
    DealsMapping,
    MappingPreset,
    SourceConfig,
    TableMapping,
)
from opscope.errors import MappingError, SourceError
from opscope.report.schema import (
    LOOKUPS,
    PRESETS,
    ResolvedMapping,
    column_kind,
    resolve_mapping,
)
from opscope.report.snapshot import (
    SnapshotKey,
    open_snapshot,
    seen_before,
    snapshot_key,
    write_snapshot,
)

_DUCKDB_SUFFIXES = (".duckdb", ".ddb", ".db")
_EXCEL_SUFFIXES = (".xlsx", ".xlsm")

T = TypeVar("T")

log = logging.getLogger(__name__)

#: SQL type of ``deals.status``: an enum compares with ``'won'`` like text, but as a number
#: (every closed-deal and pipeline query filters on it).
STATUS_TYPE = "ENUM('open', 'won', 'lost')"

#: ``progress(step)`` is called with a short description before each loading step.
Progress = Callable[[str], None]


@dataclass
class Dataset:
    """Canonical tables of one source in an in-memory DuckDB database.

    ``tables`` names the canonical tables present and ``rows`` their row counts; ``quality``
    holds data-quality lines in the order they were found; ``stage_order`` and
    ``stage_probabilities`` come from the mapping.
    """

    con: duckdb.DuckDBPyConnection
    tables: frozenset[str]
    timezone: str
    currency: str = "USD"
    locale: str = "en_US"
    stage_order: list[str] = field(default_factory=list)
    stage_probabilities: dict[str, float] = field(default_factory=dict)
    quality: list[str] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)
    _memo: dict[tuple[Any, ...], Any] = field(default_factory=dict, repr=False)
    _keeping: threading.Thread | None = field(default=None, repr=False)

    def has(self, table: str) -> bool:
        """Whether the source has the canonical ``table`` with at least one row."""
        if table not in self.tables:
            return False
        if table not in self.rows:
            row = _one(self.con, f"SELECT count(*) FROM {table}")
            self.rows[table] = int(row[0])
        return self.rows[table] > 0

    def memo(self, key: tuple[Any, ...], compute: Callable[[], T]) -> T:
        """``compute()``, remembered under ``key`` (the function and its arguments): the tables
        do not change once loaded, and reports built from one dataset ask for the same figures
        (the current, previous and last year's period in both the sales report and the
        executive summary)."""
        if key not in self._memo:
            self._memo[key] = compute()
        return cast(T, self._memo[key])

    def remembers(self, key: tuple[Any, ...]) -> bool:
        """Whether :meth:`memo` holds a result under ``key``."""
        return key in self._memo

    def close(self) -> None:
        """Release the DuckDB database (once a snapshot being written is complete)."""
        if self._keeping is not None:
            self._keeping.join()
            self._keeping = None
        self.con.close()


def _keep_snapshot(
    cache: Path,
    key: SnapshotKey,
    source: SourceConfig,
    mapping: ResolvedMapping,
    *,
    base: Path,
    timezone: str,
) -> bool:
    """Whether to keep a snapshot of the load just done: its files did not change while they
    were read, none is too young to trust by its times, and they were loaded before (see
    :mod:`opscope.report.snapshot`)."""
    if key.racy:
        return False
    after = snapshot_key(source, mapping, base=base, timezone=timezone)
    if not key.unchanged(after):
        log.info("the files of %s changed while they were read: no snapshot kept", source.path)
        return False
    return seen_before(cache, key)


def _keep(
    writer: duckdb.DuckDBPyConnection, meta: dict[str, Any], cache: Path, key: SnapshotKey
) -> None:
    try:
        write_snapshot(writer, meta, cache, key)
    finally:
        writer.close()


def _q(name: str) -> str:
    """``name`` as a quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def _lit(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _one(con: duckdb.DuckDBPyConnection, sql: str) -> tuple[Any, ...]:
    """The one row of the query ``sql``, its result read to the end: a result left unfinished
    (``fetchone``) keeps the connection busy, and the next ``register`` of a data frame (an
    Excel sheet, a SQL table) then fails."""
    rows = con.execute(sql).fetchall()
    if not rows:
        raise SourceError(f"no result from {sql}")
    return tuple(rows[0])


def _n(count: int) -> str:
    return f"{count:,}"


def load_source(
    source: SourceConfig,
    *,
    base: Path = Path("."),
    timezone: str = "UTC",
    progress: Progress | None = None,
    cache: Path | None = None,
) -> Dataset:
    """Read ``source`` (paths relative to ``base``) into canonical DuckDB tables.

    With ``cache`` (a folder), a file source whose files are unchanged since an earlier load
    with the same settings is read from that load's snapshot, and a fresh load leaves one
    there (:mod:`opscope.report.snapshot`); the dataset is the same either way.

    Raises :class:`SourceError` when a file or table is missing, a mapped column does not exist
    (naming the columns there are), a database cannot be reached, or no deals table results.
    """
    try:
        mapping = resolve_mapping(source.mapping)
    except ValueError as exc:
        raise SourceError(str(exc)) from None
    key = None
    if cache is not None:
        key = snapshot_key(source, mapping, base=base, timezone=timezone)
        found = open_snapshot(cache, key, timezone) if key is not None else None
        if found is not None:
            if progress:
                progress("reading the snapshot of unchanged files")
            snap, meta = found
            return Dataset(
                con=snap,
                tables=frozenset(meta["tables"]),
                timezone=timezone,
                currency=source.currency,
                locale=source.locale,
                stage_order=list(meta["stage_order"]),
                stage_probabilities=dict(meta["stage_probabilities"]),
                quality=list(meta["quality"]),
                rows=dict(meta["rows"]),
            )
    con = duckdb.connect(":memory:")
    con.execute(f"SET TimeZone = {_lit(timezone)}")
    # Rows in any order while loading: DuckDB then writes tables from both threads at once.
    # Where the order matters (the first of repeated ids is kept) the deals are read again
    # in the source's order (see _finish_deals).
    con.execute("SET preserve_insertion_order = false")
    dataset = Dataset(
        con=con,
        tables=frozenset(),
        timezone=timezone,
        currency=source.currency,
        locale=source.locale,
        stage_order=list(mapping.deals.stage_order),
        stage_probabilities=dict(mapping.deals.stage_probabilities),
    )
    try:
        reader = _Reader(source, base, con)
        loaded: set[str] = set()
        raws: dict[str, str] = {}
        tables = {**mapping.tables, **reader.discovered(mapping)}
        # The lookup tables first: the deals are joined to them as they are read.
        order = sorted(tables, key=lambda t: t not in ("owners", "accounts"))
        for table in order:
            table_mapping = tables[table]
            if progress:
                progress(f"reading {table}")
            raw = reader.raw(table, table_mapping, required=table == "deals")
            if raw is None:
                continue
            derived = _derived_deal_columns(mapping.deals, loaded) if table == "deals" else None
            try:
                _parse_table(dataset, table, table_mapping, raw, derived)
            except duckdb.ConversionException:
                # A value the typed reading of a CSV file refused (a timestamp in a date
                # column, "$1,200" in an amount column): read the file as text instead and
                # parse every value in SQL, counting what cannot be parsed.
                if not reader.as_text(raw):
                    raise
                _parse_table(dataset, table, table_mapping, raw, derived)
            raws[table] = raw
            loaded.add(table)
        dataset.tables = frozenset(loaded)
        if progress:
            progress("checking deals")

        def in_source_order() -> None:
            con.execute("SET preserve_insertion_order = true")
            con.execute("DROP TABLE deals")
            _parse_table(
                dataset,
                "deals",
                mapping.deals,
                raws["deals"],
                _derived_deal_columns(mapping.deals, loaded),
                log=False,
            )

        stages = _finish_deals(dataset, mapping, in_source_order)
        _check_typos(dataset, stages)
        con.execute("SET preserve_insertion_order = true")
        if (
            key is not None
            and cache is not None
            and _keep_snapshot(cache, key, source, mapping, base=base, timezone=timezone)
        ):
            if progress:
                progress("keeping a snapshot")
            meta = {
                "tables": sorted(dataset.tables),
                "rows": {t: dataset.rows[t] for t in dataset.tables if t in dataset.rows},
                "quality": dataset.quality,
                "stage_order": dataset.stage_order,
                "stage_probabilities": dataset.stage_probabilities,
            }
            # Written from a second connection while the reports are computed and rendered;
            # close() waits for it.
            writer = con.cursor()
            dataset._keeping = threading.Thread(
                target=_keep, args=(writer, meta, cache, key), name="source-snapshot"
            )
            dataset._keeping.start()
    except duckdb.Error as exc:
        con.close()
        if reader.csv_path is not None and not isinstance(exc, duckdb.ConversionException):
            problem = _csv_problem(reader.csv_path)
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise SourceError(
                problem or f"{reader.csv_path}: cannot be read as CSV ({first})"
            ) from exc
        raise SourceError(f"cannot read {reader.where}: {exc}") from exc
    except MappingError as exc:
        con.close()
        raise MappingError(f"{reader.where}: {exc}", table=exc.table, column=exc.column) from None
    except SourceError:
        con.close()
        raise
    return dataset


class _Reader:
    """Finds the raw relation of each table: a file, a database table, or a DuckDB table."""

    def __init__(self, source: SourceConfig, base: Path, con: duckdb.DuckDBPyConnection) -> None:
        self.source = source
        self.con = con
        self.where = str(source.path or "the database")
        self.base = base
        self.path = (base / source.path) if source.path is not None else None
        kind = source.kind
        if kind is None:
            if source.url is not None:
                kind = "sql"
            elif self.path is not None and self.path.suffix.lower() in _DUCKDB_SUFFIXES:
                kind = "duckdb"
            else:
                kind = "files"
        self.kind = kind
        self._engine: Any = None
        self._csv: dict[str, str] = {}  # raw view → CSV file it reads with typed columns
        self.csv_path: Path | None = None  # the CSV file being read
        if kind == "duckdb":
            assert self.path is not None
            if not self.path.is_file():
                raise SourceError(f"{self.path}: no such DuckDB database file")
            con.execute(f"ATTACH {_lit(str(self.path))} AS src (READ_ONLY)")
        elif kind == "files":
            assert self.path is not None
            if not self.path.exists():
                raise SourceError(f"{self.path}: no such file or folder")

    def discovered(self, mapping: ResolvedMapping) -> dict[str, TableMapping]:
        """Canonical tables the mapping leaves out that a folder source holds as a file of the
        table's name (``automations.csv`` next to the deals), read with the canonical column
        names."""
        if self.kind != "files" or self.path is None or not self.path.is_dir():
            return {}
        return {
            table: TableMapping()
            for table in CANONICAL_COLUMNS
            if table not in mapping.tables
            and any((self.path / f"{table}{s}").is_file() for s in (".csv", ".parquet", ".xlsx"))
        }

    def raw(self, table: str, mapping: TableMapping, *, required: bool) -> str | None:
        """Name of a DuckDB view holding the raw rows of ``table``, or ``None`` when the source
        does not have it (an error when ``required``)."""
        view = f"raw_{table}"
        if self.kind == "files":
            found = self._file(table, mapping, required=required)
            if found is None:
                return None
            self.where = str(found)
            self._file_view(table, view, found, mapping)
        elif self.kind == "duckdb":
            tables = {
                r[0]
                for r in self.con.execute(
                    "SELECT table_name FROM duckdb_tables() WHERE database_name = 'src' "
                    "UNION SELECT view_name FROM duckdb_views() WHERE database_name = 'src'"
                ).fetchall()
            }
            name = _table_name(table, mapping, tables)
            if name not in tables:
                if required:
                    raise SourceError(
                        f"{self.path}: no table {name} (tables: "
                        f"{', '.join(sorted(tables)) or 'none'})"
                    )
                return None
            self.where = f"{self.path} table {name}"
            self.con.execute(f"CREATE VIEW {view} AS SELECT * FROM src.{_q(name)}")
        else:
            frame = self._sql(table, mapping, required=required)
            if frame is None:
                return None
            self.con.register(f"{view}_frame", frame)
            self.con.execute(f"CREATE VIEW {view} AS SELECT * FROM {view}_frame")
        return view

    def _file(self, table: str, mapping: TableMapping, *, required: bool) -> Path | None:
        assert self.path is not None
        folder = self.path
        if self.path.is_file():
            if table == "deals":
                return self.path
            if mapping.file is None or "file" not in mapping.model_fields_set:
                return None  # one file holds the deals; other tables only when named
            folder = self.path.parent
        if mapping.file is None:
            candidates = [folder / f"{table}{suffix}" for suffix in (".csv", ".parquet", ".xlsx")]
            matches = [c for c in candidates if c.is_file()]
        else:
            matches = sorted(Path(p) for p in glob.glob(str(folder / mapping.file)))
            if not matches and not glob.has_magic(mapping.file):
                # the preset's sales_pipeline.csv exported as Parquet or Excel
                stem = Path(mapping.file).stem
                matches = [
                    folder / f"{stem}{suffix}"
                    for suffix in (".csv", ".parquet", ".xlsx")
                    if (folder / f"{stem}{suffix}").is_file()
                ]
        if not matches:
            if required:
                raise SourceError(
                    f"{folder}: no file {mapping.file or table + '.csv'} for the {table} table"
                )
            return None
        if len(matches) > 1:
            names = ", ".join(m.name for m in matches)
            raise SourceError(
                f"{folder}: {mapping.file} matches {len(matches)} files ({names}); name one "
                f"with mapping.{table}.file"
            )
        return matches[0]

    def _file_view(self, table: str, view: str, path: Path, mapping: TableMapping) -> None:
        suffix = path.suffix.lower()
        self.csv_path = None
        if suffix == ".parquet":
            self.con.execute(f"CREATE VIEW {view} AS SELECT * FROM read_parquet({_lit(str(path))})")
        elif suffix in _EXCEL_SUFFIXES:
            numbers = {
                source_column
                for column, source_column in _column_sources(
                    table, mapping, _excel_header(path, mapping.sheet)
                ).items()
                if column_kind(column) in ("money", "number")
            }
            frame = _excel_frame(path, mapping.sheet, numbers, mapping.decimal)
            self.con.register(f"{view}_frame", frame)
            self.con.execute(f"CREATE VIEW {view} AS SELECT * FROM {view}_frame")
        else:
            with path.open("rb") as f:
                start = f.read(4096)
            if not start.removeprefix(b"\xef\xbb\xbf").strip():
                raise SourceError(f"{path} is empty")
            self.csv_path = path
            self._csv_view(table, view, path, mapping)

    def _csv_view(self, table: str, view: str, path: Path, mapping: TableMapping) -> None:
        """The raw rows of a CSV file, with DuckDB's CSV reader typing the date and number
        columns it can (so that they are not parsed twice, as text and then as values).

        A mapped date column is read as ``DATE`` (strictly ``YYYY-MM-DD``) and a number column
        as ``DOUBLE`` when the mapping gives no ``date_format``/``decimal: ","`` and DuckDB's
        sniffer found that type in its sample of the file; everything else is text. A value
        further on that does not fit raises ``ConversionException`` when the rows are read,
        and :meth:`as_text` then reads the file as text (the parsing rules of the module then
        apply to every value, and unparseable ones are counted). When some mapped column is
        still parsed from text (a ``date_format``, booleans) the rows are read once into a
        temporary table, since parsing and the count of unparseable values both scan them.
        """
        source = f"{_lit(str(path))}, {_csv_options(path)}"
        sniffed = {
            str(r[0]): str(r[1]).upper()
            for r in self.con.execute(f"DESCRIBE SELECT * FROM read_csv({source})").fetchall()
        }
        typed: dict[str, str] = {}
        parsed_from_text = False
        for column, source_column in _column_sources(table, mapping, sniffed).items():
            kind = column_kind(column)
            if kind == "text":
                continue
            found = sniffed[source_column]
            if kind == "date" and mapping.date_format is None and found == "DATE":
                want = "DATE"
            elif kind in ("money", "number") and mapping.decimal == "." and _numeric(found):
                want = "DOUBLE"
            else:
                parsed_from_text = True
                continue
            if typed.setdefault(source_column, want) != want:
                parsed_from_text = True  # one column mapped as two kinds: read it as text
                typed[source_column] = "VARCHAR"
        types = ", ".join(f"{_lit(k)}: {_lit(v)}" for k, v in typed.items())
        read = (
            f"read_csv({source}, all_varchar = true, types = {{{types}}}, dateformat = '%Y-%m-%d')"
        )
        if any(t != "VARCHAR" for t in typed.values()):
            self._csv[view] = source
        if not parsed_from_text:
            self.con.execute(f"CREATE VIEW {view} AS SELECT * FROM {read}")
            return
        try:
            self.con.execute(f"CREATE TEMP TABLE {view} AS SELECT * FROM {read}")
        except duckdb.ConversionException:
            self.as_text(view)

    def as_text(self, view: str) -> bool:
        """Make the raw relation ``view`` of a CSV file an all-text temporary table; ``False``
        when ``view`` was not read from a CSV file with typed columns (nothing to fall back to).
        """
        source = self._csv.pop(view, None)
        if source is None:
            return False
        self.con.execute(f"DROP VIEW IF EXISTS {view}")
        self.con.execute(f"DROP TABLE IF EXISTS {view}")
        self.con.execute(
            f"CREATE TEMP TABLE {view} AS SELECT * FROM read_csv({source}, all_varchar = true)"
        )
        return True

    def _sql(self, table: str, mapping: TableMapping, *, required: bool) -> Any:
        import pandas as pd
        import sqlalchemy

        if self._engine is None:
            try:
                url = _sqlite_read_only(sqlalchemy.engine.make_url(str(self.source.url)), self.base)
                self._engine = sqlalchemy.create_engine(url)
            except (sqlalchemy.exc.ArgumentError, ImportError) as exc:
                raise SourceError(f"cannot use the database URL: {exc}") from exc
        try:
            names = sqlalchemy.inspect(self._engine).get_table_names()
            views = sqlalchemy.inspect(self._engine).get_view_names()
            name = _table_name(table, mapping, {*names, *views})
            self.where = f"database table {name}"
            if name not in names and name not in views:
                if required:
                    raise SourceError(
                        f"the database has no table {name} (tables: {', '.join(names) or 'none'})"
                    )
                return None
            return pd.read_sql_table(name, self._engine)
        except sqlalchemy.exc.SQLAlchemyError as exc:
            raise SourceError(f"cannot read {self.where}: {exc}") from exc


def _table_name(table: str, mapping: TableMapping, present: set[str]) -> str:
    """The database table holding the canonical ``table``: the mapping's ``table``; else the
    canonical name, or, when the database has no such table, the name of the mapping's file
    without its suffix (``sales_pipeline`` for the preset's ``sales_pipeline.csv``)."""
    if mapping.table is not None:
        return mapping.table
    if table not in present and mapping.file and not glob.has_magic(mapping.file):
        stem = Path(mapping.file).stem
        if stem in present:
            return stem
    return table


def _sqlite_read_only(url: Any, base: Path) -> Any:
    """``url`` (a SQLAlchemy URL); a SQLite file's URL made to open the file read-only, a
    relative path taken from ``base`` (the configuration's folder, like every path there).

    Raises :class:`SourceError` when the file does not exist (SQLite would create it)."""
    if not url.drivername.startswith("sqlite") or url.database in (None, "", ":memory:"):
        return url
    database = str(url.database)
    if database.startswith("file:"):
        return url  # a SQLite URI: the user chose its options
    path = Path(database)
    if not path.is_absolute():
        path = base / path
    if not path.is_file():
        raise SourceError(f"database file not found: {path}")
    return url.set(
        database=f"file:{path.resolve()}", query={**url.query, "mode": "ro", "uri": "true"}
    )


def _excel_rows(path: Path, sheet: str | None, limit: int | None = None) -> list[tuple[Any, ...]]:
    import openpyxl

    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise SourceError(f"{path}: not a readable Excel workbook ({exc})") from exc
    try:
        if sheet is not None and sheet not in book.sheetnames:
            raise SourceError(f"{path}: no sheet {sheet} (sheets: {', '.join(book.sheetnames)})")
        return list(
            (book[sheet] if sheet else book.worksheets[0]).iter_rows(
                values_only=True, max_row=limit
            )
        )
    finally:
        book.close()


def _excel_names(first: tuple[Any, ...]) -> list[str]:
    return [str(h) if h is not None else f"column{i + 1}" for i, h in enumerate(first)]


def _excel_header(path: Path, sheet: str | None) -> list[str]:
    """Column names of the sheet (its first row)."""
    rows = _excel_rows(path, sheet, limit=1)
    return _excel_names(rows[0]) if rows else []


def detect_preset(path: Path) -> MappingPreset | None:
    """The preset whose deals columns (its ``id`` and ``stage`` columns) the data at ``path``
    has: a folder holding ``sales_pipeline.*`` is Maven's CRM dataset; else the header of the
    file decides (a CSV file, the first sheet of an Excel workbook or a Parquet file's schema;
    in a folder, its first CSV file). ``None`` when no preset fits or the file cannot be read
    (the loader then says why)."""
    if path.is_dir():
        if any((path / f"sales_pipeline{s}").is_file() for s in (".csv", ".parquet", ".xlsx")):
            return "maven_crm"
        files = sorted(path.glob("*.csv"))
        if not files:
            return None
        path = files[0]
    if not path.is_file():
        return None
    header = _header(path)
    for name, preset in PRESETS.items():
        deals = preset.deals
        assert deals is not None
        if deals.columns["id"] in header and deals.columns["stage"] in header:
            return name
    return None


def _header(path: Path) -> set[str]:
    """The column names of a CSV, Excel or Parquet file (empty when it cannot be read)."""
    suffix = path.suffix.lower()
    try:
        if suffix in (".xlsx", ".xlsm"):
            return {h.strip() for h in _excel_header(path, None)}
        if suffix == ".parquet":
            with duckdb.connect() as con:
                escaped = str(path).replace("'", "''")
                rows = con.execute(f"DESCRIBE SELECT * FROM read_parquet('{escaped}')").fetchall()
            return {str(r[0]).strip() for r in rows}
        if suffix != ".csv":
            return set()
        with path.open("rb") as f:
            first = f.readline(1 << 16).decode("utf-8", errors="replace").lstrip("\ufeff")
    except Exception:  # noqa: BLE001 - an unreadable file is the loader's to report
        return set()
    delimiter = max((",", ";", "\t", "|"), key=first.count)
    return {h.strip() for h in next(csv.reader([first], delimiter=delimiter), [])}


def _excel_frame(
    path: Path, sheet: str | None, numbers: Collection[str] = (), decimal: str = "."
) -> Any:
    """The sheet as a data frame of text (the module's parsing rules then apply). A cell that
    Excel stores as a number, in one of the ``numbers`` columns, is written with the mapping's
    ``decimal`` mark and no thousands separator, so that the decimal rule for text amounts
    reads it back as the same number (``1200.5`` stays 1200.5 with ``decimal: ","``)."""
    import pandas as pd

    rows = _excel_rows(path, sheet)
    if not rows:
        raise SourceError(f"{path}: the sheet is empty")
    header = _excel_names(rows[0])

    def text(value: Any, number: bool) -> str | None:
        if value is None:
            return None
        if hasattr(value, "isoformat"):
            return str(value.isoformat())
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        if number and decimal == "," and isinstance(value, float):
            return repr(value).replace(".", ",")
        return str(value)

    data = {
        name: [text(r[i], name in numbers) if i < len(r) else None for r in rows[1:]]
        for i, name in enumerate(header)
    }
    return pd.DataFrame(data, dtype=object)


#: How CSV files are read: a header row and RFC 4180 quoting (a field in double quotes, a
#: double quote in it doubled) even where DuckDB's sniffer, which samples the first rows,
#: saw no quotes (exports quote only the fields that need it, such as "$1,200.50").
_CSV = "header = true, quote = '\"', escape = '\"'"
_DELIMITERS = (",", ";", "\t", "|")


def _csv_delimiter(path: Path) -> str | None:
    """The delimiter of a CSV file: the candidate (``,`` ``;`` tab ``|``) found most often
    outside quotes in its header line, or ``None`` when there is none (one column)."""
    with path.open("rb") as f:
        first = f.readline(1 << 16).decode("utf-8", errors="replace")
    unquoted = re.sub(r'"[^"]*"', "", first)
    counts = {d: unquoted.count(d) for d in _DELIMITERS}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else None


def _csv_options(path: Path) -> str:
    """``read_csv`` options of ``path``: :data:`_CSV` and the delimiter of the header line (so
    that a malformed row near the top is an error, not a file read as one column)."""
    delimiter = _csv_delimiter(path)
    return _CSV if delimiter is None else f"{_CSV}, delim = {_lit(delimiter)}"


def _csv_problem(path: Path) -> str | None:
    """What makes ``path`` unreadable as CSV, as ``FILE:LINE: problem``, or ``None`` when no
    problem is found. Checks, in this order: UTF-8 text, RFC 4180 quoting, and every row having
    as many fields as the header (Python's ``csv`` module, with the header's delimiter)."""

    with path.open("rb") as f:
        for number, line in enumerate(f, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                return (
                    f"{path}:{number}: not UTF-8 text (byte 0x{line[exc.start]:02X} at column "
                    f"{exc.start + 1}); save the file as UTF-8"
                )
    delimiter = _csv_delimiter(path) or ","
    with path.open(encoding="utf-8-sig", newline="") as f:
        rows = csv.reader(f, delimiter=delimiter, strict=True)
        try:
            header = next(rows, None)
            if header is None:
                return f"{path} is empty"
            for row in rows:
                if row and len(row) != len(header):
                    return (
                        f"{path}:{rows.line_num}: {len(row)} field(s), the header has "
                        f"{len(header)} (delimiter {delimiter!r})"
                    )
        except csv.Error as exc:
            return (
                f"{path}:{rows.line_num}: malformed quoting ({exc}); a field holding a double "
                'quote must be in quotes, with the quote doubled ("27"" screen")'
            )
    return None


_SQL_TYPES = {
    "text": "VARCHAR",
    "date": "DATE",
    "money": "DOUBLE",
    "number": "DOUBLE",
    "bool": "BOOLEAN",
}


def _amount_sql(x: str, decimal: str) -> str:
    """SQL turning text ``x`` into a DOUBLE: currency symbols and thousands separators dropped,
    ``(…)`` negative."""
    kept = f"regexp_replace({x}, '[\\p{{Sc}}\\s]|^[A-Z]{{3}}|[A-Z]{{3}}$', '', 'g')"
    if decimal == ",":
        kept = f"replace(replace({kept}, '.', ''), ',', '.')"
    else:
        kept = f"replace({kept}, ',', '')"
    number = _finite(f"TRY_CAST(replace(replace({kept}, '(', ''), ')', '') AS DOUBLE)")
    return f"CASE WHEN {x} LIKE '(%)' THEN -{number} ELSE {number} END"


def _finite(number: str) -> str:
    """SQL: the DOUBLE ``number``, or NULL when it is not finite (``nan``, ``inf``, ``1e309``:
    DuckDB casts those texts to a DOUBLE, and one of them in a sum makes the total NaN)."""
    return f"CASE WHEN isfinite({number}) THEN {number} END"


def _amount_text_sql(x: str) -> str:
    """SQL: text ``x`` without currency symbols, codes, spaces and parentheses."""
    return f"regexp_replace({x}, '[\\p{{Sc}}\\s()]|^[A-Z]{{3}}|[A-Z]{{3}}$|^-', '', 'g')"


#: Amounts that can only be read with ``,`` as the decimal mark (``1.200,50``, ``12,5``,
#: ``1.200.000``) and only with ``.`` (``1,200.50``, ``12.5``, ``1,200,000``); ``1,200`` and
#: ``1.200`` fit both and decide nothing.
_COMMA_DECIMAL = r"^(\d{1,3}(\.\d{3})+,\d+|\d+,(\d{1,2}|\d{4,})|\d{1,3}(\.\d{3}){2,})$"
_DOT_DECIMAL = r"^(\d{1,3}(,\d{3})+\.\d+|\d+\.(\d{1,2}|\d{4,})|\d{1,3}(,\d{3}){2,})$"


def _decimal_mark(
    dataset: Dataset, table: str, column: str, mapping: TableMapping, raw: str, text: str
) -> str:
    """The decimal mark of the text amounts of one column: the mapping's ``decimal`` when it
    is given or the values fit it; ``,`` when the mapping gives none and every value that
    decides (see :data:`_COMMA_DECIMAL`) is written with a decimal comma (logged). A column
    with values of both styles is logged and read with the mapping's mark."""
    kept = _amount_text_sql(text)
    row = _one(
        dataset.con,
        f"SELECT count(*) FILTER (regexp_matches({kept}, {_lit(_COMMA_DECIMAL)})), "
        f"min({text}) FILTER (regexp_matches({kept}, {_lit(_COMMA_DECIMAL)})), "
        f"count(*) FILTER (regexp_matches({kept}, {_lit(_DOT_DECIMAL)})), "
        f"min({text}) FILTER (regexp_matches({kept}, {_lit(_DOT_DECIMAL)})) FROM {raw}",
    )
    comma, comma_example, dot, dot_example = int(row[0]), row[1], int(row[2]), row[3]
    given = mapping.decimal
    if comma and dot:
        dataset.quality.append(
            f"{table}.{column}: {_n(comma)} value(s) are written with a decimal comma "
            f"(e.g. {comma_example!r}) and {_n(dot)} with a decimal point (e.g. "
            f"{dot_example!r}): all read with {given!r} as the decimal mark"
        )
        return given
    if given == "." and comma and "decimal" not in mapping.model_fields_set:
        dataset.quality.append(
            f"{table}.{column}: values such as {comma_example!r} are read with ',' as the "
            "decimal mark (set decimal in the mapping to choose)"
        )
        return ","
    if given == "," and dot:
        dataset.quality.append(
            f"{table}.{column}: {_n(dot)} value(s) such as {dot_example!r} look written with "
            "a decimal point, but the mapping gives decimal ','"
        )
    return given


def _date_sql(x: str, date_format: str | None) -> str:
    if date_format:
        return f"CAST(try_strptime({x}, {_lit(date_format)}) AS DATE)"
    return (
        f"CASE WHEN length({x}) > 10 THEN CAST(TRY_CAST({x} AS TIMESTAMPTZ) AS DATE) "
        f"ELSE TRY_CAST({x} AS DATE) END"
    )


def _numeric(sql_type: str) -> bool:
    """Whether DuckDB's CSV sniffer typed a column as a number."""
    return sql_type.startswith("DECIMAL") or sql_type in (
        "TINYINT",
        "SMALLINT",
        "INTEGER",
        "BIGINT",
        "HUGEINT",
        "FLOAT",
        "DOUBLE",
    )


def _column_sources(table: str, mapping: TableMapping, names: Iterable[str]) -> dict[str, str]:
    """Canonical column of ``table`` → the source column among ``names`` holding it (the mapped
    one, else one of the same name); mapped columns that are not in ``names`` are left out."""
    present = set(names)
    found: dict[str, str] = {}
    for column in CANONICAL_COLUMNS[table]:
        source_column = mapping.columns.get(column)
        if source_column is None and column in present:
            source_column = column
        if source_column is not None and source_column in present:
            found[column] = source_column
    return found


def _parse_table(
    dataset: Dataset,
    table: str,
    mapping: TableMapping,
    raw: str,
    derived: _Derived | None = None,
    *,
    log: bool = True,
) -> None:
    """``CREATE TABLE table`` from the raw view: mapped columns parsed by kind; columns the
    source lacks are NULL; ``derived`` replaces columns computed from the parsed ones (``d``),
    and the tables it joins. Unparseable values are counted into the quality log (unless ``log`` is
    false: the table is being read a second time).

    Raises :class:`SourceError` for a mapped column the source does not have, and lets
    ``duckdb.ConversionException`` through when a typed CSV column meets a value it cannot
    take (the caller reads the file as text then)."""
    con = dataset.con
    types = {r[0]: str(r[1]).upper() for r in con.execute(f"DESCRIBE {raw}").fetchall()}
    sources = _column_sources(table, mapping, types)
    selects: list[str] = []
    checks: list[tuple[str, str, str]] = []  # (column, raw text expr, parsed expr)
    for column in CANONICAL_COLUMNS[table]:
        source_column = sources.get(column)
        if source_column is None and column in mapping.columns:
            raise MappingError(
                f"{table}: mapped column {column} → {mapping.columns[column]!r} is not in the "
                f"source (columns: {', '.join(types)})",
                table=table,
                column=column,
            )
        if source_column is None:
            selects.append(f"CAST(NULL AS {_SQL_TYPES[column_kind(column)]}) AS {_q(column)}")
            continue
        kind = column_kind(column)
        raw_type = types[source_column]
        ref = _q(source_column)
        text = f"NULLIF(trim(CAST({ref} AS VARCHAR)), '')"
        if kind == "text":
            expr = text
            renames = mapping.rename.get(column)
            if renames:
                cases = " ".join(f"WHEN {_lit(k)} THEN {_lit(v)}" for k, v in renames.items())
                expr = f"CASE {text} {cases} ELSE {text} END"
        elif kind == "date":
            if raw_type == "DATE" or raw_type.startswith("TIMESTAMP"):
                expr = f"CAST({ref} AS DATE)"
            else:
                expr = _date_sql(text, mapping.date_format)
                checks.append((column, text, expr))
        elif kind in ("money", "number"):
            if raw_type in ("VARCHAR", "BLOB") or raw_type.startswith("VARCHAR"):
                decimal = _decimal_mark(dataset, table, column, mapping, raw, text)
                expr = _amount_sql(text, decimal)
            else:
                expr = _finite(f"CAST({ref} AS DOUBLE)")
            checks.append((column, text, expr))
        elif raw_type == "BOOLEAN":
            expr = ref
        else:
            expr = (
                f"CASE WHEN lower({text}) IN ('true', 't', '1', 'yes', 'y') THEN true "
                f"WHEN lower({text}) IN ('false', 'f', '0', 'no', 'n') THEN false END"
            )
            checks.append((column, text, expr))
        selects.append(f"{expr} AS {_q(column)}")
    if not log:
        checks = []
    # A value that is there but cannot be parsed is kept, as text, in a column of its own
    # while the table is built (one read of the source), counted, and the column dropped.
    flags = [
        f"CASE WHEN ({e}) IS NULL THEN {t} END AS _bad_{i}" for i, (_, t, e) in enumerate(checks)
    ]
    parsed = f"SELECT {', '.join(selects + flags)} FROM {raw}"
    if derived:
        parsed = f"SELECT d.* REPLACE ({derived.replace}) FROM ({parsed}) d {derived.joins}"
    con.execute(f"CREATE TABLE {table} AS {parsed}")
    if not checks:
        return
    counts = ", ".join(f"count(_bad_{i}), min(_bad_{i})" for i in range(len(checks)))
    row = _one(con, f"SELECT {counts} FROM {table}")
    for i in range(len(checks)):
        con.execute(f"ALTER TABLE {table} DROP COLUMN _bad_{i}")
    for index, (column, _, _) in enumerate(checks):
        bad, example = row[2 * index], row[2 * index + 1]
        if bad:
            kind = column_kind(column)
            what = {
                "date": f"dates ({mapping.date_format or 'ISO 8601'})",
                "bool": "true/false values",
            }.get(kind, "numbers")
            dataset.quality.append(
                f"{table}.{column}: {_n(bad)} value(s) are not {what} (e.g. {example!r}): "
                "left empty"
            )


@dataclass(frozen=True)
class _Derived:
    """Columns computed from a parsed table ``d`` (``expr AS column, …``) and the joins they
    read."""

    replace: str
    joins: str = ""


def _derived_deal_columns(deals: DealsMapping, lookups: Collection[str]) -> _Derived:
    """A deal's status (``won``/``lost``/``open`` from ``is_won``/``is_closed`` when mapped,
    else from the won and lost stages, case-insensitive; of type :data:`STATUS_TYPE`), its
    probability as a fraction (``probability_percent`` divides by 100), and, where the deal
    row leaves them empty, ``team`` and ``region`` from its owner's row in ``owners`` and
    ``segment`` from its account's row in ``accounts`` (of those in ``lookups``, already
    loaded; names spelled otherwise are matched later, see :func:`_apply_fixes`)."""
    if "is_won" in deals.columns or "is_closed" in deals.columns:
        status = "CASE WHEN d.is_won THEN 'won' WHEN d.is_closed THEN 'lost' ELSE 'open' END"
    else:
        won_in = ", ".join(_lit(s.lower()) for s in deals.won_stages) or "NULL"
        lost_in = ", ".join(_lit(s.lower()) for s in deals.lost_stages) or "NULL"
        status = (
            f"CASE WHEN lower(d.stage) IN ({won_in}) THEN 'won' "
            f"WHEN lower(d.stage) IN ({lost_in}) THEN 'lost' ELSE 'open' END"
        )
    probability = "d.probability / 100.0" if deals.probability_percent else "d.probability"
    columns = [f"CAST({status} AS {STATUS_TYPE}) AS status", f"{probability} AS probability"]
    joins: list[str] = []
    for table, key, filled in _LOOKUP_FILLS:
        if table in lookups:
            alias = table[0]
            joins.append(
                f"LEFT JOIN (SELECT DISTINCT ON ({key}) * FROM {table}) {alias} "
                f"ON {alias}.{key} = d.{key}"
            )
            columns += [f"coalesce(d.{c}, {alias}.{c}) AS {c}" for c in filled]
    return _Derived(", ".join(columns), " ".join(joins))


#: Lookup table, the deal column that names its row, and the deal columns it fills.
_LOOKUP_FILLS = (("owners", "owner", ("team", "region")), ("accounts", "account", ("segment",)))


@dataclass
class _Counts:
    """Deals per value of one column (``None`` = no value), and how many of those are open."""

    deals: dict[str | None, int] = field(default_factory=dict)
    open: dict[str | None, int] = field(default_factory=dict)


def _finish_deals(
    dataset: Dataset, mapping: ResolvedMapping, in_source_order: Callable[[], None]
) -> dict[str, int]:
    """Drop deals without id and duplicate ids, check stages, match names to the lookup tables,
    fill team/region/segment of the corrected names from them, and log what was done.
    Set-based: one query counts ids, one counts deals per stage, owner, product and account,
    and one update per column corrects the names that need it. ``in_source_order()``
    reads the deals again in the source's row order, which the first of repeated ids needs.

    Returns the deals per stage (for :func:`_check_typos`)."""
    con = dataset.con
    deals: DealsMapping = mapping.deals
    quality = dataset.quality
    row = _one(
        con, "SELECT count(*) FILTER (id IS NULL), count(id) - count(DISTINCT id) FROM deals"
    )
    no_id, dup = int(row[0]), int(row[1])  # duplicates = rows beyond the first of each id
    if no_id:
        quality.append(f"deals: {_n(no_id)} row(s) without an id dropped")
    if dup:
        quality.append(f"deals: {_n(dup)} row(s) repeat an earlier id: dropped (first kept)")
    if dup:
        in_source_order()
        con.execute(
            "CREATE OR REPLACE TABLE deals AS SELECT * FROM (SELECT *, row_number() OVER () "
            "AS _row FROM deals) WHERE id IS NOT NULL "
            "QUALIFY row_number() OVER (PARTITION BY id ORDER BY _row) = 1"
        )
        con.execute("ALTER TABLE deals DROP COLUMN _row")
        con.execute("SET preserve_insertion_order = false")
    elif no_id:
        con.execute("CREATE OR REPLACE TABLE deals AS SELECT * FROM deals WHERE id IS NOT NULL")
    has_flags = "is_won" in deals.columns or "is_closed" in deals.columns
    if not has_flags and not deals.won_stages:
        quality.append("deals: the mapping names no won stages: every deal counts as open")

    columns = ("stage", *LOOKUPS)
    which = " ".join(f"WHEN GROUPING({c}) = 0 THEN {_lit(c)}" for c in columns)
    value = " ".join(f"WHEN GROUPING({c}) = 0 THEN {c}" for c in columns)
    sets = ", ".join(["(stage, status)", *(f"({c})" for c in LOOKUPS), "()"])
    counts: dict[str, _Counts] = {c: _Counts() for c in columns}
    open_stages: dict[str, int] = {}
    total = no_close_date = won_no_amount = 0
    for grouping, found, status, count, open_count, closed_undated, won_unpriced in con.execute(
        f"""
        SELECT CASE {which} ELSE 'all' END, CASE {value} END, status, count(*),
               count(*) FILTER (status = 'open'),
               count(*) FILTER (status <> 'open' AND close_date IS NULL),
               count(*) FILTER (status = 'won' AND amount IS NULL)
        FROM deals GROUP BY GROUPING SETS ({sets})
        """
    ).fetchall():
        if grouping == "all":
            total, no_close_date, won_no_amount = count, closed_undated, won_unpriced
            continue
        c = counts[grouping]
        c.deals[found] = c.deals.get(found, 0) + int(count)
        c.open[found] = c.open.get(found, 0) + int(open_count)
        if grouping == "stage" and status == "open" and found is not None:
            open_stages[found] = int(count)
    known = {s.lower() for s in [*deals.stage_order, *deals.won_stages, *deals.lost_stages]}
    if known:
        for stage, count in sorted(open_stages.items()):
            if stage.lower() not in known:
                quality.append(
                    f"deals.stage: {_n(count)} open deal(s) in stage {stage!r}, which is not in "
                    "the stage order: counted as open, left out of the funnel"
                )
    fixes = {
        column: _match_names(
            dataset, column, lookup if lookup in dataset.tables else None, counts[column], total
        )
        for column, lookup in LOOKUPS.items()
    }
    _apply_fixes(dataset, fixes)
    if no_close_date:
        quality.append(
            f"deals: {_n(no_close_date)} closed deal(s) without a close date: left out of every "
            "period"
        )
    if won_no_amount:
        quality.append(
            f"deals: {_n(won_no_amount)} won deal(s) without an amount: counted in win "
            "rates, not in revenue"
        )
    _check_amounts(dataset)
    dataset.rows["deals"] = int(total)
    return {s: n for s, n in counts["stage"].deals.items() if s is not None}


#: An amount more than this many times the median positive amount is a possible outlier (a
#: value typed in cents, or a missing decimal mark).
OUTLIER_FACTOR = 1000


def _check_amounts(dataset: Dataset) -> None:
    """Log won deals with a negative amount, and amounts above :data:`OUTLIER_FACTOR` × the
    median positive amount (possible outliers), each with its count and total; both are kept
    and counted as found."""
    row = _one(
        dataset.con,
        f"""
        WITH m AS (SELECT median(amount) AS median FROM deals WHERE amount > 0)
        SELECT count(*) FILTER (status = 'won' AND amount < 0),
               coalesce(sum(amount) FILTER (status = 'won' AND amount < 0), 0),
               count(*) FILTER (amount > {OUTLIER_FACTOR} * m.median),
               coalesce(sum(amount) FILTER (amount > {OUTLIER_FACTOR} * m.median), 0),
               any_value(m.median)
        FROM deals, m
        """,
    )
    negative, negative_total, outliers, outlier_total, median = row
    if negative:
        dataset.quality.append(
            f"deals: {_n(negative)} won deal(s) with a negative amount (total "
            f"{negative_total:,.2f}): counted as found"
        )
    if outliers:
        dataset.quality.append(
            f"deals.amount: {_n(outliers)} value(s) above {OUTLIER_FACTOR:,} × the median "
            f"amount {median:,.2f} (total {outlier_total:,.2f}): possible outliers, counted as "
            "found"
        )


def _normal(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", name.casefold())


def _match_names(
    dataset: Dataset, column: str, lookup: str | None, found: _Counts, total: int
) -> dict[str, str]:
    """The corrections of the deals' ``column`` (spelling → name): to the one name of
    ``lookup`` with the same letters and digits, or, without a lookup table, to the most
    frequent of the spellings that differ only in case, spaces or punctuation. ``found``
    counts the deals per value. Logs every correction, names matching nothing, owners without
    deals and deals without a value."""
    counts = {v: n for v, n in found.deals.items() if v is not None}
    replace: dict[str, str] = {}
    if lookup is not None:
        names = [
            r[0]
            for r in dataset.con.execute(
                f"SELECT DISTINCT {column} FROM {lookup} WHERE {column} IS NOT NULL"
            ).fetchall()
        ]
        exact = set(names)
        by_normal: dict[str, list[str]] = {}
        for name in names:
            by_normal.setdefault(_normal(name), []).append(name)
        unmatched: list[tuple[str, int]] = []
        for value, count in sorted(counts.items()):
            if value in exact:
                continue
            candidates = by_normal.get(_normal(value), [])
            if len(candidates) == 1:
                replace[value] = candidates[0]
                dataset.quality.append(
                    f"deals.{column}: {_n(count)} deal(s) spell {value!r}, matched to "
                    f"{candidates[0]!r} of {lookup}"
                )
            else:
                unmatched.append((value, count))
        if unmatched:
            shown = ", ".join(f"{v!r} ({_n(c)})" for v, c in unmatched[:5])
            more = f" and {len(unmatched) - 5} more" if len(unmatched) > 5 else ""
            article = "an" if column[0] in "aeiou" else "a"
            unmatched_count = _n(sum(c for _, c in unmatched))
            dataset.quality.append(
                f"deals.{column}: {unmatched_count} deal(s) name {article} {column} "
                f"that is not in {lookup}: {shown}{more} (kept, without {lookup} details)"
            )
        without = [n for n in names if n not in counts and n not in replace.values()]
        if without and column == "owner":
            dataset.quality.append(
                f"{lookup}: {len(without)} {column}(s) have no deals: {', '.join(sorted(without))} "
                "(listed with n/a)"
            )
    else:
        groups: dict[str, list[str]] = {}
        for value in sorted(counts):
            groups.setdefault(_normal(value), []).append(value)
        for spellings in groups.values():
            if len(spellings) < 2:
                continue
            # The most frequent; on a tie, a capitalised spelling over an all-lowercase one.
            keep = min(spellings, key=lambda v: (-counts[v], v.islower(), v))
            for value in sorted(spellings):
                if value != keep:
                    replace[value] = keep
                    dataset.quality.append(
                        f"deals.{column}: {_n(counts[value])} deal(s) spell {value!r}, unified "
                        f"with {keep!r}"
                    )
    nulls, nulls_open = found.deals.get(None, 0), found.open.get(None, 0)
    if nulls and nulls < total:  # all empty: not in the source
        open_note = " (all open)" if nulls == nulls_open else ""
        dataset.quality.append(
            f"deals: {_n(nulls)} deal(s) without {column}{open_note}: shown as (none)"
        )
    return replace


def _apply_fixes(dataset: Dataset, fixes: dict[str, dict[str, str]]) -> None:
    """Correct the deals' names by ``fixes`` (deal column → {spelling: name}), updating only
    the deals that spell a name otherwise, and fill the ``team`` and ``region`` (``segment``)
    that the lookup gives a corrected owner (account) where the deal row leaves them empty."""
    con = dataset.con
    fills = {key: (table, filled) for table, key, filled in _LOOKUP_FILLS}
    for column, replace in fixes.items():
        if not replace:
            continue
        names = f"_names_{column}"
        con.execute(
            f"CREATE TEMP TABLE {names} AS SELECT unnest(?::VARCHAR[]) AS spelled, "
            "unnest(?::VARCHAR[]) AS name",
            [list(replace), list(replace.values())],
        )
        try:
            sets = [f"{column} = n.name"]
            source = f"{names} AS n"
            if column in fills and fills[column][0] in dataset.tables:
                table, filled = fills[column]
                sets += [f"{c} = coalesce(deals.{c}, l.{c})" for c in filled]
                source += (
                    f" LEFT JOIN (SELECT DISTINCT ON ({column}) * FROM {table}) l "
                    f"ON l.{column} = n.name"
                )
            con.execute(
                f"UPDATE deals SET {', '.join(sets)} FROM {source} WHERE deals.{column} = n.spelled"
            )
        finally:
            con.execute(f"DROP TABLE {names}")


_COUNTRIES: list[str] | None = None


def _country_names() -> list[str]:
    """Country names of the IANA time zone database's ``iso3166.tab``."""
    global _COUNTRIES  # noqa: PLW0603 - read once
    if _COUNTRIES is None:
        from importlib.resources import files

        text = files("tzdata").joinpath("zoneinfo", "iso3166.tab").read_text(encoding="utf-8")
        _COUNTRIES = [
            line.split("\t")[1].strip()
            for line in text.splitlines()
            if line and not line.startswith("#")
        ]
    return _COUNTRIES


#: A category value this close (Levenshtein edits, case ignored) to a more frequent value of
#: its column is a possible typo.
TYPO_DISTANCE = 2

#: Salesforce's standard picklist of ``Account.Industry``: an account segment (industry) that
#: is none of these but nearly one (``technolgy``) is a possible typo even when no correctly
#: spelt value is in the data to compare it with.
STANDARD_INDUSTRIES = (
    "Agriculture", "Apparel", "Banking", "Biotechnology", "Chemicals", "Communications",
    "Construction", "Consulting", "Education", "Electronics", "Energy", "Engineering",
    "Entertainment", "Environmental", "Finance", "Food & Beverage", "Government", "Healthcare",
    "Hospitality", "Insurance", "Machinery", "Manufacturing", "Media", "Not For Profit", "Other",
    "Recreation", "Retail", "Shipping", "Technology", "Telecommunications", "Transportation",
    "Utilities",
)  # fmt: skip


def _check_typos(dataset: Dataset, stages: dict[str, int]) -> None:
    """Log values that look like misspellings, keeping them as found: country names that are
    not in ISO 3166 but close to one, account segments close to one of
    :data:`STANDARD_INDUSTRIES` but not one, and values of a category column (of 5 letters or more)
    within :data:`TYPO_DISTANCE` edits of a more frequent value of the column (``Retial`` next
    to ``Retail``); ``stages`` counts the deals per stage."""
    con = dataset.con
    if "accounts" in dataset.tables:
        countries = _country_names()
        known = set(countries)
        for (value,) in con.execute(
            "SELECT DISTINCT country FROM accounts WHERE country IS NOT NULL ORDER BY 1"
        ).fetchall():
            if value in known:
                continue
            close = difflib.get_close_matches(value, countries, n=1, cutoff=0.85)
            if close:
                dataset.quality.append(
                    f"accounts.country: {value!r} looks like a misspelling of {close[0]!r} "
                    "(kept as found)"
                )
    if "accounts" in dataset.tables:
        industries = {name.casefold(): name for name in STANDARD_INDUSTRIES}
        for (value,) in con.execute(
            "SELECT DISTINCT segment FROM accounts WHERE segment IS NOT NULL ORDER BY 1"
        ).fetchall():
            folded = str(value).casefold()
            if folded in industries or len(folded) < 5:
                continue
            close = difflib.get_close_matches(folded, list(industries), n=1, cutoff=0.9)
            if close:
                dataset.quality.append(
                    f"accounts.segment: {value!r} looks like a misspelling of the industry "
                    f"{industries[close[0]]!r} (Salesforce's standard list; kept as found)"
                )
    for table, column in (
        ("accounts", "segment"),
        ("owners", "region"),
        ("products", "series"),
        ("deals", "stage"),
    ):
        if table not in dataset.tables:
            continue
        params: list[Any]
        if table == "deals":  # its stages were counted already: no second scan
            values = "SELECT unnest(?::VARCHAR[]) AS v, unnest(?::BIGINT[]) AS n"
            params = [list(stages), list(stages.values())]
        else:
            values = (
                f"SELECT {column} AS v, count(*) AS n FROM {table} "
                f"WHERE {column} IS NOT NULL GROUP BY 1"
            )
            params = []
        rows = con.execute(
            f"WITH d AS ({values}) SELECT a.v, a.n, b.v, b.n FROM d a, d b "
            "WHERE (a.n < b.n OR (a.n = b.n AND a.v > b.v)) AND length(a.v) >= 5 "
            f"AND levenshtein(lower(a.v), lower(b.v)) BETWEEN 1 AND {TYPO_DISTANCE} "
            "ORDER BY a.v, b.n DESC, b.v",
            params,
        ).fetchall()
        reported: set[str] = set()
        for a, a_count, b, b_count in rows:
            if a in reported:
                continue  # the most frequent close value only
            reported.add(a)
            if a_count == b_count:
                what = f"{a!r} and {b!r} ({_n(a_count)} row(s) each) are close"
            else:
                what = (
                    f"{a!r} ({_n(a_count)} row(s)) is close to the more frequent {b!r} "
                    f"({_n(b_count)})"
                )
            dataset.quality.append(f"{table}.{column}: {what}: possible typo, kept as found")
