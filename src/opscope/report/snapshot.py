"""Snapshots of loaded file sources: the canonical tables and the data-quality log of a
source, kept in a DuckDB database file and used again while the source's files are unchanged.

Reading a large CSV export (parsing, name matching, every data-quality count) costs far more
than computing a report from the result, and a source is read again by every scheduled run,
every period and every report. As in Evidence's source cache, the result of loading is kept;
unlike a cache that must be refreshed by hand, a snapshot is found by two hashes:

* the **identity** of the load: the source's settings (its absolute path, mapping with the
  preset applied, currency, locale), the report timezone (it decides the calendar day of a
  timestamp), and the versions of opscope, DuckDB, pandas and openpyxl (which read Excel
  files) and of the loading code itself;
* the **fingerprint** of the files the load could read: those of the source's folder (the
  folder of the deals file when the source is one file) whose names match a table's file
  (the mapping's ``file`` patterns, ``<table>.csv``/``.parquet``/``.xlsx``; other files
  cannot change the load and are ignored). A data file up to :data:`HASHED_SIZE` is known by
  a hash of its bytes, a larger one by its size, modification and change time (ns) and inode,
  the rule Git's index uses to tell that a file changed, with its "racily clean" guard: no
  snapshot is written while such a file is younger than :data:`RACY_NS`. A matching file
  added to or removed from the folder changes the fingerprint too.

The files are fingerprinted again once they have been read, and a snapshot is written only
when nothing changed meanwhile (times included, so a file rewritten during the load and back
to its old bytes is caught too). A snapshot is written the second time the same files are
loaded (a ``.seen`` marker notes the first): a one-off report, or an export that changes before
every run, does not pay for writing one.

A snapshot is ``<identity>-<fingerprint>-<digest>.duckdb`` in the cache folder, ``digest`` a
hash of the file's own bytes, checked before it is opened (DuckDB checks a block only when a
query reads it, after the report has started). Files are written under a temporary name and
renamed into place, so a reader never sees a partial snapshot and two processes loading the
same source at once each write a whole file. Writing one removes that identity's older
snapshots, temporary files left by killed writers, and snapshots not used for
:data:`MAX_AGE_S`; the snapshots are then cut to :data:`MAX_BYTES`, least recently used first.
Only files with the names this module gives are ever removed (the folder may be shared). The
deals are stored sorted by close date, so that the period filters of the reports read only the
row groups of their dates (DuckDB's zone maps).

Only ``files`` sources have snapshots: a SQL database or a DuckDB file can change without any
file of ours changing, and is read every time. A snapshot that cannot be read is removed (when
the folder allows) and the source read again; one that cannot be written is logged and
skipped: a cache never makes a report fail.
"""

from __future__ import annotations

import contextlib
import fnmatch
import glob
import hashlib
import json
import logging
import os
import re
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import duckdb

from opscope import __version__
from opscope.config.reports import CANONICAL_COLUMNS, SourceConfig
from opscope.report.schema import ResolvedMapping

log = logging.getLogger(__name__)

#: Version of the snapshot layout (the ``_snapshot`` table and the stored tables).
FORMAT = 2

_META = "_snapshot"

#: Data files up to this size are known by a hash of their bytes, larger ones by their size,
#: times and inode (hashing 1 GB would cost more than the cache saves).
HASHED_SIZE = 4 * 1024 * 1024
_DATA_SUFFIXES = (".csv", ".tsv", ".txt", ".parquet", ".xlsx", ".xlsm")
#: A file modified this recently (ns) may change again within its timestamp's granularity.
RACY_NS = 2_000_000_000
#: Snapshots (and markers) not used for this long (s) are removed when a snapshot is written.
MAX_AGE_S = 30 * 86400
#: The cache folder is kept under this many bytes, least recently used snapshots removed first.
MAX_BYTES = 2 * 1024**3
#: A temporary file this old (s) was left by a writer that was killed.
_STALE_TEMPORARY_S = 3600
_TABLE_SUFFIXES = (".csv", ".parquet", ".xlsx")
_HEX = "[0-9a-f]{24}"
#: The names of the files this module writes: snapshots, markers, temporary files.
_OURS = re.compile(
    rf"{_HEX}-{_HEX}-{_HEX}\.duckdb|{_HEX}-{_HEX}\.seen|\.{_HEX}-{_HEX}\..+\.tmp(\.wal)?"
)


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
    from opscope.config import reports
    from opscope.report import schema, sources

    digest = hashlib.sha256()
    for module in (sources, schema, reports):
        digest.update(Path(str(module.__file__)).read_bytes())
    digest.update(Path(__file__).read_bytes())
    return digest.hexdigest()


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return ""


@dataclass(frozen=True)
class SnapshotKey:
    """The two hashes that name a snapshot (hex digests; see the module's docstring), and the
    stat of the fingerprinted files (to tell whether they changed while being read)."""

    identity: str
    fingerprint: str
    racy: bool = False
    """A file known only by its times changed less than :data:`RACY_NS` ago: a change in the
    same clock tick would keep its times, so no snapshot is written now (Git's "racily
    clean" rule)."""
    stamp: tuple[tuple[Any, ...], ...] = ()
    """(name, size, mtime_ns, ctime_ns, inode) of every fingerprinted file."""

    @property
    def prefix(self) -> str:
        """The start of the names of this key's files in the cache folder."""
        return f"{self.identity[:24]}-{self.fingerprint[:24]}"

    def unchanged(self, later: SnapshotKey | None) -> bool:
        """Whether ``later`` (the key taken after reading) finds the same files, untouched."""
        return later is not None and (later.fingerprint, later.stamp) == (
            self.fingerprint,
            self.stamp,
        )


@dataclass(frozen=True)
class _Names:
    """The names of the files in a source's folder that the load could read: exact names, and
    the mapping's ``file`` patterns (``fnmatch``, as ``glob`` reads them) as one regex."""

    exact: frozenset[str]
    patterns: re.Pattern[str] | None

    def match(self, name: str) -> bool:
        return name in self.exact or (
            self.patterns is not None and self.patterns.fullmatch(name) is not None
        )


def _names(source_file: Path | None, mapping: ResolvedMapping) -> _Names | None:
    """:class:`_Names` of a source (``source_file``: the deals file of a one-file source), or
    ``None`` when a mapped file may lie outside the folder."""
    exact = {source_file.name} if source_file is not None else set()
    tables = set(CANONICAL_COLUMNS) | set(mapping.tables)
    exact |= {f"{table}{suffix}" for table in tables for suffix in _TABLE_SUFFIXES}
    patterns: list[str] = []
    for table in (mapping.deals, *mapping.tables.values()):
        name = table.file or ""
        if "/" in name or "\\" in name or name.startswith(".."):
            return None
        if not name:
            continue
        if glob.has_magic(name):
            patterns.append(fnmatch.translate(name))
        else:  # the file, or the same stem exported as Parquet or Excel
            stem = name.rsplit(".", 1)[0] if "." in name else name
            exact |= {name, *(f"{stem}{suffix}" for suffix in _TABLE_SUFFIXES)}
    return _Names(frozenset(exact), re.compile("|".join(patterns)) if patterns else None)


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
    is_dir = path.is_dir()
    names = _names(None if is_dir else path, mapping)
    if names is None:
        return None
    folder = path if is_dir else path.parent
    now = time.time_ns()
    files: list[list[Any]] = []
    stamp: list[tuple[Any, ...]] = []
    racy = False
    try:
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            if not names.match(entry.name):
                continue
            if not entry.is_file(follow_symlinks=True):
                continue
            st = entry.stat(follow_symlinks=True)
            stamp.append((entry.name, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino))
            if st.st_size <= HASHED_SIZE and entry.name.lower().endswith(_DATA_SUFFIXES):
                content = hashlib.sha256(Path(entry.path).read_bytes()).hexdigest()
                files.append([entry.name, content])
                continue
            files.append(list(stamp[-1]))
            racy = racy or st.st_mtime_ns > now - RACY_NS
    except OSError:
        return None
    tables = {"deals": mapping.deals, **mapping.tables}
    identity = {
        "format": FORMAT,
        "opscope": __version__,
        "duckdb": duckdb.__version__,
        "pandas": _version("pandas"),
        "openpyxl": _version("openpyxl"),
        "tzdata": _version("tzdata"),  # the country names misspellings are checked against
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
        stamp=tuple(stamp),
    )


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def _file_digest(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()[:24]


def _remove(path: Path) -> None:
    """Remove ``path`` if the folder allows (a read-only cache is still read)."""
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)


def open_snapshot(
    directory: Path, key: SnapshotKey, timezone: str
) -> tuple[duckdb.DuckDBPyConnection, dict[str, Any]] | None:
    """A read-only connection to the snapshot of ``key`` and its stored dataset fields
    (``tables``, ``rows``, ``quality``, …), or ``None`` when there is none. A snapshot whose
    bytes do not match its digest, or that cannot be read, is removed (logged)."""
    try:
        found = sorted(directory.glob(f"{key.prefix}-*.duckdb"))
    except OSError:
        return None
    for path in found:
        con: duckdb.DuckDBPyConnection | None = None
        try:
            digest = path.stem.rsplit("-", 1)[-1]
            if _file_digest(path) != digest:
                raise ValueError("its bytes do not match its digest")
            con = duckdb.connect(str(path), read_only=True)
            con.execute(f"SET TimeZone = '{timezone.replace(chr(39), chr(39) * 2)}'")
            rows = con.execute(f"SELECT meta FROM {_META}").fetchall()
            meta = json.loads(rows[0][0])
            if meta.get("format") != FORMAT:
                raise ValueError(f"snapshot format {meta.get('format')!r}")
        except (duckdb.Error, ValueError, KeyError, IndexError, OSError) as exc:
            if con is not None:
                con.close()
            log.warning(
                "source snapshot %s cannot be read (%s): reading the source again", path, exc
            )
            _remove(path)
            continue
        with contextlib.suppress(OSError):
            os.utime(path)  # used now: the last to be evicted
        return con, meta
    return None


def seen_before(directory: Path, key: SnapshotKey) -> bool:
    """Whether these files were loaded before with these settings (a marker notes it, and is
    left now when they were not): a snapshot is written on the second load, so that a one-off
    report does not pay for it."""
    marker = directory / f"{key.prefix}.seen"
    try:
        if marker.is_file():
            return True
        directory.mkdir(parents=True, exist_ok=True)
        for old in directory.glob(f"{key.identity[:24]}-*.seen"):
            _remove(old)
        marker.touch()
    except OSError as exc:
        log.warning("source snapshot marker %s not written: %s", marker, exc)
    return False


def write_snapshot(
    con: duckdb.DuckDBPyConnection,
    meta: dict[str, Any],
    directory: Path,
    key: SnapshotKey,
) -> Path | None:
    """Write the canonical tables ``meta["tables"]`` of ``con`` and ``meta`` as the snapshot of
    ``key``; then tidy the folder (see the module's docstring). Returns the file, or ``None``
    when it could not be written (logged; the report goes on without it)."""
    temporary: Path | None = None
    final: Path | None = None
    attached = False
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{key.prefix}.", suffix=".tmp", dir=directory)
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
        final = directory / f"{key.prefix}-{_file_digest(temporary)}.duckdb"
        os.replace(temporary, final)
        temporary = None
    except (duckdb.Error, OSError) as exc:
        log.warning("source snapshot of %s not written: %s", key.prefix, exc)
        return None
    finally:
        if attached:
            with contextlib.suppress(duckdb.Error):
                con.execute("DETACH _snap")
        if temporary is not None:
            _remove(temporary)
            _remove(Path(f"{temporary}.wal"))
    if final is not None:
        _tidy(directory, key, final)
    return final


def _tidy(directory: Path, key: SnapshotKey, kept: Path) -> None:
    """Remove the identity's other snapshots and markers, temporary files of killed writers,
    files unused for :data:`MAX_AGE_S`, then the least recently used snapshots beyond
    :data:`MAX_BYTES`."""
    now = time.time()
    snapshots: list[tuple[float, int, Path]] = []
    try:
        entries = list(directory.iterdir())
    except OSError:
        return
    for path in entries:
        name = path.name
        if path == kept or not _OURS.fullmatch(name):
            continue  # not a file of ours: never touched
        try:
            st = path.stat()
        except OSError:
            continue
        if name.startswith("."):
            if now - st.st_mtime > _STALE_TEMPORARY_S:
                _remove(path)  # left by a writer that was killed
        elif name.startswith(f"{key.identity[:24]}-"):
            _remove(path)  # this source's older snapshot or marker
        elif now - st.st_mtime > MAX_AGE_S:
            _remove(path)
        elif name.endswith(".duckdb"):
            snapshots.append((st.st_mtime, st.st_size, path))
    total = sum(size for _, size, _ in snapshots)
    with contextlib.suppress(OSError):
        total += kept.stat().st_size
    for _, size, path in sorted(snapshots):  # oldest use first
        if total <= MAX_BYTES:
            break
        _remove(path)
        total -= size
