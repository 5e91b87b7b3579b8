"""Services on contacts: blocking and unblocking a sender."""

from __future__ import annotations

from sqlalchemy import select

from core.desk import Desk
from core.events import EventType
from core.models import Contact
from core.services._common import ContactRef, StaffRef, ensure_contact, ensure_staff, normalize_email, record


async def block_sender(desk: Desk, email: str, actor: StaffRef, reason: str = "") -> Contact:
    """Mail from a blocked sender is kept but opens no ticket and gets no answer."""
    now = desk.clock()
    async with desk.db.transaction() as session:
        staff = await ensure_staff(session, actor, now)
        contact = await ensure_contact(session, ContactRef(email), now)
        if not contact.blocked:
            contact.blocked, contact.blocked_reason = True, reason.strip()[:500] or None
            await record(session, EventType.CONTACT_BLOCKED, at=now, staff=staff, contact=contact,
                         data={"email": contact.email, "reason": contact.blocked_reason})
        return contact


async def unblock_sender(desk: Desk, email: str, actor: StaffRef) -> Contact:
    now = desk.clock()
    async with desk.db.transaction() as session:
        staff = await ensure_staff(session, actor, now)
        contact = await ensure_contact(session, ContactRef(email), now)
        if contact.blocked:
            contact.blocked, contact.blocked_reason = False, None
            await record(session, EventType.CONTACT_UNBLOCKED, at=now, staff=staff, contact=contact,
                         data={"email": contact.email})
        return contact


async def is_blocked(desk: Desk, email: str) -> bool:
    async with desk.db.read() as session:
        blocked = await session.scalar(select(Contact.blocked).where(Contact.email == normalize_email(email)))
        return bool(blocked)
