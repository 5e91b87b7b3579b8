"""The event log: appended in the same transaction as each change, read by consumers from a cursor."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection
from datetime import datetime
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import Table, insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from core.background import nap
from core.db import Database, dialect_of, insert_ignore
from core.models import ConsumerCursor, Event

log = logging.getLogger(__name__)


class EventType(StrEnum):
    TICKET_OPENED = "TicketOpened"
    CUSTOMER_REPLIED = "CustomerReplied"
    STAFF_REPLIED = "StaffReplied"
    NOTE_ADDED = "NoteAdded"
    ASSIGNED = "Assigned"
    UNASSIGNED = "Unassigned"
    STATUS_CHANGED = "StatusChanged"
    PRIORITY_CHANGED = "PriorityChanged"
    CATEGORY_CHANGED = "CategoryChanged"
    TAGS_CHANGED = "TagsChanged"
    PARTICIPANT_ADDED = "ParticipantAdded"
    MERGED = "Merged"
    CONTACT_BLOCKED = "ContactBlocked"
    CONTACT_UNBLOCKED = "ContactUnblocked"
    MAIL_QUARANTINED = "MailQuarantined"
    MAIL_HELD = "MailHeld"
    MAIL_BOUNCED = "MailBounced"
    OUTBOUND_FAILED = "OutboundFailed"
    DAILY_REPORT_READY = "DailyReportReady"
    # SLA (core.sla): their data is described in core/sla/firing.py
    SLA_AT_RISK = "SlaAtRisk"
    SLA_BREACHED = "SlaBreached"
    PENDING_REMINDER_DUE = "PendingReminderDue"


# Any constant will do; it only has to be the same in every process that appends events.
_EVENT_APPEND_LOCK_KEY = 0x5B0_7E7


async def append_event(
    session: AsyncSession,
    type_: EventType,
    *,
    at: datetime,
    ticket_id: int | None = None,
    message_id: int | None = None,
    actor_staff_id: int | None = None,
    actor_contact_id: int | None = None,
    data: dict[str, Any] | None = None,
) -> None:
    if dialect_of(session) == "postgresql" and not session.info.get("event_lock_held"):
        # Serial ids can commit out of order under concurrency, and a consumer whose cursor has
        # passed id 8 would never see a late-committing id 7. Holding this lock until commit makes
        # event-appending transactions commit in id order. SQLite writers are serial anyway.
        await session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _EVENT_APPEND_LOCK_KEY})
        session.info["event_lock_held"] = True
    # A Core INSERT rather than an ORM object flushed later: nothing reads the object back, and on
    # the path of every inbound mail the flush machinery cost more than the statement.
    row = {"type": str(type_), "ticket_id": ticket_id, "message_id": message_id, "actor_staff_id": actor_staff_id,
           "actor_contact_id": actor_contact_id, "data": data or {}, "created_at": at}
    session.info["events_appended"] = True
    deferred = session.info.get(_DEFERRED_EVENTS)
    if deferred is not None:
        deferred.append(row)
    else:
        await session.execute(_INSERT_EVENT, row)


def defer_events(session: AsyncSession) -> None:
    """From now on, keep this transaction's events and insert them all in write_deferred_events
    (a batch of inbound mail appends one or more per mail, and nothing in it reads them back)."""
    session.info.setdefault(_DEFERRED_EVENTS, [])


async def write_deferred_events(session: AsyncSession) -> None:
    """Insert the kept events, in the order they were appended, with one statement."""
    rows = session.info.get(_DEFERRED_EVENTS)
    if rows:
        await session.execute(_INSERT_EVENT, list(rows))
        rows.clear()


_DEFERRED_EVENTS = "deferred_events"
_INSERT_EVENT = insert(cast(Table, Event.__table__))


async def cursor_position(session: AsyncSession, consumer: str) -> int:
    cursor = await session.get(ConsumerCursor, consumer)
    return cursor.position if cursor else 0


async def lock_cursor(session: AsyncSession, consumer: str, at: datetime) -> ConsumerCursor:
    """The consumer's cursor row, created if new and locked until commit (one worker at a time)."""
    await insert_ignore(session, ConsumerCursor, {"name": consumer, "position": 0, "updated_at": at}, ["name"])
    cursor = await session.scalar(
        select(ConsumerCursor).where(ConsumerCursor.name == consumer).with_for_update()
        .execution_options(populate_existing=True))
    assert cursor is not None
    return cursor


async def advance_cursor(session: AsyncSession, consumer: str, position: int, at: datetime) -> None:
    cursor = await lock_cursor(session, consumer, at)
    if position > cursor.position:
        cursor.position = position
        cursor.updated_at = at


async def events_after(session: AsyncSession, position: int, limit: int = 100) -> list[Event]:
    rows = await session.scalars(select(Event).where(Event.id > position).order_by(Event.id).limit(limit))
    return list(rows)


EventHandler = Callable[[AsyncSession, Event], Awaitable[None]]


async def consume_once(db: Database, consumer: str, handle: EventHandler, *, clock: Callable[[], datetime],
                       batch: int = 100, types: Collection[str] | None = None) -> int:
    """Apply `handle` to each unseen event, each in the transaction that moves the cursor past it.

    A handler that only writes to the database (the mail notifier filling the outbox) therefore
    acts exactly once. One with outside effects (the Discord projector) must be idempotent itself.
    With `types`, other events are passed over in one transaction per run instead of one each.
    Returns how many events the cursor moved past.
    """
    async with db.read() as session:
        position = await cursor_position(session, consumer)
        pending = [(e.id, e.type) for e in await events_after(session, position, batch)]
    moved = 0
    index = 0
    while index < len(pending):
        if types is not None and pending[index][1] not in types:
            last = index
            while last + 1 < len(pending) and pending[last + 1][1] not in types:
                last += 1
            async with db.transaction() as session:
                await advance_cursor(session, consumer, pending[last][0], clock())
            moved += last - index + 1
            index = last + 1
            continue
        event_id = pending[index][0]
        index += 1
        async with db.transaction() as session:
            cursor = await lock_cursor(session, consumer, clock())
            if cursor.position >= event_id:
                continue  # another worker got here first
            event = await session.get(Event, event_id)
            assert event is not None
            try:
                await handle(session, event)
            except Exception as e:
                raise HandlerFailed(consumer, event_id) from e
            cursor.position, cursor.updated_at = event_id, clock()
        moved += 1
    return moved


class HandlerFailed(Exception):
    def __init__(self, consumer: str, event_id: int) -> None:
        super().__init__(f"consumer {consumer} failed on event {event_id}")
        self.event_id = event_id


# After this many failures on one event, a consumer logs an error and moves past it rather than
# stopping every later event (one broken ticket must not silence the whole desk).
MAX_ATTEMPTS_PER_EVENT = 5


async def run_consumer(db: Database, consumer: str, handle: EventHandler, *, clock: Callable[[], datetime],
                       poll_seconds: float = 2.0, stop: asyncio.Event | None = None,
                       types: Collection[str] | None = None) -> None:
    """Consume forever: woken by commits in this process, polling for those of other processes."""
    stop = stop or asyncio.Event()
    committed = db.listen_for_events()
    failures: dict[int, int] = {}
    while not stop.is_set():
        committed.clear()
        try:
            while await consume_once(db, consumer, handle, clock=clock, types=types):
                pass
        except HandlerFailed as e:
            failures[e.event_id] = failures.get(e.event_id, 0) + 1
            if failures[e.event_id] >= MAX_ATTEMPTS_PER_EVENT:
                log.error("consumer %s skips event %d after %d failures", consumer, e.event_id,
                          failures.pop(e.event_id), exc_info=e.__cause__)
                async with db.transaction() as session:
                    await advance_cursor(session, consumer, e.event_id, clock())
                continue
            log.warning("consumer %s failed on event %d (attempt %d); retrying in %.0fs", consumer,
                        e.event_id, failures[e.event_id], poll_seconds, exc_info=e.__cause__)
        except Exception:
            log.exception("consumer %s failed; retrying in %.0fs", consumer, poll_seconds)
        await nap(poll_seconds, committed, stop)
