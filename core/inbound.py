"""Received mail as stored: raw bytes first, committed before anyone is told 'accepted'."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

from sqlalchemy import Table, and_, bindparam, exists, func, insert, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from core.desk import Desk
from core.enums import Direction, InboundStatus, OutboxStatus
from core.errors import NotFound
from core.events import EventType, append_event, defer_events, write_deferred_events
from core.models import InboundMail, Message, OutboxMail, Ticket


@dataclass(frozen=True)
class StoredMail:
    id: int
    duplicate_of: int | None  # an earlier stored mail with the same dedupe key, if any


@dataclass(frozen=True)
class RawMail:
    """One received mail as it arrived, before anything is made of it."""

    raw: bytes
    envelope_from: str | None = None
    envelope_to: Sequence[str] = ()
    message_id: str | None = None  # from the header block, found cheaply by the edge


AfterStore = Callable[[AsyncSession], Awaitable[None]]


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
    """One INSERT, committed. Processing happens later, from the stored row."""
    mail = RawMail(raw, envelope_from, envelope_to, message_id)
    return (await store_raw_many(desk, [mail], source=source, mailbox=mailbox))[0]


async def store_raw_many(desk: Desk, mails: Sequence[RawMail], *, source: str, mailbox: str = "",
                         then: AfterStore | None = None) -> list[StoredMail]:
    """Store several mails in one committed transaction (an IMAP fetch batch), in order.

    `then` runs in the same transaction, so whatever it records (the IMAP position after these
    mails) is committed together with them or not at all.

    The dedupe key is the Message-ID, or the sha256 of the raw bytes when there is none, so a
    re-fetch after a crash or a provider's double delivery can be recognised in processing.
    """
    if not mails:
        return []
    now = desk.clock()
    rows: list[dict[str, Any]] = []
    for mail in mails:
        digest = hashlib.sha256(mail.raw).hexdigest()
        key = (mail.message_id or "").strip().strip("<>").lower()[:900] or f"sha256:{digest}"
        rows.append({"source": source, "mailbox": mailbox, "envelope_from": mail.envelope_from,
                     "envelope_to": list(mail.envelope_to), "raw": mail.raw, "sha256": digest,
                     "dedupe_key": key, "status": InboundStatus.RECEIVED, "received_at": now})
    async with desk.db.transaction() as session:
        keys = sorted({row["dedupe_key"] for row in rows})
        found = await session.execute(_EARLIEST_BY_KEY, {"mailbox": mailbox, "keys": keys})
        earliest: dict[str, int] = {key: mail_id for key, mail_id in found}
        ids = (await session.scalars(_INSERT_INBOUND, rows)).all()
        if then is not None:
            await then(session)
    stored: list[StoredMail] = []
    for row, mail_id in zip(rows, ids, strict=True):
        key = row["dedupe_key"]
        stored.append(StoredMail(mail_id, earliest.get(key)))
        earliest.setdefault(key, mail_id)  # a second copy within this batch
    return stored


_EARLIEST_BY_KEY = (select(InboundMail.dedupe_key, func.min(InboundMail.id))
                    .where(InboundMail.mailbox == bindparam("mailbox"),
                           InboundMail.dedupe_key.in_(bindparam("keys", expanding=True)))
                    .group_by(InboundMail.dedupe_key))
_INSERT_INBOUND = insert(InboundMail).returning(InboundMail.id, sort_by_parameter_order=True)


async def pending_ids(desk: Desk, limit: int = 100) -> list[int]:
    """Stored mail not processed yet, oldest first (also what a crash left behind)."""
    async with desk.db.read() as session:
        rows = await session.scalars(select(InboundMail.id).where(InboundMail.status == InboundStatus.RECEIVED)
                                     .order_by(InboundMail.id).limit(limit))
        return list(rows)


async def received_rows(desk: Desk, mail_ids: Sequence[int]) -> list[InboundMail]:
    """These stored mails, those still waiting for processing, oldest first."""
    async with desk.db.read() as session:
        return list(await session.scalars(_RECEIVED_IN, {"ids": list(mail_ids)}))


_RECEIVED_IN = (select(InboundMail).where(InboundMail.id.in_(bindparam("ids", expanding=True)),
                                          InboundMail.status == InboundStatus.RECEIVED).order_by(InboundMail.id))


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


# The reason a requeued row carries when an operator released it past the rules that hold mail:
# whichever processor takes it (the CLI, or a running service's worker) honours it.
RELEASED = "released by an operator: the hold rules are not asked"


async def requeue(desk: Desk, mail_ids: Sequence[int], *, release: bool = False) -> int:
    """Put quarantined or held mail back in line for processing; returns how many."""
    async with desk.db.transaction() as session:
        released = await session.scalars(
            update(InboundMail).where(InboundMail.id.in_(list(mail_ids)),
                                      InboundMail.status.in_([InboundStatus.QUARANTINED, InboundStatus.HELD]))
            .values(status=InboundStatus.RECEIVED, reason=RELEASED if release else None, processed_at=None,
                    claimed_until=None)
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
    On SQLite `session` is None and the hold is a lease on the row (see _sqlite_lease), except in
    a batch (claim_many), where `session` is the batch's write transaction on both engines.
    """

    mail: InboundMail
    session: AsyncSession | None = None
    in_batch: bool = False  # writes wait for the batch's commit (no flush after each)
    alone: bool = False  # known to have no other stored copy and no message made from it yet


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


# Free to take on SQLite: received, no live lease on it, and no live lease on another copy of the
# same mail (PostgreSQL has the advisory lock for that). Built once: building a statement with an
# aliased subquery costs more than running it.
_sibling = aliased(InboundMail)
_FREE_ON_SQLITE = and_(
    InboundMail.status == InboundStatus.RECEIVED,
    or_(InboundMail.claimed_until.is_(None), InboundMail.claimed_until < bindparam("now")),
    ~exists().where(_sibling.dedupe_key == InboundMail.dedupe_key, _sibling.id != InboundMail.id,
                    _sibling.status == InboundStatus.RECEIVED, _sibling.claimed_until >= bindparam("now")))
_LEASE = (update(InboundMail).where(InboundMail.id == bindparam("mail_id"), _FREE_ON_SQLITE)
          .values(claimed_until=bindparam("until")).returning(InboundMail)
          .execution_options(synchronize_session=False))
_RELEASE = (update(InboundMail).where(InboundMail.id == bindparam("mail_id")).values(claimed_until=None)
            .execution_options(synchronize_session=False))


@asynccontextmanager
async def _sqlite_lease(desk: Desk, mail_id: int) -> AsyncIterator[InboundMail | None]:
    """SQLite has no row locks, and `supportbot ingest` (an MTA's pipe) may run beside `supportbot
    run`: the claim is a lease written in its own short transaction (SQLite writers are serial, so
    the check-and-set is atomic). A processor that dies leaves the lease to expire.
    """
    now = desk.clock()
    async with desk.db.transaction() as session:
        row = (await session.scalars(_LEASE, {"mail_id": mail_id, "now": now,
                                              "until": now + SQLITE_CLAIM_LEASE})).first()
    try:
        yield row
    except BaseException:
        if row is not None:  # not settled: let the next worker have it without waiting
            async with desk.db.transaction() as session:
                await session.execute(_RELEASE, {"mail_id": mail_id})
        raise


_FREE_IN = select(InboundMail.id).where(InboundMail.id.in_(bindparam("ids", expanding=True)), _FREE_ON_SQLITE)
_LOCK_IN = (select(InboundMail.id, InboundMail.dedupe_key)
            .where(InboundMail.id.in_(bindparam("ids", expanding=True)), InboundMail.status == InboundStatus.RECEIVED)
            .order_by(InboundMail.id).with_for_update(skip_locked=True, key_share=True))
_TRY_KEY_LOCKS = text("SELECT k FROM unnest(CAST(:keys AS text[])) AS k "
                      "WHERE pg_try_advisory_xact_lock(:c, hashtext(k))")


@asynccontextmanager
async def claim_many(desk: Desk, mails: Sequence[InboundMail]) -> AsyncIterator[list[Claim]]:
    """Hold several stored mails (rows read before, oldest first) in one write transaction that
    also takes what becomes of them: the batch commits as a whole or not at all, and a crash leaves
    every one of them "received". Mail no longer waiting, or that someone else holds, is left out.

    On SQLite the transaction holds the database's write lock, which is the hold (a lease is only
    needed by the one-by-one path, whose writes span several transactions). On PostgreSQL the rows
    are locked as in claim(), and a mail whose dedupe key another worker holds is left out rather
    than waited for.
    """
    ids = [mail.id for mail in mails]
    async with desk.db.transaction() as session:
        if not ids:
            free: set[int] = set()
        elif desk.db.is_postgres:
            locked_rows = (await session.execute(_LOCK_IN, {"ids": ids})).all()
            keys = sorted({key for _, key in locked_rows})
            keys_held = set(await session.scalars(_TRY_KEY_LOCKS, {"keys": keys, "c": _DEDUPE_LOCK_CLASS})) \
                if keys else set()
            free = {mail_id for mail_id, key in locked_rows if key in keys_held}
        else:
            free = set(await session.scalars(_FREE_IN, {"ids": ids, "now": desk.clock()}))
        rows = [mail for mail in mails if mail.id in free]
        # Two questions for the whole batch instead of find_earlier_copy's two per mail: which keys
        # were stored more than once, and which of these mails already made a message.
        shared = set(await session.scalars(_KEYS_STORED_TWICE, {"keys": sorted({r.dedupe_key for r in rows})})) \
            if rows else set()
        made = set(await session.scalars(_MADE_A_MESSAGE, {"ids": [r.id for r in rows]})) if rows else set()
        defer_events(session)
        yield [Claim(row, session, in_batch=True, alone=row.dedupe_key not in shared and row.id not in made)
               for row in rows]
        await write_marks(session)
        await write_deferred_events(session)


_KEYS_STORED_TWICE = (select(InboundMail.dedupe_key)
                      .where(InboundMail.dedupe_key.in_(bindparam("keys", expanding=True)))
                      .group_by(InboundMail.dedupe_key).having(func.count() > 1))
_MADE_A_MESSAGE = select(Message.inbound_mail_id).where(Message.inbound_mail_id.in_(bindparam("ids", expanding=True)))


@asynccontextmanager
async def _writer(desk: Desk, held: Claim | None) -> AsyncIterator[AsyncSession]:
    """The claim's own transaction when there is one (its row lock would block any other)."""
    if held is not None and held.session is not None:
        yield held.session
        if not held.in_batch:  # alone, a failure must surface here, where it can still be quarantined
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
    found = (await session.execute(_COPY_WITH_MESSAGE, {"key": mail.dedupe_key})).first()
    if found is not None:
        return EarlierCopy(int(found[0]), int(found[1]), int(found[2]))
    settled = (await session.execute(_SETTLED_COPY, {"key": mail.dedupe_key, "mail_id": mail.id})).first()
    if settled is None:
        return None
    number = await session.scalar(_NUMBER_OF, {"ticket_id": settled[1]}) if settled[1] else None
    return EarlierCopy(int(settled[0]), settled[1], number)


_COPY_WITH_MESSAGE = (select(InboundMail.id, Ticket.id, Ticket.number)
                      .join(Message, Message.inbound_mail_id == InboundMail.id)
                      .join(Ticket, Ticket.id == Message.ticket_id)
                      .where(InboundMail.dedupe_key == bindparam("key")).order_by(Message.id).limit(1))
_SETTLED_COPY = (select(InboundMail.id, InboundMail.ticket_id)
                 .where(InboundMail.dedupe_key == bindparam("key"), InboundMail.id != bindparam("mail_id"),
                        InboundMail.status.in_([InboundStatus.PROCESSED, InboundStatus.HELD]))
                 .order_by(InboundMail.id).limit(1))
_NUMBER_OF = select(Ticket.number).where(Ticket.id == bindparam("ticket_id"))


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
    mark = {"mail_id": mail_id, "to_ticket": ticket_id, "why": reason, "at": desk.clock()}
    if held is not None and held.in_batch and held.session is not None:
        # Written with the batch's others in one statement before it commits (write_marks).
        held.session.info.setdefault(_MARKS, []).append(mark)
        return
    async with _writer(desk, held) as session:
        await session.execute(_MARK_PROCESSED, mark)


async def write_marks(session: AsyncSession) -> None:
    """Write the batch's "processed" marks so far (before anything reads the status of a copy)."""
    marks = session.info.pop(_MARKS, None)
    if marks:
        await session.execute(_MARK_PROCESSED, marks)


_MARKS = "inbound_processed_marks"
_inbound = cast(Table, InboundMail.__table__)
# Core, not ORM: executes many at once, and there is nothing in the session to keep in step.
_MARK_PROCESSED = update(_inbound).where(_inbound.c.id == bindparam("mail_id")).values(
    status=InboundStatus.PROCESSED, ticket_id=bindparam("to_ticket"), reason=bindparam("why"),
    processed_at=bindparam("at"))


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
