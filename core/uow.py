"""The unit of work: one transaction of the core, the events recorded in it, and its commit.

    async with desk.unit_of_work() as uow:
        ticket = await ticket_for_update(uow.session, number)
        ...
        uow.record(StatusChanged(ticket_id=ticket.id, ...), at=now)

The block's end inserts the recorded events (one statement, in the order recorded) and commits;
an exception rolls all of it back. After a commit that recorded events, this process's consumers
are woken (others poll). Nothing is steered by flags in the session.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, insert, text
from sqlalchemy.ext.asyncio import AsyncSession

from core.db import Database
from core.event_types import DomainEvent
from core.models import Contact, Event

# Any constant will do; it only has to be the same in every process that appends events.
_EVENT_APPEND_LOCK_KEY = 0x5B0_7E7
_INSERT_EVENT = insert(cast(Table, Event.__table__))


class UnitOfWork:
    def __init__(self, session: AsyncSession, *, is_postgres: bool) -> None:
        self.session = session
        self.is_postgres = is_postgres
        self._pending: list[dict[str, Any]] = []
        self.recorded = 0
        self._wake = False
        # Contacts looked up in this transaction by normalized address ("not there" too): inbound
        # mail asks about its sender twice, and a batch often has one sender several times.
        self.contacts: dict[str, Contact | None] = {}

    def record(self, event: DomainEvent, *, at: datetime) -> None:
        """Append `event` to the log when this unit of work commits."""
        self._pending.append({
            "type": str(event.type), "ticket_id": event.ticket_id, "message_id": event.message_id,
            "actor_staff_id": event.actor_staff_id, "actor_contact_id": event.actor_contact_id,
            "data": event.data(), "created_at": at})
        self.recorded += 1

    def wake_after_commit(self) -> None:
        """Wake this process's consumers after the commit though no event was recorded (a queued
        outbox mail: the sender sends at once instead of at its next poll)."""
        self._wake = True

    @property
    def wakes(self) -> bool:
        return self.recorded > 0 or self._wake

    async def write_events(self) -> None:
        """Insert what was recorded so far (done at commit; call it early only to read them back)."""
        if not self._pending:
            return
        if self.is_postgres:
            # Serial ids can commit out of order under concurrency, and a consumer whose cursor has
            # passed id 8 would never see a late-committing id 7. Holding this lock until commit
            # makes event-appending transactions commit in id order; taken this late, it is held
            # only for the insert and the commit. SQLite writers are serial anyway.
            await self.session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _EVENT_APPEND_LOCK_KEY})
        rows, self._pending = self._pending, []
        await self.session.execute(_INSERT_EVENT, rows)


@asynccontextmanager
async def unit_of_work(db: Database) -> AsyncIterator[UnitOfWork]:
    async with db.transaction() as session:
        uow = UnitOfWork(session, is_postgres=db.is_postgres)
        yield uow
        await uow.write_events()
    if uow.wakes:
        db.events_committed()
