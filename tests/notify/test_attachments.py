"""Files sent with messages: apprise JSON webhooks to a real HTTP server, missing files, Slack."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from opscope.config import parse_config
from opscope.notify.channels import AppriseChannel, DeliveryError, WebhookChannel
from tests.conftest import LocalHTTPServer, Route


def channel_config(text: str):  # type: ignore[no-untyped-def]
    return parse_config(
        f"notify:\n  channels:\n    c: {text}\n", environ={}
    ).config.notify.channels["c"]


async def test_apprise_json_webhook_carries_the_file(
    http_server: LocalHTTPServer, tmp_path: Path
) -> None:
    http_server.routes["/in"] = Route(status=200)
    report = tmp_path / "sales_performance-2026-W13.pdf"
    report.write_bytes(b"%PDF-1.7\n" + bytes(range(256)))
    channel = AppriseChannel("c", channel_config(f"'json://127.0.0.1:{http_server.port}/in'"))
    await channel.send(title="t", body="b", payload={}, key="k", attachments=[report])
    ((_, _, _, body),) = [r for r in http_server.requests if r[1] == "/in"]
    (attached,) = json.loads(body)["attachments"]
    assert attached["filename"] == report.name
    assert attached["mimetype"] == "application/pdf"
    assert base64.b64decode(attached["base64"]) == report.read_bytes()


async def test_a_missing_attachment_fails_for_good(tmp_path: Path) -> None:
    apprise_channel = AppriseChannel("c", channel_config("'json://127.0.0.1:9/in'"))
    with pytest.raises(DeliveryError) as caught:
        await apprise_channel.send(
            title="t", body="b", payload={}, key="k", attachments=[tmp_path / "gone.pdf"]
        )
    assert caught.value.permanent and "gone.pdf" in str(caught.value)
    webhook = WebhookChannel("c", channel_config("{webhook: 'http://127.0.0.1:9/in'}"))
    with pytest.raises(DeliveryError) as caught:
        await webhook.send(
            title="t", body="b", payload={}, key="k", attachments=[tmp_path / "gone.pdf"]
        )
    assert caught.value.permanent


def test_slack_channels_are_accepted_but_cannot_be_reached_offline() -> None:
    # Slack is reached only on the internet: this checks that apprise takes the webhook URL
    # form a report delivery uses (the message carries links; webhooks take no files).
    channel = AppriseChannel(
        "c", channel_config("'slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ'")
    )
    assert channel.name == "c"
