"""The inbound rules chain: small named rules, checked in one readable order, first verdict wins."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import getaddresses
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

from sqlalchemy import bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.desk import Desk
from core.models import Contact, Ticket
from core.services import find_contact
from mail_gateway.inbound_context import InboundContext

if TYPE_CHECKING:
    from mail_gateway.parsing import ParsedMail


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
    session: AsyncSession  # one read session for the whole chain (each session costs a round trip)
    settings: InboundContext
    sender: str | None  # lowercased From address (envelope sender when there is no From)
    envelope_from: str | None
    raw_size: int
    new_ticket: bool  # thread matching found no ticket: this mail would open one


class Rule(Protocol):
    name: str

    async def check(self, mail: ParsedMail, ctx: RuleContext) -> Verdict | None: ...


def _header(mail: ParsedMail, name: str) -> list[str]:
    return [v.strip() for v in mail.headers.get(name, [])]


_COMMENT = re.compile(r"\([^()]*\)")


def _keyword(value: str) -> str:
    """The keyword of a structured value: `No (human); x=y` -> "no" (RFC 5322 comments allowed)."""
    return _COMMENT.sub(" ", value).split(";")[0].strip().lower()


def _machine(rule: str, reason: str) -> Verdict:
    return Verdict(Action.MACHINE, rule, reason)


class OwnLoop:
    name = "own-loop"

    async def check(self, mail: ParsedMail, ctx: RuleContext) -> Verdict | None:
        # Bare or with a display name: "support@x", "<support@x>", "Support <support@x>".
        ours = [email for _, email in getaddresses(_header(mail, "x-loop")) if ctx.settings.is_support_address(email)]
        return _machine(self.name, f"X-Loop names our own address ({ours[0]})") if ours else None


class DeliveryReport:
    name = "bounce"

    async def check(self, mail: ParsedMail, ctx: RuleContext) -> Verdict | None:
        if mail.is_delivery_report:
            return Verdict(Action.BOUNCE, self.name, "delivery status notification")
        return None


class OtherReport:
    """A multipart/report other than a delivery report: a read receipt (disposition-notification,
    which Outlook sends without Auto-Submitted when a person clicks "send receipt"), an abuse or
    TLS report. A machine wrote it; it must not count as the customer answering."""

    name = "report"

    async def check(self, mail: ParsedMail, ctx: RuleContext) -> Verdict | None:
        if mail.report_type is not None and not mail.is_delivery_report:
            return _machine(self.name, f"multipart/report; report-type={mail.report_type[:40]}")
        return None


class AutoSubmitted:
    name = "auto-submitted"

    async def check(self, mail: ParsedMail, ctx: RuleContext) -> Verdict | None:
        for value in _header(mail, "auto-submitted"):
            if _keyword(value) != "no":
                return _machine(self.name, f"Auto-Submitted: {value[:60]}")
        return None


class BulkPrecedence:
    name = "precedence"

    async def check(self, mail: ParsedMail, ctx: RuleContext) -> Verdict | None:
        for value in _header(mail, "precedence"):
            if _keyword(value) in ("bulk", "junk", "list"):
                return _machine(self.name, f"Precedence: {value[:20]}")
        return None


class AutoReplyHeaders:
    name = "auto-reply-headers"
    HEADERS = ("x-autoreply", "x-autorespond", "x-auto-response-suppress")

    async def check(self, mail: ParsedMail, ctx: RuleContext) -> Verdict | None:
        for header in self.HEADERS:
            if header in mail.headers:
                return _machine(self.name, f"{header} present")
        return None


class MailingList:
    name = "mailing-list"

    async def check(self, mail: ParsedMail, ctx: RuleContext) -> Verdict | None:
        ids = _header(mail, "list-id")
        return _machine(self.name, f"List-Id: {ids[0][:80]}") if ids else None


class NullReturnPath:
    name = "null-return-path"

    async def check(self, mail: ParsedMail, ctx: RuleContext) -> Verdict | None:
        paths = _header(mail, "return-path")
        null = any(p.replace(" ", "") == "<>" for p in paths)
        # An SMTP envelope of MAIL FROM:<> is the same signal, before any MTA wrote Return-Path.
        if null or (ctx.envelope_from is not None and ctx.envelope_from.strip("<> ") == ""):
            return _machine(self.name, "empty Return-Path (<>)")
        return None


class DaemonSender:
    name = "mailer-daemon"
    LOCAL_PARTS = ("mailer-daemon", "postmaster")

    async def check(self, mail: ParsedMail, ctx: RuleContext) -> Verdict | None:
        local = (ctx.sender or "").partition("@")[0]
        return _machine(self.name, f"sent by {local}") if local in self.LOCAL_PARTS else None


class BlockedSender:
    name = "blocked-sender"

    async def check(self, mail: ParsedMail, ctx: RuleContext) -> Verdict | None:
        # What core.services.is_blocked asks, in the chain's session; the contact is remembered there
        # for the ticket service, which needs it next.
        contact = await find_contact(ctx.session, ctx.sender) if ctx.sender else None
        if contact is not None and contact.blocked:
            return Verdict(Action.HOLD, self.name, "the sender is blocked")
        return None


class NewTicketRateLimit:
    """Caps the NEW tickets one sender opens per window; replies to their tickets still thread."""

    name = "rate-limit"

    async def check(self, mail: ParsedMail, ctx: RuleContext) -> Verdict | None:
        if not ctx.new_ticket or not ctx.sender:
            return None
        limit, window = ctx.settings.new_tickets_per_sender, ctx.settings.new_tickets_window
        if await find_contact(ctx.session, ctx.sender) is None:
            return None  # a first-time sender has opened nothing yet (tickets have a requester contact)
        opened = await _tickets_opened_since(ctx.session, ctx.sender, ctx.desk.clock() - window)
        if opened >= limit:
            minutes = f"{window.total_seconds() / 60:g}"
            return Verdict(Action.HOLD, self.name,
                           f"sender opened {opened} tickets in the last {minutes} minutes (limit {limit})")
        return None


class Oversize:
    name = "oversize"

    async def check(self, mail: ParsedMail, ctx: RuleContext) -> Verdict | None:
        limit = ctx.settings.max_message_bytes
        if ctx.raw_size > limit:
            return Verdict(Action.HOLD, self.name, f"mail is {ctx.raw_size} bytes, over the {limit} byte limit")
        return None


async def _tickets_opened_since(session: AsyncSession, email: str, since: datetime) -> int:
    count = await session.scalar(_OPENED_SINCE, {"email": email, "since": since})
    return int(count or 0)


# Built once: both run for nearly every inbound mail, and building a statement costs more than running it.
_OPENED_SINCE = (select(func.count(Ticket.id)).join(Contact, Contact.id == Ticket.requester_id)
                 .where(Contact.email == bindparam("email"), Ticket.created_at >= bindparam("since")))


# One pass in this order. A BOUNCE or HOLD verdict ends it; a MACHINE verdict only marks the mail
# and the pass goes on, so a blocked or flooding sender is held even when their mail looks
# automatic. The delivery report comes first: a bounce is also mail from MAILER-DAEMON with an
# empty Return-Path, and it must not be stored as a mere machine message.
CHAIN: tuple[Rule, ...] = (
    DeliveryReport(),
    OtherReport(),
    OwnLoop(),
    AutoSubmitted(),
    BulkPrecedence(),
    AutoReplyHeaders(),
    MailingList(),
    NullReturnPath(),
    DaemonSender(),
    BlockedSender(),
    NewTicketRateLimit(),
    Oversize(),
)


# What a mail an operator released (`supportbot mail quarantine retry ID --release`, see
# core.inbound.RELEASED) is asked: everything but the rules that hold mail.
WITHOUT_HOLDS: tuple[Rule, ...] = tuple(
    rule for rule in CHAIN if not isinstance(rule, (BlockedSender, NewTicketRateLimit, Oversize)))


@dataclass(frozen=True)
class Decision:
    stop: Verdict | None  # bounce or hold: no ticket message
    machine: Verdict | None  # the first machine-mail verdict, if any

    @property
    def is_machine(self) -> bool:
        return self.machine is not None


async def evaluate(mail: ParsedMail, ctx: RuleContext, chain: Sequence[Rule] = CHAIN) -> Decision:
    machine: Verdict | None = None
    for rule in chain:
        if machine is not None and isinstance(rule, _MACHINE_RULES):
            continue  # already known to be machine mail; skip the other header checks
        verdict = await rule.check(mail, ctx)
        if verdict is None:
            continue
        if verdict.action == Action.MACHINE:
            machine = verdict
        else:
            return Decision(verdict, machine)
    return Decision(None, machine)


_MACHINE_RULES = (OtherReport, OwnLoop, AutoSubmitted, BulkPrecedence, AutoReplyHeaders, MailingList, NullReturnPath,
                  DaemonSender)
