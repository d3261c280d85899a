"""The durable outbox: a notification is recorded before it is sent, and retried until it is
delivered, fails permanently, or expires.

Each :class:`Delivery` is a JSON document in the store (``outbox/<id>``), written in the same
transaction as the notification-log entry that decided to send it. Delivery workers (one per
channel, so a slow channel never holds up the others) send the due ones; a temporary failure is
retried after an exponential backoff with ±20 % jitter, capped (``notify.retry``). A process
killed while sending finds the delivery still pending at start and sends it again: the
receiver recognises the duplicate by its idempotency key (header ``Idempotency-Key``, field
``idempotencyKey``). Finished deliveries stay listed for :data:`KEEP_FINISHED` for the API.

A channel only ever hears a group's current state, never an older one after a newer one (as
Alertmanager, which sends the state of the group at each flush): a newer notification of the
same group to the same channel *supersedes* the undelivered older ones (state ``superseded``,
kept in the list with what replaced them), and a delivery older than one already delivered is
superseded instead of sent. What each channel received is written to the delivered
notification log (:mod:`.nflog`) in the transaction that marks the delivery delivered.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from opscope.config.notify import RetryConfig
from opscope.notify.channels import Channel, DeliveryError
from opscope.notify.nflog import DELIVERED, LogEntry, NotificationLog
from opscope.store import Store

log = logging.getLogger(__name__)

DeliveryState = Literal["pending", "delivered", "failed", "expired", "superseded"]
#: Every delivery state, for validating filters.
DELIVERY_STATES: tuple[DeliveryState, ...] = (
    "pending",
    "delivered",
    "failed",
    "expired",
    "superseded",
)
#: How long delivered, failed, expired and superseded notifications stay listed (seconds).
KEEP_FINISHED = 7 * 86400.0
_PREFIX = "outbox/"


@dataclass
class Delivery:
    """One notification to one channel, and what happened to it."""

    id: str
    key: str
    channel: str
    group_key: str
    status: str
    title: str
    body: str
    payload: dict[str, Any]
    created_at: float
    expires_at: float
    state: DeliveryState = "pending"
    attempts: int = 0
    next_attempt: float = 0.0
    last_error: str = ""
    delivered_at: float | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    #: ``alerts`` (a notification of an alert group) or ``message`` (a report delivery: no
    #: alert group, nothing for the notification log).
    kind: str = "alerts"
    #: Files sent with the notification (absolute paths), read at each attempt.
    attachments: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        """The stored document."""
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Delivery:
        """A delivery from its stored document."""
        return cls(**json.loads(text))

    def told(self) -> LogEntry:
        """What this notification tells its channel: fingerprints of its firing and resolved
        alerts, at the time it was queued."""
        alerts = [a for a in self.payload.get("alerts", []) if "fingerprint" in a]
        return LogEntry(
            frozenset(a["fingerprint"] for a in alerts if a.get("status") == "firing"),
            frozenset(a["fingerprint"] for a in alerts if a.get("status") == "resolved"),
            self.created_at,
        )


def delivery_states(store: Store, ids: list[str]) -> dict[str, dict[str, Any]]:
    """What became of stored deliveries, by id: ``state``, ``attempts``, ``last_error`` and
    ``delivered_at`` (Unix seconds or ``None``). Ids no longer listed (pruned) are left out."""
    found: dict[str, dict[str, Any]] = {}
    for delivery_id in ids:
        text = store.load_state(_PREFIX + delivery_id).get(_PREFIX + delivery_id)
        if text is None:
            continue
        delivery = Delivery.from_json(text[0])
        found[delivery_id] = {
            "state": delivery.state,
            "attempts": delivery.attempts,
            "last_error": delivery.last_error,
            "delivered_at": delivery.delivered_at,
        }
    return found


def backoff(attempts: int, retry: RetryConfig, rng: random.Random) -> float:
    """Seconds to wait after the ``attempts``-th failure: initial × 2^(attempts−1), capped at
    ``max``, times a jitter factor in [0.8, 1.2]."""
    base = retry.initial.total_seconds() * 2.0 ** max(0, attempts - 1)
    return float(min(base, retry.max.total_seconds()) * rng.uniform(0.8, 1.2))


class Outbox:
    """Queued notifications in the store, and their delivery."""

    def __init__(self, store: Store, retry: RetryConfig, *, rng: random.Random | None = None):
        self.store = store
        self.retry = retry
        self.rng = rng or random.Random()
        #: What each channel last received of each group.
        self.delivered = NotificationLog(store, DELIVERED)
        for delivery in self.all():  # stores written before the delivered log was kept
            if delivery.state == "delivered" and delivery.kind == "alerts":
                told = delivery.told()
                known = self.delivered.get(delivery.channel, delivery.group_key)
                if known is None or known.at < told.at:
                    self.delivered.entries[(delivery.channel, delivery.group_key)] = told

    def new(
        self,
        *,
        key: str,
        channel: str,
        group_key: str,
        status: str,
        title: str,
        body: str,
        payload: dict[str, Any],
        now: float,
    ) -> Delivery:
        """A pending delivery, due now (not stored yet: see :meth:`documents`)."""
        return Delivery(
            id=uuid.uuid4().hex,
            key=key,
            channel=channel,
            group_key=group_key,
            status=status,
            title=title,
            body=body,
            payload=payload,
            created_at=now,
            next_attempt=now,
            expires_at=now + self.retry.give_up_after.total_seconds(),
        )

    def new_message(
        self,
        *,
        key: str,
        channel: str,
        title: str,
        body: str,
        payload: dict[str, Any],
        attachments: list[str],
        now: float,
    ) -> Delivery:
        """A pending delivery of a message that is not about alerts (a report), due now.

        Its id is derived from ``key`` and ``channel``, so the same message queued twice — by
        a run retried after a crash — is one delivery (see :meth:`get`). Not stored yet.
        """
        delivery = self.new(
            key=key,
            channel=channel,
            group_key=f"message/{key}",
            status="message",
            title=title,
            body=body,
            payload=payload,
            now=now,
        )
        delivery.id = hashlib.sha256(f"{key}\n{channel}".encode()).hexdigest()[:32]
        delivery.kind = "message"
        delivery.attachments = list(attachments)
        return delivery

    @staticmethod
    def documents(deliveries: list[Delivery]) -> dict[str, str]:
        """Store documents of ``deliveries`` (to write with other state in one transaction)."""
        return {_PREFIX + d.id: d.to_json() for d in deliveries}

    def supersede(
        self, *, channel: str, group_key: str, by: Delivery | None, now: float
    ) -> dict[str, str]:
        """Mark the pending deliveries of ``group_key`` to ``channel`` superseded by ``by`` (the
        group's new notification; ``None`` when the group's current state is nothing this
        channel should hear). Returns their documents, to write with ``by``."""
        reason = (
            f"superseded by notification {by.key}"
            if by is not None
            else "superseded: the group changed and nothing of it is left to send"
        )
        changed = []
        for delivery in self.all():
            if (
                delivery.channel == channel
                and delivery.group_key == group_key
                and delivery.state == "pending"
                and (by is None or delivery.id != by.id)
            ):
                delivery.state = "superseded"
                delivery.last_error = reason
                delivery.history.append({"at": now, "superseded": reason})
                changed.append(delivery)
        return self.documents(changed)

    def get(self, delivery_id: str) -> Delivery | None:
        """The stored delivery with that id."""
        found = self.store.load_state(_PREFIX + delivery_id).get(_PREFIX + delivery_id)
        return Delivery.from_json(found[0]) if found is not None else None

    def all(self) -> list[Delivery]:
        """Every listed delivery, newest first."""
        found = [Delivery.from_json(text) for text, _ in self.store.load_state(_PREFIX).values()]
        return sorted(found, key=lambda d: d.created_at, reverse=True)

    def due(self, channel: str, now: float) -> list[Delivery]:
        """Pending deliveries of ``channel`` whose next attempt is due, oldest first."""
        pending = [
            d
            for d in self.all()
            if d.channel == channel and d.state == "pending" and d.next_attempt <= now
        ]
        return sorted(pending, key=lambda d: (d.created_at, d.id))

    def next_due(self, channel: str) -> float | None:
        """When ``channel`` next has something to send (``None``: nothing pending)."""
        times = [
            d.next_attempt for d in self.all() if d.channel == channel and d.state == "pending"
        ]
        return min(times, default=None)

    async def deliver_due(
        self, channel: Channel, now: float, *, stop: Callable[[], bool] | None = None
    ) -> int:
        """Try every due delivery of ``channel`` once, in order (until ``stop()`` says to stop
        before the next one); returns how many were tried."""
        tried = 0
        for delivery in self.due(channel.name, now):
            if stop is not None and stop():
                break
            tried += 1
            await self._attempt(channel, delivery, now)
        return tried

    async def _attempt(self, channel: Channel, delivery: Delivery, now: float) -> None:
        stored = self.get(delivery.id)
        if stored is None or stored.state != "pending":
            return  # superseded (or finished) since the due list was read
        delivery = stored
        if now >= delivery.expires_at:
            delivery.state = "expired"
            delivery.last_error = delivery.last_error or "expired before it could be delivered"
            self._save(delivery, now)
            log.error("notification %s to %s expired undelivered", delivery.key, channel.name)
            return
        newer = self.delivered.get(delivery.channel, delivery.group_key)
        if newer is not None and newer.at > delivery.created_at:
            reason = "superseded: a newer notification of the group was delivered first"
            delivery.state = "superseded"
            delivery.last_error = reason
            delivery.history.append({"at": now, "superseded": reason})
            self._save(delivery, now)
            return
        delivery.attempts += 1
        extra: dict[str, Any] = {}
        if delivery.attachments:
            extra["attachments"] = [Path(p) for p in delivery.attachments]
        try:
            await channel.send(
                title=delivery.title,
                body=delivery.body,
                payload=delivery.payload,
                key=delivery.key,
                **extra,
            )
        except DeliveryError as exc:
            delivery.last_error = str(exc)
            delivery.history.append({"at": now, "error": str(exc), "permanent": exc.permanent})
            current = self.get(delivery.id)
            if current is not None and current.state == "superseded":
                # superseded while it was being sent: the newer notification goes instead
                delivery.state = "superseded"
                delivery.history = [*current.history, delivery.history[-1]]
            elif exc.permanent:
                delivery.state = "failed"
                log.error(
                    "notification %s to %s failed for good: %s", delivery.key, channel.name, exc
                )
            else:
                delivery.next_attempt = now + backoff(delivery.attempts, self.retry, self.rng)
                log.warning(
                    "notification %s to %s failed (attempt %d, next in %.1fs): %s",
                    delivery.key,
                    channel.name,
                    delivery.attempts,
                    delivery.next_attempt - now,
                    exc,
                )
        else:
            # Delivered, even if a newer one superseded it meanwhile: it arrived before that one,
            # which this channel's worker sends only after this attempt.
            delivery.state = "delivered"
            delivery.delivered_at = now
            delivery.last_error = ""
            delivery.history.append({"at": now, "delivered": True})
        self._save(delivery, now)

    def _save(self, delivery: Delivery, now: float) -> None:
        documents = self.documents([delivery])
        if delivery.state == "delivered" and delivery.kind == "alerts":
            told = delivery.told()
            previous = self.delivered.get(delivery.channel, delivery.group_key)
            if previous is None or previous.at <= told.at:
                documents.update(self.delivered.record(delivery.channel, delivery.group_key, told))
        self.store.put_state(documents, at=now)

    def prune(self, now: float) -> int:
        """Forget finished deliveries older than :data:`KEEP_FINISHED`; returns how many."""
        old = [
            _PREFIX + d.id
            for d in self.all()
            if d.state != "pending" and now - d.created_at > KEEP_FINISHED
        ]
        if old:
            self.store.delete_state(old)
        return len(old)
