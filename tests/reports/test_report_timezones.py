"""The report's day is a local calendar day: time zones and the two daylight-saving changes."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from core.reports import daily_report, day_bounds, previous_local_day
from tests.reports.conftest import at, open_ticket

PARIS = "Europe/Paris"


def test_paris_spring_forward_day_has_23_hours_and_fall_back_day_25():
    spring = day_bounds(date(2026, 3, 29), ZoneInfo(PARIS))
    autumn = day_bounds(date(2026, 10, 25), ZoneInfo(PARIS))
    assert spring == (datetime(2026, 3, 28, 23, tzinfo=UTC), datetime(2026, 3, 29, 22, tzinfo=UTC))
    assert autumn == (datetime(2026, 10, 24, 22, tzinfo=UTC), datetime(2026, 10, 25, 23, tzinfo=UTC))


def test_the_report_after_midnight_local_is_about_the_local_yesterday():
    # 23:30 UTC on 28 March is already 00:30 on the 29th in Paris.
    assert previous_local_day(datetime(2026, 3, 28, 23, 30, tzinfo=UTC), ZoneInfo(PARIS)) == date(2026, 3, 28)
    assert previous_local_day(datetime(2026, 3, 28, 22, 30, tzinfo=UTC), ZoneInfo(PARIS)) == date(2026, 3, 27)


async def test_spring_forward_day_counts_tickets_by_local_date(desk, clock):
    at(clock, 2026, 3, 28, 22, 30)  # 23:30 CET on the 28th
    await open_ticket(desk, "a", "before")
    at(clock, 2026, 3, 28, 23, 30)  # 00:30 CET on the 29th
    await open_ticket(desk, "b", "first hour")
    at(clock, 2026, 3, 29, 1, 30)  # 03:30 CEST: the hour 02:00-03:00 never happened
    await open_ticket(desk, "c", "after the jump")
    at(clock, 2026, 3, 29, 21, 30)  # 23:30 CEST on the 29th
    await open_ticket(desk, "d", "last hour")
    at(clock, 2026, 3, 29, 22, 30)  # 00:30 CEST on the 30th
    await open_ticket(desk, "e", "next day")
    at(clock, 2026, 3, 31, 8)
    report = await daily_report(desk, date(2026, 3, 29), PARIS)
    assert (report.previous.opened, report.today.opened) == (1, 3)
    assert len(report.hours) == 23
    assert [h.label for h in report.hours[:4]] == ["00:00 UTC+01", "01:00 UTC+01", "03:00 UTC+02", "04:00 UTC+02"]
    assert {h.label: h.count for h in report.hours if h.count} == {
        "00:00 UTC+01": 1, "03:00 UTC+02": 1, "23:00 UTC+02": 1}
    assert [t.backlog for t in report.trend[-2:]] == [1, 4]


async def test_fall_back_day_keeps_both_two_oclock_hours_apart(desk, clock):
    at(clock, 2026, 10, 25, 0, 30)  # 02:30 CEST
    await open_ticket(desk, "a", "first 02:30")
    at(clock, 2026, 10, 25, 1, 30)  # 02:30 CET, an hour later
    await open_ticket(desk, "b", "second 02:30")
    at(clock, 2026, 10, 25, 22, 30)  # 23:30 CET, still the 25th
    await open_ticket(desk, "c", "late")
    at(clock, 2026, 10, 26, 7)
    report = await daily_report(desk, date(2026, 10, 25), PARIS)
    assert report.today.opened == 3
    assert len(report.hours) == 25
    assert {h.label: h.count for h in report.hours if h.count} == {
        "02:00 UTC+02": 1, "02:00 UTC+01": 1, "23:00 UTC+01": 1}


async def test_the_same_moment_belongs_to_different_days_in_different_zones(desk, clock):
    at(clock, 2026, 3, 2, 23, 30)  # Monday in UTC, already Tuesday in Paris
    await open_ticket(desk, "a", "late")
    at(clock, 2026, 3, 4, 9)
    assert (await daily_report(desk, date(2026, 3, 2), "UTC")).today.opened == 1
    assert (await daily_report(desk, date(2026, 3, 2), PARIS)).today.opened == 0
    assert (await daily_report(desk, date(2026, 3, 3), PARIS)).today.opened == 1
