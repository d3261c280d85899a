"""Durable delivery to real servers on loopback: retries, permanent failures, outages."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from opscope.config import parse_config
from opscope.notify.channels import AppriseChannel, WebhookChannel
from opscope.notify.dispatching import Dispatcher
from opscope.notify.messages import NotifyAlert
from opscope.notify.outbox import Delivery, Outbox
from opscope.store import Store
from tests.conftest import LocalHTTPServer, Route, SMTPServer


def channels_config(text: str):  # type: ignore[no-untyped-def]
    return parse_config(f"notify:\n  channels:\n{text}", environ={}).config.notify


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path) as s:
        yield s


def queue(outbox: Outbox, channel: str, now: float, n: int = 1) -> Delivery:
    payload = {"version": "4", "status": "firing", "alerts": [{"labels": {"n": str(n)}}]}
    delivery = outbox.new(
        key=f"key-{channel}-{n}",
        channel=channel,
        group_key="g",
        status="firing",
        title=f"[FIRING:1] test {n}",
        body=f"body {n}",
        payload=payload,
        now=now,
    )
    outbox.store.put_state(Outbox.documents([delivery]), at=now)
    return delivery


async def test_webhook_500_is_retried_with_growing_delays(
    http_server: LocalHTTPServer, store: Store
) -> None:
    http_server.routes["/hook"] = Route(statuses=[500, 500, 503, 200])
    config = channels_config(f"    hook: {{webhook: '{http_server.url}/hook', secret: 's3cret'}}\n")
    retry = config.retry.model_copy(update={})
    outbox = Outbox(store, retry, rng=random.Random(7))
    channel = WebhookChannel("hook", config.channels["hook"])
    queue(outbox, "hook", now=0)
    now, waits = 0.0, []
    while outbox.next_due("hook") is not None:
        now = outbox.next_due("hook") or now
        await outbox.deliver_due(channel, now)
        after = outbox.next_due("hook")
        if after is not None:
            waits.append(after - now)
    (delivery,) = outbox.all()
    assert delivery.state == "delivered" and delivery.attempts == 4
    # initial 5 s, doubling, ±20 % jitter
    assert [round(w / base, 1) for w, base in zip(waits, (5, 10, 20), strict=True)] == [
        pytest.approx(x, abs=0.21) for x in (1, 1, 1)
    ]
    assert waits[0] < waits[1] < waits[2]
    requests = [r for r in http_server.requests if r[1] == "/hook"]
    assert len(requests) == 4
    keys = {headers["Idempotency-Key"] for _, _, headers, _ in requests}
    assert keys == {"key-hook-1"}  # one notification, recognisable as such
    _, _, headers, body = requests[-1]
    expected = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert headers["X-Opscope-Signature"] == expected
    assert json.loads(body)["version"] == "4"


async def test_webhook_400_is_not_retried(http_server: LocalHTTPServer, store: Store) -> None:
    http_server.routes["/hook"] = Route(status=400, body=b'{"error": "bad payload"}')
    config = channels_config(f"    hook: {{webhook: '{http_server.url}/hook'}}\n")
    outbox = Outbox(store, config.retry)
    channel = WebhookChannel("hook", config.channels["hook"])
    queue(outbox, "hook", now=0)
    await outbox.deliver_due(channel, now=0)
    for t in (10, 100, 1000, 10_000):
        assert await outbox.deliver_due(channel, now=t) == 0
    (delivery,) = outbox.all()
    assert (delivery.state, delivery.attempts) == ("failed", 1)
    assert "HTTP 400" in delivery.last_error and "bad payload" in delivery.last_error
    assert http_server.hits["/hook"] == 1


async def test_smtp_down_three_minutes_email_arrives_once_others_keep_going(
    http_server: LocalHTTPServer, smtp_server: SMTPServer, store: Store
) -> None:
    http_server.routes["/hook"] = Route(status=200)
    config = channels_config(
        f"    email: '{smtp_server.url}'\n    hook: {{webhook: '{http_server.url}/hook'}}\n"
    )
    outbox = Outbox(store, config.retry, rng=random.Random(1))
    email = AppriseChannel("email", config.channels["email"])
    hook = WebhookChannel("hook", config.channels["hook"])
    smtp_server.stop()
    queue(outbox, "email", now=0)
    queue(outbox, "hook", now=0)
    await outbox.deliver_due(email, now=0)
    await outbox.deliver_due(hook, now=0)
    now = 0.0
    while now < 180:  # three minutes of outage, retried as scheduled
        now = min(outbox.next_due("email") or 180, 180)
        if now == 60:
            queue(outbox, "hook", now=60, n=2)  # another alert meanwhile
        await outbox.deliver_due(email, now)
        await outbox.deliver_due(hook, now)
    assert smtp_server.messages == []
    assert http_server.hits["/hook"] >= 1
    smtp_server.start()
    await outbox.deliver_due(email, now=max(now, outbox.next_due("email") or now))
    assert len(smtp_server.messages) == 1
    assert b"Subject: [FIRING:1] test 1" in smtp_server.messages[0]
    by_channel = {(d.channel, d.state) for d in outbox.all()}
    assert by_channel == {("email", "delivered"), ("hook", "delivered")}
    email_delivery = next(d for d in outbox.all() if d.channel == "email")
    assert email_delivery.attempts > 2


async def test_undeliverable_notifications_expire(store: Store) -> None:
    config = parse_config(
        "notify:\n  retry: {initial: 1s, max: 2s, give_up_after: 10s}\n"
        "  channels:\n    hook: {webhook: 'http://127.0.0.1:9/hook', timeout: 1s}\n",
        environ={},
    ).config.notify
    outbox = Outbox(store, config.retry)
    channel = WebhookChannel("hook", config.channels["hook"])
    queue(outbox, "hook", now=0)
    # Attempts back off up to 2s ±20%: the first one due after give_up_after (10s) comes by
    # 10 + 2.4 s at the latest (the loop looks at whole seconds, up to 13), and expires the
    # notification instead of sending it.
    for t in range(0, 14):
        await outbox.deliver_due(channel, now=float(t))
    (delivery,) = outbox.all()
    assert delivery.state == "expired"
    assert "connect" in delivery.last_error.lower() or "refused" in delivery.last_error.lower()


async def test_apprise_json_webhooks_deliver(http_server: LocalHTTPServer, store: Store) -> None:
    http_server.routes["/apprise"] = Route(status=200)
    config = channels_config(f"    j: 'json://127.0.0.1:{http_server.port}/apprise'\n")
    outbox = Outbox(store, config.retry)
    channel = AppriseChannel("j", config.channels["j"])
    queue(outbox, "j", now=0)
    await outbox.deliver_due(channel, now=0)
    (delivery,) = outbox.all()
    assert delivery.state == "delivered"
    (_, path, _, body) = http_server.requests[-1]
    assert path == "/apprise"
    sent = json.loads(body)  # apprise's JSON: title and message
    assert sent["title"] == "[FIRING:1] test 1" and sent["message"] == "body 1"


# --- a channel hears the group's current state, never an older one after a newer one ---------

HOOKS = """
notify:
  group_wait: 0s
  group_interval: 1s
  channels:
    ok: {{webhook: '{url}/ok'}}
    bad: {{webhook: '{url}/bad'}}
  channels_default: [{channels}]
"""


def hook_dispatcher(store: Store, url: str, channels: str = "bad") -> Dispatcher:
    config = parse_config(HOOKS.format(url=url, channels=channels), environ={}).config.notify
    return Dispatcher(config, store, outbox=Outbox(store, config.retry, rng=random.Random(3)))


def down(*, starts: float = 0.0, ends: float | None = None, name: str = "a") -> NotifyAlert:
    return NotifyAlert((("alertname", "Down"), ("instance", name)), (), starts, ends)


async def deliver(dispatcher: Dispatcher, now: float) -> None:
    for channel in dispatcher.channels.values():
        await dispatcher.outbox.deliver_due(channel, now)


def received(http_server: LocalHTTPServer, path: str) -> list[list[tuple[str, str]]]:
    """What the receiver got on ``path``, request by request: (instance, status) per alert."""
    return [
        [(a["labels"]["instance"], a["status"]) for a in json.loads(body)["alerts"]]
        for _, p, _, body in http_server.requests
        if p == path
    ]


async def test_a_retried_firing_is_never_delivered_after_the_group_resolved(
    http_server: LocalHTTPServer, store: Store
) -> None:
    http_server.routes["/bad"] = Route(statuses=[500, 200])
    dispatcher = hook_dispatcher(store, http_server.url)
    dispatcher.receive("rules", [down()], now=0)
    dispatcher.flush_due(now=0)
    await deliver(dispatcher, now=0)  # 500: retried in about 5 s
    dispatcher.receive("rules", [down(ends=2)], now=2)
    # The group's current state is "resolved", and the channel never received the firing
    # notification: Alertmanager sends it nothing, and the old firing must not arrive late.
    assert dispatcher.flush_due(now=2) == []
    for t in (10, 100, 1000):
        await deliver(dispatcher, now=t)
    assert received(http_server, "/bad") == [[("a", "firing")]]  # the failed attempt only
    (firing,) = dispatcher.outbox.all()
    assert (firing.state, firing.attempts) == ("superseded", 1)
    assert firing.last_error.startswith("superseded")


async def test_a_newer_notification_replaces_the_undelivered_one(
    http_server: LocalHTTPServer, store: Store
) -> None:
    http_server.routes["/bad"] = Route(statuses=[500, 200])
    dispatcher = hook_dispatcher(store, http_server.url)
    dispatcher.receive("rules", [down(name="a")], now=0)
    dispatcher.flush_due(now=0)
    await deliver(dispatcher, now=0)  # 500
    dispatcher.receive("rules", [down(name="a"), down(name="b", starts=2)], now=2)
    (newer,) = dispatcher.flush_due(now=2)
    for t in (2, 10, 100, 1000):
        await deliver(dispatcher, now=t)
    assert received(http_server, "/bad") == [
        [("a", "firing")],  # the attempt that failed
        [("a", "firing"), ("b", "firing")],  # then only the group's current state
    ]
    states = {d.id: d.state for d in dispatcher.outbox.all()}
    assert states.pop(newer.id) == "delivered"
    assert list(states.values()) == ["superseded"]


async def test_a_pending_resolution_is_replaced_by_a_new_firing(
    http_server: LocalHTTPServer, store: Store
) -> None:
    http_server.routes["/bad"] = Route(statuses=[200, 500, 200])
    dispatcher = hook_dispatcher(store, http_server.url)
    dispatcher.receive("rules", [down(starts=0)], now=0)
    dispatcher.flush_due(now=0)
    await deliver(dispatcher, now=0)  # firing delivered
    dispatcher.receive("rules", [down(starts=0, ends=5)], now=5)
    dispatcher.flush_due(now=5)
    await deliver(dispatcher, now=5)  # resolved: 500, retried later
    dispatcher.receive("rules", [down(starts=6)], now=6)  # firing again, a new alert
    dispatcher.flush_due(now=6)
    for t in (6, 100, 1000):
        await deliver(dispatcher, now=t)
    assert received(http_server, "/bad") == [
        [("a", "firing")],
        [("a", "resolved")],  # failed
        [("a", "firing")],  # the current state; the stale resolution never follows it
    ]


async def test_an_older_notification_is_not_sent_after_a_newer_one_was(
    http_server: LocalHTTPServer, store: Store
) -> None:
    http_server.routes["/hook"] = Route(status=200)
    config = channels_config(f"    hook: {{webhook: '{http_server.url}/hook'}}\n")
    outbox = Outbox(store, config.retry)
    channel = WebhookChannel("hook", config.channels["hook"])
    older = queue(outbox, "hook", now=0, n=1)
    older.next_attempt = 50.0  # waiting for a retry
    outbox.store.put_state(Outbox.documents([older]), at=0)
    queue(outbox, "hook", now=10, n=2)  # the same group (g), queued later
    await outbox.deliver_due(channel, now=10)
    await outbox.deliver_due(channel, now=50)
    assert http_server.hits["/hook"] == 1
    states = {d.key: d.state for d in outbox.all()}
    assert states == {"key-hook-1": "superseded", "key-hook-2": "delivered"}


async def test_no_resolution_where_the_firing_notification_failed(
    http_server: LocalHTTPServer, store: Store
) -> None:
    http_server.routes["/ok"] = Route(status=200)
    http_server.routes["/bad"] = Route(status=400, body=b"rejected")
    dispatcher = hook_dispatcher(store, http_server.url, channels="ok, bad")
    dispatcher.receive("rules", [down(starts=0)], now=0)
    dispatcher.flush_due(now=0)
    await deliver(dispatcher, now=0)
    dispatcher.receive("rules", [down(starts=0, ends=60)], now=60)
    dispatcher.flush_due(now=60)
    for t in (60, 1000):
        await deliver(dispatcher, now=t)
    # Alertmanager logs a notification only once it succeeded; a resolution goes only to
    # channels that received the firing notification.
    assert received(http_server, "/ok") == [[("a", "firing")], [("a", "resolved")]]
    assert received(http_server, "/bad") == [[("a", "firing")]]


async def test_emails_keep_the_lines_of_the_message(smtp_server: SMTPServer, store: Store) -> None:
    import email

    config = channels_config(f"    email: '{smtp_server.url}'\n")
    channel = AppriseChannel("email", config.channels["email"])
    text = "Firing (1):\n- CPU at 93% on web1\n  labels: alertname=HighCPU, instance=web1\n"
    await channel.send(title="[FIRING:1] HighCPU", body=text, payload={}, key="k")
    (raw,) = smtp_server.messages
    message = email.message_from_bytes(raw)
    plain = [p for p in message.walk() if p.get_content_type() == "text/plain"]
    assert len(plain) == 1
    received = plain[0].get_payload(decode=True).decode().replace("\r\n", "\n")
    assert received.splitlines() == text.splitlines()
