"""Running the collectors: one named, guarded asyncio task per target, plus retention.

Each collector runs on its own interval. Targets of the same interval are spread over the first
second by a hash of their name (as Prometheus spreads scrapes) so they do not all fire at once.
A collector whose ``collect`` raises — a bug, not a target failure, which collectors record
themselves — is logged with its traceback, marked down with the error, and tried again at its
next interval. A cycle that overruns its interval skips the missed ticks instead of bunching up.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx

from opscope.clock import Clock, SystemClock
from opscope.config import MonitorConfig
from opscope.errors import StoreError
from opscope.monitor.collectors import (
    Collector,
    ProbeCollector,
    ScrapeCollector,
    SqlCollector,
    SqlEngines,
    SystemCollector,
    TargetHealth,
)
from opscope.monitor.collectors.http import make_client
from opscope.monitor.pushing import PushRegistry
from opscope.monitor.rules import GroupResult, RuleEngine, RuleGroup, next_evaluation
from opscope.store import Store
from opscope.telemetry import Telemetry

log = logging.getLogger(__name__)

#: How often the retention task runs, in seconds.
RETENTION_PERIOD = 3600.0


class Monitor:
    """All collectors of one configuration, writing into one store.

    ``run()`` runs until cancelled. ``collect_all()`` runs one cycle of every collector at once
    (for tests and for ``opscope serve --once``-style use).
    """

    def __init__(
        self,
        config: MonitorConfig,
        store: Store,
        *,
        telemetry: Telemetry | None = None,
        clock: Clock | None = None,
        hostname: str | None = None,
        rule_groups: list[RuleGroup] | None = None,
        redact: Callable[[str], str] = str,
    ) -> None:
        self.config = config
        self.store = store
        lookback_ms = int(config.lookback_delta.total_seconds() * 1000)
        self.rules = RuleEngine(store, rule_groups or [], lookback_ms=lookback_ms)
        #: Called (in the event loop) with each group evaluation's alert transitions.
        self.alert_listeners: list[Callable[[GroupResult], None]] = []
        self.telemetry = telemetry or Telemetry()
        self.clock = clock or SystemClock()
        self._clients: list[httpx.AsyncClient] = []
        self.system: SystemCollector | None = None
        self.collectors: list[Collector] = []
        if config.system.enabled:
            self.system = SystemCollector(
                config=config.system,
                interval=config.interval_of(config.system).total_seconds(),
                resolve=store.series_id,
                hostname=hostname,
            )
            self.collectors.append(self.system)
        for index, job in enumerate(config.scrape):
            client = make_client(
                job.tls,
                where=f"monitor.scrape[{index}].tls",
                follow_redirects=job.follow_redirects,
                keepalive=True,
            )
            self._clients.append(client)
            for target in job.targets:
                self.collectors.append(
                    ScrapeCollector(
                        job=job,
                        target=target,
                        interval=config.interval_of(job).total_seconds(),
                        timeout=config.timeout_of(job).total_seconds(),
                        resolve=store.series_id,
                        client=client,
                    )
                )
        for index, probe in enumerate(config.probes):
            for target in probe.targets:
                self.collectors.append(
                    ProbeCollector(
                        job=probe,
                        target=target,
                        interval=config.interval_of(probe).total_seconds(),
                        timeout=config.timeout_of(probe).total_seconds(),
                        resolve=store.series_id,
                        where=f"monitor.probes[{index}].tls",
                        redact=redact,
                    )
                )
        self._sql_engines = SqlEngines()
        self._sql_executor: ThreadPoolExecutor | None = None
        if config.sql:
            self._sql_executor = ThreadPoolExecutor(
                max_workers=min(8, len(config.sql)), thread_name_prefix="sql"
            )
        for query in config.sql:
            assert self._sql_executor is not None
            self.collectors.append(
                SqlCollector(
                    query=query,
                    engines=self._sql_engines,
                    executor=self._sql_executor,
                    interval=config.interval_of(query).total_seconds(),
                    timeout=config.timeout_of(query).total_seconds(),
                    resolve=store.series_id,
                    redact=redact,
                )
            )
        #: Groups of pushed samples (``None`` when ``monitor.push.enabled`` is false).
        self.push: PushRegistry | None = None
        if config.push.enabled:
            self.push = PushRegistry(
                store,
                config.push,
                retention_s=config.retention.total_seconds(),
                now=self.clock.time,
                reserved_jobs=_collector_jobs(config),
            )

    @property
    def targets(self) -> list[TargetHealth]:
        """Health of every target, in configuration order."""
        return [c.health for c in self.collectors]

    async def aclose(self) -> None:
        """Close every collector and the shared HTTP client."""
        for collector in self.collectors:
            await collector.aclose()
        for client in self._clients:
            await client.aclose()
        if self._sql_executor is not None:
            self._sql_executor.shutdown(wait=False, cancel_futures=True)
        self._sql_engines.dispose()

    async def run(self) -> None:
        """Run every collector, every rule group and retention until cancelled."""
        restored = self.rules.restore(self.clock.time())
        if restored:
            log.info("restored %d alert(s) from the store", restored)
        async with asyncio.TaskGroup() as group:
            for collector in self.collectors:
                group.create_task(self._loop(collector), name=f"collect:{_name(collector)}")
            for rule_group in self.rules.groups:
                group.create_task(self._rule_loop(rule_group), name=f"rules:{rule_group.name}")
            group.create_task(self._retention_loop(), name="retention")
            if self.push is not None:
                group.create_task(self._push_loop(self.push), name="push")

    async def evaluate_rules(self, group: RuleGroup, t: float) -> GroupResult:
        """Evaluate one rule group at ``t`` (in a worker thread) and notify alert listeners."""
        result = await asyncio.to_thread(self.rules.evaluate, group, t)
        for listener in list(self.alert_listeners):
            listener(result)
        return result

    async def _rule_loop(self, group: RuleGroup) -> None:
        next_at = next_evaluation(group, self.clock.time())
        while True:
            await self.clock.sleep(next_at - self.clock.time())
            try:
                await self.evaluate_rules(group, next_at)
            except asyncio.CancelledError:
                raise
            except Exception:  # a failing group must not stop the others
                log.exception("rule group %s: evaluation failed", group.name)
            next_at += group.interval
            behind = self.clock.time() - next_at
            if behind > 0:
                missed = math.ceil(behind / group.interval)
                log.warning(
                    "rule group %s: evaluation overran its interval, skipping %d",
                    group.name,
                    missed,
                )
                next_at += missed * group.interval

    async def collect_all(self) -> None:
        """Run one cycle of every collector now (concurrently) and store the results."""
        now = self.clock.time()
        await asyncio.gather(*(self._collect_once(c, now) for c in self.collectors))

    async def _loop(self, collector: Collector) -> None:
        spread = (zlib.crc32(_name(collector).encode()) / 2**32) * min(1.0, collector.interval)
        next_at = self.clock.time() + spread
        while True:
            await self.clock.sleep(next_at - self.clock.time())
            await self._collect_once(collector, self.clock.time())
            next_at += collector.interval
            behind = self.clock.time() - next_at
            if behind > 0:
                skipped = math.ceil(behind / collector.interval)
                log.warning(
                    "%s: collection overran its interval, skipping %d tick(s)",
                    _name(collector),
                    skipped,
                )
                next_at += skipped * collector.interval

    async def _collect_once(self, collector: Collector, now: float) -> None:
        health = collector.health
        before = (health.health, health.last_error)
        started = time.perf_counter()
        try:
            batches = await collector.collect(now)
            # Never wait for the store on the event loop: while another thread holds it (a
            # large push being stored), write from a worker thread, so the API, /healthz and
            # the WebSocket keep answering.
            if not self.store.append(batches, wait=False):
                await asyncio.to_thread(self.store.append, batches)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug in a collector or a store failure must not stop others
            error = str(exc) if isinstance(exc, StoreError) else f"internal error: {exc!r}"
            if error != before[1]:  # the traceback once per distinct error, not every cycle
                log.error(
                    "%s: collection failed: %s",
                    _name(collector),
                    error,
                    exc_info=not isinstance(exc, StoreError),
                )
            health.record(
                ok=False, at=now, duration=time.perf_counter() - started, samples=0, error=error
            )
            self.telemetry.collections.labels(health.kind, "error").inc()
            return
        if (health.health, health.last_error) != before:
            if health.health == "down":
                log.warning("%s is down: %s", _name(collector), health.last_error)
            elif before[0] == "down":
                log.info("%s is up again", _name(collector))
        t = self.telemetry
        outcome = "success" if health.health == "up" else "failure"
        t.collections.labels(health.kind, outcome).inc()
        t.samples_ingested.labels(health.kind).inc(sum(len(b.values) for b in batches))
        t.collection_duration.labels(health.kind).observe(time.perf_counter() - started)
        t.store_series.set(len(self.store.index))

    async def _push_loop(self, push: PushRegistry) -> None:
        """Write the pushed groups' current values every ``monitor.interval``, as a scrape of
        a Pushgateway would, so pushed values stay current until replaced or deleted."""
        interval = self.config.interval.total_seconds()
        while True:
            await self.clock.sleep(interval)
            try:  # a push being stored holds the registry: then write from a worker thread
                t = self.clock.time()
                if not push.collect(t, wait=False):
                    await asyncio.to_thread(push.collect, t)
            except StoreError as exc:
                log.error("push: %s", exc)

    async def _retention_loop(self) -> None:
        while True:
            self.enforce_retention()
            await self.clock.sleep(RETENTION_PERIOD)

    def enforce_retention(self) -> None:
        """Delete what is older than ``monitor.retention``; log what was removed."""
        cutoff_ms = int((self.clock.time() - self.config.retention.total_seconds()) * 1000)
        try:
            result = self.store.delete_before(cutoff_ms)
        except StoreError as exc:
            log.error("retention: %s", exc)
            return
        if result.rows:
            log.info(
                "retention: deleted %d collections and %d series older than %s",
                result.rows,
                result.series,
                self.config.retention,
            )
        self.telemetry.retention_deleted.inc(result.rows)

    def system_status(self) -> dict[str, object]:
        """A snapshot of this machine and the targets, for the live view (seed's system_status)."""
        status: dict[str, object] = {}
        if self.system is not None:
            latest = self.system.latest
            for name in ("cpu_usage", "memory_usage", "load1", "active_connections"):
                values = latest.get(name)
                if values:
                    status[name] = next(iter(values.values()))
            disks = latest.get("disk_usage", {})
            if disks:
                status["disk_usage"] = {dict(k).get("mount", ""): v for k, v in disks.items()}
            for name in ("network_receive_bytes_per_second", "network_transmit_bytes_per_second"):
                values = latest.get(name)
                if values:
                    status[name] = sum(values.values())
        targets = [t for t in self.targets if t.kind != "system"]
        status["targets_up"] = sum(1 for t in targets if t.health == "up")
        status["targets_total"] = len(targets)
        return status


def _name(collector: Collector) -> str:
    h = collector.health
    return f"{h.kind}/{h.job}/{h.instance}"


def _collector_jobs(config: MonitorConfig) -> dict[str, str]:
    """The ``job`` label of every configured collector, with where it is configured: pushes
    under these jobs are refused, so that no push can overwrite a collector's series (``up``)."""
    jobs = {job.job: f"monitor.scrape ({job.job})" for job in config.scrape}
    jobs |= {probe.job: f"monitor.probes ({probe.job})" for probe in config.probes}
    jobs |= {query.job: f"monitor.sql ({query.name})" for query in config.sql}
    if config.system.enabled:
        jobs["system"] = "monitor.system"
    return jobs
