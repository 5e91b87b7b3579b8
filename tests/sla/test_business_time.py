"""Business-time arithmetic: nights, weekends, holidays, lunch breaks and DST changes in two zones."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from core.errors import UserError
from core.sla.business_time import CalendarTime, business_calendar, parse_openings
from core.sla.policy import parse_duration

PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")
OFFICE = {d: "09:00-17:00" for d in ("mon", "tue", "wed", "thu", "fri")}
HOUR = 3600


def local(tz: ZoneInfo, *args: int) -> datetime:
    return datetime(*args, tzinfo=tz)  # type: ignore[misc]


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def test_time_left_at_closing_continues_next_morning():
    cal = business_calendar("Europe/Paris", OFFICE)
    tuesday_4pm = local(PARIS, 2026, 3, 3, 16, 0)
    assert cal.add(tuesday_4pm, 2 * HOUR) == local(PARIS, 2026, 3, 4, 10, 0)
    assert cal.between(tuesday_4pm, local(PARIS, 2026, 3, 4, 10, 0)) == 2 * HOUR


def test_friday_afternoon_plus_one_hour_lands_on_monday():
    cal = business_calendar("Europe/Paris", OFFICE)
    assert cal.add(local(PARIS, 2026, 3, 6, 16, 30), HOUR) == local(PARIS, 2026, 3, 9, 9, 30)
    assert cal.between(local(PARIS, 2026, 3, 6, 12, 0), local(PARIS, 2026, 3, 9, 12, 0)) == 8 * HOUR


def test_holiday_is_skipped_like_a_weekend():
    cal = business_calendar("Europe/Paris", OFFICE, [date(2026, 3, 9)])
    assert cal.add(local(PARIS, 2026, 3, 6, 16, 30), HOUR) == local(PARIS, 2026, 3, 10, 9, 30)
    assert cal.between(local(PARIS, 2026, 3, 9, 0, 0), local(PARIS, 2026, 3, 10, 0, 0)) == 0


def test_start_outside_hours_counts_from_the_next_opening():
    cal = business_calendar("Europe/Paris", OFFICE)
    saturday_night = local(PARIS, 2026, 3, 7, 23, 0)
    assert cal.add(saturday_night, 0) == local(PARIS, 2026, 3, 9, 9, 0)
    assert cal.add(saturday_night, 30 * 60) == local(PARIS, 2026, 3, 9, 9, 30)
    assert not cal.is_open(saturday_night)
    assert cal.is_open(local(PARIS, 2026, 3, 9, 9, 0))


def test_lunch_break_is_not_counted():
    cal = business_calendar("UTC", {"mon": "09:00-12:00, 13:00-17:00"})
    monday_11 = utc(2026, 3, 2, 11, 0)
    assert cal.add(monday_11, 2 * HOUR) == utc(2026, 3, 2, 14, 0)
    assert cal.between(monday_11, utc(2026, 3, 2, 14, 0)) == 2 * HOUR


def test_paris_spring_forward_weekend_business_hours_keep_their_local_times():
    cal = business_calendar("Europe/Paris", OFFICE)
    friday = local(PARIS, 2026, 3, 27, 16, 0)  # CET, UTC+1
    monday = cal.add(friday, 2 * HOUR)
    assert monday == local(PARIS, 2026, 3, 30, 10, 0)  # CEST, UTC+2
    assert monday == utc(2026, 3, 30, 8, 0)
    assert cal.between(utc(2026, 3, 27, 15, 0), utc(2026, 3, 30, 8, 0)) == 2 * HOUR


def test_paris_dst_days_have_23_and_25_real_hours_when_open_all_day():
    all_day = business_calendar("Europe/Paris", {d: "00:00-24:00" for d in ("fri", "sat", "sun", "mon")})
    march = (local(PARIS, 2026, 3, 28, 0, 0), local(PARIS, 2026, 3, 30, 0, 0))
    october = (local(PARIS, 2026, 10, 24, 0, 0), local(PARIS, 2026, 10, 26, 0, 0))
    assert all_day.between(*march) == 47 * HOUR
    assert all_day.between(*october) == 49 * HOUR
    assert all_day.add(march[0], 47 * HOUR) == march[1]
    assert all_day.add(october[0], 49 * HOUR) == october[1]


def test_opening_across_the_missing_and_the_doubled_hour_counts_real_time():
    night = business_calendar("Europe/Paris", {"sun": "00:00-06:00"})
    assert night.between(local(PARIS, 2026, 3, 29, 0, 0), local(PARIS, 2026, 3, 29, 12, 0)) == 5 * HOUR
    assert night.between(local(PARIS, 2026, 10, 25, 0, 0), local(PARIS, 2026, 10, 25, 12, 0)) == 7 * HOUR
    # 04:00 local on 29 March is 02:00 UTC: 3 real hours after midnight (01:00-02:00 never happens)
    assert night.add(local(PARIS, 2026, 3, 29, 0, 0), 3 * HOUR) == utc(2026, 3, 29, 2, 0)


def test_new_york_dst_changes_in_march_and_november():
    cal = business_calendar("America/New_York", OFFICE)
    assert cal.add(local(NEW_YORK, 2026, 3, 6, 16, 0), 2 * HOUR) == utc(2026, 3, 9, 14, 0)  # EDT
    assert cal.add(local(NEW_YORK, 2026, 10, 30, 16, 0), 2 * HOUR) == utc(2026, 11, 2, 15, 0)  # EST
    assert cal.between(utc(2026, 10, 30, 20, 0), utc(2026, 11, 2, 15, 0)) == 2 * HOUR


def test_adding_then_measuring_gives_back_the_same_amount():
    cal = business_calendar("America/New_York", {**OFFICE, "sat": "10:00-12:00"}, [date(2026, 11, 26)])
    rng = random.Random(7)
    for _ in range(300):
        start = utc(2026, 1, 1) + timedelta(seconds=rng.randrange(365 * 86400))
        amount = rng.randrange(0, 60 * HOUR)
        assert cal.between(start, cal.add(start, amount)) == pytest.approx(amount)


def test_calendar_time_counts_every_second():
    measure = CalendarTime()
    start = local(PARIS, 2026, 3, 28, 12, 0)
    assert measure.add(start, 24 * HOUR) == start + timedelta(hours=24)
    assert measure.between(start, start - timedelta(hours=1)) == 0


@pytest.mark.parametrize("text", ["9-17", "17:00-09:00", "09:00-25:00", "09:00-12:00, 11:00-13:00", "09:60-10:00"])
def test_bad_opening_hours_are_refused_with_the_expected_form(text):
    with pytest.raises(UserError):
        parse_openings(text)


def test_calendar_closed_every_day_is_refused():
    with pytest.raises(UserError, match="closed every day"):
        business_calendar("UTC", {"mon": ""})


@pytest.mark.parametrize(("text", "seconds"), [("4h", 4 * HOUR), ("1d 2h", 26 * HOUR), ("30m", 1800),
                                                ("1w", 7 * 86400), ("1.5h", 5400), ("90s", 90)])
def test_durations_parse(text, seconds):
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["4", "4x", "h", "0h", "-1h"])
def test_bad_durations_are_refused(text):
    with pytest.raises(UserError):
        parse_duration(text)


def test_empty_duration_means_off():
    assert parse_duration("  ") is None
