"""Received mail as stored: raw bytes first, committed before anyone is told 'accepted'."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import exists, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from core.desk import Desk
from core.enums import Direction, InboundStatus, OutboxStatus
from core.errors import NotFound
from core.events import EventType, append_event
from core.models import InboundMail, Message, OutboxMail, Ticket


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


async def quarantine(desk: Desk, mail_id: int, reason: str, *, held: Claim | None = None) -> None:
    """Keep the mail, say why it could not be processed, and let staff know."""
    now = desk.clock()
    async with _writer(desk, held) as session:
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
        released = await session.scalars(
            update(InboundMail).where(InboundMail.id.in_(list(mail_ids)),
                                      InboundMail.status.in_([InboundStatus.QUARANTINED, InboundStatus.HELD]))
            .values(status=InboundStatus.RECEIVED, reason=None, processed_at=None, claimed_until=None)
            .returning(InboundMail.id))
        return len(released.all())


# --- processing support: claiming a stored mail and recording what became of it -----------------

# Two-key advisory locks live in a key space apart from the one-key lock of the event log.
_DEDUPE_LOCK_CLASS = 0x1B0
# Longer than processing one mail can take (the parse budget is 30 s by default).
SQLITE_CLAIM_LEASE = timedelta(minutes=2)


@dataclass(frozen=True)
class Claim:
    """A stored mail held by one processor.

    On PostgreSQL `session` is a transaction holding the row with FOR NO KEY UPDATE SKIP LOCKED
    (NO KEY, so the ticket service may still insert messages referencing the row) and an advisory
    lock on the mail's dedupe key (so two copies of one mail are never processed side by side).
    The final status is written in that same transaction. A crashed process's connection dies,
    its locks go with it, and the row is simply "received" again for the next worker.
    On SQLite `session` is None and the hold is a lease on the row (see _sqlite_lease).
    """

    mail: InboundMail
    session: AsyncSession | None = None


@asynccontextmanager
async def claim(desk: Desk, mail_id: int) -> AsyncIterator[Claim | None]:
    """Hold a "received" mail while it is processed; None if it is not received or someone holds it."""
    if not desk.db.is_postgres:
        async with _sqlite_lease(desk, mail_id) as row:
            yield Claim(row) if row is not None else None
        return
    async with desk.db.transaction() as session:
        row = await session.scalar(
            select(InboundMail).where(InboundMail.id == mail_id, InboundMail.status == InboundStatus.RECEIVED)
            .with_for_update(skip_locked=True, key_share=True))
        if row is None:
            yield None
            return
        await session.execute(text("SELECT pg_advisory_xact_lock(:c, hashtext(:k))"),
                              {"c": _DEDUPE_LOCK_CLASS, "k": row.dedupe_key})
        yield Claim(row, session)


@asynccontextmanager
async def _sqlite_lease(desk: Desk, mail_id: int) -> AsyncIterator[InboundMail | None]:
    """SQLite has no row locks, and `supportbot ingest` (an MTA's pipe) may run beside `supportbot
    run`: the claim is a lease written in its own short transaction (SQLite writers are serial, so
    the check-and-set is atomic). A processor that dies leaves the lease to expire.
    """
    now = desk.clock()
    # Nor while another copy of the same mail is in someone's hands (PostgreSQL: the advisory lock).
    sibling = aliased(InboundMail)
    copy_in_hand = exists().where(sibling.dedupe_key == InboundMail.dedupe_key, sibling.id != InboundMail.id,
                                  sibling.status == InboundStatus.RECEIVED, sibling.claimed_until >= now)
    async with desk.db.transaction() as session:
        row = (await session.scalars(
            update(InboundMail).where(
                InboundMail.id == mail_id, InboundMail.status == InboundStatus.RECEIVED,
                or_(InboundMail.claimed_until.is_(None), InboundMail.claimed_until < now), ~copy_in_hand)
            .values(claimed_until=now + SQLITE_CLAIM_LEASE).returning(InboundMail))).first()
    try:
        yield row
    except BaseException:
        if row is not None:  # not settled: let the next worker have it without waiting
            async with desk.db.transaction() as session:
                await session.execute(update(InboundMail).where(InboundMail.id == mail_id)
                                      .values(claimed_until=None))
        raise


@asynccontextmanager
async def _writer(desk: Desk, held: Claim | None) -> AsyncIterator[AsyncSession]:
    """The claim's own transaction when there is one (its row lock would block any other)."""
    if held is not None and held.session is not None:
        yield held.session
        await held.session.flush()
    else:
        async with desk.db.transaction() as session:
            yield session


@dataclass(frozen=True)
class EarlierCopy:
    """What an earlier delivery of the same mail (or this one, before a crash) already produced."""

    mail_id: int
    ticket_id: int | None
    ticket_number: int | None


async def find_earlier_copy(session: AsyncSession, mail: InboundMail) -> EarlierCopy | None:
    """A message made from a stored mail with the same dedupe key, or such a mail already settled.

    This is what makes processing idempotent: the message row carries inbound_mail_id and is
    committed by the ticket service, so a replay after a crash finds it even though the stored
    row still says "received".
    """
    found = (await session.execute(
        select(InboundMail.id, Ticket.id, Ticket.number)
        .join(Message, Message.inbound_mail_id == InboundMail.id)
        .join(Ticket, Ticket.id == Message.ticket_id)
        .where(InboundMail.dedupe_key == mail.dedupe_key).order_by(Message.id).limit(1))).first()
    if found is not None:
        return EarlierCopy(int(found[0]), int(found[1]), int(found[2]))
    settled = (await session.execute(
        select(InboundMail.id, InboundMail.ticket_id)
        .where(InboundMail.dedupe_key == mail.dedupe_key, InboundMail.id != mail.id,
               InboundMail.status.in_([InboundStatus.PROCESSED, InboundStatus.HELD]))
        .order_by(InboundMail.id).limit(1))).first()
    if settled is None:
        return None
    number = await session.scalar(select(Ticket.number).where(Ticket.id == settled[1])) if settled[1] else None
    return EarlierCopy(int(settled[0]), settled[1], number)


@asynccontextmanager
async def reader(desk: Desk, held: Claim | None) -> AsyncIterator[AsyncSession]:
    """Where processing reads: the claim's transaction on PostgreSQL, else one read session."""
    if held is not None and held.session is not None:
        yield held.session
    else:
        async with desk.db.read() as session:
            yield session


async def mark_processed(desk: Desk, mail_id: int, *, ticket_id: int | None, reason: str | None = None,
                         held: Claim | None = None) -> None:
    async with _writer(desk, held) as session:
        await session.execute(update(InboundMail).where(InboundMail.id == mail_id).values(
            status=InboundStatus.PROCESSED, ticket_id=ticket_id, reason=reason, processed_at=desk.clock()))


async def hold(desk: Desk, mail_id: int, reason: str, *, rule: str, held: Claim | None = None) -> None:
    """Keep the mail without making a ticket of it (blocked sender, rate limit, oversize)."""
    now = desk.clock()
    async with _writer(desk, held) as session:
        await session.execute(update(InboundMail).where(InboundMail.id == mail_id).values(
            status=InboundStatus.HELD, reason=reason[:2000], processed_at=now))
        await append_event(session, EventType.MAIL_HELD, at=now,
                           data={"mail_id": mail_id, "rule": rule, "reason": reason[:500]})


@dataclass(frozen=True)
class BounceResult:
    outbox_id: int | None
    ticket_id: int | None
    ticket_number: int | None


async def record_bounce(desk: Desk, mail_id: int, *, original_message_id: str | None,
                        failed: Sequence[dict[str, str]], held: Claim | None = None) -> BounceResult:
    """A delivery report for mail we sent: mark that mail failed and tell staff, in one transaction."""
    now = desk.clock()
    bare = (original_message_id or "").strip().strip("<>")
    forms = [bare, f"<{bare}>"] if bare else []
    async with _writer(desk, held) as session:
        outbox = (await session.scalars(select(OutboxMail).where(OutboxMail.rfc822_message_id.in_(forms))
                                        .limit(1))).first() if forms else None
        ticket_id = outbox.ticket_id if outbox else None
        if ticket_id is None and forms:
            ticket_id = await session.scalar(select(Message.ticket_id).where(
                Message.message_id.in_(forms), Message.direction != Direction.INBOUND).limit(1))
        summary = "; ".join(f"{f.get('recipient', '?')}: {f.get('status', '?')} {f.get('diagnostic', '')}".strip()
                            for f in failed)[:1000] or "delivery failed"
        if outbox is not None:
            outbox.status = OutboxStatus.FAILED
            outbox.last_error = f"bounced: {summary}"
        number = await session.scalar(select(Ticket.number).where(Ticket.id == ticket_id)) if ticket_id else None
        if outbox is not None or ticket_id is not None:
            await append_event(session, EventType.MAIL_BOUNCED, at=now, ticket_id=ticket_id, data={
                "mail_id": mail_id, "outbox_id": outbox.id if outbox else None, "failed": list(failed)[:20],
                "original_message_id": bare[:300]})
            reason = f"bounce of {'outbox mail ' + str(outbox.id) if outbox else 'a message'}"
        else:
            reason = "bounce for a message we do not know"
        await session.execute(update(InboundMail).where(InboundMail.id == mail_id).values(
            status=InboundStatus.PROCESSED, ticket_id=ticket_id, reason=reason, processed_at=now))
        return BounceResult(outbox.id if outbox else None, ticket_id, number)
