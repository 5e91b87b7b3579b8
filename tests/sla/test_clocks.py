"""SLA clocks driven by ticket events, with a fixed clock: start, pause, resume, met, breached, rules changing."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from core.enums import Priority, Status
from core.events import EventType
from core.services import (
    MailContent,
    add_note,
    assign,
    merge,
    open_ticket,
    reply,
    set_priority,
    set_status,
)
from core.sla.business_time import business_calendar
from core.sla.policy import SlaPolicy
from core.sla.queries import sla_compliance, ticket_sla
from core.sla_models import ClockState, SlaClock
from tests.sla.conftest import (
    AGENT,
    CALENDAR_POLICY,
    CUSTOMER,
    ON_CALL_ROLE,
    auto_close,
    clocks_of,
    count,
    customer_writes,
    events_of,
    open_one,
    scheduler,
)

HOURS = timedelta(hours=1)


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """Clock rules are plain SQL and run on SQLite here; test_scheduler.py runs on both engines."""
    return f"sqlite+aiosqlite:///{tmp_path / 'desk.db'}"


async def test_first_response_is_met_by_a_staff_reply_and_not_by_a_note(desk, clock):
    sla = scheduler(desk)
    number = await open_one(desk)
    clock.advance(hours=1)
    await add_note(desk, number, AGENT, "Looking into it.")
    await sla.run_due()
    assert (await clocks_of(desk, number))["first_response"].state == ClockState.RUNNING

    clock.advance(hours=1)
    await reply(desk, number, AGENT, "Unplug it, please.")
    await sla.run_due()
    first = (await clocks_of(desk, number))["first_response"]
    assert (first.state, first.breached_at, first.stopped_at) == (ClockState.MET, None, clock.now)
    clock.advance(hours=10)
    assert await sla.run_due() == 0
    assert await count(desk, EventType.SLA_BREACHED) == 0


async def test_at_risk_then_breached_each_fire_once_with_what_an_alert_needs(desk, clock):
    sla = scheduler(desk)
    opened = clock.now
    number = await open_one(desk)
    assert await sla.run_due() == 0
    clock.advance(hours=3, minutes=11)
    assert await sla.run_due() == 0
    clock.advance(minutes=1)  # 3 h 12 min: 80 % of the 4 h first-response target
    assert await sla.run_due() == 1
    assert await sla.run_due() == 0
    [risk] = await events_of(desk, EventType.SLA_AT_RISK)
    assert risk.data["ticket"] == number and risk.data["ref"] == f"#{number}"
    assert risk.data["clock"] == "first_response"
    assert risk.data["due_at"] == (opened + 4 * HOURS).isoformat()
    assert risk.data["assignee_discord_id"] is None and risk.data["on_call_role_id"] == ON_CALL_ROLE

    clock.advance(minutes=48)
    assert await sla.run_due() == 1
    [breach] = await events_of(desk, EventType.SLA_BREACHED)
    assert breach.data["clock"] == "first_response" and breach.data["priority_raised_to"] is None
    assert (await clocks_of(desk, number))["first_response"].breached_at == opened + 4 * HOURS

    clock.advance(hours=30)  # the resolution clock (24 h) goes at risk and breaches too
    assert await sla.run_due() == 2
    assert await sla.run_due() == 0
    assert [e.data["clock"] for e in await events_of(desk, EventType.SLA_BREACHED)] == \
        ["first_response", "resolution"]
    assert await count(desk, EventType.SLA_AT_RISK) == 2


async def test_pending_pauses_the_clocks_and_the_customer_answer_resumes_them(desk, clock):
    sla = scheduler(desk)
    opened = clock.now
    number = await open_one(desk)
    clock.advance(hours=1)
    await reply(desk, number, AGENT, "Which model is it?")  # -> pending
    await sla.run_due()
    resolution = (await clocks_of(desk, number))["resolution"]
    assert (resolution.state, resolution.elapsed_seconds, resolution.due_at) == (ClockState.PAUSED, 3600, None)

    clock.advance(hours=40)  # far past the 24 h resolution target, but it is the customer's turn
    assert await sla.run_due() == 0
    await customer_writes(desk, number)  # -> open again
    await sla.run_due()
    clocks = await clocks_of(desk, number)
    assert clocks["resolution"].state == ClockState.RUNNING
    assert clocks["resolution"].due_at == opened + 41 * HOURS + 23 * HOURS
    assert clocks["next_response"].due_at == opened + 43 * HOURS
    shown = await ticket_sla(desk, number)
    assert [c.kind for c in shown.clocks] == ["first_response", "next_response", "resolution"]
    assert any(line.startswith("next response due") for line in shown.lines())

    clock.advance(hours=2)  # the next response is at risk and then late
    assert await sla.run_due() == 2
    assert [e.data["clock"] for e in await events_of(desk, EventType.SLA_BREACHED)] == ["next_response"]


async def test_next_response_is_met_by_a_reply_and_machine_mail_does_not_start_it(desk, clock):
    sla = scheduler(desk)
    number = await open_one(desk)
    clock.advance(hours=1)
    await reply(desk, number, AGENT, "Try turning it off.")
    clock.advance(hours=1)
    await customer_writes(desk, number, machine=True)  # an out-of-office answer
    await sla.run_due()
    assert "next_response" not in await clocks_of(desk, number)

    clock.advance(hours=1)
    await customer_writes(desk, number)
    clock.advance(hours=1, minutes=30)
    await reply(desk, number, AGENT, "Then unplug it.")
    await sla.run_due()
    answered = (await clocks_of(desk, number))["next_response"]
    assert (answered.state, answered.breached_at) == (ClockState.MET, None)
    clock.advance(hours=5)
    await sla.run_due()
    assert await count(desk, EventType.SLA_BREACHED) == 0


async def test_late_answer_counts_as_breached_even_before_the_scheduler_noticed(desk, clock):
    sla = scheduler(desk)
    opened = clock.now
    number = await open_one(desk)
    await sla.run_due()
    clock.advance(hours=5)
    await reply(desk, number, AGENT, "Sorry for the wait.")
    assert await sla.run_due() == 1  # the breach alert still goes out, once; the at-risk one is void
    first = (await clocks_of(desk, number))["first_response"]
    assert (first.state, first.breached_at) == (ClockState.MET, opened + 4 * HOURS)
    assert await count(desk, EventType.SLA_AT_RISK) == 0


async def test_resolving_meets_the_resolution_clock_and_reopening_starts_a_new_one(desk, clock):
    sla = scheduler(desk)
    number = await open_one(desk)
    clock.advance(hours=2)
    await set_status(desk, number, Status.RESOLVED, AGENT)
    await sla.run_due()
    clocks = await clocks_of(desk, number)
    assert clocks["resolution"].state == ClockState.MET
    assert clocks["first_response"].state == ClockState.CANCELLED  # resolved without an answer

    clock.advance(hours=3)
    await customer_writes(desk, number)  # reopens
    await sla.run_due()
    reopened = (await clocks_of(desk, number))["resolution"]
    assert (reopened.state, reopened.started_at, reopened.due_at) == \
        (ClockState.RUNNING, clock.now, clock.now + 24 * HOURS)


async def test_priority_change_recomputes_targets_and_a_priority_without_policy_stops_them(desk, clock):
    urgent = SlaPolicy(first_response=2 * HOURS, resolution=8 * HOURS, business_hours=False)
    sla = scheduler(desk, policies={Priority.MEDIUM: CALENDAR_POLICY, Priority.URGENT: urgent})
    opened = clock.now
    number = await open_one(desk)
    clock.advance(hours=1)
    await set_priority(desk, number, Priority.URGENT, AGENT)
    await sla.run_due()
    clocks = await clocks_of(desk, number)
    assert clocks["first_response"].due_at == opened + 2 * HOURS
    assert clocks["resolution"].due_at == opened + 8 * HOURS
    assert await sla.next_due() == opened + 1.6 * HOURS

    await set_priority(desk, number, Priority.LOW, AGENT)
    await sla.run_due()
    assert {c.state for c in (await clocks_of(desk, number)).values()} == {ClockState.CANCELLED}
    assert await sla.next_due() is None


async def test_raising_to_a_priority_with_a_policy_starts_clocks_from_when_the_ticket_opened(desk, clock):
    sla = scheduler(desk)
    opened = clock.now
    change = await open_ticket(desk, CUSTOMER, MailContent(text="Low priority.", subject="Wobbly chair"),
                               priority=Priority.LOW)  # low has no policy: nothing measured
    number = change.ticket.number
    await sla.run_due()
    assert await clocks_of(desk, number) == {}
    clock.advance(hours=1)
    await set_priority(desk, number, Priority.MEDIUM, AGENT)
    await sla.run_due()
    clocks = await clocks_of(desk, number)
    assert clocks["first_response"].started_at == opened
    assert clocks["first_response"].due_at == opened + 4 * HOURS
    assert clocks["resolution"].due_at == opened + 24 * HOURS


async def test_merge_stops_the_merged_tickets_clocks(desk, clock):
    sla = scheduler(desk)
    source = await open_one(desk, "Printer on fire")
    target = await open_one(desk, "Printer still on fire")
    await merge(desk, source, target, AGENT)
    await sla.run_due()
    assert {c.state for c in (await clocks_of(desk, source)).values()} == {ClockState.CANCELLED}
    clock.advance(hours=5)
    await sla.run_due()
    assert [e.data["ticket"] for e in await events_of(desk, EventType.SLA_BREACHED)] == [target]


async def test_breach_raises_priority_when_configured_and_mentions_the_assignee(desk, clock):
    high = SlaPolicy(first_response=4 * HOURS, business_hours=False)
    sla = scheduler(desk, raise_priority_on_breach=True,
                    policies={Priority.MEDIUM: CALENDAR_POLICY, Priority.HIGH: high})
    number = await open_one(desk)
    await assign(desk, number, AGENT, AGENT)
    clock.advance(hours=4)
    assert await sla.run_due() == 2
    [breach] = await events_of(desk, EventType.SLA_BREACHED)
    assert breach.data["assignee_discord_id"] == AGENT.discord_id and breach.data["assignee_name"] == "Bob"
    assert breach.data["on_call_role_id"] is None and breach.data["priority_raised_to"] == "high"
    [raised] = await events_of(desk, EventType.PRIORITY_CHANGED)
    assert raised.data == {"from": "medium", "to": "high", "reason": "SLA breached"}
    clock.advance(hours=30)  # the high policy has no resolution target: nothing else fires
    assert await sla.run_due() == 0
    assert await count(desk, EventType.SLA_BREACHED) == 1


async def test_business_hours_clock_waits_over_the_weekend(desk, clock):
    office = business_calendar("Europe/Paris", {d: "09:00-17:00" for d in ("mon", "tue", "wed", "thu", "fri")})
    sla = scheduler(desk, calendar=office,
                    policies={Priority.MEDIUM: SlaPolicy(first_response=2 * HOURS, business_hours=True)})
    clock.now = datetime(2026, 3, 6, 15, 0, tzinfo=UTC)  # Friday 16:00 in Paris
    number = await open_one(desk)
    await sla.run_due()
    [first] = (await ticket_sla(desk, number)).clocks
    assert first.due_at == datetime(2026, 3, 9, 9, 0, tzinfo=UTC)  # Monday 10:00 in Paris
    clock.now = datetime(2026, 3, 9, 8, 35, tzinfo=UTC)
    assert await sla.run_due() == 0
    clock.now = datetime(2026, 3, 9, 8, 36, tzinfo=UTC)  # 1 h Friday + 36 min Monday = 80 % of 2 h
    assert await sla.run_due() == 1


async def test_compliance_counts_met_breached_and_at_risk(desk, clock):
    sla = scheduler(desk)
    start = clock.now
    on_time, late, answered_late = [await open_one(desk, s) for s in ("a", "b", "c")]
    clock.advance(hours=1)
    await reply(desk, on_time, AGENT, "Done.")
    clock.advance(hours=3)
    await sla.run_due()  # late and answered_late breach their first response
    clock.advance(minutes=1)
    await reply(desk, answered_late, AGENT, "Sorry.")
    clock.advance(hours=16)  # ~20 h: the resolution of `late` (still open) is at risk
    await sla.run_due()
    figures = await sla_compliance(desk, start, clock.now + HOURS)
    assert (figures.total.met, figures.total.breached, figures.total.at_risk) == (1, 2, 1)
    assert figures.by_kind["first_response"].met == 1 and figures.by_kind["resolution"].at_risk == 1
    assert figures.total.met_percent == 33.3
    assert sorted({e.data["ticket"] for e in await events_of(desk, EventType.SLA_BREACHED)}) == [late, answered_late]
    [risky] = [e for e in await events_of(desk, EventType.SLA_AT_RISK) if e.data["clock"] == "resolution"]
    assert risky.data["ticket"] == late
    before = await sla_compliance(desk, start - 10 * HOURS, start)
    assert (before.total.met, before.total.breached) == (0, 0)


async def test_ticket_sla_shows_met_paused_and_auto_close_lines_and_json(desk, clock):
    sla = scheduler(desk, auto_close=auto_close(reminder=48, resolve=None, close=None))
    number = await open_one(desk)
    clock.advance(hours=1)
    await reply(desk, number, AGENT, "Which model is it?")  # -> pending
    await sla.run_due()
    shown = await ticket_sla(desk, number)
    remind_at = clock.now + 48 * HOURS
    assert shown.lines() == ["first response met", "resolution paused (waiting on customer), 23h00m left",
                             f"reminder to customer {remind_at:%Y-%m-%d %H:%M} UTC"]
    data = json.loads(json.dumps(shown.as_json()))
    assert data["clocks"][1]["remaining_seconds"] == 23 * 3600
    assert data["auto_close"] == [{"what": "reminder to customer", "at": remind_at.isoformat()}]


async def test_ticket_opened_by_machine_mail_starts_its_clocks_at_the_first_human_mail(desk, clock):
    sla = scheduler(desk)
    change = await open_ticket(desk, CUSTOMER, MailContent(text="I am out of office.", subject="Auto: away",
                                                           is_machine=True))
    number = change.ticket.number
    await sla.run_due()
    assert await clocks_of(desk, number) == {}
    clock.advance(hours=2)
    await customer_writes(desk, number)
    clock.advance(minutes=5)
    await customer_writes(desk, number)  # a second mail before any answer starts nothing more
    await sla.run_due()
    clocks = await clocks_of(desk, number)
    assert clocks["first_response"].started_at == clock.now - timedelta(minutes=5)
    async with desk.db.read() as session:
        kinds = list(await session.scalars(select(SlaClock.kind).order_by(SlaClock.id)))
    assert kinds == ["first_response", "resolution"]


async def test_breach_is_recorded_without_a_running_scheduler_when_the_ticket_goes_pending(desk, clock):
    consumer_only = scheduler(desk)
    opened = clock.now
    number = await open_one(desk)
    clock.advance(hours=5)
    await set_status(desk, number, Status.PENDING, AGENT)  # no answer yet, 1 h late
    await consumer_only.catch_up()
    first = (await clocks_of(desk, number))["first_response"]
    assert (first.state, first.breached_at) == (ClockState.PAUSED, opened + 4 * HOURS)
    assert await consumer_only.run_due() == 1  # the overdue breach alert still goes out, once
    assert await count(desk, EventType.SLA_BREACHED) == 1


async def test_desk_stats_show_the_weeks_sla_compliance(desk, clock):
    from bot.format import stats_embed
    from core.stats import desk_stats

    sla = scheduler(desk)
    on_time, late = await open_one(desk, "a"), await open_one(desk, "b")
    clock.advance(hours=1)
    await reply(desk, on_time, AGENT, "Done.")
    clock.advance(hours=4)
    await sla.run_due()
    stats = await desk_stats(desk)
    assert (stats.sla_last_week.met, stats.sla_last_week.breached) == (1, 1)
    fields = {f.name: f.value for f in stats_embed(stats).fields}
    assert fields["SLA (7 days)"] == "met 1 · breached 1 (50.0% met) · at risk now 0"
    assert late != on_time


async def test_the_daily_report_counts_the_days_sla_breaches(desk, clock):
    from core.reports import daily_report

    sla = scheduler(desk)
    day = clock.now.date()
    on_time, late = await open_one(desk, "a"), await open_one(desk, "b")
    clock.advance(hours=1)
    await reply(desk, on_time, AGENT, "Done.")
    clock.advance(hours=4)
    await sla.run_due()
    clock.advance(days=1)
    report = await daily_report(desk, day, "UTC", sla_configured=True)
    assert report.sla is not None and (report.sla.breached, report.sla.at_risk) == (1, 0)
    assert report.sla_note == ""
    without = await daily_report(desk, day, "UTC")
    assert without.sla is None and without.sla_note == "SLA not configured"
    assert late != on_time
