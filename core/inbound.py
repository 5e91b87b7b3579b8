"""Received mail as stored: raw bytes first, committed before anyone is told 'accepted'."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select, update

from core.desk import Desk
from core.enums import InboundStatus
from core.errors import NotFound
from core.events import EventType, append_event
from core.models import InboundMail


@dataclass(frozen=True)
class StoredMail:
    id: int
    duplicate_of: int | None  # an earlier stored mail with the same dedupe key, if any


async def store_raw(
    desk: Desk,
    raw: bytes,
    *,
    source: str,
    mailbox: str = "",
    envelope_from: str | None = None,
    envelope_to: Sequence[str] = (),
    message_id: str | None = None,
) -> StoredMail:
    """One INSERT, committed. Processing happens later, from the stored row.

    The dedupe key is the Message-ID, or the sha256 of the raw bytes when there is none, so a
    re-fetch after a crash or a provider's double delivery can be recognised in processing.
    """
    digest = hashlib.sha256(raw).hexdigest()
    key = (message_id or "").strip().strip("<>").lower()[:900] or f"sha256:{digest}"
    async with desk.db.transaction() as session:
        earlier = await session.scalar(
            select(InboundMail.id).where(InboundMail.dedupe_key == key, InboundMail.mailbox == mailbox)
            .order_by(InboundMail.id).limit(1))
        row = InboundMail(source=source, mailbox=mailbox, envelope_from=envelope_from,
                          envelope_to=list(envelope_to), raw=raw, sha256=digest, dedupe_key=key,
                          status=InboundStatus.RECEIVED, received_at=desk.clock())
        session.add(row)
        await session.flush()
        return StoredMail(row.id, earlier)


async def pending_ids(desk: Desk, limit: int = 100) -> list[int]:
    """Stored mail not processed yet, oldest first (also what a crash left behind)."""
    async with desk.db.read() as session:
        rows = await session.scalars(select(InboundMail.id).where(InboundMail.status == InboundStatus.RECEIVED)
                                     .order_by(InboundMail.id).limit(limit))
        return list(rows)


async def get(desk: Desk, mail_id: int) -> InboundMail:
    async with desk.db.read() as session:
        row = await session.get(InboundMail, mail_id)
    if row is None:
        raise NotFound(f"no stored mail {mail_id}")
    return row


async def quarantine(desk: Desk, mail_id: int, reason: str) -> None:
    """Keep the mail, say why it could not be processed, and let staff know."""
    now = desk.clock()
    async with desk.db.transaction() as session:
        await session.execute(update(InboundMail).where(InboundMail.id == mail_id).values(
            status=InboundStatus.QUARANTINED, reason=reason[:2000], processed_at=now))
        await append_event(session, EventType.MAIL_QUARANTINED, at=now, data={"mail_id": mail_id,
                                                                               "reason": reason[:500]})


async def list_by_status(desk: Desk, status: InboundStatus, limit: int = 100) -> list[InboundMail]:
    async with desk.db.read() as session:
        rows = await session.scalars(select(InboundMail).where(InboundMail.status == status)
                                     .order_by(InboundMail.id.desc()).limit(limit))
        return list(rows)


async def requeue(desk: Desk, mail_ids: Sequence[int]) -> int:
    """Put quarantined or held mail back in line for processing; returns how many."""
    async with desk.db.transaction() as session:
        result = await session.execute(
            update(InboundMail).where(InboundMail.id.in_(list(mail_ids)),
                                      InboundMail.status.in_([InboundStatus.QUARANTINED, InboundStatus.HELD]))
            .values(status=InboundStatus.RECEIVED, reason=None, processed_at=None))
        return int(result.rowcount or 0)
