"""The SLA scheduler: timers survive restarts, two schedulers fire once, auto-close, and the live loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from core.desk import Desk
from core.enums import Priority, Status
from core.event_types import StatusReason
from core.events import EventType
from core.models import Staff
from core.queries import ticket_detail
from core.services import reply
from core.sla.policy import SlaPolicy
from core.sla.queries import ticket_sla
from core.sla.scheduler import SlaScheduler
from core.timeutil import utcnow
from tests.conftest import open_desk
from tests.kit import eventually
from tests.sla.conftest import (
    AGENT,
    auto_close,
    count,
    customer_writes,
    events_of,
    open_one,
    scheduler,
    settings,
)

HOURS = timedelta(hours=1)


@pytest.fixture
async def second_desk(desk: Desk, tmp_path: Path) -> AsyncIterator[Desk]:
    """Another process's view of the same database: its own engine, same clock."""
    async with open_desk(desk.db.url.render_as_string(hide_password=False), tmp_path, desk.clock,
                         migrate=False) as other:
        yield other


async def test_restart_in_the_middle_rearms_every_timer_and_fires_nothing_twice(desk, second_desk, clock):
    before = scheduler(desk)
    numbers = [await open_one(desk, f"ticket {i}") for i in range(3)]
    await before.run_due()
    clock.advance(hours=3, minutes=12)
    assert await before.run_due() == 3  # at risk x 3

    # "Restart": the old scheduler is gone; meanwhile a ticket gets its answer. A new process
    # starts with nothing in memory and finds its work in the tables.
    await reply(desk, numbers[2], AGENT, "Answered while the scheduler was down.")
    after = SlaScheduler(second_desk, settings())
    assert await after.next_due() == clock.now + 48 * timedelta(minutes=1)  # the armed breach timers
    clock.advance(minutes=48)
    assert await after.run_due() == 2  # breaches of the two unanswered tickets only
    assert await before.run_due() == 0 and await after.run_due() == 0
    assert await count(desk, EventType.SLA_AT_RISK) == 3
    assert sorted(e.data["ticket"] for e in await events_of(desk, EventType.SLA_BREACHED)) == numbers[:2]


async def test_two_schedulers_on_one_database_send_one_alert_per_timer(desk, second_desk, clock):
    first, second = SlaScheduler(desk, settings(), batch=7), SlaScheduler(second_desk, settings(), batch=7)
    numbers = [await open_one(desk, f"ticket {i}") for i in range(12)]
    await asyncio.gather(first.catch_up(), second.catch_up())
    clock.advance(hours=5)  # every ticket: at risk and breached, all due at once
    # Small batches, so both get work while the other holds rows: the claim must sort it out.
    fired = await asyncio.gather(first.run_due(), second.run_due())
    assert sum(fired) == 24
    assert await first.run_due() + await second.run_due() == 0
    breached = [e.data["ticket"] for e in await events_of(desk, EventType.SLA_BREACHED)]
    assert sorted(breached) == numbers
    # Both timers of a ticket were overdue together: when the other scheduler fired the breach
    # first, the at-risk warning is rightly dropped. Never one twice, though.
    at_risk = [e.data["ticket"] for e in await events_of(desk, EventType.SLA_AT_RISK)]
    assert len(at_risk) == len(set(at_risk)) and set(at_risk) <= set(numbers)


async def test_auto_close_chain_reminds_then_resolves_then_closes(desk, clock):
    sla = scheduler(desk, policies={}, auto_close=auto_close(reminder=48, resolve=72, close=24))
    number = await open_one(desk)
    await reply(desk, number, AGENT, "Does it still burn?")  # -> pending
    await sla.run_due()
    assert [what for what, _ in (await ticket_sla(desk, number)).auto_close] == ["reminder to customer"]

    clock.advance(hours=48)
    assert await sla.run_due() == 1
    [reminder] = await events_of(desk, EventType.PENDING_REMINDER_DUE)
    assert reminder.data["ticket"] == number and reminder.data["resolve_at"] == (clock.now + 72 * HOURS).isoformat()
    assert (await ticket_detail(desk, number)).status == Status.PENDING

    clock.advance(hours=72)
    assert await sla.run_due() == 1
    assert (await ticket_detail(desk, number)).status == Status.RESOLVED
    clock.advance(hours=23)
    assert await sla.run_due() == 0
    clock.advance(hours=1)
    assert await sla.run_due() == 1
    assert (await ticket_detail(desk, number)).status == Status.CLOSED

    changes = [e.data for e in await events_of(desk, EventType.STATUS_CHANGED)]
    assert changes[-2:] == [{"from": "pending", "to": "resolved", "reason": StatusReason.NO_ANSWER},
                            {"from": "resolved", "to": "closed", "reason": StatusReason.RESOLVED_QUIET}]
    async with desk.db.read() as session:
        actors = {s.display_name for s in await session.scalars(select(Staff))}
    assert actors == {"Bob", "SLA"}
    assert await sla.run_due() == 0 and await sla.next_due() is None


async def test_customer_answer_while_pending_stops_the_auto_close_chain(desk, clock):
    sla = scheduler(desk, policies={}, auto_close=auto_close(reminder=48, resolve=72, close=24))
    number = await open_one(desk)
    await reply(desk, number, AGENT, "Does it still burn?")
    await sla.run_due()
    clock.advance(hours=24)
    await customer_writes(desk, number)
    clock.advance(hours=200)
    assert await sla.run_due() == 0
    assert await count(desk, EventType.PENDING_REMINDER_DUE) == 0
    assert (await ticket_detail(desk, number)).status == Status.OPEN


async def test_without_reminder_a_pending_ticket_is_resolved_after_the_resolve_time(desk, clock):
    sla = scheduler(desk, policies={}, auto_close=auto_close(reminder=None, resolve=72, close=None))
    number = await open_one(desk)
    await reply(desk, number, AGENT, "Does it still burn?")
    clock.advance(hours=72)
    assert await sla.run_due() == 1
    assert (await ticket_detail(desk, number)).status == Status.RESOLVED
    assert await sla.next_due() is None  # closing is off


async def test_running_scheduler_wakes_for_a_new_ticket_and_fires_on_time(desk):
    live = Desk(desk.db, desk.settings, desk.files, utcnow)
    one_second = SlaPolicy(first_response=timedelta(seconds=1), business_hours=False)
    part = SlaScheduler(live, settings(policies={Priority.MEDIUM: one_second}), poll_seconds=30)
    delays: list[float] = []
    planned = part._delay

    async def noted() -> float:
        delays.append(await planned())
        return delays[-1]

    part._delay = noted  # type: ignore[method-assign]
    await part.start()
    try:
        await eventually(lambda: delays)
        assert delays == [30]  # asleep now, with no timer and a 30 s poll
        await open_one(live)
        # Well inside the 30 s poll: only the commit's wake-up and the armed timer explain the breach.
        await eventually(lambda: count(live, EventType.SLA_BREACHED), timeout=10)
        assert await count(live, EventType.SLA_BREACHED) == 1
        assert await count(live, EventType.SLA_AT_RISK) == 1
    finally:
        await part.stop()


async def test_a_timer_another_scheduler_fired_after_we_read_it_is_not_fired_again(desk, second_desk, clock):
    mine = scheduler(desk)
    await open_one(desk)
    await mine.catch_up()
    clock.advance(hours=5)
    async with desk.db.read() as session:
        stale = await mine._due(session, clock.now)  # read, then the other process wins the race

    class ReadBeforeTheOtherFired(SlaScheduler):
        async def _due(self, session: object, now: object) -> list:  # type: ignore[override]
            return stale

    assert await SlaScheduler(second_desk, settings()).run_due() == 2
    assert await ReadBeforeTheOtherFired(desk, settings()).fire_batch() == 0
    assert await count(desk, EventType.SLA_BREACHED) == 1


async def test_timers_armed_under_a_policy_since_removed_from_the_config_fire_nothing(desk, clock):
    number = await open_one(desk)
    await scheduler(desk).catch_up()  # armed under the 4 h / 24 h calendar-time policy
    clock.advance(hours=30)
    assert await scheduler(desk, policies={}, auto_close=auto_close()).run_due() == 4  # claimed, void
    assert await count(desk, EventType.SLA_AT_RISK) + await count(desk, EventType.SLA_BREACHED) == 0
    assert (await ticket_detail(desk, number)).status == Status.OPEN


async def test_schedulers_and_staff_replies_racing_on_the_same_tickets_alert_once_per_breach(
        desk, second_desk, clock):
    first, second = SlaScheduler(desk, settings(), batch=5), SlaScheduler(second_desk, settings(), batch=5)
    numbers = [await open_one(desk, f"ticket {i}") for i in range(10)]
    await first.catch_up()
    clock.advance(hours=5)  # every first response is late; the replies race the alerts

    async def answer_all() -> None:
        for number in numbers:
            await reply(second_desk, number, AGENT, "Sorry for the wait.")

    await asyncio.gather(first.run_due(), second.run_due(), answer_all())
    await first.run_due()
    breached = [e.data["ticket"] for e in await events_of(desk, EventType.SLA_BREACHED)]
    assert sorted(breached) == numbers  # each late answer: one breach alert, never two
    at_risk = [e.data["ticket"] for e in await events_of(desk, EventType.SLA_AT_RISK)]
    assert len(at_risk) == len(set(at_risk)) <= len(numbers)  # void once answered, never twice
    assert await first.next_due() is None or await first.next_due() > clock.now
