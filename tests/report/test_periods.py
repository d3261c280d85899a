"""Reporting periods: labels, boundaries, comparisons and partial periods."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from opscope.report.periods import (
    PeriodError,
    parse_period,
    partial_reason,
    period_containing,
    week_label,
)

NOW = datetime(2017, 12, 13, 12, 0, tzinfo=UTC)  # a Wednesday


def p(text: str, **kw: object) -> tuple[str, date, date]:
    period = parse_period(text, now=kw.pop("now", NOW), **kw)  # type: ignore[arg-type]
    return period.label, period.start, period.end


def test_absolute_labels() -> None:
    assert p("2017-Q4") == ("2017-Q4", date(2017, 10, 1), date(2018, 1, 1))
    assert p("2017-12") == ("2017-12", date(2017, 12, 1), date(2018, 1, 1))
    assert p("2017") == ("2017", date(2017, 1, 1), date(2018, 1, 1))
    assert p("2017-12-05") == ("2017-12-05", date(2017, 12, 5), date(2017, 12, 6))
    # ISO 8601: week 49 of 2017 is Monday 4 December to Sunday 10 December.
    assert p("2017-W49") == ("2017-W49", date(2017, 12, 4), date(2017, 12, 11))


def test_iso_week_years_hold_at_year_boundaries() -> None:
    # Values from ISO 8601 (Python's date.isocalendar agrees).
    assert week_label(date(2017, 1, 1)) == "2016-W52"
    assert week_label(date(2018, 12, 31)) == "2019-W01"
    assert week_label(date(2020, 12, 31)) == "2020-W53"
    assert p("2016-W52") == ("2016-W52", date(2016, 12, 26), date(2017, 1, 2))
    assert p("2020-W53")[1] == date(2020, 12, 28)
    with pytest.raises(PeriodError, match="2017 has no week 53"):
        parse_period("2017-W53", now=NOW)


def test_weeks_follow_the_configured_week_start() -> None:
    sunday = 6
    period = parse_period("2017-12-13", now=NOW, week_start=sunday)
    week = period_containing("week", period.start, sunday)
    assert (week.start, week.end) == (date(2017, 12, 10), date(2017, 12, 17))
    assert p("last-week", week_start=sunday)[1:] == (date(2017, 12, 3), date(2017, 12, 10))
    assert [b.start for b in parse_period("2017-12", now=NOW, week_start=sunday).buckets("week")][
        :2
    ] == [
        date(2017, 11, 26),
        date(2017, 12, 3),
    ]


def test_relative_periods_count_from_now_in_the_timezone() -> None:
    assert p("last-week")[1:] == (date(2017, 12, 4), date(2017, 12, 11))
    assert p("this-quarter")[0] == "2017-Q4"
    assert p("last-quarter")[0] == "2017-Q3"
    assert p("last-month")[0] == "2017-11"
    assert p("last-year")[0] == "2016"
    # 2017-12-31 16:00 UTC is already 2018-01-01 in Tokyo (UTC+9) and still 2017 in New York.
    late = datetime(2017, 12, 31, 16, 0, tzinfo=UTC)
    assert p("today", now=late, tz="Asia/Tokyo")[0] == "2018-01-01"
    assert p("this-quarter", now=late, tz="Asia/Tokyo")[0] == "2018-Q1"
    assert p("this-quarter", now=late, tz="America/New_York")[0] == "2017-Q4"


def test_previous_and_same_period_last_year() -> None:
    q4 = parse_period("2017-Q4", now=NOW)
    assert q4.previous().label == "2017-Q3"
    assert q4.same_period_last_year().label == "2016-Q4"
    jan = parse_period("2017-01", now=NOW)
    assert jan.previous().label == "2016-12"
    w1 = parse_period("2017-W01", now=NOW)
    assert w1.previous().label == "2016-W52"
    # 2020 has an ISO week 53 and 2019 does not: the last week of 2019 stands in.
    assert parse_period("2020-W53", now=NOW).same_period_last_year().label == "2019-W52"
    assert parse_period("2020-W10", now=NOW).same_period_last_year().label == "2019-W10"
    assert parse_period("2016-02-29", now=NOW).same_period_last_year().label == "2015-02-28"


def test_bad_labels_say_what_is_accepted() -> None:
    for bad in ("2017-Q5", "2017-13", "Q4", "2017-02-30", "next-week"):
        with pytest.raises(PeriodError):
            parse_period(bad, now=NOW)
    with pytest.raises(PeriodError, match="expected 2017-12-05, 2017-W49"):
        parse_period("fortnight", now=NOW)


def test_partial_periods() -> None:
    q1 = parse_period("2017-Q1", now=NOW)
    # Closed deals of the CRM data span 2017-03-01 .. 2017-12-31: Q1 holds March only.
    reason = partial_reason(
        q1, today=date(2026, 1, 1), first=date(2017, 3, 1), last=date(2017, 12, 31)
    )
    assert (
        reason
        == "2017-Q1 is partial: the data covers 2017-03-01 … 2017-03-31 of 2017-01-01 … 2017-03-31"
    )
    q4 = parse_period("2017-Q4", now=NOW)
    assert (
        partial_reason(q4, today=date(2026, 1, 1), first=date(2017, 3, 1), last=date(2017, 12, 31))
        is None
    )
    assert partial_reason(q4, today=date(2017, 12, 31), first=None, last=None) == (
        "2017-Q4 is not over yet (today is 2017-12-31)"
    )
