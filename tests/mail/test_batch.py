"""A backlog is processed in batches, one transaction each: same outcomes as one by one, all or nothing."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError

from core.desk import Desk
from core.enums import InboundStatus
from core.imap_models import ImapPosition, ReadUpTo, load_position
from core.inbound import RawMail, store_raw_many
from core.intake import Intake, Kind, ledger
from core.models import Contact, InboundMail, Message, Participant, Ticket
from mail_gateway.handoff import Handoff
from mail_gateway.store import store_received, store_received_many
from tests.mail.pipeline_support import (
    allow_inserts,
    break_ticket_creation,
    count,
    make_context,
    refuse_inserts,
    stored_row,
    take_batch,
)
from tests.mail.test_processing import simple_mail

ctx = make_context()


def reply_to(message_id: str, sender: str, subject: str, *, own_id: str) -> bytes:
    return simple_mail(sender, f"Re: {subject}", "Still broken.", message_id=own_id,
                       extra=f"In-Reply-To: <{message_id}>\r\nReferences: <{message_id}>\r\n")


async def test_one_batch_opens_threads_and_recognises_a_copy_like_one_by_one(desk: Desk) -> None:
    original = simple_mail("ann@customer.test", "Printer jams", message_id="orig@customer.test")
    raws = [original,
            reply_to("orig@customer.test", "ann@customer.test", "Printer jams", own_id="re1@customer.test"),
            original,  # the same mail delivered twice, both copies in one batch
            simple_mail("bob@customer.test", "Login fails", message_id="other@customer.test")]
    stored = await store_received_many(desk, raws, source="test")
    assert [s.duplicate_of for s in stored] == [None, None, stored[0].id, None]

    outcomes = await take_batch(desk, ctx, [s.id for s in stored])

    assert [o.kind for o in outcomes] == [Kind.OPENED, Kind.ADDED, Kind.DUPLICATE, Kind.OPENED]
    assert outcomes[1].ticket_number == outcomes[0].ticket_number == outcomes[2].ticket_number
    assert outcomes[3].ticket_number == outcomes[0].ticket_number + 1
    assert await count(desk, Ticket) == 2 and await count(desk, Message) == 3
    rows = [await stored_row(desk, s.id) for s in stored]
    assert all(r.status == InboundStatus.PROCESSED and r.ticket_id is not None for r in rows)


async def test_an_original_behind_its_reply_in_one_batch_joins_the_replys_ticket(desk: Desk) -> None:
    raws = [reply_to("orig@customer.test", "ann@customer.test", "Printer jams", own_id="re1@customer.test"),
            simple_mail("ann@customer.test", "Printer jams", message_id="orig@customer.test")]
    stored = await store_received_many(desk, raws, source="test")

    outcomes = await take_batch(desk, ctx, [s.id for s in stored])

    assert [o.kind for o in outcomes] == [Kind.OPENED, Kind.ADDED]
    assert outcomes[1].ticket_number == outcomes[0].ticket_number
    assert await count(desk, Ticket) == 1 and await count(desk, Message) == 2


async def test_new_tickets_of_a_batch_are_written_together_and_later_mail_sees_them(
        desk: Desk, caplog: pytest.LogCaptureFixture) -> None:
    # A batch opens its new tickets together; a mail that depends on one of them (same sender: its
    # contact and the rate limit; an address cc'd before) must still see it, as one by one would.
    raws = [simple_mail("dan@customer.test", "Question 1", extra="Cc: carol@customer.test\r\n"),
            simple_mail("Carol Jones <carol@customer.test>", "My own question"),
            simple_mail("erin@customer.test", "Unrelated"),
            *(simple_mail("dan@customer.test", f"Question {i}") for i in range(2, 8))]
    stored = await store_received_many(desk, raws, source="test")

    with caplog.at_level(logging.WARNING, logger="core.intake"):
        outcomes = await take_batch(desk, ctx, [s.id for s in stored])

    assert "rolled back" not in caplog.text  # the batch path did it, not the one-by-one fallback
    # dan may open 5 tickets in 10 minutes (the default): his 6th and 7th new mail are held.
    assert [o.kind for o in outcomes] == [Kind.OPENED] * 7 + [Kind.HELD] * 2
    first = outcomes[0].ticket_number
    assert first is not None
    assert [o.ticket_number for o in outcomes[:7]] == list(range(first, first + 7))
    assert "sender opened 5 tickets" in outcomes[7].detail
    async with desk.db.read() as session:
        carol = await session.scalar(select(Contact).where(Contact.email == "carol@customer.test"))
        assert carol is not None and carol.name == "Carol Jones"  # made as dan's cc, named by her own mail
        requester = await session.scalar(select(Ticket.requester_id).where(Ticket.number == first + 1))
        assert requester == carol.id
        cc_of_first = await session.scalars(
            select(Participant.contact_id).join(Ticket, Ticket.id == Participant.ticket_id)
            .where(Ticket.number == first, Participant.role == "cc"))
        assert list(cc_of_first) == [carol.id]
    assert await count(desk, Contact) == 3 and await count(desk, Message) == 7


async def test_two_batches_at_once_that_cc_each_others_senders_settle_without_a_rollback(
        desk: Desk, caplog: pytest.LogCaptureFixture) -> None:
    # Each batch inserts the other's requesters as new cc contacts. On PostgreSQL two writers
    # inserting the same new rows in opposite orders deadlock, and a deadlocked batch is redone
    # one mail at a time: correct, but slow. One sorted insert per batch keeps one order.
    # A deadlock needs the two to meet at the wrong moment: three rounds make that likely.
    def batch(side: str, other: str, order: tuple[int, ...]) -> list[bytes]:
        return [simple_mail(f"{side}{i}@customer.test", f"Question {i}", extra="Cc: " + ", ".join(
            f"{other}{(i + k) % 40}@customer.test" for k in order) + "\r\n") for i in range(40)]

    for round_ in range(3):
        a = await store_received_many(desk, batch(f"a{round_}-", f"b{round_}-", (0, 1, 2)), source="test")
        b = await store_received_many(desk, batch(f"b{round_}-", f"a{round_}-", (2, 1, 0)), source="test")
        with caplog.at_level(logging.WARNING, logger="core.intake"):
            outcomes = await asyncio.gather(take_batch(desk, ctx, [s.id for s in a]),
                                            take_batch(desk, ctx, [s.id for s in b]))
        assert "rolled back" not in caplog.text
        assert [o.kind for o in outcomes[0] + outcomes[1]] == [Kind.OPENED] * 80
    assert await count(desk, Ticket) == 240 and await count(desk, Contact) == 240


async def test_a_failure_inside_a_batch_undoes_the_batch_and_each_mail_is_settled_alone(
        desk: Desk, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    break_ticket_creation(monkeypatch, "poison")
    subjects = ["first", "second", "poison pill", "fourth"]
    ids = [(await store_received(desk, simple_mail(f"c{i}@customer.test", s), source="test")).id
           for i, s in enumerate(subjects)]

    with caplog.at_level(logging.WARNING, logger="core.intake"):
        outcomes = await take_batch(desk, ctx, ids)

    assert "rolled back" in caplog.text
    assert [o.kind for o in outcomes] == [Kind.OPENED, Kind.OPENED, Kind.QUARANTINED, Kind.OPENED]
    # The two mails settled before the failure were undone with the batch and made once, not twice.
    assert await count(desk, Ticket) == 3 and await count(desk, Message) == 3
    assert (await stored_row(desk, ids[2])).reason == "RuntimeError: simulated bug in ticket creation"


async def test_a_batch_leaves_out_mail_that_another_processor_holds_or_settled(desk: Desk) -> None:
    ids = [(await store_received(desk, simple_mail(f"h{i}@customer.test", f"Question {i}"), source="test")).id
           for i in range(3)]
    handoff = Handoff(Intake(desk, ctx))
    batch = await handoff.prepare(ids)  # read and parsed outside any transaction, as the worker does
    if desk.db.is_postgres:
        # Another worker is busy with the middle one, its transaction open meanwhile.
        async with desk.unit_of_work() as other:
            assert [held.id for held in await ledger.claim(other, [ids[1]])] == [ids[1]]
            outcomes = await handoff.intake.take(batch)
            await ledger.quarantine(other, ids[1], "settled by the other worker", desk.clock())
    else:
        # SQLite has one writer: the other worker settles it between this one's parse and its take.
        [settled] = await handoff.take([ids[1]])
        assert settled.kind == Kind.OPENED
        outcomes = await handoff.intake.take(batch)
    assert [o.kind for o in outcomes] == [Kind.OPENED, Kind.SKIPPED, Kind.OPENED]
    assert await count(desk, Ticket) == (2 if desk.db.is_postgres else 3)


async def test_mail_that_cannot_be_parsed_is_quarantined_inside_the_batch(
        desk: Desk, monkeypatch: pytest.MonkeyPatch) -> None:
    import mail_gateway.parsing

    def stuck(raw: bytes, **limits: object) -> object:
        time.sleep(1)
        raise AssertionError("never reached in time")

    monkeypatch.setattr(mail_gateway.parsing, "parse_mail", stuck)
    slow = make_context(parse_timeout_seconds=0.05)
    stored = await store_received_many(desk, [simple_mail("a@customer.test", "one")], source="test")
    [outcome] = await take_batch(desk, slow, [stored[0].id])
    assert outcome.kind == Kind.QUARANTINED and "parsing took longer" in outcome.detail
    assert (await stored_row(desk, stored[0].id)).status == InboundStatus.QUARANTINED


async def test_storing_a_batch_commits_it_with_the_mailbox_position_or_not_at_all(desk: Desk) -> None:
    mails = [RawMail(simple_mail(f"s{i}@customer.test", f"Stored {i}"), message_id=f"s{i}@x") for i in range(3)]
    read_up_to = ReadUpTo("m", "INBOX", ImapPosition(uidvalidity=7, last_uid=3))
    await refuse_inserts(desk, "imap_state")  # a real failure of the position's write, not a mock
    with pytest.raises(DBAPIError):
        await store_raw_many(desk, mails, source="test", mailbox="m", read_up_to=read_up_to)
    assert await count(desk, InboundMail) == 0

    await allow_inserts(desk, "imap_state")
    stored = await store_raw_many(desk, mails, source="test", mailbox="m", read_up_to=read_up_to)
    assert len({s.id for s in stored}) == 3 and await count(desk, InboundMail) == 3
    assert await load_position(desk.db, "m", "INBOX") == ImapPosition(7, 3)
