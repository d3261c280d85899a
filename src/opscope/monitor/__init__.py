"""Monitoring: collectors (system, scrape, probe) feeding the store, run by :class:`Monitor`."""

from __future__ import annotations

from opscope.monitor.running import Monitor

__all__ = ["Monitor"]
