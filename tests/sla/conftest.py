"""Helpers for the SLA tests: a policy in calendar time, ticket shortcuts and event counts."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import func, select

from core.desk import Desk
from core.enums import Priority
from core.events import EventType
from core.models import Event, Ticket
from core.services import ContactRef, MailContent, StaffRef, add_customer_message, open_ticket
from core.sla.policy import AutoClose, SlaPolicy, SlaSettings
from core.sla.scheduler import SlaScheduler
from core.sla_models import SlaClock

AGENT = StaffRef("Bob", discord_id=4242)
CUSTOMER = ContactRef("alice@example.com", "Alice")
ON_CALL_ROLE = 777

# Medium tickets: first response in 4 h, next response in 2 h, resolution in 24 h, every hour counting.
CALENDAR_POLICY = SlaPolicy(first_response=timedelta(hours=4), next_response=timedelta(hours=2),
                            resolution=timedelta(hours=24), business_hours=False)


def settings(**changes: Any) -> SlaSettings:
    base: dict[str, Any] = {"policies": {Priority.MEDIUM: CALENDAR_POLICY}, "on_call_role_id": ON_CALL_ROLE}
    return SlaSettings(**{**base, **changes})


def auto_close(reminder: float | None = 48, resolve: float | None = 72, close: float | None = 24) -> AutoClose:
    def hours(value: float | None) -> timedelta | None:
        return None if value is None else timedelta(hours=value)

    return AutoClose(hours(reminder), hours(resolve), hours(close))


def scheduler(desk: Desk, **changes: Any) -> SlaScheduler:
    return SlaScheduler(desk, settings(**changes))


async def open_one(desk: Desk, subject: str = "Printer on fire") -> int:
    change = await open_ticket(desk, CUSTOMER, MailContent(text="It burns.", subject=subject))
    return change.ticket.number


async def customer_writes(desk: Desk, number: int, *, machine: bool = False) -> None:
    await add_customer_message(desk, number, CUSTOMER, MailContent(text="Any news?", is_machine=machine))


async def events_of(desk: Desk, type_: EventType) -> list[Event]:
    async with desk.db.read() as session:
        return list(await session.scalars(select(Event).where(Event.type == str(type_)).order_by(Event.id)))


async def count(desk: Desk, type_: EventType) -> int:
    async with desk.db.read() as session:
        return int(await session.scalar(select(func.count()).select_from(Event).where(Event.type == str(type_)))
                   or 0)


async def clocks_of(desk: Desk, number: int) -> dict[str, SlaClock]:
    """The latest clock of each kind for a ticket."""
    async with desk.db.read() as session:
        ticket_id = await session.scalar(select(Ticket.id).where(Ticket.number == number))
        rows = await session.scalars(select(SlaClock).where(SlaClock.ticket_id == ticket_id).order_by(SlaClock.id))
        return {c.kind: c for c in rows}
