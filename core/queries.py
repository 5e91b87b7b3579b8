"""Read side: ticket lists, one ticket with its messages, and full-text search, as plain data."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, literal_column, or_, select, text, union
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from sqlalchemy.sql.elements import ColumnElement

from core.desk import Desk
from core.enums import Priority, Status
from core.errors import NotFound, UserError
from core.models import Contact, Message, Participant, Staff, Ticket, TicketTag

MAX_PAGE = 500


@dataclass(frozen=True)
class TicketFilters:
    status: tuple[Status, ...] = ()
    priority: tuple[Priority, ...] = ()
    category: str | None = None
    assignee: str | None = None  # display name, discord id, or "none" for unassigned
    requester: str | None = None  # email
    tag: str | None = None


@dataclass(frozen=True)
class TicketSummary:
    number: int
    ref: str  # the number as shown, with the configured prefix
    subject: str
    status: str
    priority: str
    category: str | None
    requester: str
    requester_name: str
    assignee: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class AttachmentView:
    id: int
    filename: str
    content_type: str
    size: int
    sha256: str | None
    inline: bool
    held_back: bool


@dataclass(frozen=True)
class MessageView:
    id: int
    direction: str
    author: str  # email of the customer, or the staff member's name
    text: str
    new_text: str
    html: str | None
    message_id: str | None
    is_machine: bool
    created_at: datetime
    attachments: list[AttachmentView]


@dataclass(frozen=True)
class TicketDetail(TicketSummary):
    tags: list[str] = field(default_factory=list)
    participants: list[str] = field(default_factory=list)
    first_response_at: datetime | None = None
    resolved_at: datetime | None = None
    closed_at: datetime | None = None
    merged_into: int | None = None
    follow_up_of: int | None = None
    messages: list[MessageView] = field(default_factory=list)


async def ticket_detail(desk: Desk, number: int) -> TicketDetail:
    async with desk.db.read() as session:
        ticket = await session.scalar(select(Ticket).where(Ticket.number == number))
        if ticket is None:
            raise NotFound(f"no ticket {desk.format_number(number)}")
        merged_into = await _number_of(session, ticket.merged_into_id)
        follow_up_of = await _number_of(session, ticket.follow_up_of_id)
        tags = list(await session.scalars(
            select(TicketTag.tag).where(TicketTag.ticket_id == ticket.id).order_by(TicketTag.tag)))
        participants = list(await session.scalars(
            select(Contact.email).join(Participant, Participant.contact_id == Contact.id)
            .where(Participant.ticket_id == ticket.id).order_by(Participant.role.desc(), Contact.email)))
        rows = await session.execute(
            select(Message, Contact.email, Staff.display_name)
            .outerjoin(Contact, Contact.id == Message.author_contact_id)
            .outerjoin(Staff, Staff.id == Message.author_staff_id)
            .where(Message.ticket_id == ticket.id).order_by(Message.id))
        messages = [
            MessageView(
                id=m.id, direction=str(m.direction), author=email or staff_name or "", text=m.body_text,
                new_text=m.new_text, html=m.body_html, message_id=m.message_id, is_machine=m.is_machine,
                created_at=m.created_at,
                attachments=[AttachmentView(a.id, a.filename, a.content_type, a.size, a.sha256, a.inline,
                                            a.held_back) for a in m.attachments],
            )
            for m, email, staff_name in rows
        ]
        summary = _summary(desk, ticket)
        return TicketDetail(
            **{f: getattr(summary, f) for f in TicketSummary.__dataclass_fields__},
            tags=tags, participants=participants, first_response_at=ticket.first_response_at,
            resolved_at=ticket.resolved_at, closed_at=ticket.closed_at, merged_into=merged_into,
            follow_up_of=follow_up_of, messages=messages,
        )


async def list_tickets(desk: Desk, filters: TicketFilters = TicketFilters(), *, limit: int = 50,
                       offset: int = 0) -> list[TicketSummary]:
    """Most recently updated first; merged tickets are left out (they live on in their target)."""
    query = _filtered(select(Ticket), filters).where(Ticket.merged_into_id.is_(None))
    query = query.order_by(Ticket.updated_at.desc(), Ticket.id.desc()).limit(_page(limit)).offset(max(0, offset))
    async with desk.db.read() as session:
        return [_summary(desk, t) for t in (await session.scalars(query)).all()]


async def search_tickets(desk: Desk, words: str, filters: TicketFilters = TicketFilters(), *,
                         limit: int = 50) -> list[TicketSummary]:
    """Tickets whose subject or any message matches all the words, newest activity first.

    Uses SQLite FTS5 or PostgreSQL full-text search (indexes made by the migrations), so it
    stays fast at millions of messages where LIKE '%…%' would read every row.
    """
    terms = _terms(words)
    if not terms:
        raise UserError("search needs at least one word")
    async with desk.db.read() as session:
        if desk.db.is_sqlite:
            match = " ".join(f'"{t}"*' for t in terms)  # each term quoted: no FTS syntax injection
            query = await _sqlite_search(session, match, filters)
        else:
            config: ColumnElement[Any] = literal_column("'simple'::regconfig")  # literal: the GIN index applies
            tsquery = func.to_tsquery(config, " & ".join(f"{t}:*" for t in terms))
            in_messages = select(Message.ticket_id).where(
                func.to_tsvector(config, Message.body_text).bool_op("@@")(tsquery))
            # One id set from both GIN indexes: with "subject @@ q OR id IN (…)" PostgreSQL computed
            # to_tsvector(subject) for every ticket it walked, ~1 s for a rare word at 50,000 tickets.
            in_subjects = select(Ticket.id).where(
                func.to_tsvector(config, Ticket.subject).bool_op("@@")(tsquery)).correlate(None)
            query = _filtered(select(Ticket), filters).where(Ticket.id.in_(union(in_subjects, in_messages)))
        query = query.where(Ticket.merged_into_id.is_(None))
        query = query.order_by(Ticket.updated_at.desc(), Ticket.id.desc()).limit(_page(limit))
        return [_summary(desk, t) for t in await session.scalars(query)]


# From this many matching messages on, walking tickets newest first beats collecting the ticket
# of every match (bench/core.py measures both: at 1M messages a common word went from 0.76 s to
# 0.05 s at the median).
SQLITE_MANY_HITS = 1000
_MESSAGE_HITS = "SELECT rowid FROM messages_fts WHERE messages_fts MATCH :q"
_SUBJECT_HITS = "SELECT rowid FROM tickets_fts WHERE tickets_fts MATCH :q"


async def _sqlite_search(session: AsyncSession, match: str, filters: TicketFilters) -> Select[Any]:
    """Tickets matching an FTS5 query and the filters, in the plan that suits the number of hits.

    Finding a message's ticket means reading the message row: cheap for a rare word, but for a
    common one (80,000 of a million messages) it took most of a second. So a capped count picks:
    few hits, collect their tickets and sort them; many hits, walk tickets newest first and keep
    each one that has a message among the hits (a set of rowids, built without reading a row),
    which stops as soon as the page is full.
    """
    capped = text(f"SELECT count(*) FROM ({_MESSAGE_HITS} LIMIT {SQLITE_MANY_HITS})")
    if (await session.scalar(capped.bindparams(q=match)) or 0) < SQLITE_MANY_HITS:
        few = text(f"tickets.id IN ({_SUBJECT_HITS} UNION "
                   f"SELECT messages.ticket_id FROM messages WHERE messages.id IN ({_MESSAGE_HITS}))")
        return _filtered(select(Ticket), filters).where(few.bindparams(q=match))
    # The leading "+" keeps SQLite from using an index for that term. For the filters it makes
    # the walk follow ix_tickets_updated_at (the ORDER BY) even where a filter has an index of
    # its own (else it sorts all 5,000 open tickets, each tested against the hits); for the
    # message ids it probes the hit set per message instead of the ticket's index per hit.
    query = select(Ticket)
    if filters != TicketFilters():
        allowed = _filtered(select(Ticket), filters).with_only_columns(Ticket.id).correlate(None)
        query = query.where(literal_column("+tickets.id").in_(allowed))
    many = text(f"(tickets.id IN ({_SUBJECT_HITS}) OR EXISTS (SELECT 1 FROM messages WHERE "
                f"messages.ticket_id = tickets.id AND +messages.id IN ({_MESSAGE_HITS})))")
    return query.where(many.bindparams(q=match))


def _filtered(query: Select[Any], f: TicketFilters) -> Select[Any]:
    if f.status:
        query = query.where(Ticket.status.in_(f.status))
    if f.priority:
        query = query.where(Ticket.priority.in_(f.priority))
    if f.category:
        query = query.where(Ticket.category == f.category.lower())
    if f.requester:
        requester = aliased(Contact)
        query = query.join(requester, requester.id == Ticket.requester_id).where(
            requester.email == f.requester.strip().lower())
    if f.assignee:
        if f.assignee.lower() == "none":
            query = query.where(Ticket.assignee_id.is_(None))
        else:
            staff = aliased(Staff)
            match = staff.display_name == f.assignee
            if f.assignee.isdigit():
                match = or_(match, staff.discord_id == int(f.assignee))
            query = query.join(staff, staff.id == Ticket.assignee_id).where(match)
    if f.tag:
        query = query.where(Ticket.id.in_(select(TicketTag.ticket_id).where(TicketTag.tag == f.tag.lower())))
    return query


def _summary(desk: Desk, t: Ticket) -> TicketSummary:
    return TicketSummary(
        number=t.number, ref=desk.format_number(t.number), subject=t.subject, status=str(t.status),
        priority=str(t.priority), category=t.category, requester=t.requester.email,
        requester_name=t.requester.name, assignee=t.assignee.display_name if t.assignee else None,
        created_at=t.created_at, updated_at=t.updated_at,
    )


async def _number_of(session: AsyncSession, ticket_id: int | None) -> int | None:
    if ticket_id is None:
        return None
    return await session.scalar(select(Ticket.number).where(Ticket.id == ticket_id))


def _terms(words: str) -> list[str]:
    # Keep letters and digits only: both engines then get plain words, never query syntax.
    cleaned = "".join(ch if ch.isalnum() else " " for ch in words.lower())
    return [w for w in cleaned.split() if w][:10]


def _page(limit: int) -> int:
    return max(1, min(limit, MAX_PAGE))


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def to_json(value: TicketSummary | TicketDetail) -> dict[str, Any]:
    return _jsonable(asdict(value))


__all__ = ["TicketDetail", "TicketFilters", "TicketSummary", "list_tickets", "search_tickets",
           "ticket_detail", "to_json"]
