"""Shared steps of the services: finding and locking tickets, contacts and staff, recording events."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, case, insert, select, update
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import make_transient_to_detached

from core import addresses, attachment_policy
from core.db import dialect_of, insert_ignore, rows_affected
from core.desk import Desk
from core.enums import ParticipantRole, StaffRole, Status
from core.errors import NotFound, UserError
from core.event_types import DomainEvent, StatusChanged, StatusReason
from core.models import Attachment, AuditEntry, Contact, Counter, Message, Participant, Staff, Ticket
from core.uow import UnitOfWork

TICKET_COUNTER = "ticket_number"
MAX_MERGE_HOPS = 20


@dataclass(frozen=True)
class StaffRef:
    """A staff member as the edges know them (Discord member, or an operator at the CLI)."""

    name: str
    discord_id: int | None = None
    email: str | None = None
    role: StaffRole = StaffRole.AGENT


@dataclass(frozen=True)
class ContactRef:
    email: str
    name: str = ""


@dataclass(frozen=True)
class NewAttachment:
    filename: str
    content_type: str
    data: bytes
    content_id: str | None = None
    inline: bool = False
    held_back: bool = False  # over the size limit: recorded so staff know, bytes not kept
    size: int | None = None  # the real size, when held back


@asynccontextmanager
async def within(desk: Desk, uow: UnitOfWork | None) -> AsyncIterator[UnitOfWork]:
    """The caller's unit of work when it passes one (a batch of inbound mail), else a new one."""
    if uow is not None:
        yield uow
    else:
        async with desk.unit_of_work() as own:
            yield own


def normalize_email(email: str) -> str:
    normal = addresses.normalize(email)
    if normal is None:
        raise UserError(f"not an email address: {email.strip()[:80]!r}")
    return normal


async def next_ticket_numbers(session: AsyncSession, first: int, count: int) -> list[int]:
    """`count` consecutive new ticket numbers, in one statement (a batch of new tickets)."""
    if count <= 0:
        return []
    params = {"counter": TICKET_COUNTER, "floor": first - 1, "count": count}
    last = await session.scalar(_BUMP_COUNTER, params)
    if last is None:  # the first ticket ever: make the counter row, then bump it
        await insert_ignore(session, Counter, {"name": TICKET_COUNTER, "value": 0}, ["name"])
        last = await session.scalar(_BUMP_COUNTER, params)
    assert last is not None
    return list(range(int(last) - count + 1, int(last) + 1))


# Built once (as the other statements on the path of every inbound mail): building costs more than
# running. Numbers never go below `first` (a desk may start at 1000), and a batch takes `count` at once.
_BUMP_COUNTER = (update(Counter).where(Counter.name == bindparam("counter"))
                 .values(value=case((Counter.value < bindparam("floor"), bindparam("floor")),
                                    else_=Counter.value) + bindparam("count"))
                 .returning(Counter.value).execution_options(synchronize_session=False))
_CONTACTS_BY_EMAIL = select(Contact).where(Contact.email.in_(bindparam("emails", expanding=True)))


@functools.lru_cache(maxsize=2)
def _insert_contacts(dialect: str) -> Any:
    """INSERT … ON CONFLICT DO NOTHING RETURNING the new Contacts (none for those that existed)."""
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    return insert(Contact).on_conflict_do_nothing(index_elements=["email"]).returning(Contact)


async def follow_merges(session: AsyncSession, number: int, *, lock: bool = False) -> Ticket | None:
    """The ticket that stands for this public number now, following merges; None if there is none.

    With `lock`, each ticket on the way is locked for this transaction (FOR UPDATE on PostgreSQL).
    """
    query = _TICKET_FOR_UPDATE if lock else _TICKET_BY_NUMBER
    for _ in range(MAX_MERGE_HOPS):
        ticket = await session.scalar(query, {"number": number})
        if ticket is None or ticket.merged_into_id is None:
            return ticket
        target = await session.scalar(_NUMBER_OF_TICKET, {"ticket_id": ticket.merged_into_id})
        if target is None:
            return None
        number = target
    raise UserError(f"ticket {number} is merged in a loop")


_TICKET_BY_NUMBER = select(Ticket).where(Ticket.number == bindparam("number"))
_TICKET_FOR_UPDATE = _TICKET_BY_NUMBER.with_for_update(of=Ticket)
_NUMBER_OF_TICKET = select(Ticket.number).where(Ticket.id == bindparam("ticket_id"))


async def ticket_for_update(session: AsyncSession, number: int) -> Ticket:
    """The ticket with this public number, following merges, locked for this transaction."""
    ticket = await follow_merges(session, number, lock=True)
    if ticket is None:
        raise NotFound(f"no ticket number {number}")
    return ticket


async def ensure_contact(uow: UnitOfWork, ref: ContactRef, now: datetime) -> Contact:
    return (await ensure_contacts(uow, [ref], now))[normalize_email(ref.email)]


async def ensure_contacts(uow: UnitOfWork, refs: Sequence[ContactRef], now: datetime) -> dict[str, Contact]:
    """The contacts for these addresses by normalized address, the new ones inserted together.

    A name fills in a contact that has none; an address a concurrent writer inserted first is
    read back rather than inserted twice.
    """
    names: dict[str, str] = {}
    for ref in refs:
        email = normalize_email(ref.email)
        if not names.get(email):
            names[email] = _clean_name(ref.name)
    await remember_contacts(uow, names)
    session, seen = uow.session, uow.contacts
    missing = sorted(email for email in names if seen[email] is None)  # one lock order for concurrent writers
    if missing:
        rows = [{"email": email, "name": names[email], "blocked": False, "created_at": now} for email in missing]
        for contact in await session.scalars(_insert_contacts(dialect_of(session)), rows):
            seen[contact.email] = contact
        raced = [email for email in missing if seen[email] is None]
        if raced:
            for contact in await session.scalars(_CONTACTS_BY_EMAIL, {"emails": raced}):
                seen[contact.email] = contact
    contacts: dict[str, Contact] = {}
    for email, name in names.items():
        contact = seen[email]
        assert contact is not None
        if name and not contact.name:
            contact.name = name
        contacts[email] = contact
    return contacts


async def insert_now(session: AsyncSession, obj: Any) -> None:
    """INSERT one new ORM object at once and make it part of the session, as if just loaded."""
    await insert_all_now(session, [obj], key=None)


async def insert_all_now(session: AsyncSession, objs: Sequence[Any], *, key: str | None) -> None:
    """INSERT new ORM objects of one class at once and make them part of the session, as if loaded.

    What `session.add_all(objs); await session.flush()` does, for the rows every inbound mail makes
    (its ticket, its message), without the unit of work's flush: one Core INSERT … RETURNING for
    all of them, the columns the database or a column default filled in set on each object, and
    each attached as persistent and unchanged. The flush machinery cost more than the statement.
    Rows come back in no promised order, so with several objects `key` names a column whose value
    tells them apart.
    """
    if not objs:
        return
    assert key is not None or len(objs) == 1
    mapper = sa_inspect(objs[0]).mapper
    table = mapper.local_table
    props = [prop for prop in mapper.column_attrs if prop.columns[0].table is table]
    by_keys: dict[tuple[str, ...], list[tuple[Any, dict[str, Any]]]] = {}
    for obj in objs:  # one statement per set of given columns (a multi-row INSERT needs the same ones)
        given = {prop.columns[0].key: obj.__dict__[prop.key] for prop in props if prop.key in obj.__dict__}
        by_keys.setdefault(tuple(given), []).append((obj, given))
    for group in by_keys.values():
        params = [given for _, given in group]
        returned = (await session.execute(_insert_returning(table), params if key else params[0])).all()
        found = {row._mapping[table.c[key]]: row._mapping for row in returned} if key else {None: returned[0]._mapping}
        for obj, given in group:
            values = found[given[key] if key else None]
            for prop in props:
                if prop.key not in given:
                    setattr(obj, prop.key, values[prop.columns[0]])
            make_transient_to_detached(obj)
            session.add(obj)


@functools.lru_cache(maxsize=16)
def _insert_returning(table: Any) -> Any:
    return insert(table).returning(*table.c)


async def find_contact(uow: UnitOfWork, email: str) -> Contact | None:
    """The contact with this normalized address, remembered for the rest of the transaction.

    Inbound mail asks twice per mail (is the sender blocked? then: the author's contact), and a
    batch often has one sender several times. "Not there" is remembered too: ensure_contacts'
    insert settles a concurrent writer's row on its own.
    """
    await remember_contacts(uow, [email])
    return uow.contacts[email]


async def remember_contacts(uow: UnitOfWork, emails: Iterable[str]) -> None:
    """Look up the contacts for these normalized addresses not asked about yet in this
    transaction, in one query (a batch of inbound mail asks about all its senders at once)."""
    seen = uow.contacts
    unknown = sorted({email for email in emails if email not in seen})
    if not unknown:
        return
    for start in range(0, len(unknown), 500):  # bounded IN lists
        part = unknown[start:start + 500]
        found = {contact.email: contact
                 for contact in await uow.session.scalars(_CONTACTS_BY_EMAIL, {"emails": part})}
        for email in part:
            seen[email] = found.get(email)


async def ensure_staff(session: AsyncSession, ref: StaffRef, now: datetime) -> Staff:
    if ref.discord_id is not None:
        staff = await session.scalar(select(Staff).where(Staff.discord_id == ref.discord_id))
    else:
        staff = await session.scalar(
            select(Staff).where(Staff.discord_id.is_(None), Staff.display_name == ref.name)
        )
    name = _clean_name(ref.name) or "staff"
    if staff is None:
        staff = Staff(discord_id=ref.discord_id, display_name=name, email=ref.email,
                      role=ref.role, created_at=now)
        session.add(staff)
        await session.flush()
    else:
        staff.display_name = name
        if ref.email:
            staff.email = ref.email
        staff.role = ref.role
    return staff


async def add_participant(session: AsyncSession, ticket: Ticket, contact: Contact,
                          role: ParticipantRole) -> bool:
    """Returns True when the contact was not a participant before."""
    result = await insert_ignore(session, Participant,
                                 {"ticket_id": ticket.id, "contact_id": contact.id, "role": role.value},
                                 ["ticket_id", "contact_id"])
    return rows_affected(result) > 0


async def add_new_participants(session: AsyncSession, rows: Sequence[tuple[Ticket, Contact, ParticipantRole]]) -> None:
    """Participants of tickets just opened, in one statement (none of them can be there yet)."""
    if rows:
        await insert_ignore(session, Participant, [
            {"ticket_id": ticket.id, "contact_id": contact.id, "role": role.value} for ticket, contact, role in rows
        ], ["ticket_id", "contact_id"])


async def participant_emails(session: AsyncSession, ticket: Ticket) -> set[str]:
    return set(await session.scalars(select(Contact.email).join(Participant, Participant.contact_id == Contact.id)
                                     .where(Participant.ticket_id == ticket.id)))


async def is_participant(session: AsyncSession, ticket: Ticket, email: str) -> bool:
    found = await session.scalar(
        select(Participant.contact_id)
        .join(Contact, Contact.id == Participant.contact_id)
        .where(Participant.ticket_id == ticket.id, Contact.email == email.strip().lower())
    )
    return found is not None


async def store_attachments(session: AsyncSession, desk: Desk, message: Message,
                            attachments: Sequence[NewAttachment]) -> None:
    """Store the bytes and the rows; a dangerous one (core.attachment_policy) is flagged with why."""
    files, policy = desk.files, desk.settings.attachments
    for new in attachments:
        digest = None if new.held_back else await files.put(new.data)
        filename = new.filename[:255] or "attachment"
        reason = None
        if digest is not None:
            reason = await attachment_policy.check(policy, files, filename, new.data, digest)
        elif (ext := attachment_policy.extension_of(filename)) in policy.dangerous_extensions:
            reason = attachment_policy.KINDS.get(ext, f".{ext} file")  # held back: only its name to go by
        session.add(Attachment(
            message_id=message.id, filename=filename,
            content_type=new.content_type[:255], size=new.size if new.size is not None else len(new.data),
            sha256=digest, content_id=new.content_id, inline=new.inline, held_back=new.held_back,
            dangerous=reason is not None, dangerous_reason=reason,
        ))


def record(
    uow: UnitOfWork,
    event: DomainEvent,
    *,
    at: datetime,
    ticket: Ticket | None = None,
    message: Message | None = None,
    staff: Staff | None = None,
    contact: Contact | None = None,
) -> None:
    """Record the event about these, and an audit entry when a staff member did it."""
    if ticket is not None:
        ticket.updated_at = at
    event = replace(event, ticket_id=ticket.id if ticket else event.ticket_id,
                    message_id=message.id if message else event.message_id,
                    actor_staff_id=staff.id if staff else event.actor_staff_id,
                    actor_contact_id=contact.id if contact else event.actor_contact_id)
    uow.record(event, at=at)
    if staff is not None:
        uow.session.add(AuditEntry(staff_id=staff.id, action=str(event.type), ticket_id=event.ticket_id,
                                   details=event.data(), created_at=at))


def _clean_name(name: str) -> str:
    # Names end up in mail headers and Discord embeds: no control characters, bounded length.
    return "".join(ch for ch in name if ch.isprintable()).strip()[:200]


def change_status(
    uow: UnitOfWork,
    desk: Desk,
    ticket: Ticket,
    status: Status,
    *,
    reason: StatusReason,
    staff: Staff | None = None,
    contact: Contact | None = None,
) -> None:
    now = desk.clock()
    previous = ticket.status
    ticket.status = status
    if status == Status.RESOLVED:
        ticket.resolved_at = now
    elif status == Status.CLOSED:
        ticket.closed_at = now
        ticket.resolved_at = ticket.resolved_at or now
    else:
        ticket.resolved_at = None
        ticket.closed_at = None
    record(uow, StatusChanged(from_=str(previous), to=str(status), reason=reason), at=now, ticket=ticket,
           staff=staff, contact=contact)
