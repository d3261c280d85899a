"""What a notification says: alerts as notifiers see them, the message text and the payload.

An alert reaches the notification layer as a :class:`NotifyAlert` — labels, annotations, start,
and end once resolved — whatever produced it (alerting rules; later, report failures). The
webhook payload is Alertmanager's version 4 payload, so existing Alertmanager receivers work;
the subject line follows Alertmanager's default ``__subject`` template.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

Status = Literal["firing", "resolved"]
Labels = tuple[tuple[str, str], ...]
#: Alertmanager's zero time, the ``endsAt`` of a firing alert.
ZERO_TIME = "0001-01-01T00:00:00Z"


def rfc3339(seconds: float) -> str:
    """Unix seconds as RFC 3339 in UTC (``2026-11-29T10:00:00Z``)."""
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class NotifyAlert:
    """An alert to notify about. ``ends_at`` is set (Unix seconds) once it is resolved."""

    labels: Labels
    annotations: Labels
    starts_at: float
    ends_at: float | None = None
    generator_url: str = ""

    @property
    def status(self) -> Status:
        """``firing`` until ``ends_at`` is set."""
        return "firing" if self.ends_at is None else "resolved"

    @property
    def fingerprint(self) -> str:
        """A stable id of the label set (16 hex digits)."""
        text = "\x00".join(f"{k}\x01{v}" for k, v in self.labels)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def label(self, name: str) -> str:
        """The value of one label (``""`` when absent)."""
        return dict(self.labels).get(name, "")


def _common(items: list[Labels]) -> dict[str, str]:
    if not items:
        return {}
    common = dict(items[0])
    for labels in items[1:]:
        other = dict(labels)
        common = {k: v for k, v in common.items() if other.get(k) == v}
    return common


def idempotency_key(channel: str, group_key: str, alerts: list[NotifyAlert]) -> str:
    """The key that identifies one notification (channel, group, alerts and their status):
    a receiver seeing it twice knows the second is a duplicate."""
    parts = [channel, group_key, *sorted(f"{a.fingerprint}:{a.status}" for a in alerts)]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def webhook_payload(
    *,
    channel: str,
    group_key: str,
    group_labels: dict[str, str],
    alerts: list[NotifyAlert],
    external_url: str,
    key: str,
) -> dict[str, Any]:
    """Alertmanager's version 4 webhook payload (plus ``idempotencyKey``)."""
    firing = any(a.status == "firing" for a in alerts)
    return {
        "version": "4",
        "groupKey": group_key,
        "truncatedAlerts": 0,
        "status": "firing" if firing else "resolved",
        "receiver": channel,
        "groupLabels": group_labels,
        "commonLabels": _common([a.labels for a in alerts]),
        "commonAnnotations": _common([a.annotations for a in alerts]),
        "externalURL": external_url,
        "idempotencyKey": key,
        "alerts": [
            {
                "status": a.status,
                "labels": dict(a.labels),
                "annotations": dict(a.annotations),
                "startsAt": rfc3339(a.starts_at),
                "endsAt": rfc3339(a.ends_at) if a.ends_at is not None else ZERO_TIME,
                "generatorURL": a.generator_url,
                "fingerprint": a.fingerprint,
            }
            for a in alerts
        ],
    }


def subject(payload: dict[str, Any]) -> str:
    """Alertmanager's default subject: ``[FIRING:2] HighCPU (warning web1)``."""
    firing = sum(1 for a in payload["alerts"] if a["status"] == "firing")
    status = payload["status"].upper() + (f":{firing}" if payload["status"] == "firing" else "")
    group = payload["groupLabels"]
    text = f"[{status}] " + " ".join(group[k] for k in sorted(group))
    extra = {k: v for k, v in payload["commonLabels"].items() if k not in group}
    if extra:
        text += " (" + " ".join(extra[k] for k in sorted(extra)) + ")"
    return text.strip()


def body(payload: dict[str, Any]) -> str:
    """A plain-text message listing every alert with its labels and annotations."""
    lines: list[str] = []
    for status in ("firing", "resolved"):
        alerts = [a for a in payload["alerts"] if a["status"] == status]
        if not alerts:
            continue
        lines.append(f"{status.capitalize()} ({len(alerts)}):")
        for alert in alerts:
            annotations = alert["annotations"]
            headline = annotations.get("summary") or alert["labels"].get("alertname", "alert")
            lines.append(f"- {headline}")
            labels = ", ".join(f"{k}={v}" for k, v in sorted(alert["labels"].items()))
            lines.append(f"  labels: {labels}")
            for name, text in sorted(annotations.items()):
                if name != "summary":
                    lines.append(f"  {name}: {text}")
            lines.append(
                f"  since: {alert['startsAt']}"
                + (f", resolved: {alert['endsAt']}" if status == "resolved" else "")
            )
    if payload.get("externalURL"):
        lines.append(f"\n{payload['externalURL']}")
    lines.append(f"\nnotification {payload['idempotencyKey']}")
    return "\n".join(lines)
