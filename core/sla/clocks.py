"""The "sla" event consumer: starts, pauses, resumes and stops each ticket's SLA clocks and arms timers.

It runs in the transaction that moves its cursor (core.events.consume_once), so every event is
applied exactly once. All times are the event's own time, so a consumer that catches up after a
restart computes the same due times as one that kept up.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.enums import ACTIVE_STATUSES, Priority, Status
from core.event_types import (
    CustomerReplied,
    EventType,
    Merged,
    PriorityChanged,
    StaffReplied,
    StatusChanged,
    StatusReason,
    TicketOpened,
    typed,
)
from core.models import Event, Ticket
from core.sla.policy import ClockKind, SlaSettings
from core.sla_models import ClockState, SlaClock, SlaTimer, TimerAction
from core.uow import UnitOfWork

CONSUMER = "sla"
# The events that move clocks; the scheduler waits for these before firing a ticket's timers.
WATCHED = (EventType.TICKET_OPENED, EventType.CUSTOMER_REPLIED, EventType.STAFF_REPLIED,
           EventType.STATUS_CHANGED, EventType.PRIORITY_CHANGED, EventType.MERGED)
ACTIVE_CLOCK = (ClockState.RUNNING, ClockState.PAUSED)
AUTO_CLOSE_ACTIONS = (TimerAction.REMIND, TimerAction.RESOLVE, TimerAction.CLOSE)


class SlaClocks:
    """The consumer's handler: `await SlaClocks(settings).handle(uow, event)`."""

    def __init__(self, settings: SlaSettings) -> None:
        self.settings = settings

    async def handle(self, uow: UnitOfWork, event: Event) -> None:
        if event.ticket_id is None or event.type not in WATCHED:
            return
        session = uow.session
        ticket = await session.get(Ticket, event.ticket_id)
        if ticket is None:
            return
        at, change = event.created_at, typed(event)
        match change:
            case TicketOpened(machine=False):
                await self._start_new_ticket(session, ticket, at)
            case CustomerReplied(machine=False):
                await self._customer_wrote(session, ticket, event)
            case StaffReplied():
                for clock in await _active(session, ticket.id, ClockKind.FIRST_RESPONSE, ClockKind.NEXT_RESPONSE):
                    await self._stop(session, clock, at, ClockState.MET)
            case StatusChanged():
                await self._status_changed(session, ticket, Status(change.from_), Status(change.to), change.reason, at)
            case PriorityChanged():
                await self._priority_changed(session, ticket, Priority(change.to), at)
            case Merged() if change.from_ == ticket.number:
                await self._cancel_everything(session, ticket.id, at)

    async def _start_new_ticket(self, session: AsyncSession, ticket: Ticket, at: datetime) -> None:
        for kind in (ClockKind.FIRST_RESPONSE, ClockKind.RESOLUTION):
            if not await _active(session, ticket.id, kind):
                await self._start(session, ticket, kind, at)

    async def _customer_wrote(self, session: AsyncSession, ticket: Ticket, event: Event) -> None:
        at = event.created_at
        if await _active(session, ticket.id, ClockKind.FIRST_RESPONSE, ClockKind.NEXT_RESPONSE):
            return  # the answer already owed covers this mail too
        if await _staff_replied_before(session, ticket.id, event.id):
            await self._start(session, ticket, ClockKind.NEXT_RESPONSE, at)
        elif not await _ever(session, ticket.id, ClockKind.FIRST_RESPONSE):
            await self._start_new_ticket(session, ticket, at)  # opened by machine mail: starts now

    async def _status_changed(self, session: AsyncSession, ticket: Ticket, old: Status, new: Status,
                              reason: StatusReason, at: datetime) -> None:
        if reason == StatusReason.MERGED:
            await self._cancel_everything(session, ticket.id, at)
            return
        if old == Status.PENDING:
            await _disarm_auto_close(session, ticket.id, TimerAction.REMIND, TimerAction.RESOLVE)
        if old in (Status.RESOLVED, Status.CLOSED) and new in ACTIVE_STATUSES:  # reopened
            await _disarm_auto_close(session, ticket.id, TimerAction.CLOSE)
            await self._start(session, ticket, ClockKind.RESOLUTION, at)
        if new == Status.PENDING:
            for clock in await _active(session, ticket.id):
                await self._pause(session, clock, at)
            await self._arm_pending(session, ticket.id, at)
        elif new in ACTIVE_STATUSES:
            for clock in await _active(session, ticket.id):
                if clock.state == ClockState.PAUSED:
                    await self._resume(session, clock, at)
        else:  # resolved or closed: resolution met; a response owed but never given is not measured
            for clock in await _active(session, ticket.id):
                met = clock.kind == ClockKind.RESOLUTION
                await self._stop(session, clock, at, ClockState.MET if met else ClockState.CANCELLED)
            after = self.settings.auto_close.resolved_close_after
            if new == Status.RESOLVED and after is not None:
                await _arm_auto_close(session, ticket.id, TimerAction.CLOSE, at + after, at)
            elif new == Status.CLOSED:
                await _disarm_auto_close(session, ticket.id, TimerAction.CLOSE)

    async def _priority_changed(self, session: AsyncSession, ticket: Ticket, priority: Priority,
                                at: datetime) -> None:
        """New targets for the running clocks; clocks the new policy has but the old one lacked start."""
        for clock in await _active(session, ticket.id):
            target = self.settings.target(priority, ClockKind(clock.kind))
            if target is None:
                await self._stop(session, clock, at, ClockState.CANCELLED)
                continue
            self._bank(clock, at)
            clock.budget_seconds = _seconds(target)
            clock.business_hours = self.settings.uses_business_hours(priority)
            if clock.state == ClockState.RUNNING:
                await self._arm(session, clock)
        if ticket.status not in ACTIVE_STATUSES or ticket.merged_into_id is not None:
            return
        paused = ticket.status == Status.PENDING
        if not await _ever(session, ticket.id, ClockKind.FIRST_RESPONSE) and \
                not await _staff_replied_before(session, ticket.id, None):
            await self._start(session, ticket, ClockKind.FIRST_RESPONSE, at, since=ticket.created_at,
                              paused=paused, priority=priority)
        if not await _active(session, ticket.id, ClockKind.RESOLUTION) and \
                not await _ever(session, ticket.id, ClockKind.RESOLUTION):
            await self._start(session, ticket, ClockKind.RESOLUTION, at, since=ticket.created_at,
                              paused=paused, priority=priority)

    async def _start(self, session: AsyncSession, ticket: Ticket, kind: ClockKind, at: datetime, *,
                     since: datetime | None = None, paused: bool = False,
                     priority: Priority | None = None) -> SlaClock | None:
        """A new clock from `since` (default: now); time already passed since then counts as used."""
        priority = priority or ticket.priority
        target = self.settings.target(priority, kind)
        if target is None:
            return None
        business = self.settings.uses_business_hours(priority)
        since = since or at
        clock = SlaClock(ticket_id=ticket.id, kind=str(kind), state=ClockState.RUNNING, business_hours=business,
                         budget_seconds=_seconds(target), elapsed_seconds=0, started_at=since,
                         running_since=since)
        session.add(clock)
        await session.flush()
        if paused:
            await self._pause(session, clock, at)
        else:
            await self._arm(session, clock)
        return clock

    async def _pause(self, session: AsyncSession, clock: SlaClock, at: datetime) -> None:
        if clock.state != ClockState.RUNNING:
            return
        self._bank(clock, at)
        clock.state, clock.running_since, clock.due_at = ClockState.PAUSED, None, None
        await _disarm(session, clock, keep_due_breach_at=at)

    async def _resume(self, session: AsyncSession, clock: SlaClock, at: datetime) -> None:
        clock.state, clock.running_since = ClockState.RUNNING, at
        await self._arm(session, clock)

    async def _stop(self, session: AsyncSession, clock: SlaClock, at: datetime, state: ClockState) -> None:
        self._bank(clock, at)
        clock.state, clock.running_since, clock.due_at, clock.stopped_at = state, None, None, at
        # A breach that was already due still gets its alert; anything later is void now.
        await _disarm(session, clock, keep_due_breach_at=at if state == ClockState.MET else None)

    async def _cancel_everything(self, session: AsyncSession, ticket_id: int, at: datetime) -> None:
        for clock in await _active(session, ticket_id):
            await self._stop(session, clock, at, ClockState.CANCELLED)
        await _disarm_auto_close(session, ticket_id, *AUTO_CLOSE_ACTIONS)

    async def _arm(self, session: AsyncSession, clock: SlaClock) -> None:
        """(Re)compute the due time of a running clock and set its at-risk and breach timers."""
        assert clock.running_since is not None
        measure = self.settings.measure(clock.business_hours)
        left = clock.budget_seconds - clock.elapsed_seconds
        clock.due_at = measure.add(clock.running_since, max(0, left))
        await _disarm(session, clock)
        created = clock.running_since
        if clock.breached_at is None:
            session.add(SlaTimer(ticket_id=clock.ticket_id, clock_id=clock.id, action=TimerAction.BREACH,
                                 due_at=clock.due_at, created_at=created))
            risk_left = self.settings.at_risk_share * clock.budget_seconds - clock.elapsed_seconds
            if clock.at_risk_at is None and left > 0:  # past the share already (new rules): warn at once
                session.add(SlaTimer(ticket_id=clock.ticket_id, clock_id=clock.id, action=TimerAction.AT_RISK,
                                     due_at=measure.add(clock.running_since, max(0.0, risk_left)),
                                     created_at=created))

    async def _arm_pending(self, session: AsyncSession, ticket_id: int, at: datetime) -> None:
        steps = self.settings.auto_close
        if steps.pending_reminder_after is not None:
            await _arm_auto_close(session, ticket_id, TimerAction.REMIND, at + steps.pending_reminder_after, at)
        elif steps.pending_resolve_after is not None:
            await _arm_auto_close(session, ticket_id, TimerAction.RESOLVE, at + steps.pending_resolve_after, at)

    def _used(self, clock: SlaClock, at: datetime) -> float:
        running = 0.0
        if clock.state == ClockState.RUNNING and clock.running_since is not None:
            running = self.settings.measure(clock.business_hours).between(clock.running_since, at)
        return clock.elapsed_seconds + running

    def _bank(self, clock: SlaClock, at: datetime) -> None:
        """Move the time used so far into elapsed_seconds (before a pause, stop or change of rules).

        A clock found past its budget here is recorded as breached at its due time, even when the
        scheduler has not fired yet (or is not running): compliance figures do not depend on it.
        """
        if clock.state == ClockState.RUNNING and clock.running_since is not None:
            used = self._used(clock, at)
            if used > clock.budget_seconds and clock.breached_at is None:
                clock.breached_at = clock.due_at or at  # late, and the scheduler had not noticed yet
            clock.elapsed_seconds = round(used)
            clock.running_since = at


async def arm_pending_resolve(session: AsyncSession, settings: SlaSettings, ticket_id: int,
                              at: datetime) -> datetime | None:
    """After the reminder: when the still-pending ticket will be resolved (None: never)."""
    after = settings.auto_close.pending_resolve_after
    if after is None:
        return None
    await _arm_auto_close(session, ticket_id, TimerAction.RESOLVE, at + after, at)
    return at + after


async def _active(session: AsyncSession, ticket_id: int, *kinds: ClockKind) -> list[SlaClock]:
    query = select(SlaClock).where(SlaClock.ticket_id == ticket_id, SlaClock.state.in_(ACTIVE_CLOCK))
    if kinds:
        query = query.where(SlaClock.kind.in_([str(k) for k in kinds]))
    return list(await session.scalars(query.order_by(SlaClock.id)))


async def _ever(session: AsyncSession, ticket_id: int, kind: ClockKind) -> bool:
    found = await session.scalar(select(SlaClock.id).where(SlaClock.ticket_id == ticket_id,
                                                           SlaClock.kind == str(kind)).limit(1))
    return found is not None


async def _staff_replied_before(session: AsyncSession, ticket_id: int, event_id: int | None) -> bool:
    """Asked of the event log, not of the ticket row, which may already show later changes."""
    query = select(Event.id).where(Event.ticket_id == ticket_id, Event.type == str(EventType.STAFF_REPLIED))
    if event_id is not None:
        query = query.where(Event.id < event_id)
    return await session.scalar(query.limit(1)) is not None


async def _disarm(session: AsyncSession, clock: SlaClock, *, keep_due_breach_at: datetime | None = None) -> None:
    query = delete(SlaTimer).where(SlaTimer.clock_id == clock.id)
    if keep_due_breach_at is not None:
        # A breach whose moment has passed but that the scheduler has not fired yet still counts.
        query = query.where(~((SlaTimer.action == TimerAction.BREACH) & (SlaTimer.due_at <= keep_due_breach_at)))
    await session.execute(query)


async def _arm_auto_close(session: AsyncSession, ticket_id: int, action: TimerAction, due: datetime,
                          at: datetime) -> None:
    await _disarm_auto_close(session, ticket_id, action)
    session.add(SlaTimer(ticket_id=ticket_id, clock_id=None, action=action, due_at=due, created_at=at))


async def _disarm_auto_close(session: AsyncSession, ticket_id: int, *actions: TimerAction) -> None:
    await session.execute(delete(SlaTimer).where(SlaTimer.ticket_id == ticket_id, SlaTimer.clock_id.is_(None),
                                                 SlaTimer.action.in_(actions)))


def _seconds(delta: timedelta) -> int:
    return round(delta.total_seconds())
