"""The in-memory index of series: identity → id, id → identity, and selection by matchers.

Every series the store knows is held here (a few hundred bytes each), so resolving a scraped line
to its id and selecting series for a query never touch SQLite. Selection narrows by metric name
first (the common case: ``up{job="node"}``) and by ``label=value`` postings, then checks each
remaining matcher.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field

from opscope.store.labels import NAME_LABEL, LabelSet, Selector


@dataclass(frozen=True, slots=True)
class SeriesRef:
    """A known series: its id in the store, metric name and canonical label set.

    ``full_labels`` is the label set with ``__name__``, sorted (computed once).
    """

    id: int
    name: str
    labels: LabelSet
    full_labels: LabelSet = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "full_labels", tuple(sorted(((NAME_LABEL, self.name), *self.labels)))
        )

    def metric(self) -> dict[str, str]:
        """Prometheus's JSON form: the labels plus ``__name__``."""
        return {NAME_LABEL: self.name, **dict(self.labels)}


class SeriesIndex:
    """Maps ``(name, labels)`` ↔ id and answers selectors; not thread-safe on its own."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, LabelSet], int] = {}
        self._by_id: dict[int, SeriesRef] = {}
        self._by_name: dict[str, set[int]] = defaultdict(set)
        self._postings: dict[tuple[str, str], set[int]] = defaultdict(set)
        #: Incremented on every change, so callers can cache selections.
        self.version = 0

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[SeriesRef]:
        return iter(self._by_id.values())

    def get(self, name: str, labels: LabelSet) -> int | None:
        """The id of ``name{labels}``, or ``None`` when the series is unknown."""
        return self._by_key.get((name, labels))

    def ref(self, series_id: int) -> SeriesRef:
        """The series with id ``series_id``; ``KeyError`` when unknown."""
        return self._by_id[series_id]

    def add(self, ref: SeriesRef) -> None:
        """Register a series (idempotent for the same id and identity)."""
        self._by_key[(ref.name, ref.labels)] = ref.id
        self._by_id[ref.id] = ref
        self.version += 1
        self._by_name[ref.name].add(ref.id)
        for pair in ref.labels:
            self._postings[pair].add(ref.id)

    def remove(self, series_id: int) -> None:
        """Forget a series (after retention deleted all its samples)."""
        ref = self._by_id.pop(series_id, None)
        if ref is None:
            return
        del self._by_key[(ref.name, ref.labels)]
        self.version += 1
        self._by_name[ref.name].discard(series_id)
        if not self._by_name[ref.name]:
            del self._by_name[ref.name]
        for pair in ref.labels:
            self._postings[pair].discard(series_id)
            if not self._postings[pair]:
                del self._postings[pair]

    def names(self) -> list[str]:
        """All metric names, sorted."""
        return sorted(self._by_name)

    def select(self, selector: Selector) -> list[SeriesRef]:
        """The series matched by ``selector``, ordered by id."""
        return [r for r in self.candidates(selector) if selector.matches(r.name, r.labels)]

    def candidates(self, selector: Selector) -> list[SeriesRef]:
        """The series that may match ``selector``, narrowed by its equality matchers only
        (a snapshot list, safe to filter without a lock)."""
        candidates: set[int] | None = None
        for m in selector.matchers:
            if m.op != "=" or m.value == "":
                continue
            if m.name == NAME_LABEL:
                ids = self._by_name.get(m.value, set())
            else:
                ids = self._postings.get((m.name, m.value), set())
            candidates = set(ids) if candidates is None else candidates & ids
            if not candidates:
                return []
        if candidates is None:
            return list(self._by_id.values())
        return [self._by_id[i] for i in sorted(candidates)]
