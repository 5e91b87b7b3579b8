"""Intake's one entry point: a batch of parsed mails in, one unit of work, an outcome for each.

For each mail, in this order: claim its stored row → thread match (which ticket?) → the rules
chain (machine mail, bounce, hold) → routing and participants → one ticket service → mark the row.
A single mail is a batch of one; there is no other path.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from core.desk import Desk
from core.errors import UserError, describe_error
from core.intake import ledger
from core.intake.ledger import Marks, StoredMail
from core.intake.outcome import Kind, Outcome
from core.intake.participants import other_recipients, sender_of
from core.intake.routing import route, support_address
from core.intake.rules import CHAIN, WITHOUT_HOLDS, Action, Decision, RuleContext, evaluate
from core.intake.settings import IntakeSettings
from core.intake.threading import ThreadMatch, Via, bracketed, match_thread
from core.parsed_mail import ParsedMail
from core.services import (
    ContactRef,
    MailContent,
    NewAttachment,
    NewTicket,
    ParticipantCaps,
    add_customer_message,
    open_tickets,
    remember_contacts,
)
from core.uow import UnitOfWork

log = logging.getLogger("core.intake")

MAX_REFERENCES = 50


@dataclass(frozen=True)
class Parsed:
    """A stored mail as the edge read it: the parsed value, or why it could not be parsed."""

    mail_id: int
    mail: ParsedMail | None = None
    error: str | None = None  # the reason it is quarantined with, when `mail` is None


class Intake:
    """Built once by the composition root with the desk and what intake acts on."""

    def __init__(self, desk: Desk, settings: IntakeSettings) -> None:
        self.desk = desk
        self.settings = settings
        self.caps = ParticipantCaps(settings.max_cc_per_mail, settings.max_participants_per_ticket)

    async def take(self, batch: Sequence[Parsed]) -> list[Outcome]:
        """What becomes of each mail, in the order given, written in one unit of work.

        If anything fails inside, the whole batch is rolled back and each mail is taken again
        alone; a mail that fails alone is quarantined with the reason, so one bad mail never
        holds up the others.
        """
        if not batch:
            return []
        try:
            return await self._take(batch)
        except Exception as e:
            if len(batch) > 1:
                log.warning("a batch of %d mails was rolled back (%s); taking them one by one", len(batch),
                            describe_error(e))
                return [outcome for one in batch for outcome in await self.take([one])]
            return [await self._quarantine_alone(batch[0].mail_id, e)]

    async def _take(self, batch: Sequence[Parsed]) -> list[Outcome]:
        by_id = {item.mail_id: item for item in batch}
        outcomes: dict[int, Outcome] = {}
        async with self.desk.unit_of_work() as uow:
            claimed = await ledger.claim(uow, list(by_id))
            step = _Batch(uow, Marks())
            # Message-IDs of the batch that stored messages carry already: a mail that is no copy of
            # one of them reuses its id (a different mail), and is flagged as such.
            step.ids_taken = await ledger.ids_on_messages(uow, [bracketed(item.mail.message_id)[:998] for item in batch
                                                                if item.mail is not None and item.mail.message_id])
            # One question for the contacts of every sender and recipient of the batch.
            await remember_contacts(uow, [a for held in claimed for a in self._addresses(by_id[held.id], held)])
            for held in claimed:
                item = by_id[held.id]
                if not held.alone or step.touched_by(self._keys(item, held)):
                    outcomes.update(await step.open_waiting(self.desk))  # this mail must see them
                if not held.alone:  # it will ask what became of its copies
                    await step.marks.write(uow)
                outcome = await self._take_one(step, held, item)
                if outcome is None:
                    step.keys |= self._keys(item, held)
                else:
                    outcomes[held.id] = outcome
            outcomes.update(await step.open_waiting(self.desk))
            await step.marks.write(uow)
        return [outcomes.get(item.mail_id, Outcome(item.mail_id, Kind.SKIPPED, detail="not waiting for processing"))
                for item in batch]

    async def _take_one(self, step: _Batch, held: StoredMail, item: Parsed) -> Outcome | None:
        """The mail's outcome; None when its new ticket waits in `step` to be opened with others."""
        uow, now = step.uow, self.desk.clock()
        if item.mail is None:
            reason = item.error or "the mail could not be parsed"
            log.info("mail %d quarantined: %s", held.id, reason)
            await ledger.quarantine(uow, held.id, reason, now)
            return Outcome(held.id, Kind.QUARANTINED, detail=reason)
        mail = item.mail
        sender = sender_of(mail, held.envelope_from)
        match = await match_thread(uow, self.desk, held, mail, self.settings, sender=sender)
        if match.via == Via.DUPLICATE:
            return self._duplicate(step, held, match)
        context = RuleContext(self.desk, uow, self.settings, sender, held.envelope_from, held.raw_size,
                              new_ticket=match.ticket_number is None, received_at=held.received_at,
                              waited_out=held.waited_out)
        decision = await evaluate(mail, context, WITHOUT_HOLDS if held.released else CHAIN)
        if decision.stop is not None:
            return await self._stopped(step, held, mail, decision)
        if decision.machine is not None and match.ticket_number is None and not held.released:
            # An auto-reply, list post or report that answers none of our tickets is nobody's request:
            # kept and counted, listed with `supportbot mail quarantine list --held`, released by hand.
            reason = f"machine-mail: matches no ticket ({decision.machine.rule}: {decision.machine.reason})"
            await ledger.hold(uow, held.id, reason, rule="machine-mail", at=now, sender=sender or "",
                              subject=mail.subject or "")
            return Outcome(held.id, Kind.HELD, machine=True, detail=reason)
        if sender is None:
            reason = "UserError: the mail has no usable sender address (From, Return-Path or envelope sender)"
            await ledger.quarantine(uow, held.id, reason, now)
            return Outcome(held.id, Kind.QUARANTINED, detail=reason)

        content = _content(mail, held, machine=decision.is_machine)
        author = ContactRef(sender, mail.from_.name if mail.from_ else "")
        # A list's or an auto-responder's other recipients are no one to answer: a staff reply would
        # go to the whole list.
        cc = [] if decision.is_machine else other_recipients(mail, self.settings, sender)
        machine_why = decision.machine.reason if decision.machine else ""
        if content.message_id and content.message_id in step.ids_taken:
            machine_why = _why("its Message-ID is already on another, different mail", machine_why)
        if match.ticket_number is None:
            # Delivered-To and its kin name the address a Bcc or an alias reached, when read over IMAP.
            recipients = [a.email for a in [*mail.to, *mail.cc] if a.email] + [*mail.delivered_to, *held.envelope_to]
            routed = route(self.settings, recipients, mail.subject or "", mail.text or "")
            request = NewTicket(author, content, cc=cc, category=routed.category, priority=routed.priority,
                                refers_to=match.refers_to, caps=self.caps,
                                support_address=support_address(self.settings, recipients))
            refers = (f"refers to {self.desk.format_number(match.refers_to)}, whose conversation its sender is not "
                      "part of" if match.refers_to else "")
            step.waiting.append(_Opening(held.id, request, _why(refers, routed.why, machine_why)))
            return None
        change = await add_customer_message(self.desk, match.ticket_number, author, content, cc=cc, caps=self.caps,
                                            uow=uow)
        why = _why(f"matched by {match.via}" + (f" ({match.detail})" if match.detail else ""), machine_why)
        step.marks.add(held.id, ticket_id=change.ticket.id, reason=why, at=now)
        kind = Kind.OPENED if change.created else Kind.ADDED  # a closed ticket's follow-up is a new one
        return Outcome(held.id, kind, change.ticket.number, decision.is_machine, why)

    def _duplicate(self, step: _Batch, held: StoredMail, match: ThreadMatch) -> Outcome:
        earlier = match.earlier
        assert earlier is not None
        if earlier.mail_id == held.id:  # its message exists already (a row an older version left half done)
            reason, kind = "its message was stored before an interruption", Kind.ADDED
        else:
            reason, kind = f"duplicate of {earlier.mail_id}", Kind.DUPLICATE
        step.marks.add(held.id, ticket_id=earlier.ticket_id, reason=reason, at=self.desk.clock())
        return Outcome(held.id, kind, earlier.ticket_number, detail=reason)

    async def _stopped(self, step: _Batch, held: StoredMail, mail: ParsedMail, decision: Decision) -> Outcome:
        verdict = decision.stop
        assert verdict is not None
        uow, now = step.uow, self.desk.clock()
        if verdict.action == Action.BOUNCE:
            report = mail.delivery_report
            if report is not None and report.recipients and not any(r.failed for r in report.recipients):
                # "delayed" or "delivered": nothing failed, so the outbound mail stays as it is.
                actions = ", ".join(sorted({r.action or "?" for r in report.recipients}))
                step.marks.add(held.id, ticket_id=None, reason=f"delivery report: {actions}", at=now)
                return Outcome(held.id, Kind.BOUNCE, None, True, f"delivery report ({actions}): nothing failed")
            failed = [{"recipient": r.recipient[:300], "action": r.action[:300], "status": r.status[:300],
                       "diagnostic": r.diagnostic[:300]} for r in (report.recipients if report else []) if r.failed]
            result = await ledger.record_bounce(uow, held.id, failed=failed, at=now,
                                                original_message_id=report.original_message_id if report else None)
            detail = f"outbox mail {result.outbox_id} marked failed" if result.outbox_id else (
                "staff told" if result.ticket_id else "original mail not found")
            return Outcome(held.id, Kind.BOUNCE, result.ticket_number, True, detail)
        reason = f"{verdict.rule}: {verdict.reason}"
        await ledger.hold(uow, held.id, reason, rule=verdict.rule, at=now,
                          sender=sender_of(mail, held.envelope_from) or "", subject=mail.subject or "")
        return Outcome(held.id, Kind.HELD, detail=reason)

    async def _quarantine_alone(self, mail_id: int, error: Exception) -> Outcome:
        reason = describe_error(error)
        if isinstance(error, UserError):
            log.info("mail %d quarantined: %s", mail_id, reason)
        else:
            log.exception("mail %d quarantined after an unexpected failure: %s", mail_id, reason, exc_info=error)
        await quarantine(self.desk, mail_id, reason)
        return Outcome(mail_id, Kind.QUARANTINED, detail=reason)

    def _addresses(self, item: Parsed, held: StoredMail) -> list[str]:
        """The addresses whose contacts taking a mail asks about: its sender and other recipients."""
        if item.mail is None:
            return []
        sender = sender_of(item.mail, held.envelope_from)
        return [*([sender] if sender else []), *(ref.email for ref in other_recipients(item.mail, self.settings,
                                                                                        sender or ""))]

    def _keys(self, item: Parsed, held: StoredMail) -> set[str]:
        """What taking a mail reads or writes that another mail of its batch may share: the contacts of
        its sender and other recipients, and the Message-IDs it has or refers to (lowercased)."""
        if item.mail is None:
            return set()
        mail = item.mail
        ids = [mail.message_id or "", *mail.in_reply_to, *mail.references]
        return ({f"at:{address}" for address in self._addresses(item, held)}
                | {f"id:{i.strip().strip('<>').lower()}" for i in ids if i.strip("<> ")})


async def quarantine(desk: Desk, mail_id: int, reason: str) -> None:
    """Quarantine a stored mail on its own (when taking it failed, or by hand), if it still waits."""
    async with desk.unit_of_work() as uow:
        if await ledger.claim(uow, [mail_id]):
            await ledger.quarantine(uow, mail_id, reason, desk.clock())


@dataclass(frozen=True)
class _Opening:
    mail_id: int
    request: NewTicket
    why: str


@dataclass
class _Batch:
    """A batch's unit of work, its marks, and the new tickets it decided on. Those are opened
    together (core.services.open_tickets) at the end, or earlier when a later mail of the batch could
    depend on them: one from the same address (its contact, the rate limit), one referring to their
    Message-IDs (a reply), or a copy of a stored mail (which looks for what its copies made)."""

    uow: UnitOfWork
    marks: Marks
    waiting: list[_Opening] = field(default_factory=list)
    keys: set[str] = field(default_factory=set)
    ids_taken: set[str] = field(default_factory=set)

    def touched_by(self, keys: set[str]) -> bool:
        return not self.keys.isdisjoint(keys)

    async def open_waiting(self, desk: Desk) -> dict[int, Outcome]:
        if not self.waiting:
            return {}
        waiting, self.waiting, self.keys = self.waiting, [], set()
        changes = await open_tickets(desk, [o.request for o in waiting], uow=self.uow)
        outcomes = {}
        for opening, change in zip(waiting, changes, strict=True):
            self.marks.add(opening.mail_id, ticket_id=change.ticket.id, reason=opening.why, at=desk.clock())
            outcomes[opening.mail_id] = Outcome(opening.mail_id, Kind.OPENED, change.ticket.number,
                                                opening.request.content.is_machine, opening.why)
        return outcomes


def _why(*parts: str) -> str:
    return "; ".join(part for part in parts if part)


def _content(mail: ParsedMail, held: StoredMail, *, machine: bool) -> MailContent:
    references = [bracketed(r) for r in mail.references if r.strip("<> ")][-MAX_REFERENCES:]
    in_reply_to = [bracketed(r) for r in mail.in_reply_to if r.strip("<> ")]
    return MailContent(
        text=mail.text or "", new_text=mail.new_text, html=mail.html, subject=mail.subject or "",
        message_id=bracketed(mail.message_id)[:998] if mail.message_id else None,
        in_reply_to=" ".join(in_reply_to) or None, references=" ".join(references) or None,
        attachments=[NewAttachment(a.filename or "attachment", a.content_type, a.data, content_id=a.content_id,
                                   inline=a.inline, held_back=a.held_back, size=a.size)
                     for a in mail.attachments],
        is_machine=machine, inbound_mail_id=held.id, received_at=held.received_at)
