"""Daily report figures, hand-computed from a history built through the core services."""

from __future__ import annotations

from datetime import date

from core import inbound, services
from core.enums import Priority, Status
from core.intake import quarantine
from core.reports import SLA_NOT_CONFIGURED, DayAverages, DayCounts, daily_report
from tests.reports.conftest import (
    KIM,
    SAM,
    at,
    customer_writes,
    open_ticket,
    set_status,
    staff_replies,
)

MONDAY = date(2026, 3, 2)


async def build_monday(desk, clock) -> dict[str, int]:
    """Sunday: T1 opened and answered. Monday: T2, T3 opened; T1 resolved, reopened twice, closed."""
    at(clock, 2026, 3, 1, 10)
    t1 = await open_ticket(desk, "alice", "Printer on fire")
    at(clock, 2026, 3, 1, 11)
    await staff_replies(desk, t1)  # first response on Sunday: not Monday's figure
    at(clock, 2026, 3, 2, 9)
    t2 = await open_ticket(desk, "bob", "Invoice wrong")
    at(clock, 2026, 3, 2, 9, 10)
    await staff_replies(desk, t2)  # 600 s
    at(clock, 2026, 3, 2, 9, 30)
    t3 = await open_ticket(desk, "carol", "Refund", priority=Priority.HIGH, category="billing")
    at(clock, 2026, 3, 2, 11, 30)
    await staff_replies(desk, t3)  # 7200 s
    at(clock, 2026, 3, 2, 11, 40)
    await services.assign(desk, t3, KIM, SAM)
    at(clock, 2026, 3, 2, 12)
    await set_status(desk, t2, Status.RESOLVED)  # 3 h after opening
    at(clock, 2026, 3, 2, 13)
    await set_status(desk, t1, Status.RESOLVED, KIM)
    at(clock, 2026, 3, 2, 14)
    await customer_writes(desk, t1, "alice")  # reopened once
    at(clock, 2026, 3, 2, 15)
    await set_status(desk, t1, Status.RESOLVED, KIM)
    at(clock, 2026, 3, 2, 16)
    await customer_writes(desk, t1, "alice")  # reopened twice
    at(clock, 2026, 3, 2, 17)
    await set_status(desk, t1, Status.CLOSED, KIM)  # 31 h after opening
    at(clock, 2026, 3, 2, 18)
    await customer_writes(desk, t3, "carol", machine=True)  # an auto-reply
    at(clock, 2026, 3, 2, 19)
    stored = await inbound.store_raw(desk, b"Subject: broken\r\n\r\nx", source="smtp")
    await quarantine(desk, stored.id, "unparseable")
    at(clock, 2026, 3, 2, 20)
    return {"t1": t1, "t2": t2, "t3": t3}


async def test_counts_distinct_tickets_opened_reopened_resolved_closed(desk, clock):
    await build_monday(desk, clock)
    report = await daily_report(desk, MONDAY, "UTC")
    assert report.today == DayCounts(opened=2, reopened=1, resolved=2, closed=1)
    assert report.previous == DayCounts(opened=1)
    assert report.week_average == DayAverages(opened=round(1 / 7, 2))
    assert report.staff_replies == 2
    assert not report.quiet


async def test_first_response_and_resolution_median_and_p90(desk, clock):
    await build_monday(desk, clock)
    report = await daily_report(desk, MONDAY, "UTC")
    # first responses 600 s and 7200 s; T1's came on Sunday
    assert (report.first_response.count, report.first_response.median_seconds,
            report.first_response.p90_seconds) == (2, 3900.0, 600 + 0.9 * 6600)
    # T2 resolved after 10 800 s; T1's last resolution 31 h = 111 600 s after it was opened
    assert (report.resolution.count, report.resolution.median_seconds,
            report.resolution.p90_seconds) == (2, 61200.0, 10800 + 0.9 * 100800)


async def test_percentiles_interpolate_over_five_values(desk, clock):
    waits = [60, 120, 300, 600, 1000]  # minutes until the first reply
    for i, minutes in enumerate(waits):
        at(clock, 2026, 3, 2, 0, i)
        number = await open_ticket(desk, f"c{i}", "q")
        clock.advance(minutes=minutes)
        await staff_replies(desk, number)
    report = await daily_report(desk, date(2026, 3, 2), "UTC")
    # sorted seconds 3600 7200 18000 36000 60000: median the 3rd, p90 at position 3.6
    assert report.first_response.count == 5
    assert report.first_response.median_seconds == 18000.0
    assert report.first_response.p90_seconds == 36000 + 0.6 * (60000 - 36000)


async def test_backlog_and_oldest_open_tickets(desk, clock):
    numbers = await build_monday(desk, clock)
    report = await daily_report(desk, MONDAY, "UTC")
    assert report.backlog.total == 1
    assert report.backlog.by_status == {"pending": 1}
    assert report.backlog.by_priority == {"high": 1}
    assert report.backlog.by_category == {"billing": 1}
    assert [(t.number, t.status, t.assignee) for t in report.oldest] == [(numbers["t3"], "pending", "Kim Lead")]
    assert report.oldest[0].age_seconds == 10.5 * 3600


async def test_per_staff_load(desk, clock):
    await build_monday(desk, clock)
    report = await daily_report(desk, MONDAY, "UTC")
    loads = {s.name: (s.assigned, s.replied, s.resolved, s.open_now) for s in report.staff}
    assert loads == {"Sam Agent": (0, 2, 1, 0), "Kim Lead": (1, 0, 1, 1)}


async def test_busiest_hours_count_customer_mail_but_not_machine_mail(desk, clock):
    await build_monday(desk, clock)
    report = await daily_report(desk, MONDAY, "UTC")
    assert len(report.hours) == 24
    assert [(h.label, h.count) for h in report.busiest_hours()] == [("09:00", 2), ("14:00", 1), ("16:00", 1)]
    assert sum(h.count for h in report.hours) == 4


async def test_machine_and_quarantined_mail(desk, clock):
    await build_monday(desk, clock)
    report = await daily_report(desk, MONDAY, "UTC")
    assert (report.mail.machine, report.mail.quarantined, report.mail.held,
            report.mail.quarantined_waiting) == (1, 1, 0, 1)


async def test_trend_replays_the_backlog_at_each_day_end(desk, clock):
    await build_monday(desk, clock)
    report = await daily_report(desk, MONDAY, "UTC")
    assert len(report.trend) == 14
    assert report.trend[-1].day == MONDAY
    assert [(t.day.day, t.counts.opened, t.backlog) for t in report.trend[-3:]] == [
        (28, 0, 0), (1, 1, 1), (2, 2, 1)]
    # A day later, a report for Monday still shows Monday's end-of-day backlog, not today's.
    at(clock, 2026, 3, 3, 9)
    await set_status(desk, 1002, Status.RESOLVED)
    later = await daily_report(desk, MONDAY, "UTC")
    assert later.trend[-1].backlog == 1
    assert later.backlog.total == 0


async def test_sla_is_a_named_seam_until_the_sla_issue(desk, clock):
    report = await daily_report(desk, MONDAY, "UTC")
    assert report.sla is None
    assert report.sla_note == SLA_NOT_CONFIGURED


async def test_an_empty_day_is_quiet_and_all_zero(desk, clock):
    report = await daily_report(desk, MONDAY, "UTC")
    assert report.quiet
    assert report.today == report.previous == DayCounts()
    assert report.first_response.count == 0 and report.first_response.median_seconds is None
    assert report.resolution.p90_seconds is None
    assert report.backlog.total == 0 and report.oldest == [] and report.staff == []
    assert report.busiest_hours() == []
    assert all(t.backlog == 0 for t in report.trend)


async def test_the_day_after_is_quiet_and_compares_with_monday(desk, clock):
    await build_monday(desk, clock)
    at(clock, 2026, 3, 4, 8)
    report = await daily_report(desk, date(2026, 3, 3), "UTC")
    assert report.quiet
    assert report.previous == DayCounts(opened=2, reopened=1, resolved=2, closed=1)
    assert report.week_average == DayAverages(opened=round(3 / 7, 2),
                                              reopened=round(1 / 7, 2), resolved=round(2 / 7, 2),
                                              closed=round(1 / 7, 2))
    assert report.backlog.total == 1  # quiet, but the work still waiting is reported


async def test_finished_days_are_stored_and_give_the_same_report_again(desk, clock):
    from sqlalchemy import select

    from core.report_models import ReportDay

    await build_monday(desk, clock)  # the clock ends on Monday 20:00: Monday is not over
    fresh = await daily_report(desk, MONDAY, "UTC")
    async with desk.db.read() as s:
        stored = list(await s.scalars(select(ReportDay.day).order_by(ReportDay.day)))
    assert stored[0] == date(2026, 2, 17) and stored[-1] == date(2026, 3, 1) and len(stored) == 13
    again = await daily_report(desk, MONDAY, "UTC")
    assert (again.today, again.previous, again.week_average, again.trend) == (
        fresh.today, fresh.previous, fresh.week_average, fresh.trend)
    at(clock, 2026, 3, 3, 9)
    await set_status(desk, 1002, Status.RESOLVED)  # after Monday: moves today's backlog, not Monday's
    sunday = await daily_report(desk, date(2026, 3, 1), "UTC")  # every day of its trend is stored
    assert [(t.day.day, t.counts.opened, t.backlog) for t in sunday.trend[-2:]] == [(28, 0, 0), (1, 1, 1)]
    assert (await daily_report(desk, MONDAY, "UTC")).trend[-1].backlog == 1
