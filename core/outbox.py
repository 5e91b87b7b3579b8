"""The outbox: mail queued in the same transaction as its cause, claimed, sent, retried or failed."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, exists, func, or_, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from core.addresses import without_tag
from core.backoff import Backoff
from core.desk import Desk
from core.enums import OutboxStatus
from core.errors import Conflict, NotFound
from core.event_types import OutboundFailed
from core.models import OutboxMail
from core.outbox_models import OutboxRecipient
from core.uow import UnitOfWork

CAP_WINDOW = timedelta(hours=1)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter; give up on temporary failures only after a long time."""

    initial: timedelta = timedelta(seconds=60)
    maximum: timedelta = timedelta(hours=1)
    give_up_after: timedelta = timedelta(days=3)
    # A claim is a lease: the sender renews it every `lease / 4` while it sends, so a mail in progress
    # never loses it; a sender that dies leaves its rows to be claimed again within `lease`.
    lease: timedelta = timedelta(seconds=60)

    @property
    def renew_every(self) -> timedelta:
        return self.lease / 4

    def delay(self, attempts: int, rng: random.Random | None = None) -> timedelta:
        backoff = Backoff(self.initial.total_seconds(), self.maximum.total_seconds())
        return timedelta(seconds=backoff.delay(max(1, attempts), rng))


@dataclass(frozen=True)
class OutgoingMail:
    """A rendered mail ready to queue; `content` is exactly what goes over SMTP."""

    kind: str
    rfc822_message_id: str
    mail_from: str
    recipients: Sequence[str]
    content: bytes
    automatic: bool
    ticket_id: int | None = None
    message_id: int | None = None


async def enqueue(uow: UnitOfWork, mail: OutgoingMail, now: datetime, *,
                  counted_at: datetime | None = None) -> OutboxMail:
    """Queue in the caller's unit of work, so the mail exists exactly when its cause does.

    `counted_at`: when the caps on automatic mail count it (the time its cause reached us), if not now.
    """
    session = uow.session
    uow.wake_after_commit()
    row = OutboxMail(
        ticket_id=mail.ticket_id, message_id=mail.message_id, kind=mail.kind,
        rfc822_message_id=mail.rfc822_message_id, mail_from=mail.mail_from,
        recipients=list(mail.recipients), content=mail.content, automatic=mail.automatic,
        status=OutboxStatus.QUEUED, attempts=0, next_attempt_at=now, created_at=now,
    )
    session.add(row)
    await session.flush()
    for email in dict.fromkeys(mailbox_of(r) for r in mail.recipients):
        session.add(OutboxRecipient(outbox_id=row.id, email=email, automatic=mail.automatic,
                                    created_at=counted_at or now))
    return row


def mailbox_of(email: str) -> str:
    """The mailbox an address reaches: case and plus-tags folded (victim+1@ and Victim@ are one)."""
    return without_tag(email.strip().lower())


async def automatic_mail_allowed(session: AsyncSession, email: str, now: datetime, per_hour: int,
                                 total_per_hour: int | None = None) -> bool:
    """False once this mailbox got `per_hour` automatic mails in the last hour (ack storms, loops,
    backscatter to forged senders), or the desk sent `total_per_hour` automatic mails to anyone."""
    recent = (select(func.count()).select_from(OutboxRecipient)
              .where(OutboxRecipient.automatic.is_(True), OutboxRecipient.created_at > now - CAP_WINDOW,
                     OutboxRecipient.created_at <= now))
    count = await session.scalar(recent.where(OutboxRecipient.email == mailbox_of(email)))
    if int(count or 0) >= per_hour:
        return False
    return total_per_hour is None or int(await session.scalar(recent) or 0) < total_per_hour


async def claim_due(desk: Desk, policy: RetryPolicy, limit: int = 20) -> list[OutboxMail]:
    """Mark due mail as being sent and return it; the oldest unsent mail of a ticket goes first.

    A mail waits while an earlier mail of its ticket is still queued or being sent, so a customer
    never gets the second reply before the first. On PostgreSQL, FOR UPDATE SKIP LOCKED lets
    several senders share the outbox without sending a row twice.

    Each claim adds one to `attempts`, so a row's (id, attempts) names the claim: the lease is renewed,
    and the row released or marked, only by the sender holding that claim (`Claim`).
    """
    now = desk.clock()
    earlier = aliased(OutboxMail)
    blocked = exists().where(
        earlier.ticket_id == OutboxMail.ticket_id, earlier.id < OutboxMail.id,
        earlier.status.in_([OutboxStatus.QUEUED, OutboxStatus.SENDING]))
    # A row still `sending` whose lease ran out was claimed by a sender that died: claim it again.
    due = OutboxMail.status.in_([OutboxStatus.QUEUED, OutboxStatus.SENDING])
    query = (select(OutboxMail)
             .where(due, OutboxMail.next_attempt_at <= now, or_(OutboxMail.ticket_id.is_(None), ~blocked))
             .order_by(OutboxMail.id).limit(limit))
    if desk.db.is_postgres:
        query = query.with_for_update(skip_locked=True, of=OutboxMail)
    async with desk.db.transaction() as session:
        rows = list(await session.scalars(query))
        for row in rows:
            row.status = OutboxStatus.SENDING
            row.attempts += 1
            row.next_attempt_at = now + policy.lease
        return rows


Claim = Mapping[int, int]  # outbox id -> its `attempts` as this sender claimed it


def _held(claim: Claim) -> ColumnElement[bool]:
    """The rows of `claim` still claimed by it: nobody reclaimed them after their lease ran out."""
    return and_(tuple_(OutboxMail.id, OutboxMail.attempts).in_(list(claim.items())),
                OutboxMail.status == OutboxStatus.SENDING)


async def renew_lease(desk: Desk, claim: Claim, policy: RetryPolicy) -> set[int]:
    """Extend the lease of the rows this sender still holds; returns their ids (the others were lost)."""
    if not claim:
        return set()
    async with desk.db.transaction() as session:
        result = await session.execute(
            update(OutboxMail).where(_held(claim)).values(next_attempt_at=desk.clock() + policy.lease)
            .returning(OutboxMail.id).execution_options(synchronize_session=False))
        return set(result.scalars())


async def release(desk: Desk, claim: Claim) -> int:
    """Give back claimed rows that were never handed to the relay: due again now, the claim not counted."""
    if not claim:
        return 0
    async with desk.db.transaction() as session:
        result = await session.execute(
            update(OutboxMail).where(_held(claim)).values(
                status=OutboxStatus.QUEUED, attempts=OutboxMail.attempts - 1, next_attempt_at=desk.clock())
            .returning(OutboxMail.id).execution_options(synchronize_session=False))
        return len(result.all())


async def mark_sent(desk: Desk, mail_id: int, note: str | None = None, *, attempt: int | None = None) -> bool:
    """The relay said 250: one short transaction, right away (a crash before it commits resends the mail).

    With `attempt` (the row's `attempts` as claimed), False says another sender had claimed it again
    meanwhile (this sender's lease ran out): it is marked sent all the same, and may go out twice.
    """
    values = {"status": OutboxStatus.SENT, "sent_at": desk.clock(), "last_error": note}
    async with desk.db.transaction() as session:
        if attempt is not None:
            held = await session.execute(update(OutboxMail).where(
                OutboxMail.id == mail_id, OutboxMail.attempts == attempt, OutboxMail.status == OutboxStatus.SENDING,
            ).values(**values).execution_options(synchronize_session=False))
            if held.rowcount == 1:  # type: ignore[attr-defined]
                return True
        await session.execute(update(OutboxMail).where(OutboxMail.id == mail_id).values(**values)
                              .execution_options(synchronize_session=False))
        return attempt is None


async def mark_retry(desk: Desk, mail_id: int, error: str, policy: RetryPolicy, *,
                     attempt: int | None = None) -> bool | None:
    """Try again later; after `give_up_after` of failing, fail for good. True if it will be retried.

    With `attempt`, nothing changes (None) unless the row is still this sender's claim: a mail that
    another sender claimed again, or already sent, is never put back in the queue by a stale sender.
    """
    now = desk.clock()
    async with desk.unit_of_work() as uow:
        row = await uow.session.get(OutboxMail, mail_id, with_for_update=True)
        if row is None:
            return False
        if attempt is not None and (row.status != OutboxStatus.SENDING or row.attempts != attempt):
            return None
        if now - row.created_at >= policy.give_up_after:
            _fail(uow, row, f"gave up after {row.attempts} attempts: {error}", now)
            return False
        row.status = OutboxStatus.QUEUED
        row.last_error = error[:2000]
        row.next_attempt_at = now + policy.delay(row.attempts)
        return True


async def mark_failed(desk: Desk, mail_id: int, error: str, *, attempt: int | None = None) -> bool:
    """A permanent failure: the mail stays, marked failed, and staff hear of it through an event.

    With `attempt`, only while the row is still this sender's claim; False when nothing changed.
    """
    now = desk.clock()
    async with desk.unit_of_work() as uow:
        row = await uow.session.get(OutboxMail, mail_id, with_for_update=True)
        if row is None or (attempt is not None and (row.status != OutboxStatus.SENDING or row.attempts != attempt)):
            return False
        _fail(uow, row, error, now)
        return True


def _fail(uow: UnitOfWork, row: OutboxMail, error: str, now: datetime) -> None:
    row.status = OutboxStatus.FAILED
    row.last_error = error[:2000]
    uow.record(OutboundFailed(ticket_id=row.ticket_id, message_id=row.message_id, outbox_id=row.id, kind=row.kind,
                              error=error[:500], attempts=row.attempts, recipients=len(row.recipients)), at=now)


async def list_mail(desk: Desk, status: OutboxStatus | None = None, limit: int = 50) -> list[OutboxMail]:
    """Newest first."""
    query = select(OutboxMail).order_by(OutboxMail.id.desc()).limit(max(1, min(limit, 500)))
    if status is not None:
        query = query.where(OutboxMail.status == status)
    async with desk.db.read() as session:
        return list(await session.scalars(query))


async def get_mail(desk: Desk, mail_id: int) -> OutboxMail:
    async with desk.db.read() as session:
        row = await session.get(OutboxMail, mail_id)
    if row is None:
        raise NotFound(f"no outbox mail {mail_id}")
    return row


async def retry(desk: Desk, mail_id: int) -> OutboxMail:
    """Send a failed (or waiting) mail again now; the same Message-ID, so it threads the same."""
    async with desk.db.transaction() as session:
        row = await session.get(OutboxMail, mail_id, with_for_update=True)
        if row is None:
            raise NotFound(f"no outbox mail {mail_id}")
        if row.status in (OutboxStatus.SENT, OutboxStatus.SENDING):
            raise Conflict(f"outbox mail {mail_id} is {row.status.value}; only queued or failed mail can be retried")
        row.status = OutboxStatus.QUEUED
        row.next_attempt_at = desk.clock()
        return row

