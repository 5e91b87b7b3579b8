"""Received mail as stored: raw bytes first, committed before anyone is told 'accepted'."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, func, insert, select, update

from core.desk import Desk
from core.enums import InboundStatus
from core.errors import NotFound
from core.event_types import EventType, MailHeld, typed
from core.imap_models import ReadUpTo, save_position_in
from core.models import Event, InboundMail


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
    content_digest: str | None = None  # of what makes the mail itself (mail_gateway.store.content_digest)
    # When it reached our side, if earlier than now (an IMAP server's INTERNALDATE): rate limits count
    # by it, so catching up on a mailbox decides as live delivery would have.
    received_at: datetime | None = None


async def store_raw(
    desk: Desk,
    raw: bytes,
    *,
    source: str,
    mailbox: str = "",
    envelope_from: str | None = None,
    envelope_to: Sequence[str] = (),
    message_id: str | None = None,
    content_digest: str | None = None,
) -> StoredMail:
    """One INSERT, committed. Processing happens later, from the stored row."""
    mail = RawMail(raw, envelope_from, envelope_to, message_id, content_digest)
    return (await store_raw_many(desk, [mail], source=source, mailbox=mailbox))[0]


async def store_raw_many(desk: Desk, mails: Sequence[RawMail], *, source: str, mailbox: str = "",
                         read_up_to: ReadUpTo | None = None) -> list[StoredMail]:
    """Store several mails in one committed transaction (an IMAP fetch batch), in order.

    `read_up_to` (the IMAP position after these mails) is recorded in the same transaction, so it
    is committed together with them or not at all.

    The dedupe key (see dedupe_key) lets processing recognise a re-fetch after a crash or a
    provider's double delivery, and tell it from a different mail that reuses a Message-ID.
    """
    if not mails:
        return []
    now = desk.clock()
    rows: list[dict[str, Any]] = []
    for mail in mails:
        digest = hashlib.sha256(mail.raw).hexdigest()
        key = dedupe_key(mail, digest)
        rows.append({"source": source, "mailbox": mailbox, "envelope_from": mail.envelope_from,
                     "envelope_to": list(mail.envelope_to), "raw": mail.raw, "sha256": digest,
                     "dedupe_key": key, "status": InboundStatus.RECEIVED,
                     "received_at": min(mail.received_at, now) if mail.received_at else now})
    async with desk.db.transaction() as session:
        keys = sorted({row["dedupe_key"] for row in rows})
        found = await session.execute(_EARLIEST_BY_KEY, {"mailbox": mailbox, "keys": keys})
        earliest: dict[str, int] = {key: mail_id for key, mail_id in found}
        ids = (await session.scalars(_INSERT_INBOUND, rows)).all()
        if read_up_to is not None:
            await save_position_in(session, read_up_to.mailbox, read_up_to.folder, read_up_to.position, now)
    stored: list[StoredMail] = []
    for row, mail_id in zip(rows, ids, strict=True):
        key = row["dedupe_key"]
        stored.append(StoredMail(mail_id, earliest.get(key)))
        earliest.setdefault(key, mail_id)  # a second copy within this batch
    return stored


def dedupe_key(mail: RawMail, sha256: str) -> str:
    """What copies of one mail share: its Message-ID with the digest of its content (a different mail
    reusing the id is a different mail), else the digest of the raw bytes."""
    message_id = (mail.message_id or "").strip().strip("<>").lower()[:800]
    if not message_id:
        return f"sha256:{sha256}"
    return f"{message_id}|{mail.content_digest[:32]}" if mail.content_digest else message_id


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


@dataclass(frozen=True)
class WaitingMail:
    """A stored mail not processed yet, as the edge needs it to parse it."""

    id: int
    raw: bytes


async def waiting_mails(desk: Desk, mail_ids: Sequence[int]) -> list[WaitingMail]:
    """These stored mails, those still waiting for processing, oldest first."""
    async with desk.db.read() as session:
        return [WaitingMail(mail_id, raw) for mail_id, raw in await session.execute(_WAITING_IN,
                                                                                       {"ids": list(mail_ids)})]


_WAITING_IN = (select(InboundMail.id, InboundMail.raw).where(InboundMail.id.in_(bindparam("ids", expanding=True)),
                                                             InboundMail.status == InboundStatus.RECEIVED)
               .order_by(InboundMail.id))


async def get(desk: Desk, mail_id: int) -> InboundMail:
    async with desk.db.read() as session:
        row = await session.get(InboundMail, mail_id)
    if row is None:
        raise NotFound(f"no stored mail {mail_id}")
    return row


async def list_by_status(desk: Desk, status: InboundStatus, limit: int = 100, *,
                         reason_prefix: str | None = None) -> list[InboundMail]:
    """Newest first; with `reason_prefix`, only rows whose reason starts so (e.g. "machine-mail:")."""
    query = select(InboundMail).where(InboundMail.status == status)
    if reason_prefix is not None:
        query = query.where(InboundMail.reason.startswith(reason_prefix, autoescape=True))
    async with desk.db.read() as session:
        return list(await session.scalars(query.order_by(InboundMail.id.desc()).limit(limit)))


# The reason a requeued row carries when an operator released it past the rules that hold mail:
# whichever processor takes it (the CLI, or a running service's worker) honours it.
RELEASED = "released by an operator: the hold rules are not asked"


# The reason a row carries when it waited out the rate-limit window: that rule lets it through then
# (counting by arrival, it would hold it again for good); every other rule is still asked.
WAITED_OUT = "waited out the rate-limit window"


async def requeue_when_due(desk: Desk, rule: str, after: timedelta) -> int:
    """Put mail held by `rule` back in line once `after` has passed since it was held, marked
    WAITED_OUT; returns how many."""
    async with desk.db.transaction() as session:
        due = await session.scalars(
            update(InboundMail).where(InboundMail.status == InboundStatus.HELD,
                                      InboundMail.reason.startswith(f"{rule}:", autoescape=True),
                                      InboundMail.processed_at <= desk.clock() - after)
            .values(status=InboundStatus.RECEIVED, reason=WAITED_OUT, processed_at=None, claimed_until=None)
            .returning(InboundMail.id))
        return len(due.all())


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


@dataclass(frozen=True)
class HeldMail:
    """A hold as its MailHeld event recorded it, and whether the mail is still held now."""

    mail_id: int
    rule: str
    reason: str
    sender: str
    subject: str
    still_held: bool


async def held_mail(desk: Desk, event_id: int) -> HeldMail | None:
    """The hold recorded by the MailHeld event `event_id`; None when there is no such event."""
    async with desk.db.read() as session:
        event = await session.get(Event, event_id)
        if event is None or event.type != EventType.MAIL_HELD:
            return None
        held = typed(event)
        assert isinstance(held, MailHeld)
        status = await session.scalar(select(InboundMail.status).where(InboundMail.id == held.mail_id))
        return HeldMail(held.mail_id, held.rule, held.reason, held.sender, held.subject,
                        still_held=status == InboundStatus.HELD)
