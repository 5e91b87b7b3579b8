"""Services on contacts: blocking and unblocking a sender."""

from __future__ import annotations

from sqlalchemy import select

from core.desk import Desk
from core.event_types import ContactBlocked, ContactUnblocked
from core.models import Contact
from core.services._common import ContactRef, StaffRef, ensure_contact, ensure_staff, normalize_email, record


async def block_sender(desk: Desk, email: str, actor: StaffRef, reason: str = "") -> Contact:
    """Mail from a blocked sender is kept but opens no ticket and gets no answer."""
    now = desk.clock()
    async with desk.unit_of_work() as uow:
        session = uow.session
        staff = await ensure_staff(session, actor, now)
        contact = await ensure_contact(uow, ContactRef(email), now)
        if not contact.blocked:
            contact.blocked, contact.blocked_reason = True, reason.strip()[:500] or None
            record(uow, ContactBlocked(email=contact.email, reason=contact.blocked_reason), at=now, staff=staff,
                   contact=contact)
        return contact


async def unblock_sender(desk: Desk, email: str, actor: StaffRef) -> Contact:
    now = desk.clock()
    async with desk.unit_of_work() as uow:
        session = uow.session
        staff = await ensure_staff(session, actor, now)
        contact = await ensure_contact(uow, ContactRef(email), now)
        if contact.blocked:
            contact.blocked, contact.blocked_reason = False, None
            record(uow, ContactUnblocked(email=contact.email), at=now, staff=staff, contact=contact)
        return contact


async def is_blocked(desk: Desk, email: str) -> bool:
    async with desk.db.read() as session:
        blocked = await session.scalar(select(Contact.blocked).where(Contact.email == normalize_email(email)))
        return bool(blocked)
