"""opscope's own metrics, exposed at ``/metrics`` in the Prometheus exposition format.

One :class:`Telemetry` per server holds its own ``prometheus_client`` registry (never the global
one, so several servers can run in one test process). Subsystems receive it and update it; only
the server renders it.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)


class Telemetry:
    """The counters, gauges and histograms opscope reports about itself."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        r = self.registry
        self.samples_ingested = Counter(
            "opscope_samples_ingested",
            "Samples written to the store, by collector kind.",
            ["collector"],
            registry=r,
        )
        self.collections = Counter(
            "opscope_collections",
            "Collection cycles run, by collector kind and outcome.",
            ["collector", "outcome"],
            registry=r,
        )
        self.collection_duration = Histogram(
            "opscope_collection_duration_seconds",
            "Duration of one collection (scrape, probe, system cycle) including the store write.",
            ["collector"],
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.store_series = Gauge("opscope_store_series", "Series known to the store.", registry=r)
        self.store_cache_bytes = Gauge(
            "opscope_store_cache_bytes",
            "Memory held by the store's cache of recent value arrays.",
            registry=r,
        )
        self.retention_deleted = Counter(
            "opscope_retention_deleted_rows",
            "Collection rows deleted by retention.",
            registry=r,
        )
        self.websocket_clients = Gauge(
            "opscope_websocket_clients", "Connected WebSocket clients.", registry=r
        )
        self.websocket_messages = Counter(
            "opscope_websocket_messages_sent", "Messages sent to WebSocket clients.", registry=r
        )
        self.websocket_dropped = Counter(
            "opscope_websocket_clients_dropped",
            "WebSocket clients disconnected by the server, by reason.",
            ["reason"],
            registry=r,
        )
        self.websocket_queue_drops = Counter(
            "opscope_websocket_queue_drops",
            "Messages not delivered because a client's send queue was full.",
            registry=r,
        )
