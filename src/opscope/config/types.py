"""Value types shared by every configuration model: durations, hosts, targets, the base model.

Durations are Prometheus duration strings (``15s``, ``5m``, ``1h30m``) parsed once into
:class:`datetime.timedelta`; bare numbers are rejected because their unit would be a guess.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import timedelta
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    PlainSerializer,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

from opscope.durations import DURATION_PATTERN, format_duration, parse_duration

#: The shortest collection interval accepted.
MIN_INTERVAL = timedelta(milliseconds=100)
LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*\Z")
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
_HOST_PORT = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9._-]+):([0-9]{1,5})\Z")


def _to_duration(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if not isinstance(value, str):
        raise PydanticCustomError(
            "duration", "expected a duration like 15s, got {got}", {"got": repr(value)}
        )
    try:
        return parse_duration(value.strip())
    except ValueError:
        raise PydanticCustomError(
            "duration", 'expected a duration like 15s, got "{got}"', {"got": value}
        ) from None


#: A Prometheus duration string (``15s``, ``5m``, ``1h30m``) held as a :class:`timedelta`.
Duration = Annotated[
    timedelta,
    BeforeValidator(_to_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema({"type": "string", "pattern": DURATION_PATTERN, "examples": ["15s", "5m"]}),
]


def _host_port(target: str) -> str:
    if "://" in target:
        raise PydanticCustomError(
            "target",
            'expected host:port, got "{t}" (put the scheme in `scheme` and the path in '
            "`metrics_path`)",
            {"t": target},
        )
    match = _HOST_PORT.match(target)
    if not match or not 1 <= int(match.group(2)) <= 65535:
        raise PydanticCustomError(
            "target", 'expected host:port with a port from 1 to 65535, got "{t}"', {"t": target}
        )
    return target


def _host(host: str) -> str:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not _HOSTNAME.match(host):
            raise PydanticCustomError(
                "host", 'expected an IP address or a host name, got "{h}"', {"h": host}
            ) from None
    return host


def _header_text(value: str) -> str:
    if "\r" in value or "\n" in value:
        raise PydanticCustomError(
            "header", "HTTP header names and values cannot contain line breaks", {}
        )
    return value


def _positive(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise PydanticCustomError("duration", "expected a duration greater than 0", {})
    return value


def _interval(value: timedelta) -> timedelta:
    if value < MIN_INTERVAL:
        raise PydanticCustomError(
            "duration",
            "expected an interval of at least {m}",
            {"m": format_duration(MIN_INTERVAL)},
        )
    return value


def _http_url(target: str) -> str:
    parts = urlsplit(target)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise PydanticCustomError(
            "url", 'expected an http:// or https:// URL, got "{t}"', {"t": target}
        )
    return target


def distinct(targets: list[str]) -> list[str]:
    seen: set[str] = set()
    for target in targets:
        if target in seen:
            raise PydanticCustomError("target", 'target "{t}" is listed twice', {"t": target})
        seen.add(target)
    return targets


#: A scrape target, ``host:port``.
HostPort = Annotated[str, AfterValidator(_host_port)]
#: An IP address or a host name.
Host = Annotated[str, AfterValidator(_host)]
#: Text that can go into an HTTP header.
HeaderText = Annotated[str, AfterValidator(_header_text)]
#: A duration greater than zero.
PositiveDuration = Annotated[Duration, AfterValidator(_positive)]
#: A collection interval (at least :data:`MIN_INTERVAL`).
Interval = Annotated[Duration, AfterValidator(_interval)]
#: An absolute http(s) URL.
HttpURL = Annotated[str, AfterValidator(_http_url)]


class Model(BaseModel):
    """Base of every config model: unknown fields are errors, values are immutable.

    A key written with no value (``monitor:`` alone, YAML null) means "the defaults", as users
    expect from an empty section, for every field whose default is not itself null.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    @model_validator(mode="before")
    @classmethod
    def _null_means_default(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {
                key: value
                for key, value in data.items()
                if not (
                    value is None
                    and key in cls.model_fields
                    and cls.model_fields[key].get_default(call_default_factory=True) is not None
                )
            }
        return data
