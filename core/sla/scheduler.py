"""The SLA scheduler: keeps the "sla" consumer current and fires due timers, each claimed before it fires.

Timers live in the database only. At start nothing needs re-arming beyond reading `sla_timers`;
the loop sleeps until the earliest due timer (or a poll interval, for timers other processes arm)
and is woken early by commits of this process, which may have armed an earlier one. Firing claims
the timer rows with DELETE … RETURNING and fires only the rows this transaction deleted, in the same
transaction as the effects, so two schedulers on one database never fire a timer twice. On
PostgreSQL due rows are read with FOR UPDATE SKIP LOCKED, so two schedulers split the work instead
of queueing on it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.desk import Desk
from core.events import consume_once, cursor_position
from core.models import Event, Ticket
from core.sla.clocks import CONSUMER, WATCHED, SlaClocks
from core.sla.firing import fire
from core.sla.policy import SlaSettings
from core.sla_models import SlaClock, SlaTimer, TimerAction

log = logging.getLogger(__name__)


class _TimerFailed(Exception):
    def __init__(self, timer: _Due) -> None:
        super().__init__(f"SLA timer {timer.id} failed")
        self.timer = timer


@dataclass(frozen=True)
class _Due:
    id: int
    ticket_id: int
    clock_id: int | None
    action: TimerAction
    due_at: datetime


class SlaScheduler:
    """A Part for `supportbot run`; tests drive it step by step with `await run_due()`."""

    name = "sla"

    def __init__(self, desk: Desk, settings: SlaSettings, *, batch: int = 200, poll_seconds: float = 5.0) -> None:
        self.desk = desk
        self.settings = settings
        self.clocks = SlaClocks(settings)
        self.batch = batch
        self.poll_seconds = poll_seconds
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def catch_up(self) -> int:
        """Apply every event the "sla" consumer has not seen yet; returns how many."""
        total = 0
        while handled := await consume_once(self.desk.db, CONSUMER, self.clocks.handle, clock=self.desk.clock,
                                                  types=WATCHED):
            total += handled
        return total

    async def run_due(self) -> int:
        """Catch up on events, then fire every timer due now; returns how many fired."""
        await self.catch_up()
        total = 0
        while fired := await self.fire_batch():
            total += fired
            await self.catch_up()  # what just fired (a status change) may arm or void other timers
        return total

    async def fire_batch(self) -> int:
        """Claim and fire up to `batch` due timers in one transaction; returns how many were claimed.

        A timer whose firing raises (a bug) would roll back its whole batch again and again: it is
        logged and dropped, and the batch runs again without it.
        """
        while True:
            try:
                return await self._fire_due()
            except _TimerFailed as failed:
                timer = failed.timer
                log.error("SLA timer %s (%s, ticket id %s) failed and is dropped", timer.id, timer.action,
                          timer.ticket_id, exc_info=failed.__cause__)
                async with self.desk.db.transaction() as session:
                    await session.execute(delete(SlaTimer).where(SlaTimer.id == timer.id))

    async def _fire_due(self) -> int:
        now = self.desk.clock()
        async with self.desk.unit_of_work() as uow:
            session = uow.session
            due = await self._due(session, now)
            if not due:
                return 0
            tickets = await self._lock_tickets(session, {d.ticket_id for d in due})
            behind = await self._tickets_with_unseen_events(session, set(tickets))
            # An event the consumer has not applied yet may void or move a timer of that ticket: wait.
            ready = [d for d in due if d.ticket_id not in behind]
            claimed = await self._claim(session, [d.id for d in ready])
            clock_ids = {d.clock_id for d in ready if d.id in claimed and d.clock_id is not None}
            clocks = {c.id: c for c in await session.scalars(select(SlaClock).where(SlaClock.id.in_(clock_ids)))}
            for timer in ready:
                if timer.id not in claimed:
                    continue  # another scheduler fired it
                try:
                    result = await fire(uow, self.desk, self.settings, ticket=tickets.get(timer.ticket_id),
                                        clock=clocks.get(timer.clock_id) if timer.clock_id else None,
                                        action=timer.action, due_at=timer.due_at)
                except Exception as e:
                    raise _TimerFailed(timer) from e
                log.debug("SLA timer %s (%s, ticket id %s): %s", timer.id, timer.action, timer.ticket_id,
                          result or "no longer applies")
            return len(claimed)

    async def _lock_tickets(self, session: AsyncSession, ticket_ids: set[int]) -> dict[int, Ticket]:
        # Locked before the first event is appended (which takes the event-log lock): the services
        # lock a ticket and then the log too, so this order cannot deadlock with them.
        rows = await session.scalars(select(Ticket).where(Ticket.id.in_(ticket_ids)).order_by(Ticket.id)
                                     .with_for_update(of=Ticket))
        return {t.id: t for t in rows}

    async def _claim(self, session: AsyncSession, timer_ids: list[int]) -> set[int]:
        """Delete the timers; only the rows this transaction deleted are ours to fire."""
        if not timer_ids:
            return set()
        deleted = await session.scalars(delete(SlaTimer).where(SlaTimer.id.in_(timer_ids)).returning(SlaTimer.id))
        return set(deleted)

    async def _due(self, session: AsyncSession, now: datetime) -> list[_Due]:
        query = (select(SlaTimer.id, SlaTimer.ticket_id, SlaTimer.clock_id, SlaTimer.action, SlaTimer.due_at)
                 .where(SlaTimer.due_at <= now).order_by(SlaTimer.due_at, SlaTimer.id).limit(self.batch))
        if self.desk.db.is_postgres:
            query = query.with_for_update(skip_locked=True)
        return [_Due(*row) for row in await session.execute(query)]

    async def _tickets_with_unseen_events(self, session: AsyncSession, ticket_ids: set[int]) -> set[int]:
        position = await cursor_position(session, CONSUMER)
        rows = await session.scalars(
            select(Event.ticket_id).distinct().where(
                Event.id > position, Event.ticket_id.in_(ticket_ids), Event.type.in_([str(t) for t in WATCHED])))
        return {t for t in rows if t is not None}

    async def next_due(self) -> datetime | None:
        async with self.desk.db.read() as session:
            return await session.scalar(select(func.min(SlaTimer.due_at)))

    async def run(self) -> None:
        """Loop until stopped: fire what is due, then sleep until the next timer or a commit."""
        committed = self.desk.db.listen_for_events()
        while not self._stop.is_set():
            committed.clear()
            try:
                await self.run_due()
                delay = await self._delay()
            except Exception:
                log.exception("SLA scheduler failed; retrying in %.0fs", self.poll_seconds)
                delay = self.poll_seconds
            waiters = {asyncio.ensure_future(committed.wait()), asyncio.ensure_future(self._stop.wait())}
            await asyncio.wait(waiters, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()

    async def _delay(self) -> float:
        # Other processes' events and timers are only seen by polling: never sleep past that.
        limit = self.poll_seconds
        next_due = await self.next_due()
        if next_due is None:
            return limit
        seconds = (next_due - self.desk.clock()).total_seconds()
        # Due but not fired: its ticket waits for the consumer; do not spin on it.
        return min(limit, seconds if seconds > 0 else 1.0)

    async def start(self) -> None:
        self._stop.clear()
        self._task = asyncio.create_task(self.run(), name="sla-scheduler")
        log.info("SLA scheduler started (%d polic%s, auto-close %s)", len(self.settings.policies),
                 "y" if len(self.settings.policies) == 1 else "ies",
                 "on" if self.settings.auto_close.enabled else "off")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task
            self._task = None
