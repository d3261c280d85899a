"""Silences: matchers that mute notifications between two times (Alertmanager's model).

A silence mutes every alert whose labels satisfy all its matchers while it is active
(``starts_at <= now < ends_at``). Expiring a silence sets its end to now. Changing a silence
follows Alertmanager (``silences.Set``): it is changed in place when its matchers stay the same
and the times allow it (an active silence keeps its start and may not end in the past; a pending
one may not start in the past); otherwise it is expired and a new silence, with a new id,
replaces it. Silences are stored as documents in the store, so they survive restarts and are
shared with ``opscope silence``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Literal

from opscope.errors import QueryError
from opscope.store import Store
from opscope.store.labels import Matcher, matches_all, parse_matchers

SilenceState = Literal["pending", "active", "expired"]
_PREFIX = "silences/"


class SilenceError(QueryError):
    """A silence request is invalid (HTTP 400)."""


@dataclass
class Silence:
    """A silence; times are Unix seconds."""

    id: str
    matchers: list[str]
    starts_at: float
    ends_at: float
    created_by: str
    comment: str
    created_at: float
    updated_at: float
    _compiled: tuple[Matcher, ...] = field(default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        compiled: list[Matcher] = []
        for text in self.matchers:
            compiled.extend(parse_matchers(text))
        self._compiled = tuple(compiled)

    def state(self, now: float) -> SilenceState:
        """``pending`` before it starts, ``active`` while it runs, then ``expired``."""
        if now < self.starts_at:
            return "pending"
        return "active" if now < self.ends_at else "expired"

    def mutes(self, labels: Mapping[str, str], now: float) -> bool:
        """Whether this silence mutes an alert with ``labels`` at ``now``."""
        return self.state(now) == "active" and matches_all(self._compiled, labels)

    def to_dict(self) -> dict[str, object]:
        """The stored and API form."""
        data = asdict(self)
        data.pop("_compiled")
        return data


class Silences:
    """The silences of a store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._cache: dict[str, Silence] | None = None

    def all(self) -> list[Silence]:
        """Every silence, newest first."""
        if self._cache is None:
            self._cache = {}
            for text, _ in self.store.load_state(_PREFIX).values():
                data = json.loads(text)
                self._cache[data["id"]] = Silence(**data)
        return sorted(self._cache.values(), key=lambda s: s.created_at, reverse=True)

    def get(self, silence_id: str) -> Silence | None:
        """The silence with that id."""
        self.all()
        assert self._cache is not None
        return self._cache.get(silence_id)

    def add(
        self,
        *,
        matchers: list[str],
        starts_at: float,
        ends_at: float,
        created_by: str,
        comment: str,
        now: float,
    ) -> Silence:
        """Create a silence. Raises :class:`SilenceError` for bad matchers, an end not after
        the start or in the past, or matchers that would all match an empty label (they would
        silence everything, as Alertmanager also refuses)."""
        silence = _checked(uuid.uuid4().hex, matchers, starts_at, ends_at, created_by, comment, now)
        self._save(silence, now)
        return silence

    def update(
        self,
        silence_id: str,
        *,
        matchers: list[str],
        starts_at: float,
        ends_at: float,
        created_by: str,
        comment: str,
        now: float,
    ) -> Silence:
        """Change the silence ``silence_id`` as Alertmanager does (see the module): in place
        when allowed, else by expiring it and creating a new one, which is returned. Raises
        :class:`KeyError` when there is no such silence and :class:`SilenceError` as
        :meth:`add`."""
        previous = self.get(silence_id)
        if previous is None:
            raise KeyError(silence_id)
        changed = _checked(silence_id, matchers, starts_at, ends_at, created_by, comment, now)
        if _can_update(previous, changed, now):
            changed.created_at = previous.created_at
            self._save(changed, now)
            return changed
        if previous.state(now) != "expired":
            self.expire(silence_id, now)
        changed.id = uuid.uuid4().hex
        self._save(changed, now)
        return changed

    def expire(self, silence_id: str, now: float) -> Silence:
        """End a silence now; raises :class:`KeyError` when it does not exist."""
        silence = self.get(silence_id)
        if silence is None:
            raise KeyError(silence_id)
        if silence.state(now) != "expired":
            silence.ends_at = max(now, silence.starts_at)
            silence.updated_at = now
            self._save(silence, now)
        return silence

    def mutes(self, labels: Mapping[str, str], now: float) -> bool:
        """Whether any active silence mutes an alert with ``labels``."""
        return any(s.mutes(labels, now) for s in self.all())

    def _save(self, silence: Silence, now: float) -> None:
        self.store.put_state({_PREFIX + silence.id: json.dumps(silence.to_dict())}, at=now)
        self.all()
        assert self._cache is not None
        self._cache[silence.id] = silence


def _checked(
    silence_id: str,
    matchers: list[str],
    starts_at: float,
    ends_at: float,
    created_by: str,
    comment: str,
    now: float,
) -> Silence:
    """A valid new silence, or :class:`SilenceError` saying what is wrong."""
    if not matchers:
        raise SilenceError("a silence needs at least one matcher")
    try:
        silence = Silence(
            silence_id, list(matchers), starts_at, ends_at, created_by, comment, now, now
        )
    except QueryError as exc:
        raise SilenceError(str(exc)) from exc
    # one matcher per item, written the one way (alertname=X becomes alertname="X")
    silence.matchers = [str(m) for m in silence._compiled]
    if all(m.matches("") for m in silence._compiled):
        raise SilenceError("at least one matcher must not match the empty string")
    if ends_at <= starts_at:
        raise SilenceError("the end of a silence must be after its start")
    if ends_at <= now:
        raise SilenceError("the end of a silence must be in the future")
    if not created_by.strip():
        raise SilenceError("the author (createdBy) is required")
    return silence


def _can_update(previous: Silence, changed: Silence, now: float) -> bool:
    """Alertmanager's ``canUpdate``: same matchers, and times the silence's state allows."""
    if previous._compiled != changed._compiled:
        return False
    state = previous.state(now)
    if state == "active":
        return changed.starts_at == previous.starts_at and changed.ends_at >= now
    if state == "pending":
        return changed.starts_at >= now
    return False
