"""Services staff use to triage a ticket: status, priority, category, tags and assignment."""

from __future__ import annotations

import re
from collections.abc import Sequence

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.db import rows_affected
from core.desk import Desk
from core.enums import Priority, Status
from core.errors import Conflict, UserError
from core.event_types import (
    Assigned,
    CategoryChanged,
    PriorityChanged,
    StatusReason,
    TagsChanged,
    Unassigned,
)
from core.models import Staff, Ticket, TicketTag
from core.services._common import (
    StaffRef,
    change_status,
    ensure_staff,
    insert_ignore,
    record,
    ticket_for_update,
)
from core.uow import UnitOfWork

_TAG_CHARS = re.compile(r"[^a-z0-9_\-.:/]+")


async def set_status(desk: Desk, number: int, status: Status, actor: StaffRef) -> Ticket:
    now = desk.clock()
    async with desk.unit_of_work() as uow:
        session = uow.session
        ticket = await ticket_for_update(session, number)
        if ticket.merged_into_id is not None:
            raise UserError("a merged ticket cannot change status")
        staff = await ensure_staff(session, actor, now)
        if ticket.status != status:
            change_status(uow, desk, ticket, status, reason=StatusReason.SET_BY_STAFF, staff=staff)
        return ticket


async def set_priority(desk: Desk, number: int, priority: Priority, actor: StaffRef) -> Ticket:
    now = desk.clock()
    async with desk.unit_of_work() as uow:
        session = uow.session
        ticket = await ticket_for_update(session, number)
        staff = await ensure_staff(session, actor, now)
        if ticket.priority != priority:
            previous, ticket.priority = ticket.priority, priority
            record(uow, PriorityChanged(from_=str(previous), to=str(priority)), at=now, ticket=ticket, staff=staff)
        return ticket


async def set_category(desk: Desk, number: int, category: str | None, actor: StaffRef) -> Ticket:
    category = validate_category(desk, category) if category else None
    now = desk.clock()
    async with desk.unit_of_work() as uow:
        session = uow.session
        ticket = await ticket_for_update(session, number)
        staff = await ensure_staff(session, actor, now)
        if ticket.category != category:
            previous, ticket.category = ticket.category, category
            record(uow, CategoryChanged(from_=previous, to=category), at=now, ticket=ticket, staff=staff)
        return ticket


async def tag(desk: Desk, number: int, actor: StaffRef, *, add: Sequence[str] = (),
              remove: Sequence[str] = ()) -> list[str]:
    """Add and remove tags; returns the ticket's tags afterwards."""
    to_add, to_remove = normalize_tags(desk, add), normalize_tags(desk, remove)
    now = desk.clock()
    async with desk.unit_of_work() as uow:
        session = uow.session
        ticket = await ticket_for_update(session, number)
        staff = await ensure_staff(session, actor, now)
        added = await add_tags(session, ticket, to_add)
        removed = []
        if to_remove:
            result = await session.execute(
                delete(TicketTag).where(TicketTag.ticket_id == ticket.id, TicketTag.tag.in_(to_remove))
                .returning(TicketTag.tag))
            removed = sorted(result.scalars())
        if added or removed:
            record(uow, TagsChanged(added=added, removed=removed), at=now, ticket=ticket, staff=staff)
        return sorted(await session.scalars(select(TicketTag.tag).where(TicketTag.ticket_id == ticket.id)))


async def assign(desk: Desk, number: int, assignee: StaffRef, actor: StaffRef) -> Ticket:
    now = desk.clock()
    async with desk.unit_of_work() as uow:
        session = uow.session
        ticket = await ticket_for_update(session, number)
        staff = await ensure_staff(session, actor, now)
        target = staff if assignee == actor else await ensure_staff(session, assignee, now)
        _assign(uow, desk, ticket, target, staff)
        return ticket


async def claim(desk: Desk, number: int, actor: StaffRef, *, force: bool = False) -> Ticket:
    """Assign the ticket to oneself; refuses to take it from a colleague unless forced."""
    now = desk.clock()
    async with desk.unit_of_work() as uow:
        session = uow.session
        ticket = await ticket_for_update(session, number)
        staff = await ensure_staff(session, actor, now)
        if ticket.assignee_id not in (None, staff.id) and not force:
            holder = await session.get(Staff, ticket.assignee_id)
            raise Conflict(f"{desk.format_number(ticket.number)} is already assigned to "
                           f"{holder.display_name if holder else 'someone else'}")
        _assign(uow, desk, ticket, staff, staff)
        return ticket


async def unassign(desk: Desk, number: int, actor: StaffRef) -> Ticket:
    now = desk.clock()
    async with desk.unit_of_work() as uow:
        session = uow.session
        ticket = await ticket_for_update(session, number)
        staff = await ensure_staff(session, actor, now)
        if ticket.assignee_id is not None:
            previous = await session.get(Staff, ticket.assignee_id)
            ticket.assignee_id = None
            record(uow, Unassigned(from_=previous.display_name if previous else None), at=now, ticket=ticket,
                   staff=staff)
        return ticket


def _assign(uow: UnitOfWork, desk: Desk, ticket: Ticket, target: Staff, actor: Staff) -> None:
    if ticket.assignee_id == target.id:
        return
    ticket.assignee_id = target.id
    assigned = Assigned(to_staff_id=target.id, to=target.display_name, to_discord_id=target.discord_id)
    record(uow, assigned, at=desk.clock(), ticket=ticket, staff=actor)


def validate_category(desk: Desk, category: str) -> str:
    wanted = category.strip().lower()
    if wanted not in desk.settings.categories:
        raise UserError(f"unknown category {category!r}; choose one of: {', '.join(desk.settings.categories)}")
    return wanted


def normalize_tags(desk: Desk, tags: Sequence[str]) -> list[str]:
    """Lowercase, no spaces, bounded length; empty ones dropped, order kept, no repeats."""
    cleaned: list[str] = []
    for raw in tags:
        value = _TAG_CHARS.sub("-", raw.strip().lower()).strip("-")[: desk.settings.max_tag_length]
        if value and value not in cleaned:
            cleaned.append(value)
    return cleaned


async def add_tags(session: AsyncSession, ticket: Ticket, tags: Sequence[str]) -> list[str]:
    added = []
    for value in tags:
        result = await insert_ignore(session, TicketTag, {"ticket_id": ticket.id, "tag": value}, ["ticket_id", "tag"])
        if rows_affected(result):
            added.append(value)
    return added
