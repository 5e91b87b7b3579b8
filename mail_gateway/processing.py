"""Processing one stored mail: parse, thread match, rules, one ticket service call, then settle its row."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import TYPE_CHECKING, TypeVar

from core.desk import Desk
from core.errors import UserError
from core.inbound import (
    RELEASED,
    Claim,
    claim,
    claim_many,
    hold,
    mark_processed,
    quarantine,
    reader,
    received_rows,
    record_bounce,
    write_marks,
)
from core.models import InboundMail
from core.services import (
    ContactRef,
    MailContent,
    NewAttachment,
    NewTicket,
    add_customer_message,
    open_ticket,
    open_tickets,
    remember_contacts,
)
from mail_gateway.inbound_context import InboundContext
from mail_gateway.routing import route
from mail_gateway.rules import CHAIN, WITHOUT_HOLDS, Action, Decision, RuleContext, evaluate
from mail_gateway.thread_match import ThreadMatch, Via, bracketed, match_thread

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from mail_gateway.parse_process import ParseProcess
    from mail_gateway.parsing import ParsedMail

log = logging.getLogger("mail_gateway.processing")
T = TypeVar("T")

MAX_CC = 20  # participants added from one mail's To/Cc; more is a mailing, not a conversation
MAX_REFERENCES = 50


class Kind(StrEnum):
    OPENED = "opened"  # a new ticket
    ADDED = "added"  # a message on an existing ticket
    DUPLICATE = "duplicate"
    BOUNCE = "bounce"
    HELD = "held"
    QUARANTINED = "quarantined"
    SKIPPED = "skipped"  # not waiting for processing (done already, or another worker has it)


@dataclass(frozen=True)
class Outcome:
    mail_id: int
    kind: Kind
    ticket_number: int | None = None
    machine: bool = False
    detail: str = ""

    def describe(self, desk: Desk) -> str:
        """One line for `supportbot ingest` and the logs: what happened, and to which ticket."""
        ticket = desk.format_number(self.ticket_number) if self.ticket_number is not None else None
        text = {
            Kind.OPENED: f"opened ticket {ticket}",
            Kind.ADDED: f"added to ticket {ticket}",
            Kind.DUPLICATE: "duplicate" + (f" (ticket {ticket})" if ticket else ""),
            Kind.BOUNCE: "bounce" + (f" for ticket {ticket}" if ticket else ""),
            Kind.HELD: "held",
            Kind.QUARANTINED: "quarantined",
            Kind.SKIPPED: "skipped",
        }[self.kind]
        machine = " as machine mail (no automatic answer)" if self.machine and self.kind != Kind.BOUNCE else ""
        return f"mail {self.mail_id}: {text}{machine}" + (f": {self.detail}" if self.detail else "")


async def process_stored(desk: Desk, mail_id: int, ctx: InboundContext) -> Outcome:
    """Turn one stored mail into its ticket outcome; a mail that cannot be processed is quarantined.

    The mail is claimed first (core.inbound.claim), so two workers never process the same row.
    """
    try:
        async with claim(desk, mail_id) as fresh:
            if fresh is None:
                return Outcome(mail_id, Kind.SKIPPED, detail="not waiting for processing")
            return await _guarded(desk, fresh, ctx)
    except _ClaimBroken as broken:
        # PostgreSQL aborted the claim's transaction (its locks are gone with the rollback):
        # settle the row in a fresh one, or the mail would come back forever.
        await quarantine(desk, mail_id, broken.reason)
        return Outcome(mail_id, Kind.QUARANTINED, detail=broken.reason)


@dataclass(frozen=True)
class PreparedBatch:
    """Stored mails read and parsed, ready to be settled in one transaction."""

    mail_ids: Sequence[int]
    rows: Sequence[InboundMail]  # those still waiting when read, oldest first
    parsed: dict[int, ParsedMail | Exception]  # by mail id; an exception is the reason to quarantine


async def process_batch(desk: Desk, mail_ids: Sequence[int], ctx: InboundContext) -> list[Outcome]:
    """Several stored mails, oldest first, in one transaction: what the worker does with a backlog."""
    return await settle_batch(desk, await prepare_batch(desk, mail_ids, ctx), ctx)


async def prepare_batch(desk: Desk, mail_ids: Sequence[int], ctx: InboundContext,
                        parser: ParseProcess | None = None) -> PreparedBatch:
    """Read and parse, outside any write transaction: the worker prepares the next batch while
    the current one is settled. Parsing happens in `parser`'s process when there is one, else on
    threads, one mail at a time."""
    rows = await received_rows(desk, mail_ids)
    parsed: dict[int, ParsedMail | Exception] = {}
    if parser is not None and rows:
        results = await parser.parse_many([row.raw for row in rows])
        parsed = {row.id: result for row, result in zip(rows, results, strict=True)}
    for row in rows:
        if row.id in parsed:
            continue
        try:
            parsed[row.id] = await _parse(row.raw, ctx)
        except Exception as e:  # quarantined inside the batch, with the reason
            parsed[row.id] = e
    return PreparedBatch(mail_ids, rows, parsed)


async def settle_batch(desk: Desk, batch: PreparedBatch, ctx: InboundContext) -> list[Outcome]:
    """Each mail goes through the same steps as in process_stored, but the claim, the ticket
    service's writes and the row's final status share one transaction, so a backlog costs one
    commit per batch rather than several per mail. If anything fails inside, the whole batch is
    rolled back and each mail goes through process_stored on its own, which quarantines the one
    that fails and keeps the others.
    """
    outcomes: dict[int, Outcome] = {}
    try:
        async with claim_many(desk, batch.rows) as claims:
            session = claims[0].session if claims else None  # one transaction for all of them
            if session is not None:
                openings = _Openings(session)
                # One question for the contacts of every sender and recipient of the batch.
                await remember_contacts(session, [address for held in claims
                                                  for address in _addresses(batch.parsed[held.mail.id], held.mail, ctx)])
                keys = {held.mail.id: _keys(batch.parsed[held.mail.id], held.mail, ctx) for held in claims}
                for held in claims:
                    if not held.alone or openings.touched_by(keys[held.mail.id]):
                        outcomes.update(await openings.write(desk))  # this mail must see them in the database
                    if not held.alone:  # it will ask what became of its copies
                        await write_marks(session)
                    outcome = await _process_parsed(desk, held, ctx, batch.parsed[held.mail.id], openings)
                    if outcome is None:
                        openings.keys |= keys[held.mail.id]
                    else:
                        outcomes[held.mail.id] = outcome
                outcomes.update(await openings.write(desk))
    except Exception as e:
        log.warning("a batch of %d mails was rolled back (%s); processing them one by one",
                    len(batch.mail_ids), describe_error(e))
        return [await process_stored(desk, mail_id, ctx) for mail_id in batch.mail_ids]
    skipped = Outcome(0, Kind.SKIPPED, detail="not waiting for processing")
    return [outcomes.get(mail_id, replace(skipped, mail_id=mail_id)) for mail_id in batch.mail_ids]


@dataclass(frozen=True)
class _Opening:
    held: Claim
    request: NewTicket
    why: str


class _Openings:
    """The new tickets a batch decided on, opened together (core.services.open_tickets) when the
    batch ends, or earlier when a later mail of the batch could depend on them: one from the same
    address (its contact, the rate limit), one referring to their Message-IDs (a reply), or a
    copy of a stored mail (which looks for what its copies made)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.waiting: list[_Opening] = []
        self.keys: set[str] = set()

    def touched_by(self, keys: set[str]) -> bool:
        return not self.keys.isdisjoint(keys)

    async def write(self, desk: Desk) -> dict[int, Outcome]:
        if not self.waiting:
            return {}
        waiting, self.waiting, self.keys = self.waiting, [], set()
        changes = await open_tickets(desk, [o.request for o in waiting], session=self.session)
        outcomes = {}
        for opening, change in zip(waiting, changes, strict=True):
            mail_id = opening.held.mail.id
            await mark_processed(desk, mail_id, ticket_id=change.ticket.id, reason=opening.why[:2000] or None,
                                 held=opening.held)
            outcomes[mail_id] = Outcome(mail_id, Kind.OPENED, change.ticket.number,
                                        opening.request.content.is_machine, opening.why)
        return outcomes


def _addresses(parsed: ParsedMail | Exception, stored: InboundMail, ctx: InboundContext) -> list[str]:
    """The addresses whose contacts processing a mail asks about: its sender and other recipients."""
    if isinstance(parsed, Exception):
        return []
    sender = _sender(parsed, stored)
    return [*([sender] if sender else []), *(ref.email for ref in _cc(parsed, ctx, sender or ""))]


def _keys(parsed: ParsedMail | Exception, stored: InboundMail, ctx: InboundContext) -> set[str]:
    """What a mail's processing reads or writes that another mail of its batch may share: the
    contacts of its sender and other recipients, and the Message-IDs it has or refers to
    (lowercased: equal ones must meet)."""
    if isinstance(parsed, Exception):
        return set()
    ids = [parsed.message_id or "", *parsed.in_reply_to, *parsed.references]
    return ({f"at:{address}" for address in _addresses(parsed, stored, ctx)}
            | {f"id:{i.strip().strip('<>').lower()}" for i in ids if i.strip("<> ")})


async def _process_parsed(desk: Desk, held: Claim, ctx: InboundContext, parsed: ParsedMail | Exception,
                          openings: _Openings) -> Outcome | None:
    if isinstance(parsed, Exception):
        return await _quarantined(desk, held, describe_error(parsed))
    return await _process(desk, held, ctx, parsed, openings)


async def _quarantined(desk: Desk, held: Claim, reason: str) -> Outcome:
    """Settle a mail that cannot be processed, with the reason (not raised: in a batch an
    exception would undo the other mails)."""
    log.info("mail %d quarantined: %s", held.mail.id, reason)
    await quarantine(desk, held.mail.id, reason, held=held)
    return Outcome(held.mail.id, Kind.QUARANTINED, detail=reason)


class _ClaimBroken(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def _guarded(desk: Desk, held: Claim, ctx: InboundContext) -> Outcome:
    mail_id = held.mail.id
    try:
        outcome = await _process(desk, held, ctx)
        assert outcome is not None  # without a batch's openings a new ticket is opened at once
        return outcome
    except Exception as e:  # one bad mail must never stop the others: keep it, say why
        reason = describe_error(e)
        if isinstance(e, UserError):
            log.info("mail %d quarantined: %s", mail_id, reason)
        else:
            log.exception("mail %d quarantined after an unexpected failure: %s", mail_id, reason)
        try:
            await quarantine(desk, mail_id, reason, held=held)
        except Exception as again:
            if held.session is None:
                raise
            raise _ClaimBroken(reason) from again
        return Outcome(mail_id, Kind.QUARANTINED, detail=reason)


async def _process(desk: Desk, held: Claim, ctx: InboundContext, parsed: ParsedMail | None = None,
                   openings: _Openings | None = None) -> Outcome | None:
    """The mail's outcome; None when its new ticket waits in `openings` (a batch's)."""
    stored = held.mail
    mail = parsed if parsed is not None else await _parse(stored.raw, ctx)
    sender = _sender(mail, stored)
    async with reader(desk, held) as session:  # all the deciding reads in one session
        match = await match_thread(session, desk, stored, mail, ctx, sender=sender, alone=held.alone)
        decision = None
        if match.via != Via.DUPLICATE:
            decision = await evaluate(mail, RuleContext(desk, session, ctx, sender, stored.envelope_from,
                                                        len(stored.raw), new_ticket=match.ticket_number is None),
                                      WITHOUT_HOLDS if stored.reason == RELEASED else CHAIN)
    if decision is None:
        return await _settle_duplicate(desk, held, match)
    if decision.stop is not None:
        return await _settle_stopped(desk, held, mail, decision)
    if sender is None:
        return await _quarantined(
            desk, held, "UserError: the mail has no usable sender address (From, Return-Path or envelope sender)")
    # Idempotency: with a claim's transaction (PostgreSQL, or a batch) the ticket service writes
    # in it and the row is marked in it: all or nothing. Without one (SQLite, one by one) the
    # service commits first and the row is marked after; a crash in between leaves the row
    # "received" with a message carrying inbound_mail_id, which the replay finds in match_thread
    # (DUPLICATE of itself), so it only settles the row.
    content = _content(mail, stored, machine=decision.is_machine)
    author = ContactRef(sender, mail.from_.name if mail.from_ else "")
    # A list's or an auto-responder's other recipients are no one to answer: a staff reply would
    # go to the whole list.
    cc = [] if decision.is_machine else _cc(mail, ctx, sender)
    why = decision.machine.reason if decision.machine else ""
    if match.ticket_number is not None:
        change = await add_customer_message(desk, match.ticket_number, author, content, cc=cc,
                                            session=held.session)
        why = "; ".join(filter(None, [f"matched by {match.via}" + (f" ({match.detail})" if match.detail else ""),
                                      why]))
    else:
        # Delivered-To and its kin name the address a Bcc or an alias reached, when read over IMAP.
        recipients = [a.email for a in [*mail.to, *mail.cc] if a.email] + [*mail.delivered_to, *stored.envelope_to]
        routed = route(ctx, recipients, mail.subject or "", mail.text or "")
        why = "; ".join(filter(None, [routed.why, why]))
        request = NewTicket(author, content, cc=cc, category=routed.category, priority=routed.priority)
        if openings is not None:
            openings.waiting.append(_Opening(held, request, why))
            return None
        change = await open_ticket(desk, author, content, cc=cc, category=routed.category,
                                   priority=routed.priority, session=held.session)
    kind = Kind.OPENED if change.created else Kind.ADDED
    await mark_processed(desk, stored.id, ticket_id=change.ticket.id, reason=why[:2000] or None, held=held)
    return Outcome(stored.id, kind, change.ticket.number, decision.is_machine, why)


async def _settle_duplicate(desk: Desk, held: Claim, match: ThreadMatch) -> Outcome:
    earlier = match.earlier
    assert earlier is not None
    mail_id = held.mail.id
    if earlier.mail_id == mail_id:  # our own message, committed before an interruption
        reason = "its message was stored before an interruption"
        await mark_processed(desk, mail_id, ticket_id=earlier.ticket_id, reason=reason, held=held)
        kind = Kind.ADDED
    else:
        reason = f"duplicate of {earlier.mail_id}"
        await mark_processed(desk, mail_id, ticket_id=earlier.ticket_id, reason=reason, held=held)
        kind = Kind.DUPLICATE
    return Outcome(mail_id, kind, earlier.ticket_number, detail=reason)


async def _settle_stopped(desk: Desk, held: Claim, mail: ParsedMail, decision: Decision) -> Outcome:
    verdict = decision.stop
    assert verdict is not None
    mail_id = held.mail.id
    if verdict.action == Action.BOUNCE:
        report = mail.delivery_report
        original = report.original_message_id if report else None
        if report is not None and report.recipients and not any(r.failed for r in report.recipients):
            # "delayed" or "delivered": nothing failed, so the outbound mail stays as it is.
            actions = ", ".join(sorted({r.action or "?" for r in report.recipients}))
            await mark_processed(desk, mail_id, ticket_id=None, reason=f"delivery report: {actions}", held=held)
            return Outcome(mail_id, Kind.BOUNCE, None, True, f"delivery report ({actions}): nothing failed")
        failed = [_recipient_status(r) for r in (report.recipients if report else []) if r.failed]
        result = await record_bounce(desk, mail_id, original_message_id=original, failed=failed, held=held)
        detail = f"outbox mail {result.outbox_id} marked failed" if result.outbox_id else (
            "staff told" if result.ticket_id else "original mail not found")
        return Outcome(mail_id, Kind.BOUNCE, result.ticket_number, True, detail)
    reason = f"{verdict.rule}: {verdict.reason}"
    await hold(desk, mail_id, reason, rule=verdict.rule, held=held)
    return Outcome(mail_id, Kind.HELD, detail=reason)


async def _parse(raw: bytes, ctx: InboundContext) -> ParsedMail:
    from mail_gateway.parsing import parse_mail

    # Off the loop (the SMTP listener and the bot share it), and with a time budget.
    work = _in_daemon_thread(lambda: parse_mail(raw, max_attachment_bytes=ctx.max_attachment_bytes))
    try:
        return await asyncio.wait_for(work, ctx.parse_timeout_seconds)
    except TimeoutError:
        raise UserError(f"parsing took longer than {ctx.parse_timeout_seconds:g} s") from None


def _in_daemon_thread(work: Callable[[], T]) -> asyncio.Future[T]:
    """`work` in a thread of its own that nobody waits for at exit. A thread cannot be stopped, so
    a parse past its budget runs on; in the loop's shared executor it would also hold up the
    process's exit (asyncio.run joins those threads), and `supportbot ingest` would hang its MTA.
    The worker of `supportbot run` parses in a process it can stop (mail_gateway.parse_process).
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def deliver(result: T | None, error: BaseException | None) -> None:
        if future.done():  # given up on: wait_for cancelled it at the budget
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        result: T | None = None
        error: BaseException | None = None
        try:
            result = work()
        except BaseException as e:  # handed to the awaiting side
            error = e
        try:
            loop.call_soon_threadsafe(deliver, result, error)
        except RuntimeError:
            pass  # the loop is closed: nobody is waiting any more

    threading.Thread(target=run, name="parse-mail", daemon=True).start()
    return future


def _sender(mail: ParsedMail, stored: InboundMail) -> str | None:
    candidates = [mail.from_.email if mail.from_ else None, stored.envelope_from]
    for candidate in candidates:
        address = (candidate or "").strip().strip("<>").lower()
        if address.count("@") == 1 and not any(c in address for c in " \t\r\n<>") and len(address) <= 320:
            return address
    return None


def _content(mail: ParsedMail, stored: InboundMail, *, machine: bool) -> MailContent:
    references = [bracketed(r) for r in mail.references if r.strip("<> ")][-MAX_REFERENCES:]
    in_reply_to = [bracketed(r) for r in mail.in_reply_to if r.strip("<> ")]
    return MailContent(
        text=mail.text or "", new_text=mail.new_text, html=mail.html, subject=mail.subject or "",
        message_id=bracketed(mail.message_id)[:998] if mail.message_id else None,
        in_reply_to=" ".join(in_reply_to) or None, references=" ".join(references) or None,
        attachments=[NewAttachment(a.filename or "attachment", a.content_type, a.data, content_id=a.content_id,
                                   inline=a.inline, held_back=a.held_back, size=a.size)
                     for a in mail.attachments],
        is_machine=machine, inbound_mail_id=stored.id)


def _cc(mail: ParsedMail, ctx: InboundContext, sender: str) -> list[ContactRef]:
    """Everyone else the customer wrote to becomes a participant, except our own addresses."""
    seen = {sender}
    refs: list[ContactRef] = []
    for address in [*mail.to, *mail.cc]:
        email = (address.email or "").strip().lower()
        if not email or email in seen or ctx.is_support_address(email) or email.count("@") != 1:
            continue
        seen.add(email)
        refs.append(ContactRef(email, address.name or ""))
    return refs[:MAX_CC]


def _recipient_status(recipient: object) -> dict[str, str]:
    fields = ("recipient", "action", "status", "diagnostic")
    return {f: str(getattr(recipient, f, "") or "")[:300] for f in fields}


def describe_error(error: BaseException) -> str:
    """`Type: first line of the message`, bounded: database errors carry SQL and parameters after it."""
    text = str(error).strip().splitlines()[0][:300] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
