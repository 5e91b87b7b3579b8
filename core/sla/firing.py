"""What a due SLA timer does: alert at risk / breached, remind a silent customer, resolve, close.

Runs inside the scheduler's transaction that claimed the timer, so each effect happens once.

Events appended here (the Discord projector and the mail notifier act on them):

* ``SlaAtRisk`` / ``SlaBreached`` — data: ``ticket`` (number), ``ref`` ("#1042"), ``subject``,
  ``priority``, ``clock`` ("first_response" | "next_response" | "resolution"), ``due_at`` (ISO 8601
  UTC), ``started_at``, ``budget_seconds``, ``business_hours``, ``assignee_staff_id``,
  ``assignee_discord_id``, ``assignee_name`` (all None when unassigned), ``on_call_role_id`` (the
  role to mention when unassigned, else None), and for a breach ``priority_raised_to`` (or None).
* ``PendingReminderDue`` — data: ``ticket``, ``ref``, ``subject``, ``resolve_at`` (ISO 8601 UTC, or
  None when auto-resolve is off). The notifier mails the ticket's requester from it.
* auto-resolve and auto-close are ordinary ``StatusChanged`` events (pending -> resolved,
  resolved -> closed) by the system staff member "SLA", with ``reason`` saying why.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from core.desk import Desk
from core.enums import Priority, StaffRole, Status
from core.event_types import EventType, PendingReminderDue, PriorityChanged, SlaAtRisk, SlaBreached, StatusReason
from core.models import Ticket
from core.services._common import StaffRef, change_status, ensure_staff, record
from core.sla.clocks import arm_pending_resolve
from core.sla.policy import ClockKind, SlaSettings
from core.sla_models import ClockState, SlaClock, TimerAction
from core.uow import UnitOfWork

# The actor of what the SLA does on its own; staff see it in Discord and in the audit log.
SYSTEM_ACTOR = StaffRef("SLA", role=StaffRole.AGENT)
_NEXT_PRIORITY = {Priority.LOW: Priority.MEDIUM, Priority.MEDIUM: Priority.HIGH, Priority.HIGH: Priority.URGENT}


async def fire(uow: UnitOfWork, desk: Desk, settings: SlaSettings, *, ticket: Ticket | None,
               clock: SlaClock | None, action: TimerAction, due_at: datetime) -> str | None:
    """Do what the timer says; returns the event type it recorded, or None when it no longer applies.

    The caller has locked the ticket and loaded the timer's clock (None for auto-close timers).
    """
    if ticket is None or ticket.merged_into_id is not None:
        return None
    now = desk.clock()
    if action in (TimerAction.AT_RISK, TimerAction.BREACH):
        if clock is None:
            return None
        return await _alert(uow, desk, settings, ticket, clock, action, due_at, now)
    steps = settings.auto_close
    switched_on = {TimerAction.REMIND: steps.pending_reminder_after, TimerAction.RESOLVE: steps.pending_resolve_after,
                   TimerAction.CLOSE: steps.resolved_close_after}
    if switched_on.get(action) is None:
        return None  # the step was switched off in the config since this timer was armed
    if action == TimerAction.REMIND and ticket.status == Status.PENDING:
        resolve_at = await arm_pending_resolve(uow.session, settings, ticket.id, now)
        uow.record(PendingReminderDue(ticket_id=ticket.id, **_ticket_data(desk, ticket), resolve_at=_iso(resolve_at)),
                   at=now)
        return EventType.PENDING_REMINDER_DUE
    if action == TimerAction.RESOLVE and ticket.status == Status.PENDING:
        staff = await ensure_staff(uow.session, SYSTEM_ACTOR, now)
        change_status(uow, desk, ticket, Status.RESOLVED, reason=StatusReason.NO_ANSWER, staff=staff)
        return EventType.STATUS_CHANGED
    if action == TimerAction.CLOSE and ticket.status == Status.RESOLVED:
        staff = await ensure_staff(uow.session, SYSTEM_ACTOR, now)
        change_status(uow, desk, ticket, Status.CLOSED, reason=StatusReason.RESOLVED_QUIET, staff=staff)
        return EventType.STATUS_CHANGED
    return None


async def _alert(uow: UnitOfWork, desk: Desk, settings: SlaSettings, ticket: Ticket, clock: SlaClock,
                 action: TimerAction, due_at: datetime, now: datetime) -> str | None:
    if settings.target(ticket.priority, ClockKind(clock.kind)) is None:
        return None  # the policy was removed from the config since this timer was armed
    if action == TimerAction.AT_RISK:
        if clock.state != ClockState.RUNNING or clock.breached_at is not None:
            return None
        clock.at_risk_at = now
        type_ = EventType.SLA_AT_RISK
    else:
        if clock.state == ClockState.CANCELLED:
            return None
        clock.breached_at = clock.breached_at or due_at
        type_ = EventType.SLA_BREACHED
    data = {**_ticket_data(desk, ticket), **_mention(settings, ticket),
            "clock": clock.kind, "due_at": _iso(clock.due_at or due_at), "started_at": _iso(clock.started_at),
            "budget_seconds": clock.budget_seconds, "business_hours": clock.business_hours}
    if type_ == EventType.SLA_BREACHED:
        uow.record(SlaBreached(ticket_id=ticket.id, **data,
                               priority_raised_to=await _raise_priority(uow, desk, settings, ticket, now)), at=now)
    else:
        uow.record(SlaAtRisk(ticket_id=ticket.id, **data), at=now)
    return type_


async def _raise_priority(uow: UnitOfWork, desk: Desk, settings: SlaSettings, ticket: Ticket,
                          now: datetime) -> str | None:
    higher = _NEXT_PRIORITY.get(ticket.priority) if settings.raise_priority_on_breach else None
    if higher is None:
        return None
    staff = await ensure_staff(uow.session, SYSTEM_ACTOR, now)
    previous, ticket.priority = ticket.priority, higher
    # The same event set_priority records; the SLA consumer then applies the new policy's targets.
    record(uow, PriorityChanged(from_=str(previous), to=str(higher), reason="SLA breached"), at=now, ticket=ticket,
           staff=staff)
    return str(higher)


def _mention(settings: SlaSettings, ticket: Ticket) -> dict[str, Any]:
    staff = ticket.assignee  # loaded with the ticket
    return {
        "assignee_staff_id": staff.id if staff else None,
        "assignee_discord_id": staff.discord_id if staff else None,
        "assignee_name": staff.display_name if staff else None,
        "on_call_role_id": settings.on_call_role_id if staff is None or staff.discord_id is None else None,
    }


def _ticket_data(desk: Desk, ticket: Ticket) -> dict[str, Any]:
    return {"ticket": ticket.number, "ref": desk.format_number(ticket.number), "subject": ticket.subject,
            "priority": str(ticket.priority)}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
