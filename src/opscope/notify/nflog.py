"""The notification log: what each channel was told about each group (Alertmanager's nflog).

An entry per (channel, group) holds the fingerprints of the alerts a notification reported as
firing and as resolved, and when. Two logs are kept in the store, because opscope queues a
notification before it is delivered (the durable outbox) where Alertmanager sends it at once:

* the **decided** log (``nflog/``): the last notification the dispatcher queued for the channel.
  Deduplication compares against it, so nothing is queued twice while a delivery is retried;
* the **delivered** log (``nflog-delivered/``): the last notification the channel received. Only
  alerts it reported firing may be reported resolved to that channel — Alertmanager writes its
  log only after a successful notification, so a channel whose firing notification failed never
  hears of the resolution.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from opscope.store import Store

DECIDED = "nflog/"
DELIVERED = "nflog-delivered/"


@dataclass(frozen=True)
class LogEntry:
    """What a channel was told about a group: alert fingerprints and when (Unix seconds)."""

    firing: frozenset[str]
    resolved: frozenset[str]
    at: float


class NotificationLog:
    """Entries by (channel, group key), kept in memory and in the store under ``prefix``."""

    def __init__(self, store: Store, prefix: str) -> None:
        self.prefix = prefix
        self.entries: dict[tuple[str, str], LogEntry] = {}
        for text, _ in store.load_state(prefix).values():
            data = json.loads(text)
            self.entries[(data["channel"], data["group"])] = LogEntry(
                frozenset(data["firing"]), frozenset(data["resolved"]), float(data["at"])
            )

    def get(self, channel: str, group: str) -> LogEntry | None:
        """The entry of ``channel`` and ``group`` (``None``: never told anything)."""
        return self.entries.get((channel, group))

    def record(self, channel: str, group: str, entry: LogEntry) -> dict[str, str]:
        """Remember ``entry``; returns the store document to write (with the change it logs)."""
        self.entries[(channel, group)] = entry
        return {
            f"{self.prefix}{channel}/{group}": json.dumps(
                {
                    "channel": channel,
                    "group": group,
                    "firing": sorted(entry.firing),
                    "resolved": sorted(entry.resolved),
                    "at": entry.at,
                }
            )
        }
