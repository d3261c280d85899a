"""The durable outbox: a notification is recorded before it is sent, and retried until it is
delivered, fails permanently, or expires.

Each :class:`Delivery` is a JSON document in the store (``outbox/<id>``), written in the same
transaction as the notification-log entry that decided to send it. Delivery workers (one per
channel, so a slow channel never holds up the others) send the due ones; a temporary failure is
retried after an exponential backoff with ±20 % jitter, capped (``notify.retry``). A process
killed while sending finds the delivery still pending at start and sends it again: the
receiver recognises the duplicate by its idempotency key (header ``Idempotency-Key``, field
``idempotencyKey``). Finished deliveries stay listed for :data:`KEEP_FINISHED` for the API.
"""

from __future__ import annotations

import json
import logging
import random
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from opscope.config.notify import RetryConfig
from opscope.notify.channels import Channel, DeliveryError
from opscope.store import Store

log = logging.getLogger(__name__)

DeliveryState = Literal["pending", "delivered", "failed", "expired"]
#: How long delivered, failed and expired notifications stay listed (seconds).
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

    def to_json(self) -> str:
        """The stored document."""
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Delivery:
        """A delivery from its stored document."""
        return cls(**json.loads(text))


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

    @staticmethod
    def documents(deliveries: list[Delivery]) -> dict[str, str]:
        """Store documents of ``deliveries`` (to write with other state in one transaction)."""
        return {_PREFIX + d.id: d.to_json() for d in deliveries}

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

    async def deliver_due(self, channel: Channel, now: float) -> int:
        """Try every due delivery of ``channel`` once, in order; returns how many were tried."""
        tried = 0
        for delivery in self.due(channel.name, now):
            tried += 1
            await self._attempt(channel, delivery, now)
        return tried

    async def _attempt(self, channel: Channel, delivery: Delivery, now: float) -> None:
        if now >= delivery.expires_at:
            delivery.state = "expired"
            delivery.last_error = delivery.last_error or "expired before it could be delivered"
            self._save(delivery, now)
            log.error("notification %s to %s expired undelivered", delivery.key, channel.name)
            return
        delivery.attempts += 1
        try:
            await channel.send(
                title=delivery.title, body=delivery.body, payload=delivery.payload, key=delivery.key
            )
        except DeliveryError as exc:
            delivery.last_error = str(exc)
            delivery.history.append({"at": now, "error": str(exc), "permanent": exc.permanent})
            if exc.permanent:
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
            delivery.state = "delivered"
            delivery.delivered_at = now
            delivery.last_error = ""
            delivery.history.append({"at": now, "delivered": True})
        self._save(delivery, now)

    def _save(self, delivery: Delivery, now: float) -> None:
        self.store.put_state(self.documents([delivery]), at=now)

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
