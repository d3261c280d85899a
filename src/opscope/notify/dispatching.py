"""Routing, grouping and deciding when to notify — Alertmanager's dispatcher and pipeline.

* **Routes**: an alert goes to the first route whose matchers it satisfies, and to the
  following ones while the matched routes have ``continue: true``; with no match it goes to
  ``channels_default`` (if any).
* **Groups**: per route, alerts with equal ``group_by`` label values form one group. A new group
  waits ``group_wait`` before its first notification (no wait when its alert has already been
  firing that long), then is checked every ``group_interval``.
* **Muting**: alerts silenced or inhibited at flush time are left out; a group with nothing
  left sends nothing.
* **Deduplication** (per channel and group, Alertmanager's ``DedupStage.needsUpdate``): notify
  when firing alerts appeared; when everything resolved (if the channel was told about firing
  alerts); when alerts resolved and ``send_resolved``; else only once ``repeat_interval`` has
  passed. A resolved alert is only ever reported to a channel that *received* a notification
  saying it was firing (the delivered log of :mod:`.nflog`), so an alert that fires and resolves
  within ``group_wait``, or whose firing notification failed, produces no resolution there.
* **Current state only**: a new notification supersedes the group's undelivered older ones to
  the same channel (see :mod:`.outbox`).

The decision and the queued notification are written together (see :mod:`.outbox`). Times are
Unix seconds passed in by the caller, so the logic runs on any clock.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta

from opscope.config.notify import NotifyConfig
from opscope.notify.channels import Channel, build_channels
from opscope.notify.messages import NotifyAlert, body, idempotency_key, subject, webhook_payload
from opscope.notify.nflog import DECIDED, LogEntry, NotificationLog
from opscope.notify.outbox import Delivery, Outbox
from opscope.notify.silences import Silences
from opscope.store import Store
from opscope.store.labels import Matcher, matches_all, parse_matchers

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Route:
    """A compiled route (``index`` -1 is the default route)."""

    index: int
    matchers: tuple[Matcher, ...]
    channels: tuple[str, ...]
    continue_: bool
    group_by: tuple[str, ...] | None  # None: every label
    group_wait: float
    group_interval: float
    repeat_interval: float


@dataclass
class Group:
    """An aggregation group: the alerts of one route with equal grouping labels."""

    key: str
    route: Route
    labels: dict[str, str]
    alerts: dict[str, NotifyAlert] = field(default_factory=dict)
    next_flush: float = 0.0
    flushed: bool = False


def needs_update(
    entry: LogEntry | None,
    firing: frozenset[str],
    resolved: frozenset[str],
    *,
    send_resolved: bool,
    repeat_interval: float,
    now: float,
) -> bool:
    """Alertmanager's ``DedupStage.needsUpdate``: should this channel be notified now?"""
    if entry is None:
        return bool(firing)
    if not firing <= entry.firing:
        return True
    if not firing:
        return bool(entry.firing)
    if send_resolved and not resolved <= entry.resolved:
        return True
    return entry.at <= now - repeat_interval


def _compile_routes(config: NotifyConfig) -> list[Route]:
    def group_by(value: list[str] | None) -> tuple[str, ...] | None:
        chosen = config.group_by if value is None else value
        return None if "..." in chosen else tuple(chosen)

    def seconds(value: timedelta | None, default: timedelta) -> float:
        return (value if value is not None else default).total_seconds()

    routes = [
        Route(
            i,
            r.all_matchers(),
            tuple(r.channels),
            r.continue_,
            group_by(r.group_by),
            seconds(r.group_wait, config.group_wait),
            seconds(r.group_interval, config.group_interval),
            seconds(r.repeat_interval, config.repeat_interval),
        )
        for i, r in enumerate(config.routes)
    ]
    if config.channels_default:
        routes.append(
            Route(
                -1,
                (),
                tuple(config.channels_default),
                False,
                group_by(None),
                config.group_wait.total_seconds(),
                config.group_interval.total_seconds(),
                config.repeat_interval.total_seconds(),
            )
        )
    return routes


class Dispatcher:
    """Receives alerts, groups them, and queues the notifications that need sending."""

    def __init__(
        self,
        config: NotifyConfig,
        store: Store,
        *,
        channels: dict[str, Channel] | None = None,
        outbox: Outbox | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.routes = _compile_routes(config)
        self.channels = channels if channels is not None else build_channels(config.channels)
        self.outbox = outbox or Outbox(store, config.retry)
        self.silences = Silences(store)
        self.alerts: dict[str, NotifyAlert] = {}
        self.groups: dict[str, Group] = {}
        self._sources: dict[str, set[str]] = {}
        self._inhibit = [
            (
                tuple(m for t in rule.source_matchers for m in parse_matchers(t)),
                tuple(m for t in rule.target_matchers for m in parse_matchers(t)),
                tuple(rule.equal),
            )
            for rule in config.inhibit
        ]
        #: What was last queued for each channel and group (deduplication compares with it).
        self.log = NotificationLog(store, DECIDED)

    # ------------------------------------------------------------------------------- intake
    def routes_for(self, labels: dict[str, str]) -> list[Route]:
        """The routes an alert with ``labels`` goes to."""
        matched: list[Route] = []
        for route in self.routes:
            if route.index < 0:
                return matched or [route]
            if matches_all(route.matchers, labels):
                matched.append(route)
                if not route.continue_:
                    return matched
        return matched

    def receive(self, source: str, alerts: Iterable[NotifyAlert], now: float) -> None:
        """Take the current alerts of ``source`` (one rule group): firing ones and ones resolved.

        A resolved alert is ignored unless it was received firing — by this process, or by
        one before a restart that notified a channel of it (the notification log still has it
        firing: the resolution is due there); an alert of ``source`` missing from the list is
        taken as resolved now.
        """
        current: set[str] = set()
        logged: set[str] | None = None
        for alert in alerts:
            fingerprint = alert.fingerprint
            if alert.status == "resolved" and fingerprint not in self.alerts:
                if logged is None:
                    logged = {fp for entry in self.log.entries.values() for fp in entry.firing}
                if fingerprint not in logged:
                    continue
            current.add(fingerprint)
            self._insert(alert, now)
        for gone in self._sources.get(source, set()) - current:
            known = self.alerts.get(gone)
            if known is not None and known.status == "firing":
                self._insert(
                    NotifyAlert(
                        known.labels, known.annotations, known.starts_at, now, known.generator_url
                    ),
                    now,
                )
        self._sources[source] = current

    def _insert(self, alert: NotifyAlert, now: float) -> None:
        fingerprint = alert.fingerprint
        self.alerts[fingerprint] = alert
        labels = dict(alert.labels)
        for route in self.routes_for(labels):
            group_labels = (
                labels
                if route.group_by is None
                else {k: labels[k] for k in route.group_by if k in labels}
            )
            key = (
                f"route{route.index}:"
                + "{"
                + ",".join(f'{k}="{v}"' for k, v in sorted(group_labels.items()))
                + "}"
            )
            group = self.groups.get(key)
            if group is None:
                group = self.groups[key] = Group(
                    key, route, group_labels, next_flush=now + route.group_wait
                )
            group.alerts[fingerprint] = alert
            if not group.flushed and alert.starts_at + route.group_wait <= now:
                group.next_flush = min(group.next_flush, now)

    # ------------------------------------------------------------------------------- muting
    def muted(self, alert: NotifyAlert, now: float) -> bool:
        """Silenced or inhibited at ``now``."""
        labels = dict(alert.labels)
        if self.silences.mutes(labels, now):
            return True
        for source, target, equal in self._inhibit:
            if not matches_all(target, labels):
                continue
            for other in self.alerts.values():
                if other.status != "firing" or other.fingerprint == alert.fingerprint:
                    continue
                other_labels = dict(other.labels)
                if matches_all(source, other_labels) and all(
                    other_labels.get(name, "") == labels.get(name, "") for name in equal
                ):
                    return True
        return False

    # ------------------------------------------------------------------------------- flushing
    def next_flush(self) -> float | None:
        """When the next group is due."""
        return min((g.next_flush for g in self.groups.values()), default=None)

    def flush_due(self, now: float) -> list[Delivery]:
        """Flush every group that is due; returns the notifications queued."""
        queued: list[Delivery] = []
        for group in list(self.groups.values()):
            if group.next_flush <= now:
                queued += self._flush(group, now)
                group.flushed = True
                group.next_flush = now + group.route.group_interval
                if not group.alerts:
                    del self.groups[group.key]
        self._forget_resolved()
        return queued

    def _flush(self, group: Group, now: float) -> list[Delivery]:
        snapshot = list(group.alerts.values())
        visible = [a for a in snapshot if not self.muted(a, now)]
        deliveries: list[Delivery] = []
        documents: dict[str, str] = {}
        if visible:
            firing = frozenset(a.fingerprint for a in visible if a.status == "firing")
            for name in group.route.channels:
                channel = self.channels[name]
                entry = self.log.get(name, group.key)
                received = self.outbox.delivered.get(name, group.key)
                told = received.firing if received is not None else frozenset()
                # resolved alerts this channel received as firing: the only ones it may hear of
                resolved = frozenset(
                    a.fingerprint
                    for a in visible
                    if a.status == "resolved" and a.fingerprint in told
                )
                if not needs_update(
                    entry,
                    firing,
                    resolved,
                    send_resolved=channel.send_resolved,
                    repeat_interval=group.route.repeat_interval,
                    now=now,
                ):
                    continue
                # Logged even when nothing is sent (a resolution to a channel without
                # send_resolved), so that the channel's record is cleared, as Alertmanager does.
                documents.update(self.log.record(name, group.key, LogEntry(firing, resolved, now)))
                alerts = [
                    a
                    for a in visible
                    if a.fingerprint in firing
                    or (channel.send_resolved and a.fingerprint in resolved)
                ]
                delivery = self._delivery(name, group, alerts, now) if alerts else None
                # whatever was queued before for this channel and group is out of date now
                documents.update(
                    self.outbox.supersede(channel=name, group_key=group.key, by=delivery, now=now)
                )
                if delivery is not None:
                    deliveries.append(delivery)
            if documents:
                documents.update(Outbox.documents(deliveries))
                self.store.put_state(documents, at=now)
        for alert in snapshot:
            if alert.status == "resolved" and group.alerts.get(alert.fingerprint) is alert:
                del group.alerts[alert.fingerprint]
        return deliveries

    def _delivery(
        self, channel: str, group: Group, alerts: list[NotifyAlert], now: float
    ) -> Delivery:
        key = idempotency_key(channel, group.key, alerts)
        payload = webhook_payload(
            channel=channel,
            group_key=group.key,
            group_labels=group.labels,
            alerts=alerts,
            external_url=self.config.external_url or "",
            key=key,
        )
        return self.outbox.new(
            key=key,
            channel=channel,
            group_key=group.key,
            status=payload["status"],
            title=subject(payload),
            body=body(payload),
            payload=payload,
            now=now,
        )

    def _forget_resolved(self) -> None:
        held = {fp for g in self.groups.values() for fp in g.alerts}
        for fingerprint, alert in list(self.alerts.items()):
            if alert.status == "resolved" and fingerprint not in held:
                del self.alerts[fingerprint]
