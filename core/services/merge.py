"""Merging a duplicate ticket into another: messages and participants move, the old number redirects."""

from __future__ import annotations

from sqlalchemy import select, update

from core.desk import Desk
from core.enums import Status
from core.errors import UserError
from core.event_types import Merged, StatusReason
from core.models import Message, Participant, Ticket, TicketTag
from core.services._common import (
    StaffRef,
    change_status,
    ensure_staff,
    insert_ignore,
    record,
    ticket_for_update,
)


async def merge(desk: Desk, source_number: int, target_number: int, actor: StaffRef) -> Ticket:
    """Merge ticket `source_number` into `target_number` and return the target."""
    now = desk.clock()
    async with desk.unit_of_work() as uow:
        session = uow.session
        # Lock in number order so two opposite merges cannot deadlock on PostgreSQL.
        first, second = sorted((source_number, target_number))
        locked = {first: await ticket_for_update(session, first)}
        locked[second] = await ticket_for_update(session, second)
        source, target = locked[source_number], locked[target_number]
        if source.id == target.id:
            raise UserError(f"{desk.format_number(source_number)} and {desk.format_number(target_number)} "
                            "are already the same ticket")
        staff = await ensure_staff(session, actor, now)

        await session.execute(update(Message).where(Message.ticket_id == source.id)
                              .values(ticket_id=target.id))
        for contact_id in (await session.scalars(
                select(Participant.contact_id).where(Participant.ticket_id == source.id))):
            await insert_ignore(session, Participant, {"ticket_id": target.id, "contact_id": contact_id,
                                                       "role": "cc"}, ["ticket_id", "contact_id"])
        for tag in (await session.scalars(select(TicketTag.tag).where(TicketTag.ticket_id == source.id))):
            await insert_ignore(session, TicketTag, {"ticket_id": target.id, "tag": tag}, ["ticket_id", "tag"])
        if target.first_response_at is None and source.first_response_at is not None:
            target.first_response_at = source.first_response_at

        if source.status != Status.CLOSED:
            change_status(uow, desk, source, Status.CLOSED, reason=StatusReason.MERGED, staff=staff)
        source.merged_into_id = target.id
        merged = Merged(into=target.number, from_=source.number)
        record(uow, merged, at=now, ticket=source, staff=staff)
        record(uow, merged, at=now, ticket=target, staff=staff)
        return target
