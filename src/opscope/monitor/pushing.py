"""The push API's model: groups of pushed series with the Pushgateway's semantics.

A *group* is identified by its *grouping key*: ``job`` plus the label pairs of the push URL
(``/api/v1/push/{job}/{label}/{value}…``). Every pushed series gets the grouping key's labels,
replacing labels of the same names in the body (the Pushgateway's rule). Per request
(Pushgateway README, "API"):

* ``PUT`` replaces every series of the group with the pushed ones (an empty body empties the
  group but still counts as a push);
* ``POST`` replaces only the series whose metric names are pushed, keeping the others;
* ``DELETE`` removes the group (unknown groups are a no-op).

A request is accepted or rejected as a whole: a bad line, a duplicate series, a sample stamped
more than ``monitor.push.max_future`` ahead or older than ``monitor.retention`` rejects it and
nothing from it is stored (not even a new series name). As in the Pushgateway, one metric name
has one type: a ``# TYPE`` line differing from the one another group declared rejects the push,
and so does a second ``# TYPE`` line for one name in a body (Prometheus's text parser).

``push_time_seconds`` and ``push_failure_time_seconds`` (Unix seconds of the group's last
accepted and last rejected push, 0 for never) are kept per group with the grouping labels, so a
dead-man rule such as ``time() - push_time_seconds{job="nightly"} > 26 * 3600`` catches a batch
job that stopped pushing; pushed series of those names are overridden, as in the Pushgateway.

Like a Prometheus scraping a Pushgateway, the current values of every group (samples pushed
without a timestamp) are written again every collection interval (:meth:`PushRegistry.
collect`), so a value pushed once stays queryable until it is replaced or deleted. A sample
pushed *with* a timestamp is stored at that time only (the Pushgateway refuses timestamps;
opscope accepts them within the bounds above, for back-filling). Groups survive a restart:
each group's state is saved in the store with the samples of the same push.
"""

from __future__ import annotations

import base64
import json
import math
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from opscope.config.business import PushConfig
from opscope.errors import CollectError, ExpositionError
from opscope.monitor.exposition import NO_TIMESTAMP, ScrapeDecoder, parse_sample_line, parse_value
from opscope.store import STALE_NAN, Batch, LabelSet, Store, is_stale, label_set
from opscope.store.database import FloatArray, IntArray

PushMethod = Literal["PUT", "POST"]
#: The series the registry writes per group, overriding pushed ones of these names.
PUSH_SERIES = ("push_time_seconds", "push_failure_time_seconds")
_STATE_PREFIX = "push/"
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*\Z")
_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*\Z")


class PushRejected(CollectError):
    """A push that is stored not at all: malformed, inconsistent or out of bounds.

    ``where`` names the line (``line 3``) or JSON field (``[2].value``) at fault, when one is.
    """

    def __init__(self, message: str, *, where: str = "") -> None:
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)


def grouping_key(job: str, pairs: Sequence[tuple[str, str]]) -> dict[str, str]:
    """The grouping labels of a push URL: ``job`` plus ``pairs``.

    Raises :class:`PushRejected` for an empty job, an invalid or repeated label name, or a
    ``job`` label among the pairs.
    """
    if not job:
        raise PushRejected("the job name must not be empty")
    labels = {"job": job}
    for name, value in pairs:
        if not _LABEL_NAME.match(name) or name.startswith("__"):
            raise PushRejected(f'invalid label name "{name}" in the grouping key')
        if name in labels:
            raise PushRejected(f'label "{name}" appears twice in the grouping key')
        labels[name] = value
    return labels


def decode_path_value(name: str, value: str) -> tuple[str, str]:
    """A grouping key's label name and value from the URL: ``name@base64`` means the value is
    base64url (RFC 4648 §5, padding optional; ``=`` for the empty value), as in the
    Pushgateway. Raises :class:`PushRejected` for bad base64."""
    if not name.endswith("@base64"):
        if not value:
            raise PushRejected(
                f'empty value for label "{name}" in the grouping key (an empty value is '
                f"{name}@base64/=)"
            )
        return name, value
    text = value.rstrip("=")
    try:
        padded = text + "=" * (-len(text) % 4)
        decoded = base64.b64decode(padded, altchars=b"-_", validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        raise PushRejected(f'invalid base64 value for "{name}"') from None
    return name.removesuffix("@base64"), decoded


def _group_key(labels: dict[str, str]) -> str:
    return _STATE_PREFIX + json.dumps(sorted(labels.items()), separators=(",", ":"))


@dataclass
class PushGroup:
    """One group: its labels, current series (pushed without timestamps) and push times."""

    labels: dict[str, str]
    key: str
    synthetic: IntArray
    ids: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    values: FloatArray = field(default_factory=lambda: np.zeros(0, dtype=np.float64))
    push_time: float = 0.0
    failure_time: float = 0.0
    decoder: ScrapeDecoder | None = None
    #: Metric types declared by the group's ``# TYPE`` lines (name → type; ``unknown`` is
    #: written ``untyped``).
    types: dict[str, str] = field(default_factory=dict)
    #: The ``# TYPE`` lines of the last text body accepted (name → (type, line)): a body
    #: with the same lines but for the values declares the same.
    body_types: dict[str, tuple[str, int]] = field(default_factory=dict)

    def state(self) -> str:
        """The JSON document saved in the store with every push: labels, push times and the
        declared types (the series and values are those of the group's last collection row)."""
        return json.dumps(
            {
                "labels": self.labels,
                "push_time": self.push_time,
                "failure_time": self.failure_time,
                "types": self.types,
            }
        )

    def batch(self, t: float, stale: IntArray | None = None) -> Batch:
        """The group's current samples, stale markers for ``stale`` and the push times."""
        gone = stale if stale is not None else np.zeros(0, dtype=np.int64)
        return Batch(
            group=self.key,
            timestamp_ms=int(t * 1000),
            series_ids=np.concatenate([self.ids, gone, self.synthetic]),
            values=np.concatenate(
                [
                    self.values,
                    np.full(len(gone), STALE_NAN),
                    [self.push_time, self.failure_time],
                ]
            ),
        )


@dataclass(frozen=True)
class PushResult:
    """What an accepted push stored: samples, series of the group now, new series."""

    samples: int
    series: int
    new_series: int


@dataclass
class _Pushed:
    """A decoded body: series ids (placeholders < 0 for new series), values, timestamps, and
    the decoder that read it (text bodies: kept by the group for its cache)."""

    ids: IntArray
    values: FloatArray
    timestamps_ms: IntArray | None
    decoder: ScrapeDecoder | None
    #: Where sample ``i`` is in the body (``line 3``, ``[2].timestamp``), for error messages.
    where: Callable[[int], str]
    #: The unit timestamps are written in: ``ms`` (text exposition) or ``s`` (JSON).
    unit: Literal["ms", "s"]
    #: The body's ``# TYPE`` lines: metric name → (type, line).
    types: dict[str, tuple[str, int]] = field(default_factory=dict)


class PushRegistry:
    """Every push group, backed by the store; thread-safe (one lock for all groups).

    ``now`` gives the server's clock in Unix seconds; ``retention_s`` is how old a pushed
    sample may be (``monitor.retention``).
    """

    def __init__(
        self,
        store: Store,
        config: PushConfig,
        *,
        retention_s: float,
        now: Callable[[], float],
        reserved_jobs: dict[str, str] | None = None,
    ) -> None:
        self.store = store
        #: Jobs of the configured collectors (job → where configured): never pushed to.
        self.reserved_jobs = dict(reserved_jobs or {})
        #: Which group owns each current series (series id → group key), as the Pushgateway
        #: refuses a series "collected before with the same name and label values".
        self._owners: dict[int, str] = {}
        self.config = config
        self.retention_s = retention_s
        self.now = now
        self._lock = threading.Lock()
        self._groups: dict[str, PushGroup] = {}
        # Placeholders of the request being decoded (under the lock).
        self._new: dict[int, tuple[str, LabelSet]] = {}
        self._placeholders: dict[tuple[str, LabelSet], int] = {}
        self._restore()

    # ----------------------------------------------------------------------------- lifecycle
    def _restore(self) -> None:
        """Groups from the store: labels and push times from the state documents, series and
        values from each group's last collection (without its markers and push times)."""
        for key, (text, _) in self.store.load_state(_STATE_PREFIX).items():
            doc = json.loads(text)
            group = self._new_group(doc["labels"])
            last = self.store.last_collection(group.key)
            if last is not None:
                ids, values = last
                keep = ~is_stale(values) & np.isin(ids, group.synthetic, invert=True)
                keep &= np.array([self._known(int(i)) for i in ids], dtype=bool)
                group.ids, group.values = ids[keep], values[keep]
            group.push_time = float(doc["push_time"])
            group.failure_time = float(doc["failure_time"])
            group.types = {str(k): str(v) for k, v in doc.get("types", {}).items()}
            self._groups[key] = group
            self._own(group)

    def _own(self, group: PushGroup, ids: IntArray | None = None) -> None:
        """Record ``group`` as the owner of ``ids`` (default: all its series) that have none."""
        chosen = [*group.ids.tolist(), *group.synthetic.tolist()] if ids is None else ids.tolist()
        for series_id in chosen:
            self._owners.setdefault(series_id, group.key)

    def _disown(self, key: str, ids: IntArray) -> None:
        for series_id in ids.tolist():
            if self._owners.get(series_id) == key:
                del self._owners[series_id]

    def _check_owners(self, key: str, ids: IntArray, group: PushGroup | None = None) -> None:
        """Refuse series that another group owns (:class:`PushRejected` naming both). The
        series ``group`` (the group ``key``) holds now are its own and not looked up: a push
        of the same series as before costs one array comparison."""
        if group is not None and len(group.ids):
            if np.array_equal(ids, group.ids):
                return
            ids = ids[np.isin(ids, group.ids, invert=True)]
        for series_id in ids.tolist():
            owner = self._owners.get(series_id, key) if series_id >= 0 else key
            if owner != key:
                ref = self.store.index.ref(series_id)
                labels = ",".join(f'{k}="{v}"' for k, v in ref.labels)
                other = ",".join(f'{k}="{v}"' for k, v in json.loads(owner[len(_STATE_PREFIX) :]))
                raise PushRejected(
                    f"{ref.name}{{{labels}}} was pushed before with the same name and label "
                    f"values by the group {{{other}}}; push it there, or delete that group first"
                )

    def _known(self, series_id: int) -> bool:
        try:
            self.store.index.ref(series_id)
        except KeyError:  # retention removed it while the server was down
            return False
        return True

    def _new_group(self, labels: dict[str, str]) -> PushGroup:
        target = label_set(labels)
        synthetic = np.array(
            [self.store.series_id(name, target) for name in PUSH_SERIES], dtype=np.int64
        )
        return PushGroup(labels=dict(labels), key=_group_key(labels), synthetic=synthetic)

    def groups(self) -> list[PushGroup]:
        """Every group, ordered by key."""
        with self._lock:
            return [self._groups[k] for k in sorted(self._groups)]

    def collect(self, t: float, *, wait: bool = True) -> bool:
        """Write every group's current samples and push times, stamped ``t`` (as a scrape of
        a Pushgateway would). With ``wait=False``, nothing is done and ``False`` returned when
        a push or the store is busy in another thread (the event loop then writes from a
        worker thread). Raises :class:`StoreError` when the write fails."""
        if not self._lock.acquire(blocking=wait):
            return False
        try:
            batches = [group.batch(t) for group in self._groups.values()]
            return self.store.append(batches, wait=wait)
        finally:
            self._lock.release()

    # ---------------------------------------------------------------------------------- push
    def push(
        self,
        method: PushMethod,
        labels: dict[str, str],
        body: bytes,
        *,
        json_body: bool,
    ) -> PushResult:
        """Apply one PUT or POST to the group ``labels`` (from :func:`grouping_key`).

        ``body`` is Prometheus text exposition (0.0.4) or, with ``json_body``, a JSON array of
        ``{"metric", "labels", "value", "timestamp"}`` objects (timestamp in Unix seconds,
        optional). Raises :class:`PushRejected` — and stores nothing from the body — when it is
        malformed or out of bounds; :class:`StoreError` when the store cannot be written.
        """
        key = _group_key(labels)
        if labels["job"] in self.reserved_jobs:
            raise PushRejected(
                f'job "{labels["job"]}" belongs to a collector ({self.reserved_jobs[labels["job"]]}'
                "): push under another job name, so that no push replaces its series"
            )
        with self._lock:
            group = self._groups.get(key)
            now = self.now()
            self._new = {}
            self._placeholders = {}
            try:
                self._check_size(body, json_body=json_body)
                if group is None:  # its push times must not be another group's
                    known = [self.store.index.get(n, label_set(labels)) for n in PUSH_SERIES]
                    self._check_owners(key, np.array([i for i in known if i is not None]))
                if json_body:
                    pushed = self._decode_json(body, labels)
                else:
                    pushed = self._decode_text(body, labels, group)
                self._check_times(pushed, now)
                if any(name.encode() in body for name in PUSH_SERIES):
                    pushed = self._without_push_series(pushed)
                self._check_types(key, pushed.types)
                synthetic = group.synthetic if group is not None else np.zeros(0, np.int64)
                self._check_owners(
                    key, pushed.ids[np.isin(pushed.ids, synthetic, invert=True)], group
                )
                if pushed.timestamps_ms is not None:
                    pushed = self._without_repeats(pushed)
                return self._apply(method, labels, group, pushed, now)
            except PushRejected:
                if group is not None:
                    group.decoder = None  # its cache may hold this request's placeholders
                    group.failure_time = now
                    self.store.append(
                        [group.batch(now)], state={key: group.state()}, state_time=now
                    )
                raise
            except BaseException:  # a bug or the store refusing the write
                if group is not None:
                    group.decoder = None  # whatever failed, no placeholder may stay cached
                raise

    def delete(self, labels: dict[str, str]) -> bool:
        """Remove the group ``labels``: its series get staleness markers. ``False`` when there
        was no such group (a no-op, as in the Pushgateway)."""
        key = _group_key(labels)
        with self._lock:
            group = self._groups.get(key)
            if group is None:
                return False
            now = self.now()
            gone = np.concatenate([group.ids, group.synthetic])
            self.store.append(
                [Batch(group.key, int(now * 1000), gone, np.full(len(gone), STALE_NAN))]
            )
            self.store.delete_state([key])
            del self._groups[key]
            self._disown(key, gone)
            return True

    def _apply(
        self,
        method: PushMethod,
        labels: dict[str, str],
        group: PushGroup | None,
        pushed: _Pushed,
        now: float,
    ) -> PushResult:
        """Store an accepted push: new series get their ids, the group its new state, all in
        one transaction; the registry changes only once the store has committed."""
        current = group if group is not None else self._new_group(labels)
        mapping = {
            placeholder: self.store.series_id(name, series_labels)
            for placeholder, (name, series_labels) in self._new.items()
        }
        ids = pushed.ids
        if mapping:
            ids = np.array([mapping.get(i, i) for i in ids.tolist()], dtype=np.int64)
            if pushed.decoder is not None:
                pushed.decoder.remap(mapping)
        own = np.isin(ids, current.synthetic, invert=True)  # push_time_seconds & co. are ours
        ids, values = ids[own], pushed.values[own]
        stamped = pushed.timestamps_ms[own] if pushed.timestamps_ms is not None else None
        plain = stamped == NO_TIMESTAMP if stamped is not None else np.ones(len(ids), dtype=bool)
        if method == "POST" and len(current.ids):
            ref = self.store.index.ref
            names = {ref(i).name for i in ids.tolist()}
            keep = np.array([ref(i).name not in names for i in current.ids.tolist()], dtype=bool)
            new_ids = np.concatenate([current.ids[keep], ids[plain]])
            new_values = np.concatenate([current.values[keep], values[plain]])
        else:
            new_ids, new_values = ids[plain], values[plain]
        if np.array_equal(current.ids, new_ids):  # the usual push: same series, new values
            stale = np.zeros(0, dtype=np.int64)
        else:
            stale = np.setdiff1d(current.ids, new_ids, assume_unique=True)
        declared = {name: kind for name, (kind, _) in pushed.types.items()}
        updated = replace(
            current,
            ids=new_ids,
            values=new_values,
            push_time=now,
            decoder=pushed.decoder,
            types={**current.types, **declared} if method == "POST" else declared,
            body_types=pushed.types,
        )
        batches = []
        if stamped is not None and not plain.all():
            for ts in np.unique(stamped[~plain]).tolist():
                at = stamped == ts
                batches.append(Batch(updated.key, int(ts), ids[at], values[at]))
        batches.append(updated.batch(now, stale))
        self.store.append(batches, state={updated.key: updated.state()}, state_time=now)
        self._groups[updated.key] = updated
        if group is None:
            self._own(updated)
        elif len(stale) or len(new_ids) != len(current.ids):
            self._disown(updated.key, stale)
            self._own(updated, np.setdiff1d(new_ids, current.ids))
        return PushResult(samples=len(ids), series=len(new_ids), new_series=len(mapping))

    def _without_repeats(self, pushed: _Pushed) -> _Pushed:
        """``pushed`` without the stamped samples the store holds already with the same value
        (a retried back-fill stores nothing twice); a stamped sample whose series holds
        another value at that time is refused, as Prometheus's TSDB refuses a "duplicate
        sample for timestamp". Raises :class:`PushRejected`."""
        assert pushed.timestamps_ms is not None
        stamps = pushed.timestamps_ms
        keep = np.ones(len(stamps), dtype=bool)
        ref = self.store.index.ref
        for t in np.unique(stamps[stamps != NO_TIMESTAMP]).tolist():
            at = np.flatnonzero((stamps == t) & (pushed.ids >= 0))
            if not len(at):
                continue
            position = {int(pushed.ids[i]): int(i) for i in at}
            for series in self.store.samples([ref(i) for i in position], int(t), int(t)):
                i = position[series.ref.id]
                stored, new = float(series.values[-1]), float(pushed.values[i])
                if stored == new or (math.isnan(stored) and math.isnan(new)):
                    keep[i] = False
                    continue
                raise PushRejected(
                    f"{series.ref.name} already has the value {stored:g} at this timestamp "
                    "(a duplicate sample for a timestamp is refused, as in Prometheus)",
                    where=pushed.where(i),
                )
        return _kept(pushed, keep)

    def _without_push_series(self, pushed: _Pushed) -> _Pushed:
        """``pushed`` without samples named as :data:`PUSH_SERIES` (whatever their labels):
        the registry writes those, and the Pushgateway too drops pushed ones."""
        ref = self.store.index.ref
        names = [self._new[i][0] if i < 0 else ref(i).name for i in pushed.ids.tolist()]
        return _kept(pushed, np.array([name not in PUSH_SERIES for name in names], dtype=bool))

    # -------------------------------------------------------------------------------- decode
    def _resolve(self, name: str, labels: LabelSet) -> int:
        """Resolve a series without creating it: a new series gets a placeholder id (< 0)
        that :meth:`_apply` replaces once the request is accepted as a whole."""
        found = self.store.index.get(name, labels)
        if found is not None:
            return found
        key = (name, labels)
        placeholder = self._placeholders.get(key)
        if placeholder is None:
            placeholder = self._placeholders[key] = -(len(self._placeholders) + 1)
            self._new[placeholder] = key
        return placeholder

    def _decode_text(self, body: bytes, labels: dict[str, str], group: PushGroup | None) -> _Pushed:
        decoder = group.decoder if group is not None else None
        if decoder is None:
            decoder = ScrapeDecoder(self._resolve, labels, override=True)
        try:
            decoded = decoder.decode(body)
        except ExpositionError as exc:
            message = str(exc).removeprefix(f"line {exc.line}: ")
            raise PushRejected(message, where=f"line {exc.line}") from None
        if decoded.same_layout and group is not None:  # same lines as the last push: new values
            return _Pushed(
                decoded.series_ids,
                decoded.values,
                None,
                decoder,
                where=lambda index: f"line {_sample_line(body.decode(), index)}",
                unit="ms",
                types=group.body_types,
            )
        text = body.decode("utf-8")  # checked by the decoder
        if decoded.duplicates:
            line, series = _first_duplicate(text, labels)
            raise PushRejected(f"{series} is pushed twice", where=f"line {line}")
        return _Pushed(
            decoded.series_ids,
            decoded.values,
            decoded.timestamps_ms,
            decoder,
            where=lambda index: f"line {_sample_line(text, index)}",
            unit="ms",
            types=_declared_types(text) if "TYPE" in text else {},
        )

    def _decode_json(self, body: bytes, labels: dict[str, str]) -> _Pushed:
        try:
            items = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise PushRejected(f"the body is not valid JSON: {exc}") from None
        except RecursionError:
            raise PushRejected("the body is not valid JSON: nested too deeply") from None
        if not isinstance(items, list):
            raise PushRejected('expected a JSON array of {"metric", "labels", "value"} objects')
        if len(items) > self.config.series_limit:  # the byte count before can be fooled
            raise PushRejected(
                f"more than {self.config.series_limit} samples in one push "
                "(monitor.push.series_limit); split it into several groups"
            )
        ids, values, stamps = [], [], []
        seen: dict[int, int] = {}
        for index, item in enumerate(items):
            name, item_labels, value, stamp = _json_sample(item, index)
            series_id = self._resolve(name, label_set({**item_labels, **labels}))
            if series_id in seen:
                raise PushRejected(f"the same series as [{seen[series_id]}]", where=f"[{index}]")
            seen[series_id] = index
            ids.append(series_id)
            values.append(value)
            stamps.append(stamp)
        explicit = any(s != NO_TIMESTAMP for s in stamps)
        return _Pushed(
            np.array(ids, dtype=np.int64),
            np.array(values, dtype=np.float64),
            np.array(stamps, dtype=np.int64) if explicit else None,
            None,
            where=lambda index: f"[{index}].timestamp",
            unit="s",
        )

    def _check_size(self, body: bytes, *, json_body: bool) -> None:
        """Refuse a text body with more sample lines than ``monitor.push.series_limit`` before
        decoding it (a JSON body's objects are counted once parsed: ``"metric"`` can be
        escaped, or be a label's value)."""
        limit = self.config.series_limit
        if json_body:
            return
        count = body.count(b"\n") + 1
        if count > limit:  # only then count exactly: comments and blank lines are free
            count = sum(
                1 for line in body.split(b"\n") if line.strip() and line.strip()[:1] != b"#"
            )
        if count > limit:
            raise PushRejected(
                f"more than {limit} samples in one push (monitor.push.series_limit); "
                "split it into several groups"
            )

    def _check_types(self, key: str, types: dict[str, tuple[str, int]]) -> None:
        """Refuse a ``# TYPE`` that another group declared differently for the same metric
        name (the Pushgateway's consistency check: 400, nothing stored)."""
        if not types:
            return
        for other in self._groups.values():
            if other.key == key or not other.types:
                continue
            for name, (kind, line) in types.items():
                theirs = other.types.get(name)
                if theirs is not None and theirs != kind:
                    group = ",".join(f'{k}="{v}"' for k, v in sorted(other.labels.items()))
                    raise PushRejected(
                        f"metric {name} is pushed as {kind}, but the group {{{group}}} pushed "
                        f"it as {theirs}: one metric name has one type",
                        where=f"line {line}",
                    )

    def _check_times(self, pushed: _Pushed, now: float) -> None:
        """Refuse a sample stamped more than ``max_future`` ahead or older than the retention,
        naming where it is; a stamp that fits once read in the other unit (milliseconds in
        JSON's seconds, seconds in the text format's milliseconds) gets that hint."""
        timestamps_ms = pushed.timestamps_ms
        if timestamps_ms is None:
            return
        given = timestamps_ms[timestamps_ms != NO_TIMESTAMP]
        if not len(given):
            return
        newest, oldest = int(given.max()), int(given.min())
        limit_ms = int((now + self.config.max_future.total_seconds()) * 1000)
        floor_ms = int((now - self.retention_s) * 1000)

        def fits(t_ms: float) -> bool:
            return floor_ms <= t_ms <= limit_ms

        def where(value: int) -> str:
            return pushed.where(int(np.flatnonzero(timestamps_ms == value)[0]))

        if newest > limit_ms:
            hint = ""
            if pushed.unit == "s" and fits(newest / 1000):
                hint = (
                    f"; {newest / 1000:.0f} looks like milliseconds: JSON timestamps are Unix "
                    "seconds"
                )
            elif pushed.unit == "ms" and fits(newest / 1000):
                hint = (
                    f"; {newest} looks like microseconds: the text format's timestamps are "
                    "milliseconds"
                )
            raise PushRejected(
                f"a sample is stamped {newest / 1000 - now:.0f}s in the future (more than "
                f"{self.config.max_future.total_seconds():g}s ahead of the server's clock)" + hint,
                where=where(newest),
            )
        if oldest < floor_ms:
            hint = ""
            if pushed.unit == "ms" and fits(oldest * 1000):
                hint = (
                    f"; {oldest} looks like seconds: the text format's timestamps are milliseconds"
                )
            raise PushRejected(
                f"a sample is older than the retention ({self.retention_s:g}s)" + hint,
                where=where(oldest),
            )


def _kept(pushed: _Pushed, keep: np.ndarray) -> _Pushed:
    """``pushed`` with only the samples where ``keep`` is true; ``where`` still names each
    sample's place in the body."""
    if keep.all():
        return pushed
    indexes = np.flatnonzero(keep)
    where = pushed.where
    return replace(
        pushed,
        ids=pushed.ids[keep],
        values=pushed.values[keep],
        timestamps_ms=None if pushed.timestamps_ms is None else pushed.timestamps_ms[keep],
        where=lambda index: where(int(indexes[index])),
    )


#: A ``# TYPE name type`` line (after the newline before it): name and the rest of the line.
_TYPE_LINE = re.compile(r"\n[^\S\n]*#[^\S\n]+TYPE[^\S\n]+(\S+)[^\S\n]+([^\n]*)")


def _declared_types(text: str) -> dict[str, tuple[str, int]]:
    """The ``# TYPE`` lines of a text body: metric name → (type, line); ``unknown`` is read
    as ``untyped``. A second ``# TYPE`` line for one name is refused, as Prometheus's text
    parser refuses it. (The lines are already checked well-formed by the decoder.)"""
    types: dict[str, tuple[str, int]] = {}
    padded = "\n" + text
    number, counted = 0, 0
    for match in _TYPE_LINE.finditer(padded):
        number += padded.count("\n", counted, match.start() + 1)
        counted = match.start() + 1
        name, kind = match.group(1), match.group(2).strip()
        if name in types:
            raise PushRejected(
                f"a second TYPE line for metric name {name} (the first is on line "
                f"{types[name][1]})",
                where=f"line {number}",
            )
        types[name] = ("untyped" if kind == "unknown" else kind, number)
    return types


def _sample_line(text: str, index: int) -> int:
    """The line number of sample ``index`` (0-based) of a text body: its ``index``-th line
    that is neither blank nor a comment."""
    seen = -1
    number = 0
    for number, raw in enumerate(text.split("\n"), start=1):
        stripped = raw.strip()
        if stripped and stripped[0] != "#":
            seen += 1
            if seen == index:
                return number
    return number


def _first_duplicate(text: str, grouping: dict[str, str]) -> tuple[int, str]:
    """The line of the first sample whose series appeared before, and that series. Series are
    compared as stored: the grouping labels replace the body's, and an empty label value is
    an absent label (Prometheus's rule)."""
    seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    for number, raw in enumerate(text.split("\n"), start=1):
        stripped = raw.strip()
        if not stripped or stripped[0] == "#":
            continue
        sample, _ = parse_sample_line(stripped, number)
        merged = {**dict(sample.labels), **grouping}
        key = (sample.name, tuple(sorted((k, v) for k, v in merged.items() if v)))
        if key in seen:
            labels = ",".join(f'{k}="{v}"' for k, v in key[1])
            return number, f"{sample.name}{{{labels}}}"
        seen.add(key)
    return 0, "a series"


def _is_unicode_text(value: str) -> bool:
    """Whether ``value`` can be written as UTF-8: JSON's ``\\ud800`` escapes decode to lone
    surrogates, which no label value (or any later output) can hold."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _json_sample(item: Any, index: int) -> tuple[str, dict[str, str], float, int]:
    """One JSON sample: name, labels, value, timestamp in ms (:data:`NO_TIMESTAMP` if none)."""
    where = f"[{index}]"
    if not isinstance(item, dict):
        raise PushRejected('expected an object {"metric", "labels", "value"}', where=where)
    unknown = set(item) - {"metric", "labels", "value", "timestamp"}
    if unknown:
        raise PushRejected(f'unknown field "{sorted(unknown)[0]}"', where=where)
    name = item.get("metric")
    if not isinstance(name, str) or not _METRIC_NAME.match(name):
        raise PushRejected(f"invalid metric name {name!r}", where=f"{where}.metric")
    labels = item.get("labels", {})
    if not isinstance(labels, dict):
        raise PushRejected("expected an object of label names to values", where=f"{where}.labels")
    for label, value in labels.items():
        if not _LABEL_NAME.match(label) or label.startswith("__"):
            raise PushRejected(f'invalid label name "{label}"', where=f"{where}.labels")
        if not isinstance(value, str):
            raise PushRejected("label values must be strings", where=f"{where}.labels.{label}")
        if not _is_unicode_text(value):
            raise PushRejected(
                "not Unicode text (a lone surrogate escape)", where=f"{where}.labels.{label}"
            )
    if "value" not in item:
        raise PushRejected("missing", where=f"{where}.value")
    raw = item["value"]
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise PushRejected("expected a number", where=f"{where}.value")
    if isinstance(raw, str):
        try:
            value = parse_value(raw, 0)
        except ExpositionError:
            raise PushRejected(f"invalid value {raw[:40]!r}", where=f"{where}.value") from None
    else:
        try:
            value = float(raw)
        except OverflowError:
            raise PushRejected("number out of range", where=f"{where}.value") from None
    stamp = NO_TIMESTAMP
    if item.get("timestamp") is not None:
        t = item["timestamp"]
        if isinstance(t, bool) or not isinstance(t, int | float):
            raise PushRejected("expected Unix seconds", where=f"{where}.timestamp")
        if abs(t) > 1e13 or not math.isfinite(t):  # abs() first: a huge int is no float
            raise PushRejected("expected Unix seconds", where=f"{where}.timestamp")
        stamp = round(t * 1000)
    return name, dict(labels), value, stamp
