"""The ``notify`` section: channels, routes (Alertmanager's model), inhibition and retries.

::

    notify:
      channels:
        ops-email: "mailtos://user:${SMTP_PASSWORD}@smtp.example.com?to=ops@example.com"
        slack: {url: "${SLACK_URL}", send_resolved: false}
        pager: {webhook: "https://pager.example.com/hook", secret: "${HOOK_SECRET}"}
      group_by: [alertname]          # defaults of every route
      group_wait: 30s
      group_interval: 5m
      repeat_interval: 4h
      routes:
        - matchers: ['severity="critical"']
          channels: [ops-email, pager]
          continue: true
        - match: {team: data}
          channels: [slack]
      channels_default: [ops-email]  # alerts no route matched
      inhibit:
        - source_matchers: ['severity="critical"']
          target_matchers: ['severity="warning"']
          equal: [service]

A channel is an apprise URL (``mailto://``, ``mailtos://``, ``slack://``, ``twilio://``,
``json://``, ``form://`` and every other apprise service) or a native ``webhook`` that posts
Alertmanager's version 4 webhook payload, signed with HMAC-SHA256 when ``secret`` is set. An
apprise URL is checked with apprise itself when the configuration loads: a scheme apprise has no
service for, or a URL its service cannot use, is a configuration error.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Annotated, Any

from pydantic import AfterValidator, Field, StrictBool, model_validator
from pydantic_core import PydanticCustomError

from opscope.config.types import LABEL_NAME, Duration, HttpURL, Model, PositiveDuration
from opscope.errors import QueryError
from opscope.store.labels import Matcher, parse_matchers


def _matchers(texts: list[str]) -> list[str]:
    for text in texts:
        try:
            parse_matchers(text)
        except QueryError as exc:
            raise PydanticCustomError("matcher", "{err}", {"err": str(exc)}) from None
    return texts


#: Matchers in Alertmanager's notation: ``severity="critical"``, ``job=~"api|web"``.
MatcherList = Annotated[list[str], AfterValidator(_matchers)]


def _not_zero(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise PydanticCustomError(
            "duration",
            "cannot be zero (as in Alertmanager: the group would be notified without pause)",
            {},
        )
    return value


#: ``group_interval`` and ``repeat_interval``: durations Alertmanager refuses to be zero.
NotifyInterval = Annotated[Duration, AfterValidator(_not_zero)]


def _group_by(names: list[str]) -> list[str]:
    """Alertmanager's rules: label names, or ``...`` alone (every label)."""
    for name in names:
        if name != "..." and not LABEL_NAME.match(name):
            raise PydanticCustomError(
                "label_name", 'invalid label name "{n}" in group_by list', {"n": name}
            )
    if "..." in names and len(names) > 1:
        raise PydanticCustomError(
            "label_name", "group_by cannot have ... (every label) and other labels at once", {}
        )
    return names


#: Labels that split alerts into groups: label names, or ``["..."]`` for every label.
GroupBy = Annotated[list[str], AfterValidator(_group_by)]


def _apprise_problem(url: str) -> str | None:
    """Why apprise cannot deliver to ``url`` (``None``: it can). The URL itself is left out
    of the message: it may hold a password."""
    # Imported here: every command reads configurations, few have apprise channels.
    import apprise  # noqa: PLC0415

    scheme = url.split("://", 1)[0].lower()
    if scheme not in apprise.NotificationManager():  # type: ignore[no-untyped-call]
        return f'apprise has no service for "{scheme}://" URLs (see apprise\'s list of services)'
    quiet = logging.getLogger(apprise.LOGGER_NAME)
    level = quiet.level
    quiet.setLevel(logging.CRITICAL + 1)  # apprise logs the refusal itself, URL and all
    try:
        usable = apprise.Apprise.instantiate(url, suppress_exceptions=True) is not None
    finally:
        quiet.setLevel(level)
    if usable:
        return None
    return f"apprise cannot use this {scheme}:// URL: a part it needs is missing or invalid"


class ChannelConfig(Model):
    """One channel: an apprise ``url`` or a native ``webhook`` (exactly one of them)."""

    url: str | None = None
    """Apprise URL, e.g. ``mailtos://user:pass@smtp.example.com?to=ops@example.com``."""
    webhook: HttpURL | None = None
    """URL receiving Alertmanager's version 4 webhook payload (instead of ``url``)."""
    secret: str | None = None
    """Webhook only: sign the body, header ``X-Opscope-Signature: sha256=<HMAC-SHA256 hex>``."""
    send_resolved: StrictBool = True
    """Also notify when alerts resolve."""
    timeout: PositiveDuration = timedelta(seconds=10)
    """Give up on one delivery attempt after this long (it is retried)."""

    @model_validator(mode="before")
    @classmethod
    def _from_url(cls, value: Any) -> Any:
        return {"url": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _one_target(self) -> ChannelConfig:
        if (self.url is None) == (self.webhook is None):
            raise PydanticCustomError("channel", "give exactly one of url (apprise) or webhook", {})
        if self.url is not None and "://" not in self.url:
            raise PydanticCustomError(
                "channel",
                'expected an apprise URL like "mailto://…" or "slack://…", got "{u}"',
                {"u": self.url},
            )
        if self.url is not None:
            problem = _apprise_problem(self.url)
            if problem is not None:
                raise PydanticCustomError("channel", problem, {})
        if self.secret is not None and self.webhook is None:
            raise PydanticCustomError("channel", "secret is only for webhook channels", {})
        return self


class RouteConfig(Model):
    """A route: alerts matching it go to its channels, grouped by its settings."""

    match: dict[str, str] = Field(default_factory=dict)
    """Label equalities an alert must have (shorthand for ``matchers``)."""
    matchers: MatcherList = Field(default_factory=list)
    """Matchers an alert must satisfy (``=``, ``!=``, ``=~``, ``!~``)."""
    channels: list[str] = Field(min_length=1)
    """Channels notified."""
    continue_: StrictBool = Field(default=False, alias="continue")
    """Keep matching the following routes after this one matched."""
    group_by: GroupBy | None = None
    """Labels that split alerts into notifications; ``["..."]`` groups by every label."""
    group_wait: Duration | None = None
    """Wait before the first notification of a new group (to batch alerts)."""
    group_interval: NotifyInterval | None = None
    """Wait before notifying about changes to a group already notified (not zero)."""
    repeat_interval: NotifyInterval | None = None
    """Resend an unchanged notification after this long (not zero)."""

    def all_matchers(self) -> tuple[Matcher, ...]:
        """``match`` and ``matchers`` together."""
        found = [Matcher.of(k, "=", v) for k, v in self.match.items()]
        for text in self.matchers:
            found.extend(parse_matchers(text))
        return tuple(found)


class InhibitRule(Model):
    """Mute alerts matching ``target_matchers`` while an alert matching ``source_matchers`` with
    the same ``equal`` label values is firing."""

    source_matchers: MatcherList = Field(min_length=1)
    """Matchers of the inhibiting alert."""
    target_matchers: MatcherList = Field(min_length=1)
    """Matchers of the muted alerts."""
    equal: list[str] = Field(default_factory=list)
    """Labels that must have equal values in both."""


class RetryConfig(Model):
    """Retries of failed deliveries: exponential backoff with ±20 % jitter."""

    initial: PositiveDuration = timedelta(seconds=5)
    """Delay before the first retry."""
    max: PositiveDuration = timedelta(minutes=5)
    """Longest delay between two attempts."""
    give_up_after: PositiveDuration = timedelta(hours=24)
    """A notification not delivered this long after it was queued is marked expired."""


class NotifyConfig(Model):
    """Where alert notifications go and how they are grouped (Alertmanager's model)."""

    channels: dict[str, ChannelConfig] = Field(default_factory=dict)
    """Named channels: an apprise URL string, ``{url: …, send_resolved: …}`` or
    ``{webhook: …, secret: …}``."""
    routes: list[RouteConfig] = Field(default_factory=list)
    """Routes, tried in order; the first match wins unless it has ``continue: true``."""
    channels_default: list[str] = Field(default_factory=list)
    """Channels of alerts no route matched (none: such alerts are not notified)."""
    group_by: GroupBy = Field(default_factory=lambda: ["alertname"])
    """Default ``group_by`` of the routes."""
    group_wait: Duration = timedelta(seconds=30)
    """Default ``group_wait`` (Alertmanager's 30s)."""
    group_interval: NotifyInterval = timedelta(minutes=5)
    """Default ``group_interval`` (Alertmanager's 5m; not zero)."""
    repeat_interval: NotifyInterval = timedelta(hours=4)
    """Default ``repeat_interval`` (Alertmanager's 4h; not zero)."""
    inhibit: list[InhibitRule] = Field(default_factory=list)
    """Inhibition rules."""
    retry: RetryConfig = Field(default_factory=RetryConfig)
    """Retries of failed deliveries."""
    external_url: str | None = None
    """Link to this opscope in notifications (``externalURL`` of the webhook payload)."""

    def problems(self) -> list[tuple[tuple[str | int, ...], str]]:
        """Checks across fields, as ``(location under notify, message)`` pairs: every channel
        a route or ``channels_default`` names exists."""
        known = ", ".join(self.channels) or "none"
        found: list[tuple[tuple[str | int, ...], str]] = []
        for index, route in enumerate(self.routes):
            for position, name in enumerate(route.channels):
                if name not in self.channels:
                    found.append(
                        (
                            ("routes", index, "channels", position),
                            f'unknown channel "{name}" (known: {known})',
                        )
                    )
        for position, name in enumerate(self.channels_default):
            if name not in self.channels:
                found.append(
                    (("channels_default", position), f'unknown channel "{name}" (known: {known})')
                )
        return found
