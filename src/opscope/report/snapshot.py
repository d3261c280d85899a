"""Snapshots of loaded file sources: the canonical tables and the data-quality log of a
source, kept in a DuckDB database file and used again while the source's files are unchanged.

Reading a large CSV export (parsing, name matching, every data-quality count) costs far more
than computing a report from the result, and a source is read again by every scheduled run,
every period and every report. As in Evidence's source cache, the result of loading is kept;
unlike a cache that must be refreshed by hand, a snapshot is found by two hashes:

* the **identity** of the load: the source's settings (its absolute path, mapping with the
  preset applied, currency, locale), the report timezone (it decides the calendar day of a
  timestamp), and the versions of opscope, DuckDB and of the loading code itself;
* the **fingerprint** of the files in the source's folder (the folder of the deals file when
  the source is one file): a hash of the bytes of each data file up to :data:`HASHED_SIZE`, and
  for other files their size, modification and change time (ns) and inode, the rule Git's
  index uses to tell that a file changed (with its "racily clean" guard: no snapshot is written
  while such a file is younger than :data:`RACY_NS`). A file added to or removed from the
  folder changes it too, since lookup tables are found by name there.

A snapshot is ``<identity>-<fingerprint>.duckdb`` in the cache folder; writing a new one for an
identity removes that identity's older ones. Files are written under a temporary name and
renamed into place, so a reader never sees a partial snapshot and two processes loading the
same source at once each write a whole file (the last rename wins; both are identical). The
deals are stored sorted by close date, so that the period filters of the reports read only the
row groups of their dates (DuckDB's zone maps).

Only ``files`` sources have snapshots: a SQL database or a DuckDB file can change without any
file of ours changing, and is read every time. A snapshot that cannot be read (truncated, of
another format) is removed and the source read again; one that cannot be written is logged and
skipped: a cache never makes a report fail.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from opscope import __version__
from opscope.config.reports import SourceConfig
from opscope.report.schema import ResolvedMapping

log = logging.getLogger(__name__)

#: Version of the snapshot layout (the ``_snapshot`` table and the stored tables).
FORMAT = 1

_META = "_snapshot"

#: Data files up to this size are known by a hash of their bytes, larger ones by their size,
#: times and inode (hashing 1 GB would cost more than the cache saves).
HASHED_SIZE = 4 * 1024 * 1024
_DATA_SUFFIXES = (".csv", ".tsv", ".txt", ".parquet", ".xlsx", ".xlsm")
#: A file modified this recently (ns) may change again within its timestamp's granularity.
RACY_NS = 2_000_000_000


def default_cache_dir() -> Path:
    """Where the CLI keeps snapshots: ``$OPSCOPE_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/opscope/sources``, else ``~/.cache/opscope/sources`` (XDG base directory
    specification)."""
    own = os.environ.get("OPSCOPE_CACHE_DIR")
    if own:
        return Path(own)
    xdg = os.environ.get("XDG_CACHE_HOME")
    root = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return root / "opscope" / "sources"


def _code_hash() -> str:
    """Hash of the code that turns files into tables (a changed parser makes new snapshots)."""
    from opscope.report import schema, sources

    digest = hashlib.sha256()
    for module in (sources, schema):
        digest.update(Path(str(module.__file__)).read_bytes())
    digest.update(Path(__file__).read_bytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class SnapshotKey:
    """The two hashes that name a snapshot (hex digests; see the module's docstring)."""

    identity: str
    fingerprint: str
    racy: bool = False
    """A file known only by its times changed less than :data:`RACY_NS` ago: a change in the
    same clock tick would keep its times, so no snapshot is written now (Git's "racily
    clean" rule)."""

    def path(self, directory: Path) -> Path:
        """The snapshot's file in ``directory``."""
        return directory / f"{self.identity[:24]}-{self.fingerprint[:24]}.duckdb"


def snapshot_key(
    source: SourceConfig, mapping: ResolvedMapping, *, base: Path, timezone: str
) -> SnapshotKey | None:
    """The key of ``source`` as its files are now, or ``None`` when it cannot have a snapshot
    (not a folder or file of CSV, Parquet or Excel files; a mapped file pattern reaching out of
    the folder; the folder cannot be listed)."""
    if source.url is not None or source.path is None:
        return None
    path = (base / source.path).absolute()
    if source.kind not in (None, "files") or path.suffix.lower() in (".duckdb", ".ddb", ".db"):
        return None
    tables = {"deals": mapping.deals, **mapping.tables}
    for table in tables.values():
        name = table.file or ""
        if "/" in name or "\\" in name or name.startswith(".."):
            return None
    folder = path if path.is_dir() else path.parent
    now = time.time_ns()
    files: list[list[Any]] = []
    racy = False
    try:
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            if not entry.is_file(follow_symlinks=True):
                continue
            st = entry.stat(follow_symlinks=True)
            if st.st_size <= HASHED_SIZE and entry.name.lower().endswith(_DATA_SUFFIXES):
                content = hashlib.sha256(Path(entry.path).read_bytes()).hexdigest()
                files.append([entry.name, content])
                continue
            files.append([entry.name, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino])
            racy = racy or st.st_mtime_ns > now - RACY_NS
    except OSError:
        return None
    identity = {
        "format": FORMAT,
        "opscope": __version__,
        "duckdb": duckdb.__version__,
        "code": _code_hash(),
        "path": str(path),
        "source": source.model_dump(mode="json", exclude={"path", "mapping"}),
        "mapping": {name: t.model_dump(mode="json") for name, t in sorted(tables.items())},
        "timezone": timezone,
    }
    return SnapshotKey(
        identity=_digest(identity),
        fingerprint=_digest({"folder": str(folder), "files": files}),
        racy=racy,
    )


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def open_snapshot(
    directory: Path, key: SnapshotKey, timezone: str
) -> tuple[duckdb.DuckDBPyConnection, dict[str, Any]] | None:
    """A read-only connection to the snapshot of ``key`` and its stored dataset fields
    (``tables``, ``rows``, ``quality``, …), or ``None`` when there is none. A snapshot that
    cannot be read is removed (logged)."""
    path = key.path(directory)
    if not path.is_file():
        return None
    con: duckdb.DuckDBPyConnection | None = None
    try:
        con = duckdb.connect(str(path), read_only=True)
        con.execute(f"SET TimeZone = '{timezone.replace(chr(39), chr(39) * 2)}'")
        rows = con.execute(f"SELECT meta FROM {_META}").fetchall()
        meta = json.loads(rows[0][0])
        if meta.get("format") != FORMAT:
            raise ValueError(f"snapshot format {meta.get('format')!r}")
        return con, meta
    except (duckdb.Error, ValueError, KeyError, IndexError, OSError) as exc:
        if con is not None:
            con.close()
        log.warning("source snapshot %s cannot be read (%s): reading the source again", path, exc)
        path.unlink(missing_ok=True)
        return None


def write_snapshot(
    con: duckdb.DuckDBPyConnection,
    meta: dict[str, Any],
    directory: Path,
    key: SnapshotKey,
) -> Path | None:
    """Write the canonical tables ``meta["tables"]`` of ``con`` and ``meta`` as the snapshot of
    ``key``; remove the older snapshots of the same identity. Returns the file, or ``None``
    when it could not be written (logged; the report goes on without it)."""
    final = key.path(directory)
    temporary: Path | None = None
    attached = False
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{final.stem}.", suffix=".tmp", dir=directory)
        os.close(fd)
        temporary = Path(name)
        temporary.unlink()  # DuckDB creates the file itself
        con.execute(f"ATTACH '{str(temporary).replace(chr(39), chr(39) * 2)}' AS _snap")
        attached = True
        for table in sorted(meta["tables"]):
            order = " ORDER BY close_date NULLS LAST" if table == "deals" else ""
            con.execute(f'CREATE TABLE _snap."{table}" AS SELECT * FROM "{table}"{order}')
        con.execute(
            f"CREATE TABLE _snap.{_META} AS SELECT ?::VARCHAR AS meta",
            [json.dumps({**meta, "format": FORMAT})],
        )
        con.execute("DETACH _snap")
        attached = False
        os.replace(temporary, final)
        temporary = None
    except (duckdb.Error, OSError) as exc:
        log.warning("source snapshot %s not written: %s", final, exc)
        return None
    finally:
        if attached:
            with contextlib.suppress(duckdb.Error):
                con.execute("DETACH _snap")
        if temporary is not None:
            temporary.unlink(missing_ok=True)
            Path(f"{temporary}.wal").unlink(missing_ok=True)
    prefix = f"{key.identity[:24]}-"
    for old in directory.glob(f"{prefix}*.duckdb"):
        if old != final:
            old.unlink(missing_ok=True)
    return final
