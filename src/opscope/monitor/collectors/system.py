"""Metrics of the machine opscope runs on, read with psutil.

Series (labels ``job="system"``, ``instance=<hostname>`` on all of them):

=========================================  =========================================================
``cpu_usage``                              % of all CPUs busy since the previous cycle (0–100)
``memory_usage``                           % of memory in use (psutil ``virtual_memory().percent``)
``disk_usage{mount, device, fstype}``      % of each real filesystem used, as ``df`` computes it
``network_receive_bytes_per_second{device}``   bytes/s received since the previous cycle
``network_transmit_bytes_per_second{device}``  bytes/s sent since the previous cycle
``active_connections``                     TCP connections in state ESTABLISHED
``load1``                                  1-minute load average
=========================================  =========================================================

Rates come from counters read one cycle apart; CPU and network have no value in the first cycle
(psutil's first CPU reading is meaningless, and a rate needs two readings) — they are absent then,
never stored as 0. A counter that goes down was reset (interface re-created): the increase since
the reset is the new reading itself, as Prometheus's ``rate`` treats a counter reset.
``active_connections`` is absent, with one logged reason, where the OS forbids reading sockets.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from opscope.config import SystemConfig
from opscope.monitor.collectors.base import TargetHealth
from opscope.store import Batch, LabelSet, label_set

log = logging.getLogger(__name__)


def cpu_busy_percent(previous: Any, current: Any) -> float:
    """% of CPU time spent busy between two ``psutil.cpu_times()`` readings.

    Same formula as psutil's ``cpu_percent``: busy = total − idle − iowait, where on Linux the
    guest times are already counted in user/nice and are removed from the total.
    Returns 0.0 when no time passed or the counters went backwards.
    """

    def total(t: Any) -> float:
        return float(sum(t)) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)

    def busy(t: Any) -> float:
        return total(t) - float(t.idle) - float(getattr(t, "iowait", 0.0))

    busy_delta = busy(current) - busy(previous)
    all_delta = total(current) - total(previous)
    if busy_delta <= 0 or all_delta <= 0:
        return 0.0
    return min(100.0, busy_delta / all_delta * 100.0)


def counter_rate(previous: float, current: float, seconds: float) -> float:
    """Per-second increase of a counter between two readings ``seconds`` apart.

    A decrease means the counter was reset, so the increase is ``current`` (Prometheus's rule).
    """
    if seconds <= 0:
        return 0.0
    increase = current - previous if current >= previous else current
    return increase / seconds


_PROC_NET = Path("/proc/net")
#: ``st`` column value of an ESTABLISHED socket in /proc/net/tcp (``TCP_ESTABLISHED`` = 1).
_TCP_ESTABLISHED = "01"


def established_from_proc(proc_net: Path) -> int:
    """Count ESTABLISHED TCP sockets (IPv4 and IPv6) from Linux's ``/proc/net/tcp{,6}`` tables.

    Reading the tables directly avoids psutil's walk over every process's file descriptors
    (which maps sockets to processes, unneeded for a count). Column 4 (``st``) is the state.
    """
    count = 0
    for name in ("tcp", "tcp6"):
        try:
            with (proc_net / name).open() as table:
                next(table, None)  # header
                count += sum(1 for row in table if row.split(None, 4)[3] == _TCP_ESTABLISHED)
        except FileNotFoundError:  # no IPv6 in this kernel
            continue
    return count


@dataclass(frozen=True)
class _Reading:
    at: float
    cpu: Any
    net: dict[str, tuple[int, int]]


class SystemCollector:
    """Collects this machine's metrics each cycle (psutil calls run in a worker thread)."""

    def __init__(
        self,
        *,
        config: SystemConfig,
        interval: float,
        resolve: Callable[[str, LabelSet], int],
        hostname: str | None = None,
    ) -> None:
        self._config = config
        self._interval = interval
        self._resolve = resolve
        self.hostname = hostname or socket.gethostname()
        self._base = {"job": "system", "instance": self.hostname}
        self.group = "system"
        self.health = TargetHealth(
            kind="system",
            job="system",
            instance=self.hostname,
            url="psutil://localhost",
            interval=interval,
            labels=dict(self._base),
        )
        self._previous: _Reading | None = None
        self._ids: dict[tuple[str, LabelSet], int] = {}
        self._fs_excluded = frozenset(config.exclude_fs_types)
        self._mount_excluded = re.compile(config.exclude_mount_points)
        self._net_excluded = re.compile(config.exclude_network_devices)
        self._connections_denied = False
        #: The latest value of each series, by metric name then label set (for the live status).
        self.latest: dict[str, dict[LabelSet, float]] = {}

    @property
    def interval(self) -> float:
        """Seconds between cycles."""
        return self._interval

    async def aclose(self) -> None:
        """Nothing to release."""

    def _series(self, name: str, **labels: str) -> tuple[int, str, LabelSet]:
        key = (name, label_set({**self._base, **labels}))
        found = self._ids.get(key)
        if found is None:
            found = self._ids[key] = self._resolve(*key)
        return found, name, key[1]

    def sample(self) -> list[tuple[str, dict[str, str], float]]:
        """Read the machine once: ``(name, extra labels, value)`` for every series of this cycle."""
        out: list[tuple[str, dict[str, str], float]] = []
        now = time.monotonic()
        cpu = psutil.cpu_times()
        net = {
            device: (c.bytes_recv, c.bytes_sent)
            for device, c in psutil.net_io_counters(pernic=True, nowrap=True).items()
            if not self._net_excluded.search(device)
        }
        reading = _Reading(now, cpu, net)
        previous, self._previous = self._previous, reading
        if previous is not None:
            out.append(("cpu_usage", {}, cpu_busy_percent(previous.cpu, cpu)))
            seconds = now - previous.at
            for device, (rx, tx) in net.items():
                before = previous.net.get(device)
                if before is None:
                    continue
                labels = {"device": device}
                out.append(
                    (
                        "network_receive_bytes_per_second",
                        labels,
                        counter_rate(before[0], rx, seconds),
                    )
                )
                out.append(
                    (
                        "network_transmit_bytes_per_second",
                        labels,
                        counter_rate(before[1], tx, seconds),
                    )
                )
        out.append(("memory_usage", {}, float(psutil.virtual_memory().percent)))
        for mount, device, fstype in self._filesystems():
            try:
                usage = psutil.disk_usage(mount)
            except OSError as exc:
                log.debug("disk_usage of %s unavailable: %s", mount, exc)
                continue
            out.append(
                (
                    "disk_usage",
                    {"mount": mount, "device": device, "fstype": fstype},
                    float(usage.percent),
                )
            )
        connections = self._established_connections()
        if connections is not None:
            out.append(("active_connections", {}, float(connections)))
        out.append(("load1", {}, float(os.getloadavg()[0])))
        return out

    def _filesystems(self) -> list[tuple[str, str, str]]:
        seen_devices: set[str] = set()
        found = []
        for part in sorted(psutil.disk_partitions(all=True), key=lambda p: len(p.mountpoint)):
            root_overlay = part.fstype == "overlay" and part.mountpoint == "/"
            if part.fstype in self._fs_excluded and not root_overlay:
                continue
            if self._mount_excluded.search(part.mountpoint) or part.device in seen_devices:
                continue
            seen_devices.add(part.device)
            found.append((part.mountpoint, part.device, part.fstype))
        return found

    def _established_connections(self) -> int | None:
        if self._connections_denied:
            return None
        if _PROC_NET.is_dir():
            return established_from_proc(_PROC_NET)
        try:
            return sum(
                1 for c in psutil.net_connections(kind="tcp") if c.status == psutil.CONN_ESTABLISHED
            )
        except (psutil.AccessDenied, PermissionError) as exc:
            self._connections_denied = True
            log.warning(
                "active_connections is not collected: the OS denies reading sockets (%s)", exc
            )
            return None

    async def collect(self, now: float) -> list[Batch]:
        """Read the machine once, stamped ``now``."""
        started = time.perf_counter()
        readings = await asyncio.to_thread(self.sample)
        ids = []
        values = []
        latest: dict[str, dict[LabelSet, float]] = {}
        for name, labels, value in readings:
            series_id, _, label_key = self._series(name, **labels)
            ids.append(series_id)
            values.append(value)
            latest.setdefault(name, {})[label_key] = value
        self.latest = latest
        self.health.record(
            ok=True, at=now, duration=time.perf_counter() - started, samples=len(ids)
        )
        return [
            Batch(
                self.group,
                int(now * 1000),
                np.array(ids, dtype=np.int64),
                np.array(values, dtype=np.float64),
            )
        ]
