"""What every collector shares: the target health record and the collector protocol."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

from opscope.store import Batch

CollectorKind = Literal["system", "scrape", "probe", "sql"]
Health = Literal["up", "down", "unknown"]


@dataclass
class TargetHealth:
    """The state of one collection target, as ``/api/v1/targets`` reports it.

    Times are Unix seconds; ``last_duration`` is seconds; ``last_error`` is ``""`` after a
    successful collection (Prometheus's ``lastError``).
    """

    kind: CollectorKind
    job: str
    instance: str
    url: str
    interval: float
    labels: dict[str, str] = field(default_factory=dict)
    health: Health = "unknown"
    last_collection: float | None = None
    last_duration: float | None = None
    last_error: str = ""
    last_samples: int = 0

    def record(
        self, *, ok: bool, at: float, duration: float, samples: int, error: str = ""
    ) -> None:
        """Record the outcome of one collection."""
        self.health = "up" if ok else "down"
        self.last_collection = at
        self.last_duration = duration
        self.last_samples = samples
        self.last_error = error


class Collector(Protocol):
    """A source of samples collected at a fixed interval.

    ``collect(now)`` gathers one cycle stamped at ``now`` (Unix seconds) and returns the batches
    to store; it records its own outcome in ``health`` and must not raise for an unreachable or
    misbehaving target (that is a failed collection, not an error of opscope).
    """

    health: TargetHealth

    @property
    def interval(self) -> float:
        """Seconds between two collections."""

    async def collect(self, now: float) -> list[Batch]:
        """Collect one cycle stamped ``now``; return the batches to store."""

    async def aclose(self) -> None:
        """Release connections and other resources."""
