"""Configuration of the business-metric sources: SQL queries (``monitor.sql``) and the push API
(``monitor.push``).

A SQL query is one metric: its value column becomes the sample value and every other column a
label, as in sql_exporter. The database is any SQLAlchemy URL (``sqlite:///crm.db``,
``duckdb:///crm.duckdb``, ``postgresql+psycopg://user:${DB_PASSWORD}@host/db``); a password in
it is never shown (``/api/v1/targets`` and logs print the URL with ``***``).
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from pydantic import Field, StrictBool, StrictInt, field_validator
from pydantic_core import PydanticCustomError

from opscope.config.types import LABEL_NAME, Interval, Model, PositiveDuration

METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*\Z")


def _label_names(labels: dict[str, str]) -> dict[str, str]:
    for name in labels:
        if not LABEL_NAME.match(name) or name.startswith("__"):
            raise PydanticCustomError("label_name", 'invalid label name "{name}"', {"name": name})
    return labels


class SqlQueryConfig(Model):
    """One named SQL query, run at an interval; its rows become the samples of one metric."""

    name: str
    """Metric name of the samples (``revenue_won_last_hour``); also the target's instance."""
    url: str = Field(min_length=1)
    """SQLAlchemy database URL: ``sqlite:///path.db``, ``duckdb:///path.duckdb`` (both built
    in; a relative file path is relative to this configuration file), ``postgresql+psycopg://…``
    or ``mysql+pymysql://…`` (install ``opscope[postgres]`` or ``opscope[mysql]``). Use
    ``${VAR}`` for a password."""
    query: str = Field(min_length=1)
    """The SELECT statement. Each row is one sample: ``value_column`` is its value, every other
    column a label (NULL: the label is absent). Two rows with the same labels fail the query."""
    value_column: str = "value"
    """Column holding the sample value (a number; NULL leaves the row out)."""
    job: str = Field(default="sql", min_length=1)
    """Value of the ``job`` label of every sample, and the target's job."""
    interval: Interval | None = None
    """How often the query runs; defaults to ``monitor.interval``."""
    timeout: PositiveDuration | None = None
    """A query still running after this long is cancelled (a failed collection). Default 10s,
    capped at the interval."""
    labels: dict[str, str] = Field(default_factory=dict)
    """Extra labels attached to every sample (a column of the same name wins)."""

    @field_validator("name")
    @classmethod
    def _metric_name(cls, name: str) -> str:
        if not METRIC_NAME.match(name):
            raise PydanticCustomError("metric_name", 'invalid metric name "{name}"', {"name": name})
        return name

    @field_validator("value_column")
    @classmethod
    def _column(cls, column: str) -> str:
        if not column:
            raise PydanticCustomError("column", "expected a column name", {})
        return column

    @field_validator("labels")
    @classmethod
    def _labels(cls, labels: dict[str, str]) -> dict[str, str]:
        return _label_names(labels)

    @field_validator("url")
    @classmethod
    def _url(cls, url: str) -> str:
        from sqlalchemy.engine import make_url  # noqa: PLC0415 (only when sql is configured)
        from sqlalchemy.exc import ArgumentError  # noqa: PLC0415

        try:
            make_url(url)
        except ArgumentError:
            raise PydanticCustomError(
                "url",
                "expected a SQLAlchemy database URL like sqlite:///crm.db or duckdb:///crm.duckdb",
                {},
            ) from None
        return url


def resolve_database_file(url: str, base: Path) -> str:
    """``url`` with a relative SQLite or DuckDB file path made absolute against ``base`` (the
    configuration file's folder, as for ``rule_files``); every other URL unchanged.

    ``sqlite:///crm.db`` → ``sqlite:////etc/opscope/crm.db``; ``sqlite:///file:crm.db?uri=true``
    → ``sqlite:///file:/etc/opscope/crm.db?uri=true``. In-memory databases, absolute paths and
    server URLs are returned as they are.
    """
    from sqlalchemy.engine import make_url  # noqa: PLC0415 (only when sql is configured)

    parsed = make_url(url)
    backend = parsed.get_backend_name()
    database = parsed.database or ""
    if backend not in ("sqlite", "duckdb") or database in ("", ":memory:"):
        return url
    if backend == "sqlite" and database.startswith("file:"):
        split = urlsplit(database)
        if not split.path or split.path == ":memory:" or Path(unquote(split.path)).is_absolute():
            return url
        database = "file:" + quote(str(base.resolve() / unquote(split.path)))
    elif Path(database).is_absolute():
        return url
    else:
        database = str(base.resolve() / database)
    # The URL's text is scheme:///DATABASE?QUERY: only the database part changes.
    prefix, _, rest = url.partition(":///")
    _, question, query = rest.partition("?")
    return f"{prefix}:///{quote(database, safe='/:')}{question}{query}"


class PushConfig(Model):
    """The push API (``/api/v1/push/{job}/…``): batch jobs and other sources send samples."""

    enabled: StrictBool = True
    """Accept pushes (with a token of scope ``write`` when the server needs tokens)."""
    body_size_limit: StrictInt = Field(default=16 * 2**20, ge=1)
    """Largest request body, in bytes, before and after gzip decoding; larger ones get 413."""
    series_limit: StrictInt = Field(default=100_000, ge=1)
    """Most samples one push may carry (like a scrape's ``sample_limit``); a push with more
    gets 400 and stores nothing."""
    max_future: PositiveDuration = timedelta(minutes=10)
    """Samples stamped further than this ahead of the server's clock are rejected."""
