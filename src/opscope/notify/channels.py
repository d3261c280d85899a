"""Delivery transports: apprise URLs and the native Alertmanager-compatible webhook.

A channel's ``send`` either returns (delivered) or raises :class:`DeliveryError`, which says
whether the failure is *permanent* (not retried: an HTTP 4xx other than 429 from the webhook)
or temporary (retried with backoff: timeouts, refused connections, 5xx, 429, and every apprise
failure — apprise does not report which kind it was).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import mimetypes
from collections.abc import Sequence
from pathlib import Path
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

    async def send(
        self,
        *,
        title: str,
        body: str,
        payload: dict[str, Any],
        key: str,
        attachments: Sequence[Path] = (),
    ) -> None:
        """Deliver one notification (with files, for channels that take them); raise
        :class:`DeliveryError` when it was not delivered."""


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

    async def send(
        self,
        *,
        title: str,
        body: str,
        payload: dict[str, Any],
        key: str,
        attachments: Sequence[Path] = (),
    ) -> None:
        """POST the payload; 2xx is delivered, 4xx (not 429) permanent, the rest temporary.

        ``attachments`` go in the body as ``attachments``: a list of ``{"filename",
        "contentType", "size", "sha256", "content"}`` with the bytes in base64 (RFC 4648), the
        shape apprise's JSON webhooks use. A file that cannot be read is a permanent failure.
        """
        if attachments:
            inlined = await asyncio.to_thread(lambda: [_inline(path) for path in attachments])
            payload = {**payload, "attachments": inlined}
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

    async def send(
        self,
        *,
        title: str,
        body: str,
        payload: dict[str, Any],
        key: str,
        attachments: Sequence[Path] = (),
    ) -> None:
        """Notify through apprise in a worker thread, within the channel's timeout.

        ``attachments`` are handed to apprise (``attach=``): email sends them as MIME parts,
        JSON webhooks inline them, Slack uploads them in bot mode (its webhooks take none, so
        the body should carry links); services without file support send the body alone. A
        file that is missing is a permanent failure.
        """
        for path in attachments:
            if not path.is_file():
                raise DeliveryError(f"{self.name}: attachment {path} is missing", permanent=True)
        try:
            async with asyncio.timeout(self.timeout + 5):
                result = await asyncio.to_thread(self._notify, title, body, list(attachments))
        except TimeoutError as exc:
            raise DeliveryError(f"{self.name}: no answer within {self.timeout:g}s") from exc
        if not result:
            raise DeliveryError(f"{self.name}: apprise could not deliver (see the log)")

    def _notify(self, title: str, body: str, attachments: list[Path]) -> bool:
        attach = apprise.AppriseAttachment([str(p) for p in attachments]) if attachments else None
        return bool(
            self._apprise.notify(
                body=body,
                title=title,
                body_format=apprise.NotifyFormat.TEXT,
                attach=attach,
                timeout=self.timeout,
            )
        )


def _inline(path: Path) -> dict[str, Any]:
    """A file as a JSON attachment (base64 content, MIME type guessed from its name)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DeliveryError(
            f"attachment {path} cannot be read: {exc.strerror or exc}", permanent=True
        ) from exc
    return {
        "filename": path.name,
        "contentType": mimetypes.guess_type(path.name)[0] or "application/octet-stream",
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "content": base64.b64encode(data).decode("ascii"),
    }


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
