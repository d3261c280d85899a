"""Cron schedules in an IANA timezone across DST changes (Europe/Madrid 2026, New York 2026).

Expected instants are written by hand from the published transitions: Europe/Madrid goes from
CET (UTC+1) to CEST (UTC+2) at 01:00 UTC on 2026-03-29 (02:00 → 03:00 local) and back at
01:00 UTC on 2026-10-25 (03:00 → 02:00 local); America/New_York from EST (UTC−5) to EDT (UTC−4)
at 07:00 UTC on 2026-03-08 and back at 06:00 UTC on 2026-11-01 (02:00 → 01:00 local).
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from opscope.report.schedule import Schedule, ScheduleError


def utc(*parts: int) -> float:
    return datetime(*parts, tzinfo=UTC).timestamp()  # type: ignore[misc]


def runs(schedule: Schedule, start: float, end: float) -> list[float]:
    return list(schedule.runs(start, end))


def test_monday_0800_madrid_runs_at_0800_local_on_both_sides_of_both_changes() -> None:
    schedule = Schedule("0 8 * * MON", "Europe/Madrid")
    assert runs(schedule, utc(2026, 3, 20), utc(2026, 4, 7)) == [
        utc(2026, 3, 23, 7),  # 08:00 CET
        utc(2026, 3, 30, 6),  # 08:00 CEST, the day after the change
        utc(2026, 4, 6, 6),
    ]
    assert runs(schedule, utc(2026, 10, 15), utc(2026, 11, 3)) == [
        utc(2026, 10, 19, 6),  # 08:00 CEST
        utc(2026, 10, 26, 7),  # 08:00 CET, the day after the change
        utc(2026, 11, 2, 7),
    ]


def test_a_0230_job_runs_once_on_the_spring_forward_day_when_the_gap_ends() -> None:
    # 02:30 does not exist in Madrid on 2026-03-29: cron runs it at the end of the gap, 03:00.
    schedule = Schedule("30 2 * * *", "Europe/Madrid")
    assert runs(schedule, utc(2026, 3, 27, 12), utc(2026, 3, 31, 12)) == [
        utc(2026, 3, 28, 1, 30),  # 02:30 CET
        utc(2026, 3, 29, 1, 0),  # 03:00 CEST, once
        utc(2026, 3, 30, 0, 30),  # 02:30 CEST
        utc(2026, 3, 31, 0, 30),
    ]


def test_a_0230_job_runs_once_on_the_fall_back_day_at_the_first_0230() -> None:
    # 02:30 happens twice in Madrid on 2026-10-25 (CEST, then CET): only the first runs.
    schedule = Schedule("30 2 * * *", "Europe/Madrid")
    assert runs(schedule, utc(2026, 10, 23, 12), utc(2026, 10, 27, 12)) == [
        utc(2026, 10, 24, 0, 30),
        utc(2026, 10, 25, 0, 30),  # 02:30 CEST; not 01:30 UTC (02:30 CET)
        utc(2026, 10, 26, 1, 30),  # 02:30 CET
        utc(2026, 10, 27, 1, 30),
    ]


def test_a_0130_job_runs_once_on_the_fall_back_day() -> None:
    # Madrid: 01:30 is before the repeated hour, an ordinary time.
    madrid = Schedule("30 1 * * *", "Europe/Madrid")
    assert runs(madrid, utc(2026, 10, 24, 12), utc(2026, 10, 26, 12)) == [
        utc(2026, 10, 24, 23, 30),  # 01:30 CEST on the 25th
        utc(2026, 10, 26, 0, 30),  # 01:30 CET
    ]
    # New York: 01:30 is the repeated hour on 2026-11-01 (EDT, then EST): the first one runs.
    new_york = Schedule("30 1 * * *", "America/New_York")
    assert runs(new_york, utc(2026, 10, 31, 12), utc(2026, 11, 2, 12)) == [
        utc(2026, 11, 1, 5, 30),  # 01:30 EDT; not 06:30 UTC (01:30 EST)
        utc(2026, 11, 2, 6, 30),  # 01:30 EST
    ]


def test_a_0130_job_in_madrid_runs_once_on_the_spring_forward_day() -> None:
    schedule = Schedule("30 1 * * *", "Europe/Madrid")
    assert runs(schedule, utc(2026, 3, 28, 12), utc(2026, 3, 30, 12)) == [
        utc(2026, 3, 29, 0, 30),  # 01:30 CET, half an hour before the change
        utc(2026, 3, 29, 23, 30),  # 01:30 CEST on the 30th
    ]


def test_an_hourly_job_stays_one_hour_apart_in_real_time_across_both_changes() -> None:
    hourly = Schedule("0 * * * *", "Europe/Madrid")
    # Spring: 02:00 local does not exist; 01:00 CET and 03:00 CEST are one hour apart.
    assert runs(hourly, utc(2026, 3, 28, 23, 30), utc(2026, 3, 29, 2, 30)) == [
        utc(2026, 3, 29, 0),
        utc(2026, 3, 29, 1),
        utc(2026, 3, 29, 2),
    ]
    # Autumn: 02:00 happens twice and runs twice (CEST at 00:00 UTC, CET at 01:00 UTC).
    assert runs(hourly, utc(2026, 10, 24, 22, 30), utc(2026, 10, 25, 2, 30)) == [
        utc(2026, 10, 24, 23),
        utc(2026, 10, 25, 0),
        utc(2026, 10, 25, 1),
        utc(2026, 10, 25, 2),
    ]


def test_a_quarter_hourly_job_does_not_run_in_the_gap() -> None:
    schedule = Schedule("*/15 * * * *", "Europe/Madrid")
    assert runs(schedule, utc(2026, 3, 29, 0, 40), utc(2026, 3, 29, 1, 20)) == [
        utc(2026, 3, 29, 0, 45),  # 01:45 CET
        utc(2026, 3, 29, 1, 0),  # 03:00 CEST
        utc(2026, 3, 29, 1, 15),
    ]


def test_next_run_is_strictly_after_and_day_fields_follow_cron() -> None:
    schedule = Schedule("0 8 * * MON", "Europe/Madrid")
    monday = utc(2026, 3, 30, 6)
    assert schedule.next_after(monday - 1) == monday
    assert schedule.next_after(monday) == utc(2026, 4, 6, 6)
    # day-of-month OR day-of-week when both are restricted (cron): the 1st, and Fridays.
    either = Schedule("0 12 1 * FRI", "UTC")
    assert runs(either, utc(2026, 4, 28), utc(2026, 5, 10)) == [
        utc(2026, 5, 1, 12),  # Friday the 1st: once
        utc(2026, 5, 8, 12),
    ]


def test_latest_run_is_the_most_recent_in_the_window() -> None:
    schedule = Schedule("0 8 * * MON", "Europe/Madrid")
    # Down from Friday 2026-03-20 to Wednesday 2026-04-08: the 23rd, 30th and 6th were missed.
    assert schedule.latest(utc(2026, 4, 8, 12), after=utc(2026, 3, 20)) == utc(2026, 4, 6, 6)
    assert schedule.latest(utc(2026, 3, 23, 6), after=utc(2026, 3, 20)) is None
    assert schedule.latest(utc(2026, 3, 23, 7), after=utc(2026, 3, 20)) == utc(2026, 3, 23, 7)
    yearly = Schedule("0 0 1 1 *", "UTC")
    assert yearly.latest(utc(2030, 6, 1), after=utc(2026, 6, 1)) == utc(2030, 1, 1)


def test_bad_expressions_and_zones_are_refused() -> None:
    with pytest.raises(ScheduleError, match="five fields"):
        Schedule("0 8 * * MON *", "UTC")
    with pytest.raises(ScheduleError, match="five fields"):
        Schedule("every monday", "UTC")
    with pytest.raises(ScheduleError, match="unknown IANA timezone"):
        Schedule("0 8 * * MON", "Europe/Madird")
    with pytest.raises(ScheduleError, match="never matches"):
        Schedule("0 0 30 2 *", "UTC").next_after(utc(2026, 1, 1))


def test_fixed_and_wildcard_jobs_are_told_apart_as_cron_does() -> None:
    assert Schedule("30 2 * * *").fixed_time
    assert Schedule("0 8,18 * * MON-FRI").fixed_time
    assert not Schedule("0 * * * *").fixed_time
    assert not Schedule("*/5 2 * * *").fixed_time
