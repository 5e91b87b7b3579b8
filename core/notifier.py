"""The mail notifier: decides which ticket events become mail, to whom, and queues it, in the unit
of work that moves its cursor. The mail itself is built by the mail edge's composer (a MailComposer
it is given), so the core decides and the edge only writes MIME.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core.addresses import OwnAddresses, redact, redact_addresses
from core.desk import Desk
from core.enums import Direction, Status
from core.event_types import (
    EventType,
    OutboundFailed,
    PendingReminderDue,
    StatusChanged,
    StatusReason,
    TicketOpened,
    typed,
)
from core.mail_drafts import AddressIdentity, Draft, FileAttachment, MailComposer, Recipient
from core.message_ids import message_ids
from core.models import Contact, Event, Message, OutboxMail, Participant, Staff, Ticket
from core.outbox import OutgoingMail, automatic_mail_allowed, enqueue
from core.sla.policy import ClockKind, SlaSettings
from core.uow import UnitOfWork

log = logging.getLogger(__name__)

CONSUMER = "mail-notifier"
SUMMARY_CHARS = 400
# Status changes that come with their own mail (the staff reply says it) or mean nothing to the customer.
# The customer hears of these otherwise (the reply itself), or not at all (a merge).
_SILENT_REASONS = (StatusReason.STAFF_REPLIED, StatusReason.MERGED)
_KINDS: dict[str, str] = {EventType.TICKET_OPENED: "ack", EventType.STAFF_REPLIED: "reply",
                         EventType.STATUS_CHANGED: "status", EventType.PENDING_REMINDER_DUE: "reminder"}


def default_expectation(ticket: Ticket) -> str:
    """The acknowledgement's sentence on when to expect an answer, when no SLA target is set."""
    return "A member of our team will get back to you as soon as possible."


def expectation_from_sla(settings: SlaSettings) -> Callable[[Ticket], str]:
    """The sentence from the first-response target of the ticket's priority, if it has one."""

    def expectation(ticket: Ticket) -> str:
        target = settings.target(ticket.priority, ClockKind.FIRST_RESPONSE)
        if target is None or target <= timedelta(0):
            return default_expectation(ticket)
        kind = " business" if settings.uses_business_hours(ticket.priority) else ""
        return f"We aim to send you a first answer within {_duration(target, kind)}."

    return expectation


def _duration(span: timedelta, kind: str) -> str:
    """'4 business hours', '1 day 2 hours', '30 minutes'."""
    minutes = int(span.total_seconds() // 60)
    days, rest = divmod(minutes, 24 * 60) if not kind else (0, minutes)
    hours, minutes = divmod(rest, 60)
    parts = [f"{n}{kind if unit != 'day' else ''} {unit}{'s' if n != 1 else ''}"
             for n, unit in ((days, "day"), (hours, "hour"), (minutes, "minute")) if n]
    return " ".join(parts) or "a minute"


class Notifier:
    def __init__(self, desk: Desk, composer: MailComposer, *, support_addresses: Collection[str],
                 automatic_per_hour: int, expectation: Callable[[Ticket], str] = default_expectation,
                 quote_customer: bool = False, automatic_total_per_hour: int | None = None,
                 identities: Mapping[str, AddressIdentity] | None = None) -> None:
        self.desk = desk
        self.composer = composer
        self.own = OwnAddresses.of(support_addresses)
        # Name and signature per support address ([mail.addresses."…"]); keys lowercased.
        self.identities = {a.strip().lower(): i for a, i in (identities or {}).items()}
        self.automatic_per_hour = automatic_per_hour
        # An acknowledgement goes to whatever address a mail claims to be from: repeating the
        # mail's text (and its links) would let anyone send their text to a stranger through us.
        self.quote_customer = quote_customer
        self.automatic_total_per_hour = automatic_total_per_hour
        self.expectation = expectation

    async def handle(self, uow: UnitOfWork, event: Event) -> None:
        """An EventHandler for core.events.consume_once / run_consumer.

        A mail that can never be built (a broken operator template, an attachment file gone, no
        usable address) must not stop all mail behind it: staff are told through an
        OutboundFailed event and the notifier moves on. Database trouble still propagates, so
        the event is tried again.
        """
        if event.ticket_id is None:
            return
        try:
            await self._dispatch(uow, event)
        except (ValueError, FileNotFoundError) as e:  # the composer could not build it, a file is gone
            error = f"could not build the mail for event {event.type} {event.id}: {type(e).__name__}: {e}"
            log.error("%s", redact_addresses(error))
            uow.record(OutboundFailed(ticket_id=event.ticket_id, message_id=event.message_id,
                                      kind=_KINDS.get(event.type, "mail"), error=error[:500]), at=self.desk.clock())

    async def _dispatch(self, uow: UnitOfWork, event: Event) -> None:
        if event.type == EventType.TICKET_OPENED:
            await self._acknowledge(uow, event)
        elif event.type == EventType.STAFF_REPLIED:
            await self._send_reply(uow, event)
        elif event.type == EventType.STATUS_CHANGED:
            change = typed(event)
            assert isinstance(change, StatusChanged)
            if change.to in (Status.RESOLVED, Status.CLOSED) and change.reason not in _SILENT_REASONS:
                await self._notify_status(uow, event, change.to)
        elif event.type == EventType.PENDING_REMINDER_DUE:
            await self._remind(uow, event)

    async def _acknowledge(self, uow: UnitOfWork, event: Event) -> None:
        session = uow.session
        message = await session.get(Message, event.message_id) if event.message_id else None
        opened = typed(event)
        if (isinstance(opened, TicketOpened) and opened.machine) or (message is not None and message.is_machine):
            return  # never answer an auto-reply, bounce or list mail
        ticket = await _ticket(session, event)
        arrived = _arrival(opened)
        to = await self._automatic_recipients(session, ticket, event, at=arrived)
        if not to:
            return
        summary = (message.new_text or message.body_text).strip() if message and self.quote_customer else ""
        if len(summary) > SUMMARY_CHARS:
            summary = summary[:SUMMARY_CHARS].rsplit(" ", 1)[0] + " …"
        in_reply_to = message.message_id if message else None
        references = [*message_ids(message.references), *([in_reply_to] if in_reply_to else [])] if message else []
        await self._queue(uow, event, ticket, self._draft(
            ticket, template="acknowledgement", kind="ack", message_key=f"e{event.id}",
            to=to, date=event.created_at, automatic=True, in_reply_to=in_reply_to, references=references,
            context={"summary": summary, "response_expectation": self.expectation(ticket)}), counted_at=arrived)

    async def _notify_status(self, uow: UnitOfWork, event: Event, status: str) -> None:
        session = uow.session
        ticket = await _ticket(session, event)
        if ticket.merged_into_id is not None or await _only_machine_mail(session, ticket):
            return
        to = await self._automatic_recipients(session, ticket, event)
        if not to:
            return
        in_reply_to, references = await _thread(session, ticket)
        await self._queue(uow, event, ticket, self._draft(
            ticket, template=status, kind=status, message_key=f"e{event.id}", to=to,
            date=event.created_at, automatic=True, in_reply_to=in_reply_to, references=references))

    async def _remind(self, uow: UnitOfWork, event: Event) -> None:
        """The SLA scheduler found a ticket waiting on the customer too long: nudge them once."""
        session = uow.session
        ticket = await _ticket(session, event)
        if ticket.status != Status.PENDING or await _only_machine_mail(session, ticket):
            return  # answered (or changed by staff) since the reminder was armed
        to = await self._automatic_recipients(session, ticket, event)
        if not to:
            return
        reminder = typed(event)
        resolve_at = reminder.resolve_at if isinstance(reminder, PendingReminderDue) else None
        resolve_on = datetime.fromisoformat(resolve_at).strftime("%d %B %Y") if resolve_at else ""
        in_reply_to, references = await _thread(session, ticket)
        await self._queue(uow, event, ticket, self._draft(
            ticket, template="reminder", kind="reminder", message_key=f"e{event.id}", to=to,
            date=event.created_at, automatic=True, in_reply_to=in_reply_to, references=references,
            context={"resolve_on": resolve_on}))

    async def _send_reply(self, uow: UnitOfWork, event: Event) -> None:
        """A staff reply goes to the requester and every CC participant; it is never capped."""
        session = uow.session
        message = await session.get(Message, event.message_id) if event.message_id else None
        if message is None or message.direction != Direction.OUTBOUND:
            return
        ticket = await _ticket(session, event)
        participants = await session.execute(
            select(Contact, Participant.role).join(Participant, Participant.contact_id == Contact.id)
            .where(Participant.ticket_id == ticket.id).order_by(Participant.role.desc(), Contact.id))
        to: list[Recipient] = []
        cc: list[Recipient] = []
        for contact, _role in participants:
            if contact.blocked or contact.email in self.own:
                continue
            (to if contact.id == ticket.requester_id else cc).append(Recipient(contact.email, contact.name))
        if not to and not cc:
            log.info("reply on ticket %s has no one to go to (blocked or our own address)", ticket.number)
            return
        staff = await session.get(Staff, message.author_staff_id) if message.author_staff_id else None
        files = [FileAttachment(a.filename, a.content_type, await self.desk.files.get(a.sha256))
                 for a in message.attachments if a.sha256 and not a.held_back and not a.dangerous]
        for a in message.attachments:
            if a.dangerous:
                log.warning("reply on ticket %s goes without %r: a dangerous attachment (%s) is never mailed",
                            ticket.number, a.filename, a.dangerous_reason or "dangerous")
        in_reply_to, references = await _thread(session, ticket)
        outbox = await self._queue(uow, event, ticket, self._draft(
            ticket, template="reply", kind="reply", message_key=f"m{message.id}",
            to=to or cc[:1], cc=cc if to else cc[1:], date=message.created_at, automatic=False,
            in_reply_to=in_reply_to, references=references, attachments=files,
            context={"body_text": message.body_text, "body_html": message.body_html,  # made safe by the composer
                     "staff_name": staff.display_name if staff else "",
                     "attachments": [f.filename for f in files]}))
        if outbox is not None:
            # Stored on the message too, so the mail-in side finds it among "known Message-IDs".
            message.message_id = outbox.rfc822_message_id

    async def _automatic_recipients(self, session: AsyncSession, ticket: Ticket, event: Event,
                                    at: datetime | None = None) -> list[Recipient]:
        """The requester, unless blocked, ours, or over the caps on automatic mail counted at `at`
        (when the mail that caused it reached us: a backlog is capped as its mail arrived)."""
        contact = await session.get(Contact, ticket.requester_id)
        assert contact is not None
        if contact.blocked or contact.email in self.own:
            return []
        if not await automatic_mail_allowed(session, contact.email, at or self.desk.clock(), self.automatic_per_hour,
                                            self.automatic_total_per_hour):
            log.info("not sending %s for ticket %s: the hour's cap of automatic mail is reached (%d to %s's "
                     "mailbox, %s in all)", event.type, ticket.number, self.automatic_per_hour,
                     redact(contact.email), self.automatic_total_per_hour or "no cap")
            return []
        return [Recipient(contact.email, contact.name)]

    def _draft(self, ticket: Ticket, **fields: Any) -> Draft:
        sender = self.sender_address(ticket)
        identity = self.identities.get(sender or self.composer.support_address.lower(), AddressIdentity())
        return Draft(ticket_number=ticket.number, ticket_ref=self.desk.format_number(ticket.number),
                     ticket_subject=ticket.subject, from_address=sender or "", from_name=identity.name,
                     signature=identity.signature, **fields)

    def sender_address(self, ticket: Ticket) -> str | None:
        """The support address the ticket's first mail reached, while it is still one of ours; None:
        the composer's (the first support address), also for a ticket opened by staff."""
        address = (ticket.support_address or "").strip().lower()
        return address if address and address in self.own.addresses else None

    async def _queue(self, uow: UnitOfWork, event: Event, ticket: Ticket, draft: Draft, *,
                     counted_at: datetime | None = None) -> OutboxMail | None:
        session = uow.session
        composed = self.composer.compose(draft)
        if await session.scalar(select(OutboxMail.id).where(OutboxMail.rfc822_message_id == composed.message_id)):
            return None  # queued already (an event replayed after the cursor was reset by hand)
        row = await enqueue(uow, OutgoingMail(
            kind=draft.kind, rfc822_message_id=composed.message_id,
            mail_from=draft.from_address or self.composer.support_address,
            recipients=composed.recipients, content=composed.content, automatic=draft.automatic,
            ticket_id=ticket.id, message_id=event.message_id), self.desk.clock(), counted_at=counted_at)
        return row


def _arrival(event: object) -> datetime | None:
    """When the mail that opened a ticket reached us, for a TicketOpened from mail (else None)."""
    if isinstance(event, TicketOpened) and event.arrived_at:
        return datetime.fromisoformat(event.arrived_at)
    return None


async def _ticket(session: AsyncSession, event: Event) -> Ticket:
    ticket = await session.get(Ticket, event.ticket_id)
    assert ticket is not None
    return ticket


async def _thread(session: AsyncSession, ticket: Ticket) -> tuple[str | None, list[str]]:
    """In-Reply-To and References: the customer's last mail, else the last mail we sent on the ticket."""
    parent = await session.scalar(
        select(Message).where(Message.ticket_id == ticket.id, Message.direction == Direction.INBOUND,
                              Message.message_id.is_not(None)).order_by(Message.id.desc()).limit(1))
    if parent is not None and parent.message_id:
        earlier = message_ids(parent.references) or message_ids(parent.in_reply_to)
        return parent.message_id, [*earlier, parent.message_id]
    sent = list(await session.scalars(select(OutboxMail.rfc822_message_id).where(
        OutboxMail.ticket_id == ticket.id).order_by(OutboxMail.id)))
    if not sent:
        return None, []
    return sent[-1], list(dict.fromkeys([sent[0], sent[-1]]))


async def _only_machine_mail(session: AsyncSession, ticket: Ticket) -> bool:
    """True when nothing a person wrote came in on this ticket (opened by a bounce or auto-reply)."""
    human = await session.scalar(select(Message.id).where(
        Message.ticket_id == ticket.id, Message.direction == Direction.INBOUND,
        Message.is_machine.is_(False)).limit(1))
    inbound = await session.scalar(select(Message.id).where(
        Message.ticket_id == ticket.id, Message.direction == Direction.INBOUND).limit(1))
    return inbound is not None and human is None
