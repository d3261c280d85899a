"""Parsing the API's time and duration parameters the way Prometheus's HTTP API does.

Times are Unix seconds with optional decimals (``1700000000.5``) or RFC 3339
(``2026-11-29T09:30:00Z``); durations are seconds (``15``, ``0.5``) or Prometheus durations
(``15s``, ``5m``). Bad values raise :class:`QueryError` naming the parameter (HTTP 400).
"""

from __future__ import annotations

import math
from datetime import datetime

import numpy as np

from opscope.durations import parse_duration
from opscope.errors import QueryError

#: Largest |time| accepted, in seconds: times are kept as int64 milliseconds.
MAX_SECONDS = 9_000_000_000_000_000 / 1000


def parse_time(value: str | None, *, name: str, default: float) -> float:
    """Unix seconds from ``value``; ``default`` when it is absent or empty."""
    if value is None or value == "":
        return default
    try:
        seconds = float(value)
    except ValueError:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise QueryError(
                f'invalid parameter "{name}": cannot parse "{value}" to a valid timestamp'
            ) from None
        if parsed.tzinfo is None:
            raise QueryError(f'invalid parameter "{name}": "{value}" has no time zone') from None
        return parsed.timestamp()
    return check_time(seconds, name=name, text=value)


def check_time(seconds: float, *, name: str, text: object) -> float:
    """``seconds`` if it is a finite time opscope can represent, else :class:`QueryError`."""
    if not math.isfinite(seconds) or abs(seconds) > MAX_SECONDS:
        raise QueryError(f'invalid parameter "{name}": cannot parse "{text}" to a valid timestamp')
    return seconds


def parse_step(value: str | None, *, name: str) -> float:
    """Seconds from a duration parameter (``15``, ``0.5``, ``15s``, ``1m``); must be > 0."""
    if value is None or value == "":
        raise QueryError(f'invalid parameter "{name}": a duration is required')
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parse_duration(value).total_seconds()
        except ValueError:
            raise QueryError(
                f'invalid parameter "{name}": cannot parse "{value}" to a valid duration'
            ) from None
    if not math.isfinite(seconds) or seconds <= 0 or seconds > MAX_SECONDS:
        raise QueryError(f'invalid parameter "{name}": must be a positive duration, got "{value}"')
    return seconds


def format_value(value: float) -> str:
    """A sample value as Prometheus's JSON writes it: ``"NaN"``, ``"+Inf"``, ``"-Inf"`` or the
    shortest decimal that round-trips (Go ``strconv.FormatFloat(v, 'f', -1, 64)``)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    text = repr(value)
    if "e" in text or "E" in text:
        text = np.format_float_positional(value, trim="-")
    elif text.endswith(".0"):
        text = text[:-2]
    return text
