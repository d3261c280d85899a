"""Reporting periods: calendar days, weeks, months, quarters and years in a timezone.

A :class:`ReportPeriod` is a half-open range of calendar dates ``[start, end)`` in the report's
IANA timezone, with a granularity and a label. Periods are pure values: "now" is always passed
in, so ``last-week`` or ``this-quarter`` are exact in tests.

Labels (what ``--period`` accepts, see :func:`parse_period`)::

    2017-12-05   a day            2017-W49   a week        2017-12   a month
    2017-Q4      a quarter        2017       a year
    today, yesterday, this-week, last-week, this-month, last-month,
    this-quarter, last-quarter, this-year, last-year   (relative to now, in the timezone)

Weeks start on ``week_start`` (0 = Monday, ISO 8601's default … 6 = Sunday) and are numbered by
ISO 8601's rule generalised to any start day: a week belongs to the year that holds its fourth
day, and week 1 is the first week with at least four days in the year. With Monday weeks this is
exactly ISO: 2017-01-01 (a Sunday) is in 2016-W52, 2018-12-31 (a Monday) in 2019-W01.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

Granularity = Literal["day", "week", "month", "quarter", "year"]
GRANULARITIES: tuple[Granularity, ...] = ("day", "week", "month", "quarter", "year")

#: Names of week days as config spells them, index = ``date.weekday()``.
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")

_DAY = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
_WEEK = re.compile(r"^(\d{4})-W(\d{2})$")
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
_QUARTER = re.compile(r"^(\d{4})-Q([1-4])$")
_YEAR = re.compile(r"^(\d{4})$")
_RELATIVE = re.compile(r"^(this|last)-(week|month|quarter|year)$")


class PeriodError(ValueError):
    """A period label or timezone cannot be understood; the message says what is accepted."""


def timezone(name: str) -> ZoneInfo:
    """The IANA timezone ``name`` (``Europe/Madrid``). Raises :class:`PeriodError`."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise PeriodError(f'unknown IANA timezone "{name}" (e.g. Europe/Madrid, UTC)') from exc


def local_today(now: datetime, tz: str) -> date:
    """The calendar date in ``tz`` at the instant ``now`` (a naive ``now`` is taken as UTC)."""
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    return now.astimezone(timezone(tz)).date()


def week_start_of(day: date, week_start: int = 0) -> date:
    """The first day of the week (starting on weekday ``week_start``) that holds ``day``."""
    return day - timedelta(days=(day.weekday() - week_start) % 7)


def week_label(day: date, week_start: int = 0) -> str:
    """``YYYY-Www`` of the week holding ``day`` (the year of the week's fourth day)."""
    fourth = week_start_of(day, week_start) + timedelta(days=3)
    number = (fourth.timetuple().tm_yday - 1) // 7 + 1
    return f"{fourth.year:04d}-W{number:02d}"


def _first_week(year: int, week_start: int) -> date:
    # Week 1's fourth day is one of January 1..7.
    return week_start_of(date(year, 1, 4), week_start)


@dataclass(frozen=True, slots=True)
class ReportPeriod:
    """Calendar dates ``[start, end)`` of one day, week, month, quarter or year.

    ``week_start`` (0 = Monday … 6 = Sunday) only matters for weeks, but every period carries it
    so that :meth:`buckets` and :meth:`previous` keep it.
    """

    granularity: Granularity
    start: date
    end: date
    week_start: int = 0

    @property
    def label(self) -> str:
        """``2017-12-05``, ``2017-W49``, ``2017-12``, ``2017-Q4`` or ``2017``."""
        s = self.start
        match self.granularity:
            case "day":
                return s.isoformat()
            case "week":
                return week_label(s, self.week_start)
            case "month":
                return f"{s.year:04d}-{s.month:02d}"
            case "quarter":
                return f"{s.year:04d}-Q{(s.month - 1) // 3 + 1}"
            case _:
                return f"{s.year:04d}"

    @property
    def days(self) -> int:
        """Number of calendar days in the period."""
        return (self.end - self.start).days

    def contains(self, day: date) -> bool:
        """Whether ``day`` falls in ``[start, end)``."""
        return self.start <= day < self.end

    def shifted(self, steps: int) -> ReportPeriod:
        """The period ``steps`` periods of the same granularity later (earlier when < 0)."""
        return period_containing(
            self.granularity, _shift(self.start, self.granularity, steps), self.week_start
        )

    def previous(self) -> ReportPeriod:
        """The period just before (period over period comparison)."""
        return self.shifted(-1)

    def same_period_last_year(self) -> ReportPeriod:
        """The same period one year earlier: same month/quarter; the week with the same number
        (the last week when that year has one fewer); the same date (Feb 29 → Feb 28)."""
        if self.granularity == "week":
            year, number = (int(x) for x in self.label.split("-W"))
            first = _first_week(year - 1, self.week_start)
            start = first + timedelta(weeks=number - 1)
            if week_label(start, self.week_start)[:4] != f"{year - 1:04d}":
                start -= timedelta(weeks=1)  # 53-week year compared with a 52-week one
            return period_containing("week", start, self.week_start)
        if self.granularity == "day":
            s = self.start
            day = date(s.year - 1, s.month, 28 if (s.month, s.day) == (2, 29) else s.day)
            return period_containing("day", day, self.week_start)
        return self.shifted(-{"month": 12, "quarter": 4, "year": 1}[self.granularity])

    def buckets(self, granularity: Granularity) -> list[ReportPeriod]:
        """The periods of ``granularity`` that overlap this one, in order (weeks at the edges
        may stick out of it)."""
        found: list[ReportPeriod] = []
        current = period_containing(granularity, self.start, self.week_start)
        while current.start < self.end:
            found.append(current)
            current = current.shifted(1)
        return found


def _shift(day: date, granularity: Granularity, steps: int) -> date:
    if granularity == "day":
        return day + timedelta(days=steps)
    if granularity == "week":
        return day + timedelta(weeks=steps)
    months = {"month": 1, "quarter": 3, "year": 12}[granularity] * steps
    index = day.year * 12 + day.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def period_containing(granularity: Granularity, day: date, week_start: int = 0) -> ReportPeriod:
    """The period of ``granularity`` that holds ``day``."""
    if granularity == "day":
        return ReportPeriod("day", day, day + timedelta(days=1), week_start)
    if granularity == "week":
        start = week_start_of(day, week_start)
        return ReportPeriod("week", start, start + timedelta(days=7), week_start)
    if granularity == "month":
        start = date(day.year, day.month, 1)
    elif granularity == "quarter":
        start = date(day.year, (day.month - 1) // 3 * 3 + 1, 1)
    else:
        start = date(day.year, 1, 1)
    return ReportPeriod(granularity, start, _shift(start, granularity, 1), week_start)


def parse_period(text: str, *, now: datetime, tz: str = "UTC", week_start: int = 0) -> ReportPeriod:
    """The period a ``--period`` value names; relative names count from ``now`` in ``tz``.

    Raises :class:`PeriodError` naming the accepted forms for anything else (including
    impossible dates, months 13, quarters 5 and week numbers the year does not have).
    """
    value = text.strip()
    today = local_today(now, tz)
    try:
        if value in ("today", "yesterday"):
            day = today if value == "today" else today - timedelta(days=1)
            return period_containing("day", day, week_start)
        if match := _RELATIVE.match(value):
            unit: Granularity = match.group(2)  # type: ignore[assignment]
            current = period_containing(unit, today, week_start)
            return current if match.group(1) == "this" else current.previous()
        if match := _DAY.match(value):
            day = date(int(match[1]), int(match[2]), int(match[3]))
            return period_containing("day", day, week_start)
        if match := _WEEK.match(value):
            year, number = int(match[1]), int(match[2])
            start = _first_week(year, week_start) + timedelta(weeks=number - 1)
            period = period_containing("week", start, week_start)
            if number < 1 or period.label != value:
                raise PeriodError(
                    f"{year} has no week {number} (weeks start on {WEEKDAYS[week_start]})"
                )
            return period
        if match := _MONTH.match(value):
            return period_containing("month", date(int(match[1]), int(match[2]), 1), week_start)
        if match := _QUARTER.match(value):
            month = (int(match[2]) - 1) * 3 + 1
            return period_containing("quarter", date(int(match[1]), month, 1), week_start)
        if match := _YEAR.match(value):
            return period_containing("year", date(int(match[1]), 1, 1), week_start)
    except ValueError as exc:
        if isinstance(exc, PeriodError):
            raise
        raise PeriodError(f'"{text}" is not a calendar date ({exc})') from None
    raise PeriodError(
        f'unknown period "{text}": expected 2017-12-05, 2017-W49, 2017-12, 2017-Q4, 2017, '
        "today, yesterday, this-week, last-week, this-month, last-month, this-quarter, "
        "last-quarter, this-year or last-year"
    )


def partial_reason(
    period: ReportPeriod, *, today: date, first: date | None, last: date | None
) -> str | None:
    """Why ``period`` is partial, or ``None`` when it is complete.

    A period is partial when it has not ended yet (``today`` is inside it or before it) or when
    the data, spanning the dates ``first`` … ``last`` inclusive, does not cover all of it.
    """
    label = period.label
    if today < period.end:
        return f"{label} is not over yet (today is {today.isoformat()})"
    if first is None or last is None:
        return None
    if first > period.start or last < period.end - timedelta(days=1):
        lo = max(first, period.start)
        hi = min(last, period.end - timedelta(days=1))
        if lo > hi:
            return f"{label} is outside the data ({first.isoformat()} … {last.isoformat()})"
        return (
            f"{label} is partial: the data covers {lo.isoformat()} … {hi.isoformat()} of "
            f"{period.start.isoformat()} … {(period.end - timedelta(days=1)).isoformat()}"
        )
    return None
