"""Event consumers: a persisted cursor means replay after a restart and nothing handled twice."""

from __future__ import annotations

import asyncio
import logging

import pytest
from sqlalchemy import func, select

from core import services
from core.db import Database
from core.events import MAX_ATTEMPTS_PER_EVENT, HandlerFailed, consume_once, run_consumer
from core.models import Event, Ticket
from core.services import ContactRef, MailContent, StaffRef

ALICE = ContactRef("alice@example.org")
SAM = StaffRef("Sam", discord_id=1)


async def open_tickets(desk, n: int) -> None:
    for i in range(n):
        await services.open_ticket(desk, ALICE, MailContent(text="x", subject=f"t{i}"))


async def test_consumer_sees_each_event_once_across_restarts(desk, clock):
    seen: list[int] = []

    async def handle(uow, event):
        seen.append(event.id)

    await open_tickets(desk, 3)
    assert await consume_once(desk.db, "test", handle, clock=clock) == 3
    assert await consume_once(desk.db, "test", handle, clock=clock) == 0
    # A "restart": a new Database object on the same storage keeps the cursor.
    restarted = Database(str(desk.db.url.render_as_string(hide_password=False)))
    try:
        await open_tickets(desk, 2)
        assert await consume_once(restarted, "test", handle, clock=clock) == 2
    finally:
        await restarted.dispose()
    assert seen == sorted(set(seen)) and len(seen) == 5


async def test_a_failing_handler_moves_no_cursor_and_the_event_is_retried(desk, clock):
    await open_tickets(desk, 2)
    calls: list[int] = []

    async def flaky(uow, event):
        calls.append(event.id)
        if len(calls) == 2:
            raise RuntimeError("outage")

    with pytest.raises(HandlerFailed):
        await consume_once(desk.db, "flaky", flaky, clock=clock)
    await consume_once(desk.db, "flaky", flaky, clock=clock)
    first, second = calls[0], calls[1]
    assert calls == [first, second, second]


async def test_handler_writes_commit_with_the_cursor(desk, clock):
    """What a handler writes and the cursor move are one transaction (the outbox relies on it)."""
    await open_tickets(desk, 1)

    async def tag_then_fail(uow, event):
        ticket = await uow.session.get(Ticket, event.ticket_id)
        ticket.subject = "changed by consumer"
        raise RuntimeError("after the write")

    with pytest.raises(HandlerFailed):
        await consume_once(desk.db, "atomic", tag_then_fail, clock=clock)
    async with desk.db.read() as s:
        assert await s.scalar(select(Ticket.subject)) == "t0"


async def test_running_consumer_is_woken_by_commits_without_waiting_for_the_poll(desk, clock):
    seen: list[str] = []
    got_two = asyncio.Event()

    async def handle(uow, event):
        seen.append(event.type)
        if len(seen) == 2:
            got_two.set()

    stop = asyncio.Event()
    task = asyncio.create_task(run_consumer(desk.db, "live", handle, clock=clock, poll_seconds=60, stop=stop))
    await open_tickets(desk, 1)
    number = (await services.open_ticket(desk, ALICE, MailContent(text="y", subject="s"))).ticket.number
    await asyncio.wait_for(got_two.wait(), timeout=5)
    await services.add_note(desk, number, SAM, "note")
    for _ in range(50):
        if len(seen) == 3:
            break
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, timeout=5)
    assert seen == ["TicketOpened", "TicketOpened", "NoteAdded"]
    async with desk.db.read() as s:
        assert await s.scalar(select(func.count()).select_from(Event)) == 3


async def test_a_poison_event_is_skipped_after_repeated_failures_and_later_events_flow(desk, clock, caplog):
    await open_tickets(desk, 2)
    handled: list[int] = []
    attempts: list[int] = []
    first_id = None

    async def poison_first(uow, event):
        nonlocal first_id
        first_id = first_id or event.id
        if event.id == first_id:
            attempts.append(event.id)
            raise ValueError("cannot handle this one")
        handled.append(event.id)

    stop = asyncio.Event()
    task = asyncio.create_task(run_consumer(desk.db, "poison", poison_first, clock=clock, poll_seconds=0.01,
                                            stop=stop))
    for _ in range(300):
        if handled:
            break
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(task, timeout=5)
    assert len(attempts) == MAX_ATTEMPTS_PER_EVENT
    assert handled == [first_id + 1]
    assert any("skips event" in r.message and r.levelno == logging.ERROR for r in caplog.records)


async def test_two_workers_on_one_cursor_handle_each_event_once(desk, clock):
    await open_tickets(desk, 20)
    seen: list[int] = []

    async def slow(uow, event):
        seen.append(event.id)
        await asyncio.sleep(0.001)

    other = Database(str(desk.db.url.render_as_string(hide_password=False)))
    try:
        await asyncio.gather(consume_once(desk.db, "shared", slow, clock=clock),
                             consume_once(other, "shared", slow, clock=clock))
    finally:
        await other.dispose()
    assert sorted(seen) == sorted(set(seen)) and len(seen) == 20


async def test_a_consumer_can_pass_over_event_types_it_ignores(desk, clock):
    await open_tickets(desk, 1)
    number = (await services.open_ticket(desk, ALICE, MailContent(text="y", subject="s"))).ticket.number
    for i in range(5):
        await services.add_note(desk, number, SAM, f"note {i}")
    await open_tickets(desk, 1)
    seen: list[str] = []

    async def handle(uow, event):
        seen.append(event.type)

    moved = await consume_once(desk.db, "typed", handle, clock=clock, types={"TicketOpened"})
    assert moved == 8
    assert seen == ["TicketOpened"] * 3
    assert await consume_once(desk.db, "typed", handle, clock=clock, types={"TicketOpened"}) == 0


async def test_every_event_kind_reads_back_as_the_event_that_was_recorded(desk, clock):
    from dataclasses import fields

    from core.event_types import REGISTRY, EventType, StatusChanged, StatusReason, typed

    assert set(REGISTRY) == {str(kind) for kind in EventType}  # every kind has its class
    samples = []
    for cls in REGISTRY.values():
        values = {}
        for f in fields(cls):
            if f.name in ("ticket_id", "message_id", "actor_staff_id", "actor_contact_id"):
                continue
            values[f.name] = {"int": 7, "int | None": 7, "str": "x", "str | None": "x", "bool": True}.get(
                str(f.type), f.default)
        samples.append(cls(**values))
    samples.append(StatusChanged(from_="open", to="resolved", reason=StatusReason.SET_BY_STAFF))
    async with desk.unit_of_work() as uow:
        for event in samples:
            uow.record(event, at=clock())
    async with desk.db.read() as session:
        rows = list(await session.scalars(select(Event).order_by(Event.id)))
    assert [typed(row) for row in rows] == samples


async def test_a_status_reason_this_version_does_not_know_reads_as_unknown(desk, clock):
    from core.event_types import StatusChanged, StatusReason, typed

    async with desk.unit_of_work() as uow:
        uow.record(StatusChanged(from_="open", to="closed", reason=StatusReason.MERGED), at=clock())
    async with desk.db.transaction() as session:
        row = await session.scalar(select(Event))
        row.data = {**row.data, "reason": "a reason from a newer version"}
    async with desk.db.read() as session:
        change = typed(await session.scalar(select(Event)))
    assert isinstance(change, StatusChanged) and change.reason == StatusReason.UNKNOWN
