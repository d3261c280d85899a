"""Collectors: the system (psutil), scrape (Prometheus exposition), probe (HTTP) and SQL sources."""

from __future__ import annotations

from opscope.monitor.collectors.base import Collector, CollectorKind, TargetHealth
from opscope.monitor.collectors.probe import ProbeCollector
from opscope.monitor.collectors.scrape import SYNTHETIC_SERIES, ScrapeCollector
from opscope.monitor.collectors.sql import SqlCollector, SqlEngines
from opscope.monitor.collectors.system import SystemCollector

__all__ = [
    "SYNTHETIC_SERIES",
    "Collector",
    "CollectorKind",
    "ProbeCollector",
    "ScrapeCollector",
    "SqlCollector",
    "SqlEngines",
    "SystemCollector",
    "TargetHealth",
]
