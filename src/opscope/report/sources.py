"""Loading a data source into DuckDB as canonical tables, with a data-quality log.

:func:`load_source` reads files (CSV, Parquet, Excel), a SQL database (SQLAlchemy URL) or a
DuckDB database file, applies the mapping (:mod:`opscope.report.schema`) and leaves one DuckDB
table per canonical table in an in-memory database: ``deals`` (always), and ``owners``,
``products``, ``accounts``, ``leads``, ``targets``, ``automations``, ``nps_responses``,
``competitors`` when the mapping has them.

Parsing rules (what real exports need):

* amounts: currency symbols and codes, spaces and thousands separators are removed
  (``$1,200.50`` → 1200.5, ``£9000`` → 9000, ``1.200,50 €`` with ``decimal: ","``); a value in
  parentheses is negative; anything else that is not a number becomes empty and is counted;
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
"""

from __future__ import annotations

import difflib
import glob
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from opscope.config.reports import CANONICAL_COLUMNS, DealsMapping, SourceConfig, TableMapping
from opscope.errors import SourceError
from opscope.report.schema import LOOKUPS, ResolvedMapping, column_kind, resolve_mapping

_DUCKDB_SUFFIXES = (".duckdb", ".ddb", ".db")
_EXCEL_SUFFIXES = (".xlsx", ".xlsm")

#: ``progress(step)`` is called with a short description before each loading step.
Progress = Callable[[str], None]


@dataclass
class Dataset:
    """Canonical tables of one source in an in-memory DuckDB database.

    ``tables`` names the canonical tables present; ``quality`` holds data-quality lines in the
    order they were found; ``stage_order`` and ``stage_probabilities`` come from the mapping.
    """

    con: duckdb.DuckDBPyConnection
    tables: frozenset[str]
    timezone: str
    currency: str = "USD"
    locale: str = "en_US"
    stage_order: list[str] = field(default_factory=list)
    stage_probabilities: dict[str, float] = field(default_factory=dict)
    quality: list[str] = field(default_factory=list)

    def has(self, table: str) -> bool:
        """Whether the source has the canonical ``table`` with at least one row."""
        if table not in self.tables:
            return False
        row = self.con.execute(f"SELECT count(*) FROM {table}").fetchone()
        return bool(row and row[0])

    def close(self) -> None:
        """Release the DuckDB database."""
        self.con.close()


def _q(name: str) -> str:
    """``name`` as a quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def _lit(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _n(count: int) -> str:
    return f"{count:,}"


def load_source(
    source: SourceConfig,
    *,
    base: Path = Path("."),
    timezone: str = "UTC",
    progress: Progress | None = None,
) -> Dataset:
    """Read ``source`` (paths relative to ``base``) into canonical DuckDB tables.

    Raises :class:`SourceError` when a file or table is missing, a mapped column does not exist
    (naming the columns there are), a database cannot be reached, or no deals table results.
    """
    try:
        mapping = resolve_mapping(source.mapping)
    except ValueError as exc:
        raise SourceError(str(exc)) from None
    con = duckdb.connect(":memory:")
    con.execute(f"SET TimeZone = {_lit(timezone)}")
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
        for table, table_mapping in mapping.tables.items():
            if progress:
                progress(f"reading {table}")
            raw = reader.raw(table, table_mapping, required=table == "deals")
            if raw is None:
                continue
            _parse_table(dataset, table, table_mapping, raw)
            loaded.add(table)
        dataset.tables = frozenset(loaded)
        if progress:
            progress("checking deals")
        _finish_deals(dataset, mapping)
        _check_typos(dataset)
    except duckdb.Error as exc:
        con.close()
        raise SourceError(f"cannot read {reader.where}: {exc}") from exc
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
        if kind == "duckdb":
            assert self.path is not None
            if not self.path.is_file():
                raise SourceError(f"{self.path}: no such DuckDB database file")
            con.execute(f"ATTACH {_lit(str(self.path))} AS src (READ_ONLY)")
        elif kind == "files":
            assert self.path is not None
            if not self.path.exists():
                raise SourceError(f"{self.path}: no such file or folder")

    def raw(self, table: str, mapping: TableMapping, *, required: bool) -> str | None:
        """Name of a DuckDB view holding the raw rows of ``table``, or ``None`` when the source
        does not have it (an error when ``required``)."""
        view = f"raw_{table}"
        if self.kind == "files":
            found = self._file(table, mapping, required=required)
            if found is None:
                return None
            self.where = str(found)
            self._file_view(view, found, mapping)
        elif self.kind == "duckdb":
            name = mapping.table or table
            tables = {
                r[0]
                for r in self.con.execute(
                    "SELECT table_name FROM duckdb_tables() WHERE database_name = 'src' "
                    "UNION SELECT view_name FROM duckdb_views() WHERE database_name = 'src'"
                ).fetchall()
            }
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

    def _file_view(self, view: str, path: Path, mapping: TableMapping) -> None:
        suffix = path.suffix.lower()
        if suffix == ".parquet":
            self.con.execute(f"CREATE VIEW {view} AS SELECT * FROM read_parquet({_lit(str(path))})")
        elif suffix in _EXCEL_SUFFIXES:
            self.con.register(f"{view}_frame", _excel_frame(path, mapping.sheet))
            self.con.execute(f"CREATE VIEW {view} AS SELECT * FROM {view}_frame")
        else:
            # Read once into a table: parsing and the quality checks both scan it.
            self.con.execute(
                f"CREATE TEMP TABLE {view} AS SELECT * FROM read_csv({_lit(str(path))}, "
                "all_varchar = true, header = true)"
            )

    def _sql(self, table: str, mapping: TableMapping, *, required: bool) -> Any:
        import pandas as pd
        import sqlalchemy

        if self._engine is None:
            try:
                self._engine = sqlalchemy.create_engine(str(self.source.url))
            except (sqlalchemy.exc.ArgumentError, ImportError) as exc:
                raise SourceError(f"cannot use the database URL: {exc}") from exc
        name = mapping.table or table
        self.where = f"database table {name}"
        try:
            names = sqlalchemy.inspect(self._engine).get_table_names()
            views = sqlalchemy.inspect(self._engine).get_view_names()
            if name not in names and name not in views:
                if required:
                    raise SourceError(
                        f"the database has no table {name} (tables: {', '.join(names) or 'none'})"
                    )
                return None
            return pd.read_sql_table(name, self._engine)
        except sqlalchemy.exc.SQLAlchemyError as exc:
            raise SourceError(f"cannot read {self.where}: {exc}") from exc


def _excel_frame(path: Path, sheet: str | None) -> Any:
    import openpyxl
    import pandas as pd

    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise SourceError(f"{path}: not a readable Excel workbook ({exc})") from exc
    try:
        if sheet is not None and sheet not in book.sheetnames:
            raise SourceError(f"{path}: no sheet {sheet} (sheets: {', '.join(book.sheetnames)})")
        rows = list((book[sheet] if sheet else book.worksheets[0]).iter_rows(values_only=True))
    finally:
        book.close()
    if not rows:
        raise SourceError(f"{path}: the sheet is empty")
    header = [str(h) if h is not None else f"column{i + 1}" for i, h in enumerate(rows[0])]

    def text(value: Any) -> str | None:
        if value is None:
            return None
        if hasattr(value, "isoformat"):
            return str(value.isoformat())
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        return str(value)

    data = {
        name: [text(r[i]) if i < len(r) else None for r in rows[1:]]
        for i, name in enumerate(header)
    }
    return pd.DataFrame(data, dtype=object)


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
    number = f"TRY_CAST(replace(replace({kept}, '(', ''), ')', '') AS DOUBLE)"
    return f"CASE WHEN {x} LIKE '(%)' THEN -{number} ELSE {number} END"


def _date_sql(x: str, date_format: str | None) -> str:
    if date_format:
        return f"CAST(try_strptime({x}, {_lit(date_format)}) AS DATE)"
    return (
        f"CASE WHEN length({x}) > 10 THEN CAST(TRY_CAST({x} AS TIMESTAMPTZ) AS DATE) "
        f"ELSE TRY_CAST({x} AS DATE) END"
    )


def _parse_table(dataset: Dataset, table: str, mapping: TableMapping, raw: str) -> None:
    """``CREATE TABLE table`` from the raw view: mapped columns parsed by kind; columns the
    source lacks are NULL. Unparseable values are counted into the quality log."""
    con = dataset.con
    types = {r[0]: str(r[1]).upper() for r in con.execute(f"DESCRIBE {raw}").fetchall()}
    selects: list[str] = []
    checks: list[tuple[str, str, str]] = []  # (column, raw text expr, parsed expr)
    for column in CANONICAL_COLUMNS[table]:
        source_column = mapping.columns.get(column)
        if source_column is None and column in types:
            source_column = column
        if source_column is None:
            selects.append(f"CAST(NULL AS {_SQL_TYPES[column_kind(column)]}) AS {_q(column)}")
            continue
        if source_column not in types:
            raise SourceError(
                f"{table}: mapped column {column} → {source_column!r} is not in the source "
                f"(columns: {', '.join(types)})"
            )
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
                expr = _amount_sql(text, mapping.decimal)
                checks.append((column, text, expr))
            else:
                expr = f"CAST({ref} AS DOUBLE)"
        elif raw_type == "BOOLEAN":
            expr = ref
        else:
            expr = (
                f"CASE WHEN lower({text}) IN ('true', 't', '1', 'yes', 'y') THEN true "
                f"WHEN lower({text}) IN ('false', 'f', '0', 'no', 'n') THEN false END"
            )
            checks.append((column, text, expr))
        selects.append(f"{expr} AS {_q(column)}")
    con.execute(f"CREATE TABLE {table} AS SELECT {', '.join(selects)} FROM {raw}")
    if not checks:
        return
    counts = ", ".join(
        f"count(*) FILTER ({t} IS NOT NULL AND ({e}) IS NULL), "
        f"min({t}) FILTER ({t} IS NOT NULL AND ({e}) IS NULL)"
        for _, t, e in checks
    )
    row = con.execute(f"SELECT {counts} FROM {raw}").fetchone()
    assert row is not None
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


def _finish_deals(dataset: Dataset, mapping: ResolvedMapping) -> None:
    """Drop deals without id and duplicate ids, derive ``status``, match names to the lookup
    tables, fill team/region/segment from them, and log what was done."""
    con = dataset.con
    deals: DealsMapping = mapping.deals
    quality = dataset.quality
    row = con.execute("SELECT count(*) FILTER (id IS NULL) FROM deals").fetchone()
    no_id = int(row[0]) if row else 0
    duplicates = con.execute(
        "SELECT coalesce(sum(n - 1), 0) FROM (SELECT count(*) AS n FROM deals WHERE id IS NOT "
        "NULL GROUP BY id HAVING count(*) > 1)"
    ).fetchone()
    dup = int(duplicates[0]) if duplicates else 0
    if no_id:
        quality.append(f"deals: {_n(no_id)} row(s) without an id dropped")
    if dup:
        quality.append(f"deals: {_n(dup)} row(s) repeat an earlier id: dropped (first kept)")
    # Status.
    won = [s.lower() for s in deals.won_stages]
    lost = [s.lower() for s in deals.lost_stages]
    has_flags = "is_won" in deals.columns or "is_closed" in deals.columns
    if has_flags:
        status = "CASE WHEN is_won THEN 'won' WHEN is_closed THEN 'lost' ELSE 'open' END"
    else:
        won_in = ", ".join(_lit(s) for s in won) or "NULL"
        lost_in = ", ".join(_lit(s) for s in lost) or "NULL"
        status = (
            f"CASE WHEN lower(stage) IN ({won_in}) THEN 'won' "
            f"WHEN lower(stage) IN ({lost_in}) THEN 'lost' ELSE 'open' END"
        )
    probability = "probability / 100.0" if deals.probability_percent else "probability"
    if no_id or dup:
        con.execute(
            "CREATE OR REPLACE TABLE deals AS SELECT * FROM (SELECT *, row_number() OVER () "
            "AS _row FROM deals) WHERE id IS NOT NULL "
            "QUALIFY row_number() OVER (PARTITION BY id ORDER BY _row) = 1"
        )
        con.execute("ALTER TABLE deals DROP COLUMN _row")
    con.execute(
        "CREATE OR REPLACE TABLE deals AS SELECT * EXCLUDE (status, probability), "
        f"{status} AS status, {probability} AS probability FROM deals"
    )
    if not has_flags and not won:
        quality.append("deals: the mapping names no won stages: every deal counts as open")
    known = {s.lower() for s in [*deals.stage_order, *deals.won_stages, *deals.lost_stages]}
    if known:
        unknown = con.execute(
            "SELECT stage, count(*) FROM deals WHERE stage IS NOT NULL AND status = 'open' "
            "GROUP BY stage ORDER BY stage"
        ).fetchall()
        for stage, count in unknown:
            if str(stage).lower() not in known:
                quality.append(
                    f"deals.stage: {_n(count)} open deal(s) in stage {stage!r}, which is not in "
                    "the stage order: counted as open, left out of the funnel"
                )
    for column, lookup in LOOKUPS.items():
        _match_names(dataset, column, lookup if lookup in dataset.tables else None)
    _enrich(dataset)
    row = con.execute(
        "SELECT count(*) FILTER (status <> 'open' AND close_date IS NULL), "
        "count(*) FILTER (status = 'won' AND amount IS NULL) FROM deals"
    ).fetchone()
    assert row is not None
    if row[0]:
        quality.append(
            f"deals: {_n(row[0])} closed deal(s) without a close date: left out of every period"
        )
    if row[1]:
        quality.append(
            f"deals: {_n(row[1])} won deal(s) without an amount: counted in win "
            "rates, not in revenue"
        )


def _normal(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", name.casefold())


def _match_names(dataset: Dataset, column: str, lookup: str | None) -> None:
    con = dataset.con
    counts = dict(
        con.execute(
            f"SELECT {column}, count(*) FROM deals WHERE {column} IS NOT NULL GROUP BY 1"
        ).fetchall()
    )
    replace: dict[str, str] = {}
    if lookup is not None:
        names = [
            r[0]
            for r in con.execute(
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
            dataset.quality.append(
                f"deals.{column}: {_n(sum(c for _, c in unmatched))} deal(s) name a {column} "
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
        for value in counts:
            groups.setdefault(_normal(value), []).append(value)
        for spellings in groups.values():
            if len(spellings) < 2:
                continue
            # The most frequent; on a tie, a capitalised spelling over an all-lowercase one.
            keep = min(spellings, key=lambda v: (-counts[v], v.islower(), v))
            for value in spellings:
                if value != keep:
                    replace[value] = keep
                    dataset.quality.append(
                        f"deals.{column}: {_n(counts[value])} deal(s) spell {value!r}, unified "
                        f"with {keep!r}"
                    )
    if replace:
        con.execute("CREATE TEMP TABLE _names (spelled VARCHAR, name VARCHAR)")
        con.executemany("INSERT INTO _names VALUES (?, ?)", list(replace.items()))
        con.execute(
            f"UPDATE deals SET {column} = _names.name FROM _names "
            f"WHERE deals.{column} = _names.spelled"
        )
        con.execute("DROP TABLE _names")
    nulls = con.execute(
        f"SELECT count(*), count(*) FILTER (status = 'open') FROM deals WHERE {column} IS NULL"
    ).fetchone()
    total = con.execute("SELECT count(*) FROM deals").fetchone()
    if nulls and nulls[0] and total and nulls[0] < total[0]:  # all empty: not in the source
        open_note = " (all open)" if nulls[0] == nulls[1] else ""
        dataset.quality.append(
            f"deals: {_n(nulls[0])} deal(s) without {column}{open_note}: shown as (none)"
        )


def _enrich(dataset: Dataset) -> None:
    """Fill ``team``, ``region`` (from owners) and ``segment`` (from accounts) where the deal
    row leaves them empty."""
    con = dataset.con
    joins, sets = [], []
    if "owners" in dataset.tables:
        joins.append("LEFT JOIN (SELECT DISTINCT ON (owner) * FROM owners) o USING (owner)")
        sets += ["coalesce(d.team, o.team) AS team", "coalesce(d.region, o.region) AS region"]
    if "accounts" in dataset.tables:
        joins.append("LEFT JOIN (SELECT DISTINCT ON (account) * FROM accounts) a USING (account)")
        sets.append("coalesce(d.segment, a.segment) AS segment")
    if not joins:
        return
    replaced = ", ".join(s.split(" AS ")[1] for s in sets)
    con.execute(
        f"CREATE OR REPLACE TABLE deals AS SELECT d.* EXCLUDE ({replaced}), {', '.join(sets)} "
        f"FROM deals d {' '.join(joins)}"
    )


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


def _check_typos(dataset: Dataset) -> None:
    """Log values that look like misspellings, keeping them as found: country names that are
    not in ISO 3166 but close to one, and pairs of values of a category column that differ by
    one letter (``Retail``/``Retial``)."""
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
    for table, column in (
        ("accounts", "segment"),
        ("owners", "region"),
        ("products", "series"),
        ("deals", "stage"),
    ):
        if table not in dataset.tables:
            continue
        rows = con.execute(
            f"SELECT a.{column}, b.{column} FROM (SELECT DISTINCT {column} FROM {table}) a, "
            f"(SELECT DISTINCT {column} FROM {table}) b WHERE a.{column} < b.{column} "
            f"AND length(a.{column}) >= 5 AND levenshtein(lower(a.{column}), "
            f"lower(b.{column})) = 1"
        ).fetchall()
        for a, b in rows:
            dataset.quality.append(
                f"{table}.{column}: {a!r} and {b!r} differ by one letter (kept as found)"
            )
