"""Durations in Prometheus notation: ``500ms``, ``15s``, ``5m``, ``1h30m``, ``15d``, ``1y``.

The grammar and unit values are those of Prometheus ``model.ParseDuration``: units in descending
order, each at most once, ``d`` = 24h, ``w`` = 7d, ``y`` = 365d. ``0`` alone is accepted as zero.
"""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS_MS = {
    "y": 365 * 86_400_000,
    "w": 7 * 86_400_000,
    "d": 86_400_000,
    "h": 3_600_000,
    "m": 60_000,
    "s": 1_000,
    "ms": 1,
}
_PATTERN = re.compile(
    r"^(?:(?P<y>\d+)y)?(?:(?P<w>\d+)w)?(?:(?P<d>\d+)d)?(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?"
    r"(?:(?P<s>\d+)s)?(?:(?P<ms>\d+)ms)?$"
)
_MAX_MS = 10_000 * _UNITS_MS["y"]
#: JSON-Schema pattern of a duration string, for editor completion.
DURATION_PATTERN = r"^(0|([0-9]+y)?([0-9]+w)?([0-9]+d)?([0-9]+h)?([0-9]+m)?([0-9]+s)?([0-9]+ms)?)$"


def parse_duration(text: str) -> timedelta:
    """Parse ``text`` (e.g. ``"1h30m"``) into a :class:`timedelta`.

    Raises ``ValueError`` with a message naming the expected form when ``text`` is not a
    Prometheus duration (bare numbers other than ``0`` are rejected: a unit is required).
    """
    if text == "0":
        return timedelta(0)
    match = _PATTERN.match(text)
    if not text or match is None or not any(match.groupdict().values()):
        raise ValueError(f'expected a duration like 15s, got "{text}"')
    ms = sum(int(v) * _UNITS_MS[unit] for unit, v in match.groupdict().items() if v)
    if ms > _MAX_MS:
        raise ValueError(f'expected a duration like 15s, got "{text}" (longer than 10000y)')
    return timedelta(milliseconds=ms)


def format_duration(value: timedelta) -> str:
    """Format ``value`` in Prometheus notation (``timedelta(minutes=90)`` → ``"1h30m"``)."""
    ms = round(value.total_seconds() * 1000)
    if ms == 0:
        return "0s"
    parts = []
    for unit, size in _UNITS_MS.items():
        count, ms = divmod(ms, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
