"""Notifications: routing, grouping, silences, inhibition and durable delivery (apprise and an
Alertmanager-compatible webhook). Used by alerting and, later, by report delivery."""

from __future__ import annotations

from opscope.notify.messages import NotifyAlert
from opscope.notify.running import Notifier

__all__ = ["Notifier", "NotifyAlert"]
