"""The alert lifecycle, exactly as Prometheus's ``rules/alerting.go`` (``AlertingRule.Eval``).

Each evaluation of an alerting rule gives a result vector. Per result element:

* the alert's identity is its labels: the element's labels without ``__name__``, plus the rule's
  labels (templates expanded), plus ``alertname``;
* an identity not active yet becomes a new *pending* alert with ``active_at`` = the evaluation
  time; an active one gets its value and annotations updated;
* a pending alert active for at least ``for`` becomes *firing* (``for: 0`` fires at once).

Per active alert whose identity is not in the result:

* a *pending* alert is dropped (a later breach starts over);
* a *firing* alert keeps firing while ``keep_firing_for`` has not passed since its result first
  disappeared (``keep_firing_since``); then it is *resolved*: state inactive, ``resolved_at`` set,
  kept for :data:`RESOLVED_RETENTION` so notifiers can still report the resolution, then dropped;
  a new breach after that is a new alert.

:func:`step` is a pure function of the previous state, the result and the time; it returns the
new state and the transitions it made.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Literal

from opscope.monitor.templates import go_exponent

AlertState = Literal["inactive", "pending", "firing"]
Transition = Literal["pending", "firing", "resolved", "dropped"]
Labels = tuple[tuple[str, str], ...]

#: How long a resolved alert is remembered (Prometheus's ``resolvedRetention``), in seconds.
RESOLVED_RETENTION = 15 * 60.0


@dataclass(frozen=True)
class Alert:
    """One alert instance. Times are Unix seconds; ``labels`` include ``alertname``."""

    labels: Labels
    annotations: tuple[tuple[str, str], ...]
    state: AlertState
    active_at: float
    value: float
    fired_at: float | None = None
    resolved_at: float | None = None
    keep_firing_since: float | None = None
    last_notified: float | None = None

    @property
    def name(self) -> str:
        """The ``alertname`` label."""
        return dict(self.labels).get("alertname", "")

    def updated(self, value: float, annotations: tuple[tuple[str, str], ...]) -> Alert:
        """This alert with a new value and annotations (a fast ``dataclasses.replace``)."""
        if value == self.value and annotations == self.annotations:
            return self
        return Alert(
            self.labels,
            annotations,
            self.state,
            self.active_at,
            value,
            self.fired_at,
            self.resolved_at,
            self.keep_firing_since,
            self.last_notified,
        )


@dataclass(frozen=True)
class Candidate:
    """One element of a rule's result, with its alert labels and annotations already expanded."""

    labels: Labels
    annotations: tuple[tuple[str, str], ...]
    value: float


@dataclass(frozen=True)
class Change:
    """A transition of one alert at one evaluation."""

    kind: Transition
    alert: Alert


def step(
    active: dict[Labels, Alert],
    results: list[Candidate],
    *,
    now: float,
    hold: float,
    keep_firing_for: float = 0.0,
) -> tuple[dict[Labels, Alert], list[Change]]:
    """One evaluation of an alerting rule at ``now`` (seconds): the new active alerts and the
    transitions. ``hold`` is ``for`` and ``keep_firing_for`` its namesake, in seconds.

    Raises ``ValueError`` when two result elements get the same labels ("vector contains metrics
    with the same labelset after applying alert labels", as Prometheus).
    """
    seen: set[Labels] = set()
    updated = dict(active)
    changes: list[Change] = []
    for candidate in results:
        if candidate.labels in seen:
            raise ValueError(
                "vector contains metrics with the same labelset after applying alert labels"
            )
        seen.add(candidate.labels)
        current = updated.get(candidate.labels)
        if current is not None and current.state != "inactive":
            updated[candidate.labels] = current.updated(candidate.value, candidate.annotations)
            continue
        fresh = Alert(candidate.labels, candidate.annotations, "pending", now, candidate.value)
        updated[candidate.labels] = fresh
        changes.append(Change("pending", fresh))

    result: dict[Labels, Alert] = {}
    for identity, alert in updated.items():
        settled, kind = _settle(alert, identity in seen, now, hold, keep_firing_for)
        if kind is not None:
            changes.append(Change(kind, settled or alert))
        if settled is not None:
            result[identity] = settled
    return result, changes


def _settle(
    alert: Alert, present: bool, now: float, hold: float, keep_firing_for: float
) -> tuple[Alert | None, Transition | None]:
    """The alert after this evaluation (``None``: forgotten) and its transition, if any."""
    if present:
        if alert.keep_firing_since is not None:
            alert = replace(alert, keep_firing_since=None)
        if alert.state == "pending" and now - alert.active_at >= hold:
            return replace(alert, state="firing", fired_at=now), "firing"
        return alert, None
    if alert.state == "pending":
        return None, "dropped"
    keep_firing = False
    if alert.state == "firing" and keep_firing_for > 0:
        since = alert.keep_firing_since if alert.keep_firing_since is not None else now
        alert = replace(alert, keep_firing_since=since)
        keep_firing = now - since < keep_firing_for
    if alert.resolved_at is not None and now - alert.resolved_at > RESOLVED_RETENTION:
        return None, None
    if alert.state != "inactive" and not keep_firing:
        return replace(alert, state="inactive", resolved_at=now), "resolved"
    return alert, None


def alert_json(alert: Alert) -> dict[str, object]:
    """An alert in the JSON shape of Prometheus's ``/api/v1/alerts``: times as RFC 3339, the
    value as a string as Prometheus writes it (``strconv.FormatFloat(v, 'e', -1, 64)``)."""
    return {
        "labels": dict(alert.labels),
        "annotations": dict(alert.annotations),
        "state": alert.state,
        "activeAt": _iso(alert.active_at),
        "firedAt": _iso(alert.fired_at),
        "resolvedAt": _iso(alert.resolved_at),
        "keepFiringSince": _iso(alert.keep_firing_since),
        "value": go_exponent(alert.value),
    }


def _iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


@functools.lru_cache(maxsize=65_536)
def _with_state(labels: Labels, state: str) -> Labels:
    return tuple(sorted((*labels, ("alertstate", state))))


def active_series(alerts: dict[Labels, Alert]) -> list[tuple[str, Labels, float]]:
    """The ``ALERTS`` and ``ALERTS_FOR_STATE`` samples Prometheus writes for these alerts:
    ``ALERTS{…, alertstate="pending|firing"} 1`` and ``ALERTS_FOR_STATE{…} <active_at>``, for
    every pending or firing alert (resolved ones write nothing, so their series go stale)."""
    out = []
    for alert in alerts.values():
        if alert.state == "inactive":
            continue
        out.append(("ALERTS", _with_state(alert.labels, alert.state), 1.0))
        out.append(("ALERTS_FOR_STATE", alert.labels, float(int(alert.active_at))))
    return out
