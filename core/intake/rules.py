"""The inbound rules chain: small named rules, and one table (CHAIN) that says, top to bottom,
what happens when each one hits (Mailman's chains/builtin.py is the model).

A rule only recognises something and says why (`check` returns the reason, or None). What follows
from it is the table's business: MACHINE marks the mail and the chain goes on (a blocked or
flooding sender is held even when their mail looks automatic); BOUNCE and HOLD end it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import getaddresses
from enum import StrEnum
from typing import Protocol

from sqlalchemy import bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from core.desk import Desk
from core.intake.settings import IntakeSettings
from core.models import Contact, InboundMail, Message, Ticket
from core.parsed_mail import ParsedMail
from core.services import find_contact
from core.uow import UnitOfWork


class Action(StrEnum):
    MACHINE = "machine"  # store on its ticket, never answer automatically
    BOUNCE = "bounce"  # a delivery report for mail we sent: no ticket, tell staff
    HOLD = "hold"  # keep the mail, make no ticket of it, say why


@dataclass(frozen=True)
class Verdict:
    action: Action
    rule: str
    reason: str


@dataclass(frozen=True)
class RuleContext:
    desk: Desk
    uow: UnitOfWork  # the batch's: the contacts it looks up are remembered there for the services
    settings: IntakeSettings
    sender: str | None  # lowercased From address (envelope sender when there is no From)
    envelope_from: str | None
    raw_size: int
    new_ticket: bool  # thread matching found no ticket: this mail would open one
    received_at: datetime  # when the mail reached us (limits count by it, not by processing time)
    waited_out: bool = False  # held by the rate limit before, it waited out the window


class Rule(Protocol):
    name: str

    async def check(self, mail: ParsedMail, ctx: RuleContext) -> str | None:
        """Why the rule hits this mail, or None."""


def _header(mail: ParsedMail, name: str) -> list[str]:
    return [v.strip() for v in mail.headers.get(name, [])]


_COMMENT = re.compile(r"\([^()]*\)")


def _keyword(value: str) -> str:
    """The keyword of a structured value: `No (human); x=y` -> "no" (RFC 5322 comments allowed)."""
    return _COMMENT.sub(" ", value).split(";")[0].strip().lower()


class OwnLoop:
    name = "own-loop"

    async def check(self, mail: ParsedMail, ctx: RuleContext) -> str | None:
        # Bare or with a display name: "support@x", "<support@x>", "Support <support@x>".
        ours = [email for _, email in getaddresses(_header(mail, "x-loop")) if ctx.settings.is_support_address(email)]
        return f"X-Loop names our own address ({ours[0]})" if ours else None


class DeliveryReport:
    name = "bounce"

    async def check(self, mail: ParsedMail, ctx: RuleContext) -> str | None:
        if mail.is_delivery_report:
            return "delivery status notification"
        return None


class OtherReport:
    """A multipart/report other than a delivery report: a read receipt (disposition-notification,
    which Outlook sends without Auto-Submitted when a person clicks "send receipt"), an abuse or
    TLS report. A machine wrote it; it must not count as the customer answering."""

    name = "report"

    async def check(self, mail: ParsedMail, ctx: RuleContext) -> str | None:
        if mail.report_type is not None and not mail.is_delivery_report:
            return f"multipart/report; report-type={mail.report_type[:40]}"
        return None


class AutoSubmitted:
    name = "auto-submitted"

    async def check(self, mail: ParsedMail, ctx: RuleContext) -> str | None:
        for value in _header(mail, "auto-submitted"):
            if _keyword(value) != "no":
                return f"Auto-Submitted: {value[:60]}"
        return None


class BulkPrecedence:
    name = "precedence"

    async def check(self, mail: ParsedMail, ctx: RuleContext) -> str | None:
        for value in _header(mail, "precedence"):
            if _keyword(value) in ("bulk", "junk", "list"):
                return f"Precedence: {value[:20]}"
        return None


class AutoReplyHeaders:
    name = "auto-reply-headers"
    HEADERS = ("x-autoreply", "x-autorespond", "x-auto-response-suppress")

    async def check(self, mail: ParsedMail, ctx: RuleContext) -> str | None:
        for header in self.HEADERS:
            if header in mail.headers:
                return f"{header} present"
        return None


class MailingList:
    name = "mailing-list"

    async def check(self, mail: ParsedMail, ctx: RuleContext) -> str | None:
        ids = _header(mail, "list-id")
        return f"List-Id: {ids[0][:80]}" if ids else None


class NullReturnPath:
    name = "null-return-path"

    async def check(self, mail: ParsedMail, ctx: RuleContext) -> str | None:
        paths = _header(mail, "return-path")
        null = any(p.replace(" ", "") == "<>" for p in paths)
        # An SMTP envelope of MAIL FROM:<> is the same signal, before any MTA wrote Return-Path.
        if null or (ctx.envelope_from is not None and ctx.envelope_from.strip("<> ") == ""):
            return "empty Return-Path (<>)"
        return None


class DaemonSender:
    name = "mailer-daemon"
    LOCAL_PARTS = ("mailer-daemon", "postmaster")

    async def check(self, mail: ParsedMail, ctx: RuleContext) -> str | None:
        local = (ctx.sender or "").partition("@")[0]
        return f"sent by {local}" if local in self.LOCAL_PARTS else None


class OneSender:
    """A customer's mail comes from one mailbox. From may name several (RFC 5322 then wants a
    Sender): such a mail cannot be answered as anyone in particular, and is a known way to look like
    someone else to a reader who checks only one of them."""

    name = "one-sender"

    async def check(self, mail: ParsedMail, ctx: RuleContext) -> str | None:
        if len(mail.from_addresses) > 1:
            shown = ", ".join(a.email for a in mail.from_addresses[:3])
            return f"From names {len(mail.from_addresses)} addresses ({shown[:200]})"
        # "alice@x <mallory@y>": parsers read alice, a person reading it may see mallory.
        ambiguous = next((d for d in mail.defects if d.startswith("From header: text after")), None)
        return f"From is ambiguous ({ambiguous[len('From header: '):][:200]})" if ambiguous else None


_RESULT = re.compile(r"\bdmarc\s*=\s*([a-z]+)", re.IGNORECASE)
# How receivers write the sender domain's published policy: "(p=REJECT sp=…)" (Gmail and most),
# "action=quarantine" (Microsoft), "policy.dmarc=reject" / "policy.published-domain-policy=reject".
_POLICY = re.compile(r"(?:\(p|\bp|\baction|policy\.dmarc|policy\.published-domain-policy)\s*=\s*([a-z]+)",
                     re.IGNORECASE)


def authentication_verdict(mail: ParsedMail, trusted: frozenset[str]) -> tuple[str, str, str] | None:
    """(authserv-id, DMARC result, published policy) from the topmost Authentication-Results header,
    when a server we trust wrote it; None otherwise. Only the topmost: our own MTA adds it last, and
    one further down may be the sender's forgery (RFC 8601 section 5)."""
    values = mail.headers.get("authentication-results") or []
    if not values or not trusted:
        return None
    authserv, _, rest = values[0].partition(";")
    authserv_id = authserv.strip().split()[0].lower() if authserv.strip() else ""
    if authserv_id not in trusted:
        return None
    result = _RESULT.search(rest)
    policy = _POLICY.search(rest[result.end():] if result else "")
    return authserv_id, (result.group(1).lower() if result else "none"), (policy.group(1).lower() if policy else "")


class DmarcFailure:
    """Mail that failed DMARC, for a domain that asks receivers to reject or quarantine such mail, is
    someone else using that domain's name: held, never answered. Needs a trusted receiving server's
    Authentication-Results (mail.trusted_authserv_ids)."""

    name = "dmarc-fail"

    async def check(self, mail: ParsedMail, ctx: RuleContext) -> str | None:
        verdict = authentication_verdict(mail, ctx.settings.trusted_authserv_ids)
        if verdict is None:
            return None
        authserv_id, result, policy = verdict
        if result == "fail" and policy in ("reject", "quarantine"):
            return f"DMARC {result} for a domain whose policy is {policy} (Authentication-Results of {authserv_id})"
        return None


class BlockedSender:
    name = "blocked-sender"

    async def check(self, mail: ParsedMail, ctx: RuleContext) -> str | None:
        # What core.services.is_blocked asks, in the batch's unit of work, where the contact is
        # remembered for the ticket service, which needs it next.
        contact = await find_contact(ctx.uow, ctx.sender) if ctx.sender else None
        if contact is not None and contact.blocked:
            return "the sender is blocked"
        return None


class NewTicketRateLimit:
    """Caps the NEW tickets one sender opens per window; replies to their tickets still thread."""

    name = "rate-limit"

    async def check(self, mail: ParsedMail, ctx: RuleContext) -> str | None:
        if not ctx.new_ticket or not ctx.sender or ctx.waited_out:
            return None
        limit, window = ctx.settings.new_tickets_per_sender, ctx.settings.new_tickets_window
        if await find_contact(ctx.uow, ctx.sender) is None:
            return None  # a first-time sender has opened nothing yet (tickets have a requester contact)
        opened = await _tickets_opened_between(ctx.uow.session, ctx.sender, ctx.received_at - window,
                                               ctx.received_at)
        if opened >= limit:
            minutes = f"{window.total_seconds() / 60:g}"
            return f"sender opened {opened} tickets in the last {minutes} minutes (limit {limit})"
        return None


class Oversize:
    name = "oversize"

    async def check(self, mail: ParsedMail, ctx: RuleContext) -> str | None:
        limit = ctx.settings.max_message_bytes
        if ctx.raw_size > limit:
            return f"mail is {ctx.raw_size} bytes, over the {limit} byte limit"
        return None


async def _tickets_opened_between(session: AsyncSession, email: str, since: datetime, until: datetime) -> int:
    """Tickets of this requester whose first mail reached us in (since, until]: by arrival, so a
    mailbox read after downtime is judged as its mail arrived, not as a flood at reading time."""
    count = await session.scalar(_OPENED_BETWEEN, {"email": email, "since": since, "until": until})
    return int(count or 0)


# Built once: it runs for most new tickets, and building a statement costs more than running it.
_first = aliased(Message)
_OPENED_BETWEEN = (
    select(func.count(func.distinct(Ticket.id))).join(Contact, Contact.id == Ticket.requester_id)
    .join(Message, Message.ticket_id == Ticket.id).join(InboundMail, InboundMail.id == Message.inbound_mail_id)
    .where(Contact.email == bindparam("email"), InboundMail.received_at > bindparam("since"),
           InboundMail.received_at <= bindparam("until"),
           Message.id == select(func.min(_first.id)).where(_first.ticket_id == Ticket.id).scalar_subquery()))


@dataclass(frozen=True)
class Link:
    """One line of the chain: a rule, and what happens when it hits."""

    rule: Rule
    action: Action


# Read top to bottom. The delivery report comes first: a bounce is also mail from MAILER-DAEMON
# with an empty Return-Path, and it must not be stored as a mere machine message.
CHAIN: tuple[Link, ...] = (
    Link(DeliveryReport(), Action.BOUNCE),
    Link(OtherReport(), Action.MACHINE),
    Link(OwnLoop(), Action.MACHINE),
    Link(AutoSubmitted(), Action.MACHINE),
    Link(BulkPrecedence(), Action.MACHINE),
    Link(AutoReplyHeaders(), Action.MACHINE),
    Link(MailingList(), Action.MACHINE),
    Link(NullReturnPath(), Action.MACHINE),
    Link(DaemonSender(), Action.MACHINE),
    Link(OneSender(), Action.HOLD),
    Link(DmarcFailure(), Action.HOLD),
    Link(BlockedSender(), Action.HOLD),
    Link(NewTicketRateLimit(), Action.HOLD),
    Link(Oversize(), Action.HOLD),
)

# What a mail an operator released (`supportbot mail quarantine retry ID --release`, see
# core.inbound.RELEASED) is asked: everything but the rules that hold mail.
WITHOUT_HOLDS: tuple[Link, ...] = tuple(link for link in CHAIN if link.action != Action.HOLD)


@dataclass(frozen=True)
class Decision:
    stop: Verdict | None  # bounce or hold: no ticket message
    machine: Verdict | None  # the first machine-mail verdict, if any

    @property
    def is_machine(self) -> bool:
        return self.machine is not None


async def evaluate(mail: ParsedMail, ctx: RuleContext, chain: Sequence[Link] = CHAIN) -> Decision:
    machine: Verdict | None = None
    for link in chain:
        if machine is not None and link.action == Action.MACHINE:
            continue  # already known to be machine mail; the other header checks add nothing
        reason = await link.rule.check(mail, ctx)
        if reason is None:
            continue
        verdict = Verdict(link.action, link.rule.name, reason)
        if link.action != Action.MACHINE:
            return Decision(verdict, machine)
        machine = verdict
    return Decision(None, machine)
