"""The notification service of ``opscope serve``: the dispatcher plus one delivery worker per
channel, as named asyncio tasks.

New alerts wake the dispatcher at once (so ``group_wait: 0`` notifies without delay); queued
notifications wake their channel's worker. Each worker sends its own channel's notifications in
order, so a slow or failing channel never delays the others. Stopped (cancelled), a worker
first finishes the delivery it is sending, for up to :data:`DRAIN_TIMEOUT`, and records it: a
clean restart sends nothing twice (a killed process resends what was in flight, recognisably).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from opscope.clock import Clock, SystemClock
from opscope.config.notify import NotifyConfig
from opscope.notify.channels import Channel
from opscope.notify.dispatching import Dispatcher
from opscope.notify.messages import NotifyAlert
from opscope.notify.outbox import Delivery
from opscope.store import Store

log = logging.getLogger(__name__)

#: Longest a worker sleeps before looking again (seconds).
IDLE_WAIT = 30.0
#: How often finished deliveries are pruned (seconds).
PRUNE_PERIOD = 3600.0
#: How long a stopping worker waits for the delivery it is sending (seconds).
DRAIN_TIMEOUT = 4.0


class Notifier:
    """Routes alerts to channels and delivers the notifications, durably."""

    def __init__(
        self,
        config: NotifyConfig,
        store: Store,
        *,
        clock: Clock | None = None,
        channels: dict[str, Channel] | None = None,
    ) -> None:
        self.clock = clock or SystemClock()
        self.dispatcher = Dispatcher(config, store, channels=channels)
        self.outbox = self.dispatcher.outbox
        self._changed: asyncio.Event | None = None
        self._wake: dict[str, asyncio.Event] = {}
        self._stopping = False

    @property
    def channels(self) -> dict[str, Channel]:
        """The configured channels."""
        return self.dispatcher.channels

    def receive(self, source: str, alerts: Iterable[NotifyAlert]) -> None:
        """Take the current alerts of ``source`` and wake the dispatcher."""
        self.dispatcher.receive(source, alerts, self.clock.time())
        if self._changed is not None:
            self._changed.set()

    def queue_message(
        self,
        *,
        key: str,
        channels: Sequence[str],
        title: str,
        body: str,
        payload: dict[str, Any],
        attachments: Sequence[Path] = (),
    ) -> list[Delivery]:
        """Queue a message that is not about alerts (a report) to ``channels``, durably, and
        wake their workers; returns the deliveries, one per channel.

        Delivery ids derive from ``key`` and the channel: a channel that already has this
        message queued (or delivered) is not given it again, so a run resumed after a crash
        sends nothing twice. Raises :class:`KeyError` for an unknown channel.
        """
        now = self.clock.time()
        queued: list[Delivery] = []
        new: list[Delivery] = []
        for channel in channels:
            if channel not in self.channels:
                raise KeyError(channel)
            delivery = self.outbox.new_message(
                key=key,
                channel=channel,
                title=title,
                body=body,
                payload=payload,
                attachments=[str(p) for p in attachments],
                now=now,
            )
            existing = self.outbox.get(delivery.id)
            if existing is None:
                new.append(delivery)
            queued.append(existing or delivery)
        if new:
            self.outbox.store.put_state(self.outbox.documents(new), at=now)
        for delivery in new:
            wake = self._wake.get(delivery.channel)
            if wake is not None:
                wake.set()
        return queued

    async def run(self) -> None:
        """Dispatch and deliver until cancelled."""
        self._changed = asyncio.Event()
        self._wake = {name: asyncio.Event() for name in self.channels}
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._dispatch_loop(), name="notify:dispatch")
            for channel in self.channels.values():
                tasks.create_task(self._deliver_loop(channel), name=f"notify:{channel.name}")
            tasks.create_task(self._prune_loop(), name="notify:prune")

    async def _dispatch_loop(self) -> None:
        assert self._changed is not None
        while True:
            now = self.clock.time()
            try:
                queued = self.dispatcher.flush_due(now)
            except Exception:  # a bug flushing one round must not stop notifications
                log.exception("notification dispatch failed")
                queued = []
            for delivery in queued:
                self._wake[delivery.channel].set()
            due = self.dispatcher.next_flush()
            timeout = IDLE_WAIT if due is None else max(0.0, min(IDLE_WAIT, due - now))
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout)

    async def _deliver_loop(self, channel: Channel) -> None:
        wake = self._wake[channel.name]
        while True:
            wake.clear()
            sending = asyncio.ensure_future(
                self.outbox.deliver_due(channel, self.clock.time(), stop=lambda: self._stopping)
            )
            try:
                await asyncio.shield(sending)
            except asyncio.CancelledError:
                await self._drain(channel, sending)
                raise
            except Exception:  # keep the worker alive whatever one delivery did
                log.exception("delivery to %s failed unexpectedly", channel.name)
            due = self.outbox.next_due(channel.name)
            now = self.clock.time()
            timeout = IDLE_WAIT if due is None else max(0.0, min(IDLE_WAIT, due - now))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout)

    async def _drain(self, channel: Channel, sending: asyncio.Future[int]) -> None:
        """Let the delivery in flight finish and be recorded, then no other (stopping)."""
        self._stopping = True
        try:
            await asyncio.wait_for(sending, DRAIN_TIMEOUT)
        except TimeoutError:
            log.warning("stopping: a notification to %s is still being sent", channel.name)
        except Exception as exc:  # the delivery's own error: recorded by the outbox, logged here
            log.error("delivery to %s failed unexpectedly: %s", channel.name, exc, exc_info=exc)

    async def _prune_loop(self) -> None:
        while True:
            self.outbox.prune(self.clock.time())
            await self.clock.sleep(PRUNE_PERIOD)
