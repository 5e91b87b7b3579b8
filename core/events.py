"""The event log's readers: consumers keep a cursor, and one policy for an event that keeps failing.

Events are recorded through a unit of work (core.uow), in the transaction of the change they
describe; their kinds are the classes of core.event_types.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core.background import nap
from core.db import Database, insert_ignore
from core.event_types import EventType
from core.models import ConsumerCursor, Event
from core.uow import UnitOfWork, unit_of_work

__all__ = ["EventHandler", "EventType", "FailurePolicy", "HandlerFailed", "advance_cursor", "consume_once",
           "cursor_position", "events_after", "lock_cursor", "move_cursor", "run_consumer", "unseen_events"]

log = logging.getLogger(__name__)


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


async def unseen_events(db: Database, consumer: str, limit: int = 100) -> list[Event]:
    """The next events after the consumer's cursor, oldest first (for a consumer that moves its cursor
    itself, after acting outside the database: the Discord projector)."""
    async with db.read() as session:
        return await events_after(session, await cursor_position(session, consumer), limit)


async def move_cursor(db: Database, consumer: str, position: int, at: datetime) -> None:
    """Mark every event up to `position` as handled by the consumer (never moves it back)."""
    async with db.transaction() as session:
        await advance_cursor(session, consumer, position, at)


EventHandler = Callable[[UnitOfWork, Event], Awaitable[None]]


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
        async with unit_of_work(db) as uow:
            cursor = await lock_cursor(uow.session, consumer, clock())
            if cursor.position >= event_id:
                continue  # another worker got here first
            event = await uow.session.get(Event, event_id)
            assert event is not None
            try:
                await handle(uow, event)
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


class FailurePolicy:
    """Retry an event that failed; after `max_attempts` give up on it, with one error in the log.

    The one retry-and-skip policy of every consumer: the mail notifier, the SLA clocks and the
    Discord projector.
    """

    def __init__(self, consumer: str, max_attempts: int = MAX_ATTEMPTS_PER_EVENT) -> None:
        self.consumer = consumer
        self.max_attempts = max_attempts
        self._failures: dict[int, int] = {}

    def give_up(self, event_id: int, error: BaseException | None) -> bool:
        """Count a failure of this event; True when it is to be passed over from now on."""
        attempts = self._failures[event_id] = self._failures.get(event_id, 0) + 1
        if attempts < self.max_attempts:
            log.warning("consumer %s failed on event %d (attempt %d)", self.consumer, event_id, attempts,
                        exc_info=error)
            return False
        log.error("consumer %s skips event %d after %d failures", self.consumer, event_id, attempts,
                  exc_info=error)
        del self._failures[event_id]
        return True


async def run_consumer(db: Database, consumer: str, handle: EventHandler, *, clock: Callable[[], datetime],
                       poll_seconds: float = 2.0, stop: asyncio.Event | None = None,
                       types: Collection[str] | None = None) -> None:
    """Consume forever: woken by commits in this process, polling for those of other processes."""
    stop = stop or asyncio.Event()
    committed = db.listen_for_events()
    policy = FailurePolicy(consumer)
    while not stop.is_set():
        committed.clear()
        try:
            while await consume_once(db, consumer, handle, clock=clock, types=types):
                pass
        except HandlerFailed as e:
            if policy.give_up(e.event_id, e.__cause__):
                async with db.transaction() as session:
                    await advance_cursor(session, consumer, e.event_id, clock())
                continue
        except Exception:
            log.exception("consumer %s failed; retrying in %.0fs", consumer, poll_seconds)
        await nap(poll_seconds, committed, stop)
