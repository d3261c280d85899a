"""When scheduled reports run: a cron expression read in an IANA timezone, DST included.

A report's ``schedule`` is a five-field cron expression of local wall-clock time in its
``timezone``. Local time is not continuous: on a spring-forward day an hour of wall-clock
times never happens, on a fall-back day an hour happens twice. opscope follows the rule of
Debian's and Vixie's cron, which sorts jobs in two kinds:

* a **fixed-time** job — neither the minute nor the hour field starts with ``*`` (``30 2 * * *``,
  ``0 8 * * MON``, ``0 8,18 * * *``) — runs *once* per matching wall-clock time:

  - a time that a spring-forward gap skips runs when the gap ends: ``30 2 * * *`` in
    Europe/Madrid on 2026-03-29 (02:00 CET jumps to 03:00 CEST) runs at 03:00 CEST
    (01:00 UTC);
  - a time that happens twice runs at its first occurrence only: ``30 2 * * *`` on 2026-10-25
    (03:00 CEST falls back to 02:00 CET) runs at 02:30 CEST (00:30 UTC), not again at 02:30 CET;

* a **wildcard** job (``*/15 * * * *``, ``0 * * * *``) runs in real time, at every instant whose
  local time matches: skipped times do not run and repeated times run twice, so an hourly job
  stays one hour apart across both changes.

Which wall-clock times match is croniter's (standard cron semantics: ``day-of-month`` and
``day-of-week`` are ORed when both are restricted), evaluated on *naive* local times. Turning a
local time into an instant is done here, with :mod:`zoneinfo`, interval by interval of constant
UTC offset; croniter's own arithmetic on timezone-aware datetimes, which has produced skipped and
repeated runs around DST changes, is not used.

All instants are Unix seconds (floats, UTC).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadCronError, CroniterBadDateError, croniter

from opscope.errors import ReportError

#: Step used to look for UTC-offset changes; no zone changes its offset twice within it.
_PROBE = 6 * 3600
#: How many offset changes one search may cross before giving up (about 250 years of DST).
_MAX_INTERVALS = 500


class ScheduleError(ReportError):
    """A cron expression or timezone that cannot be scheduled (or that never matches)."""


def _naive(seconds: float, zone: ZoneInfo) -> datetime:
    """The local wall-clock time of an instant, without tzinfo."""
    return datetime.fromtimestamp(seconds, zone).replace(tzinfo=None)


def _offset(seconds: float, zone: ZoneInfo) -> float:
    """UTC offset of ``zone`` at an instant, in seconds (Madrid in summer: 7200)."""
    offset = datetime.fromtimestamp(seconds, zone).utcoffset()
    assert offset is not None
    return offset.total_seconds()


def _instant(local: datetime, offset: float) -> float:
    """The instant whose wall-clock time is ``local`` (naive) at UTC offset ``offset``."""
    return local.replace(tzinfo=UTC).timestamp() - offset


@dataclass(frozen=True)
class Schedule:
    """A cron expression in an IANA timezone.

    Raises :class:`ScheduleError` for an expression croniter does not accept (five fields
    expected) or an unknown timezone.
    """

    cron: str
    timezone: str = "UTC"
    _zone: ZoneInfo = field(init=False, repr=False, compare=False)
    _fixed: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        fields = self.cron.split()
        if len(fields) != 5 or not croniter.is_valid(self.cron):
            raise ScheduleError(
                "expected a cron expression of five fields (minute hour day month weekday), "
                f'got "{self.cron}"'
            )
        try:
            zone = ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ScheduleError(f'unknown IANA timezone "{self.timezone}"') from None
        object.__setattr__(self, "_zone", zone)
        object.__setattr__(
            self, "_fixed", not fields[0].startswith("*") and not fields[1].startswith("*")
        )

    @property
    def fixed_time(self) -> bool:
        """Whether this is a fixed-time job (neither minute nor hour starts with ``*``)."""
        return self._fixed

    def _match(self, local: datetime, *, inclusive: bool) -> datetime:
        """The first matching naive wall-clock time after ``local`` (or at it, ``inclusive``)."""
        start = local - timedelta(seconds=1) if inclusive else local
        try:
            found: datetime = croniter(self.cron, start).get_next(datetime)
        except (CroniterBadDateError, CroniterBadCronError) as exc:
            raise ScheduleError(f'"{self.cron}" never matches: {exc}') from exc
        return found

    def _next_change(self, start: int, end: float) -> int | None:
        """The first instant in ``(start, end]`` whose UTC offset differs from ``start``'s
        (whole seconds, as tzdata's transitions are), or ``None``."""
        offset = _offset(start, self._zone)
        lo = start
        while lo < end:
            hi = min(lo + _PROBE, math.ceil(end))
            if _offset(hi, self._zone) != offset:
                while hi - lo > 1:  # bisect to the second
                    mid = (lo + hi) // 2
                    if _offset(mid, self._zone) == offset:
                        lo = mid
                    else:
                        hi = mid
                return hi
            lo = hi
        return None

    def next_after(self, after: float) -> float:
        """The first run strictly after the instant ``after`` (Unix seconds), by the rule in
        the module docstring. Raises :class:`ScheduleError` when the expression never matches
        (``0 0 30 2 *``)."""
        t = float(after)
        inclusive = False
        for _ in range(_MAX_INTERVALS):
            offset = _offset(t, self._zone)
            local = self._match(_naive(t, self._zone), inclusive=inclusive)
            candidate = _instant(local, offset)
            change = self._next_change(math.floor(t), candidate)
            if change is None:
                if self._fixed and self._repeated(local, candidate):
                    t, inclusive = candidate, False  # the second occurrence of a wall time
                    continue
                return candidate
            new_offset = _offset(change, self._zone)
            if self._fixed and new_offset > offset:
                # A spring-forward gap: wall times [change + offset, change + new_offset) are
                # skipped; a fixed-time job due in them runs when the gap ends.
                gap_start = _naive(change, self._zone) - timedelta(seconds=new_offset - offset)
                gap_end = _naive(change, self._zone)
                if self._match(gap_start, inclusive=True) < gap_end and change > after:
                    return float(change)
            t, inclusive = float(change), True
        raise ScheduleError(f'"{self.cron}" in {self.timezone}: no run found')

    def _repeated(self, local: datetime, instant: float) -> bool:
        """Whether ``instant`` is the second occurrence of wall time ``local`` (fall back)."""
        first = local.replace(tzinfo=self._zone, fold=0).timestamp()
        return first != instant

    def runs(self, after: float, until: float) -> Iterator[float]:
        """Every run in ``(after, until]``, in order."""
        t = after
        while True:
            t = self.next_after(t)
            if t > until:
                return
            yield t

    def latest(self, until: float, *, after: float) -> float | None:
        """The most recent run in ``(after, until]``, or ``None`` (what a catch-up runs).

        Looks back from ``until`` in growing windows, so a job every minute and a job once a
        year cost about the same.
        """
        span = 3600.0
        while True:
            start = max(after, until - span)
            found = None
            for found in self.runs(start, until):  # noqa: B007 - the last one is wanted
                pass
            if found is not None or start <= after:
                return found
            span *= 4
