"""The embedded time-series store: SQLite (WAL) holding series, samples and staleness markers.

Samples are stored the way they are collected: one row per *collection* — one scrape of one
target, one cycle of the system collector — holding the values of all its series as one
little-endian float64 array (``samples.vals``), and a reference to the *layout* that says which
series each position belongs to (``layouts.series``, a little-endian int64 array of series ids).
A target that exposes the same series every time reuses one layout, so a 10,000-series scrape is
one row insert instead of 10,000: this is what makes ingest cheap (see ``bench/ingest.py``).

Staleness markers are the special NaN of Prometheus (``value.StaleNaN``, bits
``0x7ff0000000000002``) stored in place of a value, exactly as Prometheus's TSDB stores them.

Tables::

    series(id, name, labels)            labels = canonical JSON object, sorted keys
    groups(id, key)                     one per collection source ("scrape/node/host:9100")
    layouts(id, group_id, series)       series = int64[] of series ids, in value order
    series_groups(series_id, group_id)  which groups hold samples of a series
    samples(id, group_id, ts, layout_id, vals)   ts = milliseconds since the epoch
    state(key, value, updated)          small JSON documents (alert state), updated in Unix s

Every :meth:`Store.append` is one transaction. Recently read or written value arrays are kept
decoded in a bounded in-memory cache, so queries over the last minutes (rule evaluation, the
dashboard) do not touch the disk.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from opscope.errors import QueryTooLarge, StoreError
from opscope.store.labels import LabelSet, Selector
from opscope.store.series import SeriesIndex, SeriesRef

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

#: Bit pattern of Prometheus's staleness marker (``model/value.StaleNaN``).
STALE_NAN_BITS = 0x7FF0000000000002
#: The staleness marker as a float (a NaN; compare bits with :func:`is_stale`, never ``==``).
STALE_NAN: float = float(np.array([STALE_NAN_BITS], dtype=np.uint64).view(np.float64)[0])

_MATRIX_CELLS = 4_000_000
#: Python-object bytes of one cache entry beyond its values (array header, dict slot, key).
_CACHE_ENTRY_OVERHEAD = 400
_SCHEMA_VERSION = 2
_SCHEMA = """
CREATE TABLE IF NOT EXISTS series (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    labels TEXT NOT NULL,
    UNIQUE (name, labels)
);
CREATE TABLE IF NOT EXISTS groups (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS layouts (
    id INTEGER PRIMARY KEY,
    group_id INTEGER NOT NULL,
    series BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS series_groups (
    series_id INTEGER NOT NULL,
    group_id INTEGER NOT NULL,
    PRIMARY KEY (series_id, group_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS samples (
    id INTEGER PRIMARY KEY,
    group_id INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    layout_id INTEGER NOT NULL,
    vals BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS samples_by_group_time ON samples (group_id, ts, layout_id);
CREATE INDEX IF NOT EXISTS samples_by_time ON samples (ts);
CREATE TABLE IF NOT EXISTS state (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated REAL NOT NULL
);
"""


def is_stale(values: FloatArray) -> npt.NDArray[np.bool_]:
    """Elementwise: is the value Prometheus's staleness marker?"""
    stale: npt.NDArray[np.bool_] = values.view(np.uint64) == STALE_NAN_BITS
    return stale


@dataclass(frozen=True)
class Batch:
    """The samples of one collection: one timestamp, one value per series.

    ``group`` names the collection source (``"system"``, ``"scrape/node/127.0.0.1:9100"``);
    ``timestamp_ms`` is milliseconds since the Unix epoch; ``series_ids`` (int64) and ``values``
    (float64, staleness markers allowed) have equal length and no repeated id.
    """

    group: str
    timestamp_ms: int
    series_ids: IntArray
    values: FloatArray


@dataclass(frozen=True)
class SeriesSamples:
    """The raw samples of one series in a time window, oldest first, staleness markers kept."""

    ref: SeriesRef
    timestamps: IntArray
    values: FloatArray


@dataclass(frozen=True)
class RetentionResult:
    """What one retention pass deleted."""

    rows: int
    series: int


class _Layout:
    """A layout's series ids and a sorted view of them for fast position lookups."""

    __slots__ = ("ids", "order", "sorted_ids")

    def __init__(self, ids: IntArray) -> None:
        self.ids = ids
        self.order = np.argsort(ids, kind="stable")
        self.sorted_ids = ids[self.order]

    def positions(self, wanted: IntArray) -> tuple[IntArray, npt.NDArray[np.bool_]]:
        """Positions of ``wanted`` ids in this layout, and which of them are present."""
        if len(self.sorted_ids) == 0:
            return np.zeros(len(wanted), dtype=np.int64), np.zeros(len(wanted), dtype=bool)
        idx = np.searchsorted(self.sorted_ids, wanted)
        idx[idx >= len(self.sorted_ids)] = 0
        found = self.sorted_ids[idx] == wanted
        return self.order[idx], found


def _matrix(
    rows: list[tuple[int, int, int, int]],
    values: dict[int, FloatArray],
    layouts: dict[int, _Layout],
    refs: list[SeriesRef],
) -> tuple[IntArray, FloatArray, BoolArray]:
    """The (rows × series) matrix of ``refs`` in ``rows`` (a row per collection, oldest first):
    timestamps, values, and which cells hold a sample."""
    wanted = np.array([r.id for r in refs], dtype=np.int64)
    n, m = len(rows), len(refs)
    ts = np.array([r[1] for r in rows], dtype=np.int64)
    lookups = {lid: layout.positions(wanted) for lid, layout in layouts.items()}
    if len(lookups) == 1:  # the usual case: one layout, so one gather for every row
        ((pos, found),) = lookups.values()
        stacked = np.stack([values[r[0]] for r in rows])
        matrix = stacked[:, pos]
        present = np.broadcast_to(found, (n, m)).copy()
        return ts, matrix, present
    matrix = np.empty((n, m), dtype=np.float64)
    present = np.zeros((n, m), dtype=bool)
    for i, (row_id, _, layout_id, _) in enumerate(rows):
        pos, found = lookups[layout_id]
        matrix[i, found] = values[row_id][pos[found]]
        present[i] = found
    return ts, matrix, present


def _columns(
    rows: list[tuple[int, int, int, int]],
    values: dict[int, FloatArray],
    layouts: dict[int, _Layout],
    refs: list[SeriesRef],
) -> list[tuple[SeriesRef, IntArray, FloatArray]]:
    """Per series of ``refs``: the timestamps and values it has in ``rows``."""
    ts, matrix, present = _matrix(rows, values, layouts, refs)
    out = []
    for j, ref in enumerate(refs):
        mask = present[:, j]
        if mask.any():
            out.append((ref, ts[mask], matrix[mask, j]))
    return out


@dataclass(frozen=True)
class SampleBlock:
    """Samples of series collected together: row ``i`` is the collection at ``timestamps[i]``,
    column ``j`` the series ``refs[j]``; ``present[i, j]`` says whether that cell has a sample
    (staleness markers included, as in :meth:`Store.select`)."""

    refs: list[SeriesRef]
    timestamps: IntArray
    values: FloatArray
    present: BoolArray


Listener = Callable[[Sequence[Batch]], None]


class Store:
    """The SQLite time-series store of one data directory.

    Thread-safe: every public method holds one lock. Open it with :meth:`open`; close it with
    :meth:`close` (or use it as a context manager). ``readonly=True`` opens an existing store for
    queries beside a running server. Raises :class:`StoreError` when the file cannot be opened.
    """

    FILENAME = "opscope.db"

    def __init__(
        self,
        path: Path,
        *,
        readonly: bool = False,
        cache_bytes: int = 32 << 20,
        max_read_bytes: int = 1 << 30,
    ) -> None:
        self.path = path
        self.readonly = readonly
        self.index = SeriesIndex()
        self._lock = threading.RLock()
        self._cache_bytes = cache_bytes
        self._cache: OrderedDict[int, FloatArray] = OrderedDict()
        self._cache_size = 0
        self._layouts: OrderedDict[int, _Layout] = OrderedDict()
        self._groups: dict[str, int] = {}
        self._group_keys: dict[int, str] = {}
        self._series_groups: dict[int, set[int]] = defaultdict(set)
        self._last_layout: dict[int, tuple[bytes, int]] = {}
        self._pending_series: list[SeriesRef] = []
        self._next_series_id = 1
        self._listeners: list[Listener] = []
        self._undo: list[Callable[[], object]] = []
        self._local = threading.local()
        self._selections: dict[Selector, tuple[int, list[SeriesRef]]] = {}
        self._partitions: dict[
            Selector, tuple[tuple[int, int], tuple[dict[int, list[SeriesRef]], list[SeriesRef]]]
        ] = {}
        #: Incremented whenever a series starts being written by one more source.
        self._membership = 0
        self._readers: list[sqlite3.Connection] = []
        #: A query that would read more value bytes than this from one source is refused.
        self.max_read_bytes = max_read_bytes
        try:
            if readonly:
                uri = f"file:{path}?mode=ro"
                self._db = sqlite3.connect(uri, uri=True, check_same_thread=False)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA busy_timeout = 5000")
            if not readonly:
                self._db.execute("PRAGMA journal_mode = WAL")
                self._db.execute("PRAGMA synchronous = NORMAL")
                self._migrate()
            self._load()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open store {path}: {exc}") from exc

    @classmethod
    def open(cls, data_dir: Path, *, readonly: bool = False) -> Store:
        """Open (creating if needed, unless ``readonly``) the store in ``data_dir``."""
        path = Path(data_dir) / cls.FILENAME
        if readonly and not path.exists():
            raise StoreError(f"no store at {path} (has `opscope serve` run with this data dir?)")
        return cls(path, readonly=readonly)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Persist pending series and close the database."""
        with self._lock:
            if not self.readonly and self._pending_series:
                self._db.execute("BEGIN")
                self._flush_series()
                self._db.execute("COMMIT")
                self._pending_series.clear()
            for reader in self._readers:
                reader.close()
            self._readers.clear()
            self._db.close()

    # ----------------------------------------------------------------------------- schema, load
    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > _SCHEMA_VERSION:
            raise StoreError(f"store {self.path} was written by a newer opscope (schema {version})")
        self._db.executescript(_SCHEMA)
        self._db.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")

    def _load(self) -> None:
        for sid, name, labels in self._db.execute("SELECT id, name, labels FROM series"):
            self.index.add(SeriesRef(sid, name, tuple(json.loads(labels).items())))
            self._next_series_id = max(self._next_series_id, sid + 1)
        for gid, key in self._db.execute("SELECT id, key FROM groups"):
            self._groups[key] = gid
            self._group_keys[gid] = key
        for sid, gid in self._db.execute("SELECT series_id, group_id FROM series_groups"):
            self._series_groups[sid].add(gid)

    # ------------------------------------------------------------------------------------ write
    def series_id(self, name: str, labels: LabelSet) -> int:
        """The id of series ``name{labels}``, assigned now if the series is new.

        A new series is written to the database with the next :meth:`append` (in the same
        transaction as its first samples). ``labels`` must be canonical (see ``label_set``).
        """
        with self._lock:
            found = self.index.get(name, labels)
            if found is not None:
                return found
            if self.readonly:
                raise StoreError("store is open read-only")
            ref = SeriesRef(self._next_series_id, name, labels)
            self._next_series_id += 1
            self.index.add(ref)
            self._pending_series.append(ref)
            return ref.id

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(batches)`` after each committed :meth:`append` (caller's thread)."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        """Stop calling ``listener``."""
        if listener in self._listeners:
            self._listeners.remove(listener)

    def append(
        self,
        batches: Sequence[Batch],
        *,
        state: dict[str, str] | None = None,
        state_time: float | None = None,
        wait: bool = True,
    ) -> bool:
        """Write ``batches`` (and any new series they use) in one transaction, then notify.

        ``state`` documents (key → JSON text) are written in the same transaction, stamped
        ``state_time`` (Unix seconds). With ``wait=False``, nothing is done and ``False`` is
        returned when another thread is using the store (an event loop then writes from a
        worker thread rather than wait); otherwise ``True``. Raises :class:`StoreError` when
        the write fails; nothing is written then.
        """
        if not batches and not state:
            return True
        if not self._lock.acquire(blocking=wait):
            return False
        try:
            self._write(batches, state, state_time)
        finally:
            self._lock.release()
        if batches:
            for listener in list(self._listeners):
                listener(batches)
        return True

    def _write(
        self, batches: Sequence[Batch], state: dict[str, str] | None, state_time: float | None
    ) -> None:
        """The transaction of :meth:`append` (under the lock)."""
        self._undo = []
        try:
            self._db.execute("BEGIN")
            self._flush_series()
            rows = [self._insert(batch) for batch in batches]
            if state:
                self._db.executemany(
                    "INSERT OR REPLACE INTO state (key, value, updated) VALUES (?, ?, ?)",
                    [(k, v, state_time or 0.0) for k, v in state.items()],
                )
            self._db.execute("COMMIT")
        except BaseException as exc:
            self._db.execute("ROLLBACK")
            for undo in reversed(self._undo):
                undo()
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"cannot write samples: {exc}") from exc
            raise
        finally:
            self._undo = []
        self._pending_series.clear()
        for row_id, batch in zip(rows, batches, strict=True):
            self._cache_put(row_id, batch.values)

    def _flush_series(self) -> None:
        if not self._pending_series:
            return
        self._db.executemany(
            "INSERT INTO series (id, name, labels) VALUES (?, ?, ?)",
            [
                (r.id, r.name, json.dumps(dict(r.labels), separators=(",", ":")))
                for r in self._pending_series
            ],
        )

    def _group_id(self, key: str) -> int:
        gid = self._groups.get(key)
        if gid is None:
            cursor = self._db.execute("INSERT INTO groups (key) VALUES (?)", (key,))
            gid = int(cursor.lastrowid or 0)
            self._groups[key] = gid
            self._group_keys[gid] = key
            self._undo.append(lambda: (self._groups.pop(key), self._group_keys.pop(gid)))
        return gid

    def _insert(self, batch: Batch) -> int:
        gid = self._group_id(batch.group)
        ids = np.ascontiguousarray(batch.series_ids, dtype="<i8")
        layout_bytes = ids.tobytes()
        last = self._last_layout.get(gid)
        if last is not None and last[0] == layout_bytes:
            layout_id = last[1]
        else:
            cursor = self._db.execute(
                "INSERT INTO layouts (group_id, series) VALUES (?, ?)", (gid, layout_bytes)
            )
            layout_id = int(cursor.lastrowid or 0)
            previous = self._last_layout.get(gid)
            self._last_layout[gid] = (layout_bytes, layout_id)
            self._layout_put(layout_id, _Layout(ids))
            self._undo.append(lambda: self._forget_layout(gid, layout_id, previous))
            new = [int(s) for s in ids if gid not in self._series_groups[int(s)]]
            if new:
                self._db.executemany(
                    "INSERT OR IGNORE INTO series_groups (series_id, group_id) VALUES (?, ?)",
                    [(s, gid) for s in new],
                )
                for s in new:
                    self._series_groups[s].add(gid)
                self._membership += 1
                self._undo.append(lambda: self._forget_membership(new, gid))
        values = np.ascontiguousarray(batch.values, dtype="<f8")
        cursor = self._db.execute(
            "INSERT INTO samples (group_id, ts, layout_id, vals) VALUES (?, ?, ?, ?)",
            (gid, int(batch.timestamp_ms), layout_id, values.tobytes()),
        )
        return int(cursor.lastrowid or 0)

    def written(self) -> list[SeriesRef]:
        """Series that have had samples written (a series only registered by a collector that
        never collected is left out), ordered by id."""
        with self._lock:
            return [r for r in self.index if self._series_groups.get(r.id)]

    def has_samples(self, series_id: int) -> bool:
        """Whether samples of ``series_id`` were ever written (and not all deleted)."""
        return bool(self._series_groups.get(series_id))

    def _forget_membership(self, series_ids: list[int], gid: int) -> None:
        for series_id in series_ids:
            self._series_groups[series_id].discard(gid)
        self._membership += 1

    def _forget_layout(self, gid: int, layout_id: int, previous: tuple[bytes, int] | None) -> None:
        self._layouts.pop(layout_id, None)
        if previous is None:
            self._last_layout.pop(gid, None)
        else:
            self._last_layout[gid] = previous

    # ------------------------------------------------------------------------------------- read
    def select_refs(self, selector: Selector) -> list[SeriesRef]:
        """The series matched by ``selector`` (the store lock is held only to copy candidates).

        Results are cached until a series is added or removed (rules select the same series at
        every evaluation)."""
        with self._lock:
            version = self.index.version
            cached = self._selections.get(selector)
            if cached is not None and cached[0] == version:
                return cached[1]
            candidates = self.index.candidates(selector)
        found = [r for r in candidates if selector.matches(r.name, r.labels)]
        with self._lock:
            if len(self._selections) >= 4096:
                self._selections.clear()
            self._selections[selector] = (version, found)
        return found

    def select(self, selector: Selector, mint_ms: int, maxt_ms: int) -> list[SeriesSamples]:
        """Raw samples with ``mint_ms <= t <= maxt_ms`` of every series matched by ``selector``.

        Series without samples in the window are left out. Staleness markers are included (see
        :func:`is_stale`); instant/range semantics live in :mod:`opscope.store.querying`.
        """
        return self.samples(self.select_refs(selector), mint_ms, maxt_ms)

    def samples(self, refs: Sequence[SeriesRef], mint_ms: int, maxt_ms: int) -> list[SeriesSamples]:
        """Raw samples of ``refs`` with ``mint_ms <= t <= maxt_ms`` (see :meth:`select`).

        Reads run on a connection of the calling thread inside one read transaction (a
        consistent snapshot), holding the store lock only for the in-memory caches, so a long
        query never holds up collection. Raises an error when the window would make
        the store read more than ``max_read_bytes`` of values (:class:`QueryTooLarge`).
        """
        if not refs:
            return []
        with self._lock:
            by_group: dict[int, list[SeriesRef]] = defaultdict(list)
            for ref in refs:
                for gid in self._series_groups.get(ref.id, ()):
                    by_group[gid].append(ref)
        parts: dict[int, list[tuple[IntArray, FloatArray]]] = defaultdict(list)
        reader = self._reader()
        reader.execute("BEGIN")
        try:
            for gid, group_refs in by_group.items():
                for ref, ts, vals in self._read_group(reader, gid, group_refs, mint_ms, maxt_ms):
                    parts[ref.id].append((ts, vals))
        finally:
            reader.execute("COMMIT")
        result = []
        for ref in refs:
            chunks = parts.get(ref.id)
            if not chunks:
                continue
            if len(chunks) == 1:
                ts, vals = chunks[0]
            else:
                ts = np.concatenate([c[0] for c in chunks])
                vals = np.concatenate([c[1] for c in chunks])
                order = np.argsort(ts, kind="stable")
                ts, vals = ts[order], vals[order]
            result.append(SeriesSamples(ref, ts, vals))
        return result

    def select_blocks(self, selector: Selector, mint_ms: int, maxt_ms: int) -> list[SampleBlock]:
        """The samples of :meth:`select` as matrices, one per collection source: what an
        evaluator needs to work on many series at once. A series written by several sources
        (rare) comes as a block of its own, merged in time order."""
        single, multi = self._partition(selector)
        blocks: list[SampleBlock] = []
        reader = self._reader()
        # One source is one statement (plus cache misses); several share a snapshot.
        snapshot = len(single) > 1
        if snapshot:
            reader.execute("BEGIN")
        try:
            for gid, group_refs in single.items():
                blocks += self._read_blocks(reader, gid, group_refs, mint_ms, maxt_ms)
        finally:
            if snapshot:
                reader.execute("COMMIT")
        for series in self.samples(multi, mint_ms, maxt_ms):
            n = len(series.values)
            blocks.append(
                SampleBlock(
                    [series.ref],
                    series.timestamps,
                    series.values.reshape(n, 1),
                    np.ones((n, 1), dtype=bool),
                )
            )
        return blocks

    def _partition(self, selector: Selector) -> tuple[dict[int, list[SeriesRef]], list[SeriesRef]]:
        """The selected series by the one source that wrote them, and those of several
        sources; cached until series or their sources change."""
        refs = self.select_refs(selector)
        with self._lock:
            key = (self.index.version, self._membership)
            cached = self._partitions.get(selector)
            if cached is not None and cached[0] == key:
                return cached[1]
            groups = {r.id: tuple(self._series_groups.get(r.id, ())) for r in refs}
        single: dict[int, list[SeriesRef]] = defaultdict(list)
        multi = []
        for ref in refs:
            owners = groups[ref.id]
            if len(owners) == 1:
                single[owners[0]].append(ref)
            elif owners:
                multi.append(ref)
        with self._lock:
            if len(self._partitions) >= 4096:
                self._partitions.clear()
            self._partitions[selector] = (key, (dict(single), multi))
        return single, multi

    def _read_blocks(
        self,
        reader: sqlite3.Connection,
        gid: int,
        refs: list[SeriesRef],
        mint_ms: int,
        maxt_ms: int,
    ) -> list[SampleBlock]:
        rows, values, layouts = self._read_rows(reader, gid, mint_ms, maxt_ms)
        if not rows:
            return []
        step = max(1, _MATRIX_CELLS // max(1, len(rows)))
        blocks = []
        for start in range(0, len(refs), step):
            part = refs[start : start + step]
            ts, matrix, present = _matrix(rows, values, layouts, part)
            blocks.append(SampleBlock(part, ts, matrix, present))
        return blocks

    def active_series(self, mint_ms: int, maxt_ms: int) -> set[int]:
        """Ids of the series with at least one sample (or staleness marker) in the window."""
        reader = self._reader()
        reader.execute("BEGIN")
        try:
            layout_ids = [
                row[0]
                for row in reader.execute(
                    "SELECT DISTINCT layout_id FROM samples WHERE ts >= ? AND ts <= ?",
                    (mint_ms, maxt_ms),
                )
            ]
            active: set[int] = set()
            for layout_id in layout_ids:
                layout = self._layout(reader, layout_id)
                if layout is not None:
                    active.update(layout.ids.tolist())
        finally:
            reader.execute("COMMIT")
        return active

    def _reader(self) -> sqlite3.Connection:
        """This thread's read-only connection (opened on first use, closed by :meth:`close`)."""
        reader: sqlite3.Connection | None = getattr(self._local, "reader", None)
        if reader is None:
            try:
                reader = sqlite3.connect(
                    f"file:{self.path}?mode=ro",
                    uri=True,
                    check_same_thread=False,
                    isolation_level=None,
                )
                reader.execute("PRAGMA busy_timeout = 5000")
            except sqlite3.Error as exc:
                raise StoreError(f"cannot read store {self.path}: {exc}") from exc
            self._local.reader = reader
            with self._lock:
                self._readers.append(reader)
        return reader

    def _read_group(
        self,
        reader: sqlite3.Connection,
        gid: int,
        refs: list[SeriesRef],
        mint_ms: int,
        maxt_ms: int,
    ) -> list[tuple[SeriesRef, IntArray, FloatArray]]:
        rows, values, layouts = self._read_rows(reader, gid, mint_ms, maxt_ms)
        if not rows:
            return []
        # Bound the (rows × series) matrix to ~32 MB by taking the series in slices.
        step = max(1, _MATRIX_CELLS // max(1, len(rows)))
        out = []
        for start in range(0, len(refs), step):
            out.extend(_columns(rows, values, layouts, refs[start : start + step]))
        return out

    def _read_rows(
        self, reader: sqlite3.Connection, gid: int, mint_ms: int, maxt_ms: int
    ) -> tuple[list[tuple[int, int, int, int]], dict[int, FloatArray], dict[int, _Layout]]:
        """The collection rows of group ``gid`` in the window, their values and layouts."""
        rows = reader.execute(
            "SELECT id, ts, layout_id, length(vals) FROM samples "
            "WHERE group_id = ? AND ts >= ? AND ts <= ? ORDER BY ts, id",
            (gid, mint_ms, maxt_ms),
        ).fetchall()
        if not rows:
            return [], {}, {}
        volume = sum(r[3] for r in rows)
        if volume > self.max_read_bytes:
            raise QueryTooLarge(
                f"the time range would read {volume / 2**20:.0f} MiB of samples of "
                f"{self._group_keys.get(gid, gid)} (limit {self.max_read_bytes / 2**20:.0f} MiB); "
                "query a shorter range"
            )
        values = self._values(reader, [r[0] for r in rows])
        layouts = {}
        for lid in {r[2] for r in rows}:
            layout = self._layout(reader, lid)
            if layout is not None:
                layouts[lid] = layout
        # Rows deleted by retention since the first statement are left out.
        rows = [r for r in rows if r[0] in values and r[2] in layouts]
        return rows, values, layouts

    def _values(self, reader: sqlite3.Connection, row_ids: list[int]) -> dict[int, FloatArray]:
        found: dict[int, FloatArray] = {}
        missing = []
        with self._lock:
            for row_id in row_ids:
                cached = self._cache.get(row_id)
                if cached is None:
                    missing.append(row_id)
                else:
                    self._cache.move_to_end(row_id)
                    found[row_id] = cached
        loaded: dict[int, FloatArray] = {}
        for start in range(0, len(missing), 500):
            chunk = missing[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for row_id, blob in reader.execute(
                f"SELECT id, vals FROM samples WHERE id IN ({marks})", chunk
            ):
                loaded[row_id] = np.frombuffer(blob, dtype="<f8")
        if loaded:
            with self._lock:
                for row_id, array in loaded.items():
                    self._cache_put(row_id, array)
            found.update(loaded)
        return found

    def _layout(self, reader: sqlite3.Connection, layout_id: int) -> _Layout | None:
        """A layout by id (``None`` when retention just deleted it with its rows)."""
        with self._lock:
            layout = self._layouts.get(layout_id)
            if layout is not None:
                self._layouts.move_to_end(layout_id)
                return layout
        row = reader.execute("SELECT series FROM layouts WHERE id = ?", (layout_id,)).fetchone()
        if row is None:
            return None
        layout = _Layout(np.frombuffer(row[0], dtype="<i8"))
        with self._lock:
            self._layout_put(layout_id, layout)
        return layout

    def _layout_put(self, layout_id: int, layout: _Layout) -> None:
        self._layouts[layout_id] = layout
        while len(self._layouts) > 256:
            self._layouts.popitem(last=False)

    def _cache_put(self, row_id: int, values: FloatArray) -> None:
        if row_id in self._cache:
            return
        self._cache[row_id] = values
        self._cache_size += values.nbytes + _CACHE_ENTRY_OVERHEAD
        while self._cache_size > self._cache_bytes and self._cache:
            _, dropped = self._cache.popitem(last=False)
            self._cache_size -= dropped.nbytes + _CACHE_ENTRY_OVERHEAD

    # -------------------------------------------------------------------------------- retention
    def delete_before(self, cutoff_ms: int) -> RetentionResult:
        """Delete samples older than ``cutoff_ms``, then layouts and series left without samples.

        Series still held by a collector (used in the latest layout of a group) are kept.
        """
        with self._lock:
            self._db.execute("BEGIN")
            try:
                deleted_rows = self._db.execute(
                    "DELETE FROM samples WHERE ts < ?", (cutoff_ms,)
                ).rowcount
                if deleted_rows:
                    self._db.execute(
                        "DELETE FROM layouts WHERE id NOT IN "
                        "(SELECT DISTINCT layout_id FROM samples)"
                    )
                keep: set[int] = set()
                for (blob,) in self._db.execute("SELECT series FROM layouts"):
                    keep.update(np.frombuffer(blob, dtype="<i8").tolist())
                for layout_bytes, _ in self._last_layout.values():
                    keep.update(np.frombuffer(layout_bytes, dtype="<i8").tolist())
                keep.update(r.id for r in self._pending_series)
                gone = [r.id for r in self.index if r.id not in keep]
                if gone:
                    self._db.executemany("DELETE FROM series WHERE id = ?", [(g,) for g in gone])
                    self._db.executemany(
                        "DELETE FROM series_groups WHERE series_id = ?", [(g,) for g in gone]
                    )
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._db.execute("ROLLBACK")
                raise StoreError(f"retention failed: {exc}") from exc
            for sid in gone:
                self.index.remove(sid)
                self._series_groups.pop(sid, None)
            self._membership += 1
            # Cached arrays of deleted rows are never asked for again; the LRU ages them out.
            return RetentionResult(rows=deleted_rows, series=len(gone))

    def last_collection(self, group: str) -> tuple[IntArray, FloatArray] | None:
        """The series ids and values of the collection of ``group`` written last (by insertion,
        not by timestamp), or ``None`` when the group has none left."""
        with self._lock:
            gid = self._groups.get(group)
            if gid is None:
                return None
            row = self._db.execute(
                "SELECT s.vals, l.series FROM samples s JOIN layouts l ON l.id = s.layout_id "
                "WHERE s.group_id = ? ORDER BY s.id DESC LIMIT 1",
                (gid,),
            ).fetchone()
        if row is None:
            return None
        return np.frombuffer(row[1], dtype="<i8").astype(np.int64), np.frombuffer(
            row[0], dtype="<f8"
        ).astype(np.float64)

    def put_state(self, documents: dict[str, str], *, at: float) -> None:
        """Write state documents (key → JSON text) in one transaction, stamped ``at``."""
        self.append([], state=documents, state_time=at)

    def delete_state(self, keys: Sequence[str]) -> None:
        """Delete state documents."""
        with self._lock:
            self._db.executemany("DELETE FROM state WHERE key = ?", [(k,) for k in keys])

    def load_state(self, prefix: str) -> dict[str, tuple[str, float]]:
        """Saved state documents whose key starts with ``prefix``: key → (JSON text, updated)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT key, value, updated FROM state WHERE substr(key, 1, ?) = ?",
                (len(prefix), prefix),
            ).fetchall()
        return {key: (value, updated) for key, value, updated in rows}

    @property
    def cache_bytes(self) -> int:
        """Memory held by the cache of decoded value arrays (bounded by ``cache_bytes``)."""
        return self._cache_size

    def oldest_timestamp(self) -> int | None:
        """Timestamp (ms) of the oldest stored sample, or ``None`` when the store is empty."""
        with self._lock:
            row = self._db.execute("SELECT min(ts) FROM samples").fetchone()
            return None if row[0] is None else int(row[0])
