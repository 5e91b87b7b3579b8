"""Services that create tickets and add messages to them: customer mail, staff replies, notes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from core.desk import Desk
from core.enums import Direction, ParticipantRole, Priority, Status
from core.errors import UserError
from core.event_types import (
    CustomerReplied,
    NoteAdded,
    ParticipantAdded,
    ParticipantsHeld,
    StaffReplied,
    StatusReason,
    TicketOpened,
)
from core.models import Contact, Message, Staff, Ticket
from core.services._common import (
    ContactRef,
    NewAttachment,
    StaffRef,
    add_new_participants,
    add_participant,
    change_status,
    ensure_contact,
    ensure_contacts,
    ensure_staff,
    follow_merges,
    insert_all_now,
    insert_now,
    next_ticket_numbers,
    normalize_email,
    participant_emails,
    record,
    store_attachments,
    ticket_for_update,
    within,
)
from core.services.triage import add_tags, normalize_tags, validate_category
from core.uow import UnitOfWork

MAX_SUBJECT = 998


@dataclass(frozen=True)
class MailContent:
    """What a customer wrote, as the mail gateway parsed it."""

    text: str
    new_text: str | None = None  # quotes and signature stripped; the full text when None
    html: str | None = None  # already sanitized
    subject: str = ""
    message_id: str | None = None
    in_reply_to: str | None = None
    references: str | None = None
    attachments: Sequence[NewAttachment] = ()
    is_machine: bool = False
    inbound_mail_id: int | None = None
    received_at: datetime | None = None  # when the mail reached us (caps on automatic mail count by it)


@dataclass(frozen=True)
class TicketChange:
    ticket: Ticket
    message: Message | None = None
    created: bool = False  # a new ticket was opened
    reopened: bool = False


@dataclass(frozen=True)
class ParticipantCaps:
    """How many of a customer's other recipients join a ticket: per mail, and per ticket in all."""

    per_mail: int
    per_ticket: int

    def split(self, cc: Sequence[ContactRef], present: int) -> tuple[list[ContactRef], list[ContactRef]]:
        """(admitted, held) of `cc` (new to the ticket) when it has `present` participants."""
        room = max(0, min(self.per_mail, self.per_ticket - present))
        return list(cc[:room]), list(cc[room:])


NO_CAPS = ParticipantCaps(per_mail=10**9, per_ticket=10**9)


@dataclass(frozen=True)
class NewTicket:
    """What opens a ticket: a customer's mail, who else it went to, and how it was routed."""

    requester: ContactRef
    content: MailContent
    cc: Sequence[ContactRef] = ()
    category: str | None = None
    priority: Priority | None = None
    tags: Sequence[str] = ()
    # The number of a ticket the mail named (a token, a Message-ID) whose conversation its sender
    # may not join: the new ticket is linked to it, and staff are told.
    refers_to: int | None = None
    caps: ParticipantCaps = NO_CAPS
    held_cc: Sequence[ContactRef] = ()  # left out by the caps (filled in by open_tickets)
    # The support address the mail reached (plus-tag folded); the desk answers from it. None: the first.
    support_address: str | None = None


async def open_ticket(
    desk: Desk,
    requester: ContactRef,
    content: MailContent,
    *,
    cc: Sequence[ContactRef] = (),
    category: str | None = None,
    priority: Priority | None = None,
    tags: Sequence[str] = (),
    uow: UnitOfWork | None = None,
) -> TicketChange:
    """A new ticket from a customer's mail; in the caller's unit of work when `uow` is given."""
    new = NewTicket(requester, content, cc=cc, category=category, priority=priority, tags=tags)
    return (await open_tickets(desk, [new], uow=uow))[0]


async def open_tickets(desk: Desk, requests: Sequence[NewTicket], *,
                       uow: UnitOfWork | None = None) -> list[TicketChange]:
    """Several new tickets, numbered in order, written together: each kind of row (contacts,
    tickets, participants, messages) in one statement for all of them. This is how the mail
    gateway opens the new tickets of a batch of inbound mail; the result is the same as opening
    them one after the other."""
    async with within(desk, uow) as uow:
        # Requesters and everyone they wrote to in one insert, sorted: concurrent batches on
        # PostgreSQL then lock new contacts in one order (each may name the other's requesters).
        requests = [_capped(r) for r in requests]
        everyone = [r.requester for r in requests] + [ref for r in requests for ref in r.cc]
        contacts = await ensure_contacts(uow, everyone, desk.clock())
        linked = {r.refers_to: await follow_merges(uow.session, r.refers_to) for r in requests if r.refers_to}
        return await _open_many(desk, uow, [
            _Opening(r, contacts[normalize_email(r.requester.email)],
                     follow_up_of=linked.get(r.refers_to) if r.refers_to else None) for r in requests])


async def add_customer_message(
    desk: Desk, number: int, author: ContactRef, content: MailContent, *, cc: Sequence[ContactRef] = (),
    caps: ParticipantCaps = NO_CAPS, uow: UnitOfWork | None = None,
) -> TicketChange:
    """A customer wrote to an existing ticket; reopens it, or opens a follow-up if closed long ago.

    Deciding whether this author may write to this ticket is the threading step's job, not ours.
    Machine mail (auto-replies) is stored but never changes the ticket's status. In the caller's
    unit of work when `uow` is given.
    """
    now = desk.clock()
    async with within(desk, uow) as uow:
        session = uow.session
        ticket = await ticket_for_update(session, number)
        contact = await ensure_contact(uow, author, now)
        if (ticket.status == Status.CLOSED and not content.is_machine and ticket.closed_at is not None
                and now - ticket.closed_at > desk.settings.reopen_closed_within):
            follow_up = _capped(NewTicket(author, content, cc=cc, category=ticket.category, priority=ticket.priority,
                                          caps=caps, support_address=ticket.support_address))
            return (await _open_many(desk, uow, [_Opening(follow_up, contact, follow_up_of=ticket)]))[0]

        message = await _add_message(session, desk, ticket, Direction.INBOUND, content, contact=contact)
        if await add_participant(session, ticket, contact, ParticipantRole.CC):
            record(uow, ParticipantAdded(email=contact.email), at=now, ticket=ticket, contact=contact)
        await _add_cc(uow, desk, ticket, cc, caps)
        reopened = False
        if not content.is_machine:
            ticket.last_customer_message_at = now
            if ticket.status != Status.OPEN and ticket.status != Status.IN_PROGRESS:
                reopened = ticket.status in (Status.RESOLVED, Status.CLOSED)
                change_status(uow, desk, ticket, Status.OPEN, reason=StatusReason.CUSTOMER_REPLIED,
                              contact=contact)
        record(uow, CustomerReplied(machine=content.is_machine), at=now, ticket=ticket, message=message,
               contact=contact)
        return TicketChange(ticket, message, reopened=reopened)


async def reply(
    desk: Desk,
    number: int,
    actor: StaffRef,
    text: str,
    *,
    html: str | None = None,
    attachments: Sequence[NewAttachment] = (),
    status: Status | None = None,
) -> TicketChange:
    """A staff reply to the customer; the mail notifier sends it from the StaffReplied event."""
    text = text.strip()
    if not text:
        raise UserError("a reply needs some text")
    now = desk.clock()
    async with desk.unit_of_work() as uow:
        session = uow.session
        ticket = await ticket_for_update(session, number)
        staff = await ensure_staff(session, actor, now)
        content = MailContent(text=text, new_text=text, html=html, subject=ticket.subject,
                              attachments=attachments)
        message = await _add_message(session, desk, ticket, Direction.OUTBOUND, content, staff=staff)
        first = ticket.first_response_at is None
        if first:
            ticket.first_response_at = now
        record(uow, StaffReplied(first_response=first), at=now, ticket=ticket, message=message, staff=staff)
        new_status = status or desk.settings.status_after_reply
        if new_status != ticket.status:
            change_status(uow, desk, ticket, new_status, reason=StatusReason.STAFF_REPLIED, staff=staff)
        return TicketChange(ticket, message)


async def add_note(
    desk: Desk, number: int, actor: StaffRef, text: str, *, attachments: Sequence[NewAttachment] = ()
) -> TicketChange:
    """An internal note: visible to staff only, and never counts as a first response."""
    text = text.strip()
    if not text:
        raise UserError("a note needs some text")
    now = desk.clock()
    async with desk.unit_of_work() as uow:
        session = uow.session
        ticket = await ticket_for_update(session, number)
        staff = await ensure_staff(session, actor, now)
        content = MailContent(text=text, new_text=text, attachments=attachments)
        message = await _add_message(session, desk, ticket, Direction.NOTE, content, staff=staff)
        record(uow, NoteAdded(), at=now, ticket=ticket, message=message, staff=staff)
        return TicketChange(ticket, message)


@dataclass(frozen=True)
class _Opening:
    request: NewTicket
    requester: Contact
    follow_up_of: Ticket | None = None


async def _open_many(desk: Desk, uow: UnitOfWork, openings: Sequence[_Opening]) -> list[TicketChange]:
    if not openings:
        return []
    now, session = desk.clock(), uow.session
    # Contacts before the counter: on PostgreSQL the counter's row lock is held to the commit, so a
    # concurrent batch never waits for it while holding a new contact this one also inserts.
    cc_contacts = await ensure_contacts(uow, [ref for o in openings for ref in o.request.cc], now)
    numbers = await next_ticket_numbers(session, desk.settings.first_ticket_number, len(openings))
    tickets = [Ticket(
        number=number, subject=" ".join(o.request.content.subject.split())[:MAX_SUBJECT] or "(no subject)",
        status=Status.OPEN, priority=o.request.priority or desk.settings.default_priority,
        category=validate_category(desk, o.request.category) if o.request.category else None,
        requester_id=o.requester.id, follow_up_of_id=o.follow_up_of.id if o.follow_up_of else None,
        created_at=now, updated_at=now, last_customer_message_at=None if o.request.content.is_machine else now,
        support_address=o.request.support_address,
    ) for number, o in zip(numbers, openings, strict=True)]
    await insert_all_now(session, tickets, key="number")

    # Everyone else the mail went to becomes a participant (the requester is not among them).
    participants: list[tuple[Ticket, Contact, ParticipantRole]] = []
    cc_of: list[list[Contact]] = []
    for ticket, o in zip(tickets, openings, strict=True):
        participants.append((ticket, o.requester, ParticipantRole.REQUESTER))
        cc = list({c.id: c for ref in o.request.cc
                   if (c := cc_contacts[normalize_email(ref.email)]).id != o.requester.id}.values())
        participants += [(ticket, contact, ParticipantRole.CC) for contact in cc]
        cc_of.append(cc)
    await add_new_participants(session, participants)

    messages = [_new_message(desk, ticket, Direction.INBOUND, o.request.content, contact=o.requester)
                for ticket, o in zip(tickets, openings, strict=True)]
    await insert_all_now(session, messages, key="ticket_id")  # one message per new ticket

    changes = []
    for ticket, message, cc, o in zip(tickets, messages, cc_of, openings, strict=True):
        await store_attachments(session, desk, message, o.request.content.attachments)
        await add_tags(session, ticket, normalize_tags(desk, o.request.tags))
        for contact in cc:
            record(uow, ParticipantAdded(email=contact.email), at=now, ticket=ticket)
        if o.request.held_cc:
            record(uow, ParticipantsHeld(emails=[ref.email for ref in o.request.held_cc], limit=_limit(o.request.caps)),
                   at=now, ticket=ticket)
        link = o.follow_up_of.number if o.follow_up_of else None
        arrived = o.request.content.received_at
        opened = TicketOpened(follow_up_of=None if o.request.refers_to else link,
                              arrived_at=arrived.isoformat() if arrived else None,
                              refers_to=link if o.request.refers_to else None, machine=o.request.content.is_machine)
        record(uow, opened, at=now, ticket=ticket, message=message, contact=o.requester)
        changes.append(TicketChange(ticket, message, created=True))
    return changes


async def _add_cc(uow: UnitOfWork, desk: Desk, ticket: Ticket, cc: Sequence[ContactRef],
                  caps: ParticipantCaps) -> None:
    present = await participant_emails(uow.session, ticket)
    admitted, held = caps.split([ref for ref in cc if normalize_email(ref.email) not in present], len(present))
    for ref in admitted:
        contact = await ensure_contact(uow, ref, desk.clock())
        if await add_participant(uow.session, ticket, contact, ParticipantRole.CC):
            record(uow, ParticipantAdded(email=contact.email), at=desk.clock(), ticket=ticket)
    if held:
        record(uow, ParticipantsHeld(emails=[ref.email for ref in held], limit=_limit(caps)), at=desk.clock(),
               ticket=ticket)


def _capped(request: NewTicket) -> NewTicket:
    """The request with only the other recipients its caps admit (the requester is one participant)."""
    others = [ref for ref in request.cc if normalize_email(ref.email) != normalize_email(request.requester.email)]
    admitted, held = request.caps.split(list({normalize_email(r.email): r for r in others}.values()), 1)
    return replace(request, cc=admitted, held_cc=held)


def _limit(caps: ParticipantCaps) -> str:
    return f"at most {caps.per_mail} per mail and {caps.per_ticket} per ticket"


async def _add_message(
    session: AsyncSession,
    desk: Desk,
    ticket: Ticket,
    direction: Direction,
    content: MailContent,
    *,
    contact: Contact | None = None,
    staff: Staff | None = None,
) -> Message:
    message = _new_message(desk, ticket, direction, content, contact=contact, staff=staff)
    await insert_now(session, message)
    await store_attachments(session, desk, message, content.attachments)
    return message


def _new_message(desk: Desk, ticket: Ticket, direction: Direction, content: MailContent, *,
                 contact: Contact | None = None, staff: Staff | None = None) -> Message:
    return Message(
        ticket_id=ticket.id, direction=direction, author_contact_id=contact.id if contact else None,
        author_staff_id=staff.id if staff else None, subject=content.subject[:MAX_SUBJECT],
        body_text=content.text, new_text=content.new_text if content.new_text is not None else content.text,
        body_html=content.html, message_id=content.message_id, in_reply_to=content.in_reply_to,
        references=content.references, parent_message_id=_replied_to(content), is_machine=content.is_machine,
        inbound_mail_id=content.inbound_mail_id, created_at=desk.clock(),
    )


def _replied_to(content: MailContent) -> str | None:
    """The Message-ID a mail answers: its In-Reply-To, else the last of its References."""
    ids = (content.in_reply_to or "").split()[:1] or (content.references or "").split()[-1:]
    return ids[0] if ids and len(ids[0]) <= 998 else None
