"""Thread matching: which ticket an inbound mail belongs to, in the order of DESIGN.md step 3,
with one step before "new ticket": an original read after a stored reply to it."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.addresses import same_organisation
from core.desk import Desk
from core.enums import Direction
from core.intake.ledger import EarlierCopy, StoredMail, find_earlier_copy
from core.intake.settings import IntakeSettings
from core.models import Contact, Message, OutboxMail, Ticket
from core.parsed_mail import ParsedMail
from core.services._common import follow_merges, is_participant
from core.tokens import FOOTER_TOKEN
from core.uow import UnitOfWork

MAX_IDS_LOOKED_UP = 50  # of a long References chain, the newest ones matter
MAX_PARENTS = 5  # In-Reply-To names one mail; a few more are tolerated
MAX_BODY_SCANNED = 200_000  # characters searched for the footer token
MAX_TICKETS_ANSWERING = 5  # stored replies to one original, looked at for its ticket


class Via(StrEnum):
    DUPLICATE = "duplicate"
    TOKEN = "signed token"
    REFERENCES = "references"
    SUBJECT_TAG = "subject tag"
    REPLY_READ_FIRST = "a reply read before it"
    NEW = "new"


@dataclass(frozen=True)
class ThreadMatch:
    via: Via
    ticket_number: int | None = None
    earlier: EarlierCopy | None = None  # for a duplicate: what the earlier copy became
    detail: str = ""
    # A new ticket's mail named this ticket (its token or a Message-ID of it) but its sender may not
    # join it: the new ticket is linked to it and staff see why.
    refers_to: int | None = None


def bracketed(message_id: str) -> str:
    return f"<{message_id.strip().strip('<>')}>"


def _id_forms(ids: Iterable[str]) -> list[str]:
    """Stored ids have angle brackets, but be lenient with rows written without."""
    forms: list[str] = []
    for raw in ids:
        bare = raw.strip().strip("<>")
        if bare:
            forms += [f"<{bare}>", bare]
    return forms


async def match_thread(uow: UnitOfWork, desk: Desk, stored: StoredMail, mail: ParsedMail,
                       settings: IntakeSettings, *, sender: str | None) -> ThreadMatch:
    session = uow.session
    earlier = None if stored.alone else await find_earlier_copy(uow, stored)
    if earlier is not None:
        return ThreadMatch(Via.DUPLICATE, earlier.ticket_number, earlier=earlier)
    # Newest last: of a long References chain the end, then In-Reply-To (the mail answered).
    parents = mail.in_reply_to[:MAX_PARENTS]
    referenced = [*mail.references[max(0, len(mail.references) + len(parents) - MAX_IDS_LOOKED_UP):], *parents]
    # A token or a Message-ID can be forwarded, leaked or guessed from a copy: it names the ticket,
    # and the sender must also be one of its participants, or have been sent the mail it names.
    refers_to: int | None = None
    number, detail = await _by_token(session, mail, settings, referenced, stored.envelope_to)
    if number is not None:
        if await _may_join(session, number, sender, referenced):
            return ThreadMatch(Via.TOKEN, number, detail=detail)
        refers_to = number
    number = await _by_known_message_id(session, referenced)
    if number is not None:
        if await _may_join(session, number, sender, referenced):
            return ThreadMatch(Via.REFERENCES, number)
        refers_to = refers_to or number
    number, detail = await _by_subject_tag(session, desk, mail.subject or "", sender)
    if number is not None:
        return ThreadMatch(Via.SUBJECT_TAG, number, detail=detail)
    number = await _by_reply_read_first(session, mail, sender)
    if number is not None:
        return ThreadMatch(Via.REPLY_READ_FIRST, number)
    return ThreadMatch(Via.NEW, refers_to=refers_to)


async def _may_join(session: AsyncSession, number: int, sender: str | None, referenced: Sequence[str]) -> bool:
    """The sender takes part in the ticket, or was a recipient of one of our mails it refers to."""
    if not sender:
        return False
    ticket = await follow_merges(session, number)
    if ticket is None:
        return False
    if await is_participant(session, ticket, sender):
        return True
    forms = _id_forms(referenced)
    if not forms:
        return False
    for recipients in await session.scalars(_RECIPIENTS_OF, {"forms": forms, "ticket_id": ticket.id}):
        if sender in {str(r).strip().lower() for r in recipients or ()}:
            return True
    return False


async def _by_token(session: AsyncSession, mail: ParsedMail, settings: IntakeSettings,
                    referenced: Sequence[str], envelope_to: Sequence[str]) -> tuple[int | None, str]:
    signer = settings.signer
    candidates: list[tuple[int | None, str]] = [
        (signer.ticket_from_message_id(m), "message id") for m in reversed(referenced)]  # newest first
    addresses = [a.email for a in [*mail.to, *mail.cc] if a.email] + list(mail.delivered_to) + list(envelope_to)
    candidates += [(signer.ticket_from_address(a), "reply address") for a in addresses]
    candidates += [(signer.ticket_from_token(found.group(1)), "body footer")
                   for found in FOOTER_TOKEN.finditer((mail.text or "")[:MAX_BODY_SCANNED])]
    for number, where in candidates:
        live = await _live_number(session, number) if number is not None else None
        if live is not None:
            return live, where
    return None, ""


async def _by_known_message_id(session: AsyncSession, referenced: Sequence[str]) -> int | None:
    forms = _id_forms(referenced)
    if not forms:
        return None
    found = (await session.execute(_BY_MESSAGE_ID, {"forms": forms})).first()
    if found is None:
        found = (await session.execute(_BY_OUTBOX_ID, {"forms": forms})).first()
    if found is None:
        return None
    number, merged_into = found
    return number if merged_into is None else await _live_number(session, number)


async def _by_subject_tag(session: AsyncSession, desk: Desk, subject: str,
                          sender: str | None) -> tuple[int | None, str]:
    """`[#1234]` counts only for a participant, or a colleague of the requester (the same company
    domain, not a public mail provider): anyone can type a number into a subject."""
    if not sender:
        return None, ""
    tag = re.compile(r"\[" + re.escape(desk.settings.ticket_prefix) + r"\s*(\d{1,12})\]")
    for found in tag.finditer(subject[:998]):
        ticket = await follow_merges(session, int(found.group(1)))
        if ticket is None:
            continue
        if await is_participant(session, ticket, sender):
            return ticket.number, ""
        requester = await session.scalar(_REQUESTER_EMAIL, {"ticket_id": ticket.id})
        if requester and same_organisation(sender, requester):
            return ticket.number, f"a colleague of {requester.partition('@')[0][:1]}…@{requester.partition('@')[2]}"
    return None, ""


async def _by_reply_read_first(session: AsyncSession, mail: ParsedMail, sender: str | None) -> int | None:
    """An original read after a reply to it (another mailbox, a delayed delivery) joins the ticket
    the reply opened. Whoever writes a reply picks the id it answers, so both sides must vouch: the
    reply's author is among the original's sender and recipients, and the original's sender takes
    part in the reply's ticket."""
    forms = _id_forms([mail.message_id or ""])
    if not forms or not sender:
        return None
    parties = {a.email.lower() for a in [*mail.to, *mail.cc] if a.email} | {sender}
    for number, _merged, author in (await session.execute(_ANSWERED_BY, {"forms": forms})).all():
        if (author or "").lower() not in parties:
            continue
        ticket = await follow_merges(session, number)
        if ticket is not None and await is_participant(session, ticket, sender):
            return ticket.number
    return None


async def _live_number(session: AsyncSession, number: int) -> int | None:
    """The ticket number mail should go to, following merges; None if there is no such ticket."""
    ticket = await follow_merges(session, number)
    return ticket.number if ticket is not None else None


# Built once: building a statement costs more than running it, and these run for most inbound mail.
# The ticket's number and whether it was merged, with the lookup (the common case needs no more).
_BY_MESSAGE_ID = (select(Ticket.number, Ticket.merged_into_id).join(Message, Message.ticket_id == Ticket.id)
                  .where(Message.message_id.in_(bindparam("forms", expanding=True)))
                  .order_by(Message.id.desc()).limit(1))
_BY_OUTBOX_ID = (select(Ticket.number, Ticket.merged_into_id).join(OutboxMail, OutboxMail.ticket_id == Ticket.id)
                 .where(OutboxMail.rfc822_message_id.in_(bindparam("forms", expanding=True))).limit(1))
_REQUESTER_EMAIL = (select(Contact.email).join(Ticket, Ticket.requester_id == Contact.id)
                    .where(Ticket.id == bindparam("ticket_id")))
_RECIPIENTS_OF = (select(OutboxMail.recipients)
                  .where(OutboxMail.rfc822_message_id.in_(bindparam("forms", expanding=True)),
                         OutboxMail.ticket_id == bindparam("ticket_id")).limit(MAX_IDS_LOOKED_UP))
_ANSWERED_BY = (select(Ticket.number, Ticket.merged_into_id, Contact.email)
                .join(Message, Message.ticket_id == Ticket.id)
                .join(Contact, Contact.id == Message.author_contact_id)
                .where(Message.parent_message_id.in_(bindparam("forms", expanding=True)),
                       Message.direction == Direction.INBOUND)
                .order_by(Message.id).limit(MAX_TICKETS_ANSWERING))
