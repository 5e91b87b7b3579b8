"""The stored mail's side of intake: claiming rows in a unit of work, and recording what became of each.

Everything here writes in the caller's unit of work, so a mail's ticket message and its row's final
status commit together or not at all: a crash leaves the row "received", and the replay finds the
message it made (EarlierCopy) instead of making another.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, select, text, update

from core.enums import Direction, InboundStatus, OutboxStatus
from core.event_types import MailBounced, MailHeld, MailQuarantined
from core.inbound import RELEASED, WAITED_OUT
from core.models import InboundMail, Message, OutboxMail, Ticket
from core.uow import UnitOfWork

# Two-key advisory locks live in a key space apart from the one-key lock of the event log.
_DEDUPE_LOCK_CLASS = 0x1B0


@dataclass(frozen=True)
class StoredMail:
    """What intake needs of a stored row (its bytes stay where they are: the edge parsed them)."""

    id: int
    dedupe_key: str
    envelope_from: str | None
    envelope_to: Sequence[str]
    raw_size: int
    received_at: datetime
    released: bool  # an operator let it past the rules that hold mail
    waited_out: bool  # held by the rate limit, it waited out the window
    alone: bool  # known to have no other stored copy and no message made from it yet


async def claim(uow: UnitOfWork, mail_ids: Sequence[int]) -> list[StoredMail]:
    """Hold these stored mails for this unit of work, oldest first; those no longer waiting, or
    held by another worker, are left out.

    On SQLite the unit of work's transaction holds the database's write lock, which is the hold.
    On PostgreSQL the rows are locked FOR NO KEY UPDATE SKIP LOCKED (NO KEY, so messages may still
    reference them) with an advisory lock on each mail's dedupe key, so two copies of one mail are
    never processed side by side: a batch passes over a key another worker holds, a single mail
    waits for it. A crashed process's locks die with its connection.
    """
    session = uow.session
    ids = sorted(mail_ids)
    if not ids:
        return []
    if uow.is_postgres:
        locked = (await session.execute(_LOCK_IN, {"ids": ids})).all()
        keys = sorted({key for _, key in locked})
        if len(locked) == 1:
            await session.execute(_WAIT_FOR_KEY, {"c": _DEDUPE_LOCK_CLASS, "k": keys[0]})
            held = set(keys)
        else:
            held = set(await session.scalars(_TRY_KEY_LOCKS, {"keys": keys, "c": _DEDUPE_LOCK_CLASS})) \
                if keys else set()
        free = [mail_id for mail_id, key in locked if key in held]
    else:
        free = list(await session.scalars(_RECEIVED_IN, {"ids": ids}))
    if not free:
        return []
    rows = (await session.execute(_STORED_IN, {"ids": free})).all()
    # Two questions for the whole batch: which keys were stored more than once, and which of these
    # mails already made a message (a row an older version left half settled). A mail with
    # neither needs no look for earlier copies.
    shared = set(await session.scalars(_KEYS_STORED_TWICE, {"keys": sorted({r.dedupe_key for r in rows})}))
    made = set(await session.scalars(_MADE_A_MESSAGE, {"ids": free}))
    return [StoredMail(r.id, r.dedupe_key, r.envelope_from, list(r.envelope_to or []), int(r.size or 0),
                       r.received_at, r.reason == RELEASED, r.reason == WAITED_OUT,
                       alone=r.dedupe_key not in shared and r.id not in made)
            for r in rows]


async def ids_on_messages(uow: UnitOfWork, message_ids: Sequence[str]) -> set[str]:
    """Which of these Message-IDs (as stored, with brackets) stored messages carry already."""
    if not message_ids:
        return set()
    return {i for i in await uow.session.scalars(_IDS_ON_MESSAGES, {"forms": sorted(set(message_ids))}) if i}


_LOCK_IN = (select(InboundMail.id, InboundMail.dedupe_key)
            .where(InboundMail.id.in_(bindparam("ids", expanding=True)), InboundMail.status == InboundStatus.RECEIVED)
            .order_by(InboundMail.id).with_for_update(skip_locked=True, key_share=True))
_WAIT_FOR_KEY = text("SELECT pg_advisory_xact_lock(:c, hashtext(:k))")
_TRY_KEY_LOCKS = text("SELECT k FROM unnest(CAST(:keys AS text[])) AS k "
                      "WHERE pg_try_advisory_xact_lock(:c, hashtext(k))")
_RECEIVED_IN = (select(InboundMail.id).where(InboundMail.id.in_(bindparam("ids", expanding=True)),
                                             InboundMail.status == InboundStatus.RECEIVED))
_STORED_IN = (select(InboundMail.id, InboundMail.dedupe_key, InboundMail.envelope_from, InboundMail.envelope_to,
                     InboundMail.received_at,
                     InboundMail.reason, func.length(InboundMail.raw).label("size"))
              .where(InboundMail.id.in_(bindparam("ids", expanding=True))).order_by(InboundMail.id))
_KEYS_STORED_TWICE = (select(InboundMail.dedupe_key)
                      .where(InboundMail.dedupe_key.in_(bindparam("keys", expanding=True)))
                      .group_by(InboundMail.dedupe_key).having(func.count() > 1))
_IDS_ON_MESSAGES = select(Message.message_id).where(Message.message_id.in_(bindparam("forms", expanding=True)))
_MADE_A_MESSAGE = select(Message.inbound_mail_id).where(Message.inbound_mail_id.in_(bindparam("ids", expanding=True)))


@dataclass
class Marks:
    """The batch's "processed" marks, written together in one statement."""

    rows: list[dict[str, Any]] = field(default_factory=list)

    def add(self, mail_id: int, *, ticket_id: int | None, reason: str | None, at: datetime) -> None:
        self.rows.append({"mail_id": mail_id, "to_ticket": ticket_id, "why": (reason or "")[:2000] or None,
                          "at": at})

    async def write(self, uow: UnitOfWork) -> None:
        """Before anything reads the status of a copy, and at the end of the batch."""
        rows, self.rows = self.rows, []
        if rows:
            await uow.session.execute(_MARK_PROCESSED, rows)


_inbound = cast(Table, InboundMail.__table__)
# Core, not ORM: executes many at once, and there is nothing in the session to keep in step.
_MARK_PROCESSED = update(_inbound).where(_inbound.c.id == bindparam("mail_id")).values(
    status=InboundStatus.PROCESSED, ticket_id=bindparam("to_ticket"), reason=bindparam("why"),
    processed_at=bindparam("at"))


async def quarantine(uow: UnitOfWork, mail_id: int, reason: str, at: datetime) -> None:
    """Keep the mail, say why it could not be processed, and let staff know."""
    await uow.session.execute(update(InboundMail).where(InboundMail.id == mail_id).values(
        status=InboundStatus.QUARANTINED, reason=reason[:2000], processed_at=at))
    uow.record(MailQuarantined(mail_id=mail_id, reason=reason[:500]), at=at)


async def hold(uow: UnitOfWork, mail_id: int, reason: str, *, rule: str, at: datetime, sender: str = "",
               subject: str = "") -> None:
    """Keep the mail without making a ticket of it (blocked sender, rate limit, oversize); the event
    names its sender and subject so staff can decide on it without opening the raw mail."""
    await uow.session.execute(update(InboundMail).where(InboundMail.id == mail_id).values(
        status=InboundStatus.HELD, reason=reason[:2000], processed_at=at))
    uow.record(MailHeld(mail_id=mail_id, rule=rule, reason=reason[:500], sender=sender[:320],
                        subject=subject[:300]), at=at)


@dataclass(frozen=True)
class BounceResult:
    outbox_id: int | None
    ticket_id: int | None
    ticket_number: int | None


async def record_bounce(uow: UnitOfWork, mail_id: int, *, original_message_id: str | None,
                        failed: Sequence[dict[str, str]], at: datetime) -> BounceResult:
    """A delivery report for mail we sent: mark that mail failed and tell staff."""
    session = uow.session
    bare = (original_message_id or "").strip().strip("<>")
    forms = [bare, f"<{bare}>"] if bare else []
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
        uow.record(MailBounced(ticket_id=ticket_id, mail_id=mail_id, outbox_id=outbox.id if outbox else None,
                               failed=list(failed)[:20], original_message_id=bare[:300]), at=at)
        reason = f"bounce of {'outbox mail ' + str(outbox.id) if outbox else 'a message'}"
    else:
        reason = "bounce for a message we do not know"
    await session.execute(update(InboundMail).where(InboundMail.id == mail_id).values(
        status=InboundStatus.PROCESSED, ticket_id=ticket_id, reason=reason, processed_at=at))
    return BounceResult(outbox.id if outbox else None, ticket_id, number)


@dataclass(frozen=True)
class EarlierCopy:
    """What an earlier delivery of the same mail (or this one, before a crash) already produced."""

    mail_id: int
    ticket_id: int | None
    ticket_number: int | None


async def find_earlier_copy(uow: UnitOfWork, mail: StoredMail) -> EarlierCopy | None:
    """A message made from a stored mail with the same dedupe key, or such a mail already settled."""
    session = uow.session
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
