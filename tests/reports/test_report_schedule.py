"""The report schedule: due at a local time (DST included), sent once per day, missed days caught up."""

from __future__ import annotations

from datetime import UTC, date, datetime, time

from core.report_schedule import ReportSchedule, claim, mark_failed, mark_sent, unsent_days
from tests.reports.conftest import at

PARIS_8 = ReportSchedule(send_at=time(8, 0), timezone="Europe/Paris")


def test_eight_oclock_paris_is_seven_utc_in_winter_and_six_in_summer():
    assert PARIS_8.due_at(date(2026, 3, 27)) == datetime(2026, 3, 28, 7, tzinfo=UTC)  # Sat 08:00 CET
    assert PARIS_8.due_at(date(2026, 3, 28)) == datetime(2026, 3, 29, 6, tzinfo=UTC)  # Sun 08:00 CEST
    assert PARIS_8.due_at(date(2026, 10, 24)) == datetime(2026, 10, 25, 7, tzinfo=UTC)  # back to CET


def test_a_send_time_the_clocks_skip_is_sent_an_hour_later_and_a_doubled_one_at_the_first():
    night = ReportSchedule(send_at=time(2, 30), timezone="Europe/Paris")
    assert night.due_at(date(2026, 3, 28)) == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)  # 03:30 CEST
    assert night.due_at(date(2026, 10, 24)) == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # first 02:30


def test_latest_due_day_switches_at_the_send_time():
    assert PARIS_8.latest_due_day(datetime(2026, 3, 29, 5, 59, tzinfo=UTC)) == date(2026, 3, 27)
    assert PARIS_8.latest_due_day(datetime(2026, 3, 29, 6, 0, tzinfo=UTC)) == date(2026, 3, 28)
    assert PARIS_8.next_due(datetime(2026, 3, 29, 6, 0, tzinfo=UTC)) == datetime(2026, 3, 30, 6, tzinfo=UTC)


async def send_due(desk, schedule: ReportSchedule) -> list[date]:
    """What the scheduler does on each pass, minus the mail."""
    sent = []
    for day in await unsent_days(desk, schedule):
        if await claim(desk, schedule.kind, day):
            await mark_sent(desk, schedule.kind, day)
            sent.append(day)
    return sent


async def test_a_new_desk_sends_only_yesterdays_report_and_only_once(desk, clock):
    at(clock, 2026, 3, 10, 7, 30)  # 08:30 in Paris
    assert await send_due(desk, PARIS_8) == [date(2026, 3, 9)]
    clock.advance(hours=1)
    assert await send_due(desk, PARIS_8) == []  # a restart re-reads the table: nothing twice


async def test_nothing_is_due_before_the_send_time(desk, clock):
    at(clock, 2026, 3, 10, 6, 59)  # 07:59 in Paris
    assert await send_due(desk, PARIS_8) == [date(2026, 3, 8)]
    at(clock, 2026, 3, 10, 7, 0)
    assert await send_due(desk, PARIS_8) == [date(2026, 3, 9)]


async def test_days_missed_while_down_are_sent_in_order_on_return(desk, clock):
    at(clock, 2026, 3, 10, 7, 30)
    await send_due(desk, PARIS_8)
    at(clock, 2026, 3, 13, 9, 0)  # down for three days
    assert await send_due(desk, PARIS_8) == [date(2026, 3, 10), date(2026, 3, 11), date(2026, 3, 12)]


async def test_catch_up_is_limited_to_the_configured_days(desk, clock):
    schedule = ReportSchedule(send_at=time(8, 0), timezone="UTC", catch_up_days=3)
    at(clock, 2026, 3, 1, 9)
    await send_due(desk, schedule)
    at(clock, 2026, 3, 20, 9)
    assert await send_due(desk, schedule) == [date(2026, 3, 17), date(2026, 3, 18), date(2026, 3, 19)]


async def test_reports_across_the_spring_change_go_out_once_each(desk, clock):
    at(clock, 2026, 3, 28, 7, 30)  # Sat 08:30 CET
    assert await send_due(desk, PARIS_8) == [date(2026, 3, 27)]
    at(clock, 2026, 3, 29, 5, 30)  # Sun 07:30 CEST: not yet
    assert await send_due(desk, PARIS_8) == []
    at(clock, 2026, 3, 29, 6, 0)  # Sun 08:00 CEST
    assert await send_due(desk, PARIS_8) == [date(2026, 3, 28)]
    at(clock, 2026, 3, 30, 6, 0)
    assert await send_due(desk, PARIS_8) == [date(2026, 3, 29)]


async def test_a_failed_send_is_retried_and_a_claim_in_progress_is_not_taken(desk, clock):
    at(clock, 2026, 3, 10, 9)
    day = date(2026, 3, 9)
    assert await claim(desk, "daily", day)
    assert not await claim(desk, "daily", day)  # another process is sending it
    await mark_failed(desk, "daily", day, "relay down")
    assert await unsent_days(desk, PARIS_8) == [day]
    assert await claim(desk, "daily", day)
    clock.advance(minutes=11)  # the sender died mid-send: its claim has expired
    assert await claim(desk, "daily", day)
    await mark_sent(desk, "daily", day)
    assert await unsent_days(desk, PARIS_8) == []
    assert not await claim(desk, "daily", day)
