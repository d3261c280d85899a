"""Routing, grouping, deduplication, silences and inhibition (Alertmanager's rules), with
injected times and channels that record what they would send (opscope's own seam)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from opscope.config import parse_config
from opscope.notify.dispatching import Dispatcher, LogEntry, needs_update
from opscope.notify.messages import NotifyAlert
from opscope.notify.outbox import Delivery
from opscope.store import Store


class Recorder:
    """A channel that records the notifications it receives instead of sending them."""

    def __init__(self, name: str, send_resolved: bool = True) -> None:
        self.name = name
        self.send_resolved = send_resolved
        self.received: list[dict[str, Any]] = []

    async def send(self, *, title: str, body: str, payload: dict[str, Any], key: str) -> None:
        self.received.append(payload)


NOTIFY = """
notify:
  channels:
    email: {url: "mailto://127.0.0.1:1?from=a@example.com&to=b@example.com"}
    hook: {webhook: "http://127.0.0.1:1/hook", send_resolved: false}
  group_wait: 30s
  group_interval: 5m
  repeat_interval: 4h
  routes:
    - matchers: ['severity="critical"']
      channels: [email, hook]
      group_by: [alertname, service]
    - match: {team: data}
      channels: [email]
      continue: true
    - match: {team: data}
      channels: [hook]
  channels_default: [email]
  inhibit:
    - source_matchers: ['severity="critical"']
      target_matchers: ['severity="warning"']
      equal: [service]
"""


@pytest.fixture
def dispatcher(tmp_path: Path) -> Iterator[Dispatcher]:
    config = parse_config(NOTIFY, environ={}).config.notify
    with Store.open(tmp_path) as store:
        yield Dispatcher(
            config, store, channels={"email": Recorder("email"), "hook": Recorder("hook", False)}
        )


def alert(
    name: str, *, starts: float = 0.0, ends: float | None = None, **labels: str
) -> NotifyAlert:
    return NotifyAlert(
        tuple(sorted({"alertname": name, **labels}.items())),
        (("summary", f"{name} summary"),),
        starts,
        ends,
    )


def flush(dispatcher: Dispatcher, now: float) -> list[Delivery]:
    """Flush the due groups and deliver what they queued, as the notifier's workers do."""
    queued = dispatcher.flush_due(now=now)
    for channel in dispatcher.channels.values():
        asyncio.run(dispatcher.outbox.deliver_due(channel, now))
    return queued


def recorders() -> dict[str, Any]:
    return {"email": Recorder("email"), "hook": Recorder("hook", send_resolved=False)}


def sent(queued: list[Any]) -> list[tuple[str, str, list[str]]]:
    return sorted(
        (
            d.channel,
            d.status,
            sorted(a["labels"]["alertname"] + ":" + a["status"] for a in d.payload["alerts"]),
        )
        for d in queued
    )


def test_needs_update_is_alertmanagers_rule() -> None:
    a, b = frozenset({"a"}), frozenset({"b"})
    none: frozenset[str] = frozenset()
    assert needs_update(None, a, none, send_resolved=True, repeat_interval=60, now=0)
    assert not needs_update(None, none, b, send_resolved=True, repeat_interval=60, now=0)
    entry = LogEntry(a, none, at=0)
    assert needs_update(entry, a | b, none, send_resolved=True, repeat_interval=60, now=1)
    assert not needs_update(entry, a, none, send_resolved=True, repeat_interval=60, now=59)
    assert needs_update(entry, a, none, send_resolved=True, repeat_interval=60, now=60)
    assert needs_update(entry, none, a, send_resolved=False, repeat_interval=60, now=1)
    assert needs_update(entry, b - b, a, send_resolved=True, repeat_interval=60, now=1)


def test_routes_group_wait_and_continue(dispatcher: Dispatcher) -> None:
    dispatcher.receive(
        "r", [alert("DiskFull", starts=100, severity="critical", service="db")], now=100
    )
    assert flush(dispatcher, now=129) == []  # group_wait 30 s
    queued = flush(dispatcher, now=130)
    assert sent(queued) == [
        ("email", "firing", ["DiskFull:firing"]),
        ("hook", "firing", ["DiskFull:firing"]),
    ]
    assert queued[0].payload["groupLabels"] == {"alertname": "DiskFull", "service": "db"}
    assert queued[0].title == "[FIRING:1] DiskFull db (critical)"
    # continue: true sends to both data routes; no route matched → channels_default
    dispatcher.receive(
        "r", [alert("Lag", starts=200, team="data"), alert("Other", starts=200)], now=200
    )
    assert sent(flush(dispatcher, now=230)) == [
        ("email", "firing", ["Lag:firing"]),
        ("email", "firing", ["Other:firing"]),
        ("hook", "firing", ["Lag:firing"]),
    ]


def test_an_alert_that_resolves_within_group_wait_notifies_nothing(dispatcher: Dispatcher) -> None:
    firing = alert("Blip", starts=0, severity="critical", service="x")
    dispatcher.receive("r", [firing], now=0)
    resolved = alert("Blip", starts=0, ends=10, severity="critical", service="x")
    dispatcher.receive("r", [resolved], now=10)
    assert flush(dispatcher, now=30) == []
    assert dispatcher.groups == {}


def test_firing_then_resolved_once_and_send_resolved(dispatcher: Dispatcher) -> None:
    dispatcher.receive("r", [alert("Down", severity="critical", service="api")], now=0)
    assert len(flush(dispatcher, now=30)) == 2
    dispatcher.receive("r", [alert("Down", ends=100, severity="critical", service="api")], now=100)
    assert flush(dispatcher, now=200) == []  # group_interval 5 m from 30 s
    queued = flush(dispatcher, now=330)
    # the hook has send_resolved: false — it hears nothing of the resolution
    assert sent(queued) == [("email", "resolved", ["Down:resolved"])]
    assert flush(dispatcher, now=630) == []  # nothing left to say, and the group is gone


def test_repeat_interval(dispatcher: Dispatcher) -> None:
    dispatcher.receive("r", [alert("Down", severity="critical", service="api")], now=0)
    flush(dispatcher, now=30)
    for t in range(330, 4 * 3600, 300):
        assert flush(dispatcher, now=t) == []
    assert len(flush(dispatcher, now=30 + 4 * 3600)) == 2


def test_never_a_resolved_for_a_firing_never_sent(dispatcher: Dispatcher) -> None:
    dispatcher.receive("r", [alert("A", severity="critical", service="s")], now=0)
    flush(dispatcher, now=30)
    # B fires and resolves between two flushes of the same group
    dispatcher.receive(
        "r",
        [
            alert("A", severity="critical", service="s"),
            alert("B", severity="critical", service="s"),
        ],
        now=40,
    )
    dispatcher.receive(
        "r",
        [
            alert("A", severity="critical", service="s"),
            alert("B", ends=50, severity="critical", service="s"),
        ],
        now=50,
    )
    assert flush(dispatcher, now=330) == []  # only B changed, and nobody heard of it


def test_silences_mute_and_resume_at_the_next_group_interval(dispatcher: Dispatcher) -> None:
    a = alert("Down", severity="critical", service="api")
    dispatcher.receive("r", [a], now=0)
    flush(dispatcher, now=30)
    silence = dispatcher.silences.add(
        matchers=['alertname="Down"'],
        starts_at=60,
        ends_at=60 + 5 * 3600,
        created_by="ops",
        comment="maintenance",
        now=60,
    )
    # the repeat would be due at 30 s + 4 h; silenced, nothing goes out
    assert all(flush(dispatcher, now=t) == [] for t in range(330, 5 * 3600, 300))
    dispatcher.silences.expire(silence.id, now=5 * 3600)
    assert silence.state(5 * 3600) == "expired"
    # notifications resume at the group's next interval tick
    assert len(flush(dispatcher, now=5 * 3600 + 30)) == 2


def test_inhibition_mutes_warnings_of_the_same_service(dispatcher: Dispatcher) -> None:
    dispatcher.receive(
        "r",
        [
            alert("Slow", severity="warning", service="api"),
            alert("Slow", severity="warning", service="web"),
            alert("Down", severity="critical", service="api"),
        ],
        now=0,
    )
    queued = flush(dispatcher, now=30)
    warnings = [d for d in queued if d.payload["alerts"][0]["labels"]["alertname"] == "Slow"]
    assert [d.payload["alerts"][0]["labels"]["service"] for d in warnings] == ["web"]


def test_notification_log_survives_a_restart(tmp_path: Path) -> None:
    config = parse_config(NOTIFY, environ={}).config.notify
    channels = {"email": Recorder("email"), "hook": Recorder("hook", False)}
    firing = alert("Down", severity="critical", service="api")
    with Store.open(tmp_path) as store:
        first = Dispatcher(config, store, channels=channels)
        first.receive("r", [firing], now=0)
        assert len(first.flush_due(now=30)) == 2
    with Store.open(tmp_path) as store:  # after a restart the rule engine re-sends the alert
        second = Dispatcher(config, store, channels=channels)
        second.receive("r", [firing], now=100)
        assert second.flush_due(now=100) == []  # already told: no duplicate
        assert len(second.outbox.all()) == 2


def test_a_refire_after_an_unsent_resolution_is_notified(dispatcher: Dispatcher) -> None:
    # "hook" does not send resolutions; it must still hear of the alert firing again.
    labels = {"severity": "critical", "service": "db"}
    dispatcher.receive("r", [alert("Down", starts=0, **labels)], now=0)
    assert len(flush(dispatcher, now=30)) == 2
    dispatcher.receive("r", [alert("Down", starts=0, ends=100, **labels)], now=100)
    assert sent(flush(dispatcher, now=330)) == [("email", "resolved", ["Down:resolved"])]
    dispatcher.receive("r", [alert("Down", starts=400, **labels)], now=400)
    assert sent(flush(dispatcher, now=430)) == [
        ("email", "firing", ["Down:firing"]),
        ("hook", "firing", ["Down:firing"]),
    ]


def test_hovering_values_notify_at_most_once_each_way(tmp_path: Path) -> None:
    """Values hovering around a threshold every 10 s for 30 minutes, for: 1m and
    keep_firing_for: 5m: at most one firing and one resolved notification per channel."""
    import numpy as np

    from opscope.monitor.rules import RuleEngine, compile_groups
    from opscope.store import Batch, label_set

    loaded = parse_config(
        "monitor:\n  rules:\n"
        "    - {alert: Hot, expr: 'temperature > 50', for: 1m, keep_firing_for: 5m}\n" + NOTIFY,
        environ={},
    )
    with Store.open(tmp_path) as store:
        engine = RuleEngine(store, compile_groups(loaded.rule_groups))
        dispatcher = Dispatcher(
            loaded.config.notify,
            store,
            channels={"email": Recorder("email"), "hook": Recorder("hook")},
        )
        sid = store.series_id("temperature", label_set({"room": "a"}))
        queued = []
        for i in range(220):  # 30 minutes hovering, then 6+ minutes cool
            t = i * 10.0
            hovering = 51.0 if i < 12 or (i // 2) % 2 == 0 else 49.0  # 2 min hot, then 20 s runs
            value = hovering if i < 180 else 20.0
            store.append([Batch("in", int(t * 1000), np.array([sid]), np.array([value]))])
            result = engine.evaluate(engine.groups[0], t)
            alerts = [
                NotifyAlert(
                    a.labels,
                    a.annotations,
                    a.fired_at or a.active_at,
                    a.resolved_at if a.state == "inactive" else None,
                )
                for rule in result.group.rules
                for a in rule.alerts.values()
                if a.state != "pending"
            ]
            dispatcher.receive("rules", alerts, now=t)
            queued += flush(dispatcher, now=t)
    kinds = [(d.channel, d.status) for d in queued]
    assert kinds.count(("email", "firing")) == 1
    assert kinds.count(("email", "resolved")) == 1


def test_a_restart_notifies_nothing_new_until_the_repeat_interval(tmp_path: Path) -> None:
    """Alertmanager keeps its notification log across restarts: after one, a group already
    notified is notified again only when repeat_interval (4 h here) has passed."""
    config = parse_config(NOTIFY, environ={}).config.notify
    firing = alert("Down", severity="critical", service="api")
    with Store.open(tmp_path) as store:
        first = Dispatcher(config, store, channels=recorders())
        first.receive("r", [firing], now=0)
        assert len(flush(first, now=30)) == 2
    for restart in (1000.0, 2000.0):  # two restarts, each re-sent the alert by its rule
        with Store.open(tmp_path) as store:
            again = Dispatcher(config, store, channels=recorders())
            again.receive("r", [firing], now=restart)
            assert flush(again, now=restart) == []
            assert flush(again, now=restart + 300) == []
    with Store.open(tmp_path) as store:
        later = Dispatcher(config, store, channels=recorders())
        later.receive("r", [firing], now=30 + 4 * 3600)
        assert sent(flush(later, now=30 + 4 * 3600)) == [
            ("email", "firing", ["Down:firing"]),
            ("hook", "firing", ["Down:firing"]),
        ]


def test_a_resolution_during_a_restart_is_still_notified(tmp_path: Path) -> None:
    """An alert that resolved while opscope was down is reported resolved after the restart to
    the channel that was told it was firing (Alertmanager: the resolved alert meets the firing
    entry of the notification log), if it sends resolutions ("hook" does not)."""
    config = parse_config(NOTIFY, environ={}).config.notify
    labels = {"severity": "critical", "service": "api"}
    with Store.open(tmp_path) as store:
        first = Dispatcher(config, store, channels=recorders())
        first.receive("r", [alert("Down", starts=0, **labels)], now=0)
        assert len(flush(first, now=30)) == 2
    with Store.open(tmp_path) as store:
        again = Dispatcher(config, store, channels=recorders())
        # the rule engine restored the alert, found it gone and resolved it
        again.receive("r", [alert("Down", starts=0, ends=500, **labels)], now=500)
        assert sent(flush(again, now=500)) == [("email", "resolved", ["Down:resolved"])]
        again.receive("r", [alert("Down", starts=0, ends=500, **labels)], now=515)
        assert flush(again, now=800) == []  # once
        # an alert never notified anywhere stays ignored when it resolves
        again.receive("r", [alert("Other", starts=600, ends=610, **labels)], now=610)
        assert flush(again, now=1200) == []
