"""Delivery transports: apprise URLs and the native Alertmanager-compatible webhook.

A channel's ``send`` either returns (delivered) or raises :class:`DeliveryError`, which says
whether the failure is *permanent* (not retried: an HTTP 4xx other than 429 from the webhook)
or temporary (retried with backoff: timeouts, refused connections, 5xx, 429, and every apprise
failure — apprise does not report which kind it was).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from typing import Any, Protocol

import apprise
import httpx

from opscope import __version__
from opscope.config.notify import ChannelConfig
from opscope.errors import OpscopeError

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Opscope-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"


class DeliveryError(OpscopeError):
    """A delivery attempt failed; ``permanent`` failures are not retried."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        self.permanent = permanent
        super().__init__(message)


class Channel(Protocol):
    """A place notifications are delivered to."""

    name: str
    send_resolved: bool

    async def send(self, *, title: str, body: str, payload: dict[str, Any], key: str) -> None:
        """Deliver one notification; raise :class:`DeliveryError` when it was not delivered."""


def signature(secret: str, body: bytes) -> str:
    """The webhook signature header value: ``sha256=`` + HMAC-SHA256(secret, body) in hex."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookChannel:
    """POSTs Alertmanager's version 4 payload as JSON."""

    def __init__(self, name: str, config: ChannelConfig) -> None:
        assert config.webhook is not None
        self.name = name
        self.url = config.webhook
        self.secret = config.secret
        self.send_resolved = config.send_resolved
        self.timeout = config.timeout.total_seconds()

    async def send(self, *, title: str, body: str, payload: dict[str, Any], key: str) -> None:
        """POST the payload; 2xx is delivered, 4xx (not 429) permanent, the rest temporary."""
        data = json.dumps(payload, separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"opscope/{__version__}",
            IDEMPOTENCY_HEADER: key,
        }
        if self.secret:
            headers[SIGNATURE_HEADER] = signature(self.secret, data)
        try:
            async with httpx.AsyncClient(timeout=self.timeout, trust_env=False) as client:
                response = await client.post(self.url, content=data, headers=headers)
        except (httpx.HTTPError, OSError) as exc:
            raise DeliveryError(f"POST {self.url}: {exc.__class__.__name__}: {exc}") from exc
        if response.is_success:
            return
        detail = f"POST {self.url}: HTTP {response.status_code} {response.text[:200]!r}"
        permanent = 400 <= response.status_code < 500 and response.status_code != 429
        raise DeliveryError(detail, permanent=permanent)


class AppriseChannel:
    """Delivers through apprise (email, Slack, SMS, JSON/form webhooks, …)."""

    def __init__(self, name: str, config: ChannelConfig) -> None:
        assert config.url is not None
        self.name = name
        self.send_resolved = config.send_resolved
        self.timeout = config.timeout.total_seconds()
        self._apprise = apprise.Apprise()
        if not self._apprise.add(config.url):
            raise OpscopeError(f"channel {name}: apprise does not accept this URL")

    async def send(self, *, title: str, body: str, payload: dict[str, Any], key: str) -> None:
        """Notify through apprise in a worker thread, within the channel's timeout."""
        try:
            async with asyncio.timeout(self.timeout + 5):
                result = await asyncio.to_thread(self._notify, title, body)
        except TimeoutError as exc:
            raise DeliveryError(f"{self.name}: no answer within {self.timeout:g}s") from exc
        if not result:
            raise DeliveryError(f"{self.name}: apprise could not deliver (see the log)")

    def _notify(self, title: str, body: str) -> bool:
        return bool(
            self._apprise.notify(
                body=body, title=title, body_format=apprise.NotifyFormat.TEXT, timeout=self.timeout
            )
        )


def build_channels(configs: dict[str, ChannelConfig]) -> dict[str, Channel]:
    """A channel object per configured channel."""
    channels: dict[str, Channel] = {}
    for name, config in configs.items():
        channels[name] = (
            WebhookChannel(name, config)
            if config.webhook is not None
            else AppriseChannel(name, config)
        )
    return channels
