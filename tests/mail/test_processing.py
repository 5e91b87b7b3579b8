"""The inbound pipeline end to end below the edges: stored mail in, the right ticket outcome out."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from core import inbound
from core.attachments import AttachmentStore
from core.db import Database
from core.desk import Desk
from core.enums import InboundStatus, OutboxStatus, Priority, Status
from core.events import EventType
from core.intake import Intake, Kind, Outcome
from core.models import InboundMail, Message, OutboxMail, Ticket
from core.queries import ticket_detail
from core.services import StaffRef, block_sender, reply, set_status
from mail_gateway.store import store_received
from mail_gateway.worker import InboundWorker
from tests.mail.pipeline_support import (
    FIXTURES,
    break_ticket_creation,
    count,
    deliver,
    events_of_type,
    fixture,
    make_context,
    messages_of,
    stored_row,
    take_stored,
)

STAFF = StaffRef("Sam", discord_id=42)
ctx = make_context()


def simple_mail(sender: str, subject: str, body: str = "Hello, something is wrong.", *,
                message_id: str | None = None, extra: str = "") -> bytes:
    head = f"From: {sender}\r\nTo: support@example.test\r\nSubject: {subject}\r\n"
    if message_id:
        head += f"Message-ID: <{message_id}>\r\n"
    return (head + extra + "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
            + body + "\r\n").encode()


async def open_alice_ticket(desk: Desk) -> int:
    """Ticket #1000 from alice@customer.test, the ticket the pipeline_* replies point at."""
    outcome = await deliver(desk, ctx, fixture("pipeline_new_request.eml"))
    assert (outcome.kind, outcome.ticket_number) == (Kind.OPENED, 1000)
    return 1000


# --- every golden fixture: never lost, always settled ----------------------------------------------

ALL_FIXTURES = sorted(p.name for p in FIXTURES.glob("*.eml"))
# Fixtures that are not a usable mail at all: kept, quarantined with the reason.
UNUSABLE = {"garbage.eml": "no usable sender", "pipeline_no_sender.eml": "no usable sender"}
# What each fixture becomes when it arrives at a desk that only has ticket #1000 from Alice.
EXPECTED = {
    "pipeline_new_request.eml": (Kind.OPENED, None, False),
    "pipeline_gmail_token_reply.eml": (Kind.ADDED, 1000, False),
    "pipeline_reply_address_only.eml": (Kind.ADDED, 1000, False),
    "pipeline_footer_token.eml": (Kind.ADDED, 1000, False),
    "pipeline_references_only.eml": (Kind.ADDED, 1000, False),
    "pipeline_apple_subject_tag.eml": (Kind.ADDED, 1000, False),
    "pipeline_stranger_tag.eml": (Kind.OPENED, 1001, False),
    "pipeline_forged_token.eml": (Kind.OPENED, 1001, False),
    "pipeline_vacation.eml": (Kind.ADDED, 1000, True),
    "pipeline_read_receipt.eml": (Kind.ADDED, 1000, True),
    "pipeline_mailing_list.eml": (Kind.HELD, None, True),  # machine mail answering no ticket
    "pipeline_dsn_bounce.eml": (Kind.BOUNCE, None, True),
    "pipeline_cc_new_request.eml": (Kind.OPENED, 1001, False),
    "pipeline_outage.eml": (Kind.OPENED, 1001, False),
    "vacation_autoreply.eml": (Kind.HELD, None, True),
    "mailing_list.eml": (Kind.HELD, None, True),
    "dsn_bounce.eml": (Kind.BOUNCE, None, True),
    # Client replies whose references we never sent: a new ticket (see the References test below).
    "gmail_reply.eml": (Kind.OPENED, 1001, False),
    "outlook_desktop_reply.eml": (Kind.OPENED, 1001, False),
    "apple_mail_reply.eml": (Kind.OPENED, 1001, False),
    "html_only.eml": (Kind.OPENED, 1001, False),
    "koi8r.eml": (Kind.OPENED, 1001, False),
    "forwarded.eml": (Kind.OPENED, 1001, False),
    "attachment_only.eml": (Kind.OPENED, 1001, False),
}


@pytest.mark.parametrize("name", ALL_FIXTURES)
async def test_every_fixture_is_settled_with_its_expected_outcome(sqlite_desk, name):
    desk = sqlite_desk
    if name != "pipeline_new_request.eml":
        await open_alice_ticket(desk)
    outcome = await deliver(desk, ctx, fixture(name))
    row = await stored_row(desk, outcome.mail_id)
    if name in UNUSABLE:
        assert outcome.kind == Kind.QUARANTINED and UNUSABLE[name] in outcome.detail
        assert row.status == InboundStatus.QUARANTINED and UNUSABLE[name] in (row.reason or "")
        return
    # Fixtures without a stated expectation must at least not be lost or left waiting.
    assert outcome.kind not in (Kind.QUARANTINED, Kind.SKIPPED), outcome
    assert row.status in (InboundStatus.PROCESSED, InboundStatus.HELD)
    if name in EXPECTED:
        kind, number, machine = EXPECTED[name]
        assert outcome.kind == kind
        if number is not None:
            assert outcome.ticket_number == number
        assert outcome.machine is machine
    if outcome.kind in (Kind.OPENED, Kind.ADDED):
        assert row.ticket_id is not None
        last = (await messages_of(desk, outcome.ticket_number))[-1]
        assert last.inbound_mail_id == outcome.mail_id and last.is_machine is outcome.machine


# --- threading -------------------------------------------------------------------------------------

async def _outbound_message_with_id(desk: Desk, number: int, message_id: str) -> None:
    """What the outbound notifier leaves behind: a staff reply whose Message-ID we stored."""
    change = await reply(desk, number, STAFF, "We are on it.")
    async with desk.db.transaction() as session:
        await session.execute(update(Message).where(Message.id == change.message.id)
                              .values(message_id=message_id))


@pytest.mark.parametrize("name", ["gmail_reply.eml", "outlook_desktop_reply.eml", "outlook_web_reply.eml",
                                  "apple_mail_reply.eml", "thunderbird_reply.eml", "iphone_reply.eml"])
async def test_client_reply_threads_onto_its_ticket_via_references(desk, name):
    from mail_gateway.parsing import parse_mail

    parsed = parse_mail(fixture(name))
    assert parsed.from_ is not None and parsed.references + parsed.in_reply_to
    first = await deliver(desk, ctx, simple_mail(parsed.from_.email, "My original question"))
    await _outbound_message_with_id(desk, first.ticket_number, f"<{(parsed.in_reply_to or parsed.references)[-1]}>")
    outcome = await deliver(desk, ctx, fixture(name))
    assert (outcome.kind, outcome.ticket_number) == (Kind.ADDED, first.ticket_number)
    assert "references" in outcome.detail
    messages = await messages_of(desk, first.ticket_number)
    assert messages[-1].message_id == f"<{parsed.message_id}>"


async def test_gmail_reply_threads_via_signed_message_id(desk):
    number = await open_alice_ticket(desk)
    outcome = await deliver(desk, ctx, fixture("pipeline_gmail_token_reply.eml"))
    assert (outcome.kind, outcome.ticket_number) == (Kind.ADDED, number)
    assert "signed token (message id)" in outcome.detail
    last = (await messages_of(desk, number))[-1]
    assert last.in_reply_to == "<t1000.r1.3u5m4r3skurb44oq@example.test>"
    assert "still on my card" in last.new_text and "We have refunded" not in last.new_text


async def test_reply_threads_via_signed_reply_address(desk):
    number = await open_alice_ticket(desk)
    outcome = await deliver(desk, ctx, fixture("pipeline_reply_address_only.eml"),
                            envelope_to=("support+1000-ssp23oq3eh5ofx2m@example.test",))
    assert (outcome.kind, outcome.ticket_number) == (Kind.ADDED, number)
    assert "reply address" in outcome.detail


async def test_reply_without_headers_threads_via_body_footer_token(desk):
    number = await open_alice_ticket(desk)
    outcome = await deliver(desk, ctx, fixture("pipeline_footer_token.eml"))
    assert (outcome.kind, outcome.ticket_number) == (Kind.ADDED, number)
    assert "body footer" in outcome.detail


async def test_outlook_reply_with_rewritten_ids_threads_via_references_only(desk):
    number = await open_alice_ticket(desk)
    outcome = await deliver(desk, ctx, fixture("pipeline_references_only.eml"))
    assert (outcome.kind, outcome.ticket_number) == (Kind.ADDED, number)
    assert "references" in outcome.detail


async def test_in_reply_to_counts_even_behind_a_long_references_chain(desk):
    number = await open_alice_ticket(desk)
    chain = "".join(f" <old-{i}@elsewhere.test>" for i in range(60))
    raw = simple_mail("alice@customer.test", "Re: Refund for order 42", message_id="re-long@customer.test",
                      extra=f"In-Reply-To: <req-1@customer.test>\r\nReferences:{chain}\r\n")
    outcome = await deliver(desk, ctx, raw)
    assert (outcome.kind, outcome.ticket_number) == (Kind.ADDED, number)


async def test_subject_tag_from_a_participant_threads_onto_the_ticket(desk):
    number = await open_alice_ticket(desk)
    outcome = await deliver(desk, ctx, fixture("pipeline_apple_subject_tag.eml"))
    assert (outcome.kind, outcome.ticket_number) == (Kind.ADDED, number)
    assert "subject tag" in outcome.detail


async def test_reply_from_stranger_with_ticket_tag_opens_new_ticket(desk):
    number = await open_alice_ticket(desk)
    outcome = await deliver(desk, ctx, fixture("pipeline_stranger_tag.eml"))
    assert outcome.kind == Kind.OPENED and outcome.ticket_number != number
    detail = await ticket_detail(desk, number)
    assert detail.participants == ["alice@customer.test"]
    assert [m.author for m in detail.messages] == ["alice@customer.test"]


async def test_forged_token_and_foreign_message_id_open_a_new_ticket(desk):
    number = await open_alice_ticket(desk)
    outcome = await deliver(desk, ctx, fixture("pipeline_forged_token.eml"))
    assert outcome.kind == Kind.OPENED and outcome.ticket_number != number
    assert len(await messages_of(desk, number)) == 1


async def test_an_original_read_after_its_reply_joins_the_ticket_the_reply_opened(desk):
    # Ann's follow-up was delivered first (her first mail was delayed, or sat in another mailbox).
    follow_up = await deliver(desk, ctx, simple_mail(
        "ann@customer.test", "Re: Printer jams", "Forgot the photo, here it is.", message_id="re1@customer.test",
        extra="In-Reply-To: <orig@customer.test>\r\nReferences: <orig@customer.test>\r\n"))
    assert follow_up.kind == Kind.OPENED

    original = await deliver(desk, ctx, simple_mail("Ann <ann@customer.test>", "Printer jams",
                                                    message_id="orig@customer.test"))

    assert (original.kind, original.ticket_number) == (Kind.ADDED, follow_up.ticket_number)
    assert "a reply read before it" in original.detail
    assert await count(desk, Ticket) == 1 and await count(desk, Message) == 2


async def test_an_original_from_someone_outside_the_replys_ticket_opens_its_own(desk):
    # Whoever writes a reply chooses the id it answers: the reply alone cannot pull a stranger's
    # mail onto its ticket.
    follow_up = await deliver(desk, ctx, simple_mail(
        "mallory@elsewhere.test", "Re: anything", message_id="m1@elsewhere.test",
        extra="In-Reply-To: <orig@customer.test>\r\n"))
    original = await deliver(desk, ctx, simple_mail("ann@customer.test", "Printer jams",
                                                    message_id="orig@customer.test"))
    assert original.kind == Kind.OPENED and original.ticket_number != follow_up.ticket_number
    assert len(await messages_of(desk, follow_up.ticket_number)) == 1


async def test_a_reply_by_someone_the_original_did_not_go_to_cannot_pull_it_onto_their_ticket(desk):
    # Mallory knows (or guesses) the id of Ann's next mail and cc's Ann, so Ann takes part in
    # Mallory's ticket; Ann's mail did not go to Mallory, so it is not Mallory's to answer.
    follow_up = await deliver(desk, ctx, simple_mail(
        "mallory@elsewhere.test", "Re: anything", message_id="m2@elsewhere.test",
        extra="In-Reply-To: <orig@customer.test>\r\nCc: ann@customer.test\r\n"))
    original = await deliver(desk, ctx, simple_mail("ann@customer.test", "Printer jams",
                                                    message_id="orig@customer.test"))
    assert original.kind == Kind.OPENED and original.ticket_number != follow_up.ticket_number


async def test_cc_addresses_become_participants_but_our_own_addresses_do_not(desk):
    outcome = await deliver(desk, ctx, fixture("pipeline_cc_new_request.eml"))
    detail = await ticket_detail(desk, outcome.ticket_number)
    assert sorted(detail.participants) == ["bob@customer.test", "carol@customer.test"]
    assert detail.requester == "bob@customer.test"


async def test_reply_to_a_resolved_ticket_reopens_it(desk):
    number = await open_alice_ticket(desk)
    await set_status(desk, number, Status.RESOLVED, STAFF)
    outcome = await deliver(desk, ctx, fixture("pipeline_gmail_token_reply.eml"))
    assert outcome.ticket_number == number
    assert (await ticket_detail(desk, number)).status == "open"


# --- machine mail and bounces ----------------------------------------------------------------------

async def test_vacation_reply_is_stored_on_its_ticket_as_machine_mail_and_changes_nothing(desk):
    number = await open_alice_ticket(desk)
    await set_status(desk, number, Status.PENDING, STAFF)
    outcome = await deliver(desk, ctx, fixture("pipeline_vacation.eml"))
    assert (outcome.kind, outcome.ticket_number, outcome.machine) == (Kind.ADDED, number, True)
    last = (await messages_of(desk, number))[-1]
    assert last.is_machine and "out of the office" in last.body_text
    assert (await ticket_detail(desk, number)).status == "pending"  # an auto-reply is no answer


async def test_read_receipt_is_machine_mail_and_does_not_reopen_the_ticket(desk):
    # Outlook sends a receipt the reader chose to send without Auto-Submitted: the report type says it.
    number = await open_alice_ticket(desk)
    await set_status(desk, number, Status.RESOLVED, STAFF)
    outcome = await deliver(desk, ctx, fixture("pipeline_read_receipt.eml"))
    assert (outcome.kind, outcome.ticket_number, outcome.machine) == (Kind.ADDED, number, True)
    assert "report-type=disposition-notification" in outcome.detail
    assert (await ticket_detail(desk, number)).status == "resolved"


async def test_mailing_list_mail_answering_no_ticket_is_kept_held_and_opens_nothing(desk):
    outcome = await deliver(desk, ctx, fixture("pipeline_mailing_list.eml"))
    assert outcome.machine and outcome.kind == Kind.HELD and "machine-mail" in outcome.detail
    assert "Precedence: list" in outcome.detail or "List-Id" in outcome.detail
    assert await events_of_type(desk, EventType.TICKET_OPENED) == []  # no ticket, no post
    held = await events_of_type(desk, EventType.MAIL_HELD)
    assert held[-1].data["rule"] == "machine-mail"  # counted in the daily report with held mail


async def test_released_machine_mail_opens_a_ticket_without_making_the_list_a_participant(desk):
    # Its To/Cc name the list: a staff reply to participants would go to all its members.
    held = await deliver(desk, ctx, fixture("mailing_list.eml"))
    assert held.kind == Kind.HELD
    assert await inbound.requeue(desk, [held.mail_id], release=True) == 1
    outcome = await take_stored(desk, ctx, held.mail_id)
    assert outcome.kind == Kind.OPENED and outcome.machine
    assert (await ticket_detail(desk, outcome.ticket_number)).participants == ["oliver@example.org"]


async def _queue_outbox(desk: Desk, ticket_number: int, message_id: str) -> int:
    async with desk.db.transaction() as session:
        ticket_id = await session.scalar(select(Ticket.id).where(Ticket.number == ticket_number))
        row = OutboxMail(ticket_id=ticket_id, kind="ack", rfc822_message_id=message_id,
                         mail_from="support@example.test", recipients=["alice@customer.test"],
                         content=b"Subject: ack\r\n\r\nthanks\r\n", status=OutboxStatus.SENT,
                         next_attempt_at=desk.clock(), created_at=desk.clock())
        session.add(row)
        await session.flush()
        return row.id


async def test_bounce_marks_our_outbound_mail_failed_and_tells_staff_without_a_ticket(desk):
    number = await open_alice_ticket(desk)
    outbox_id = await _queue_outbox(desk, number, "<t1000.ack1.ev6wghhzab5i3f55@example.test>")
    tickets_before = await count(desk, Ticket)
    outcome = await deliver(desk, ctx, fixture("pipeline_dsn_bounce.eml"))
    assert (outcome.kind, outcome.ticket_number) == (Kind.BOUNCE, number)
    assert await count(desk, Ticket) == tickets_before
    assert len(await messages_of(desk, number)) == 1
    async with desk.db.read() as session:
        outbox = await session.get(OutboxMail, outbox_id)
    assert outbox.status == OutboxStatus.FAILED and "5.1.1" in (outbox.last_error or "")
    bounced = await events_of_type(desk, EventType.MAIL_BOUNCED)
    assert len(bounced) == 1 and bounced[0].data["outbox_id"] == outbox_id
    assert bounced[0].data["failed"][0]["recipient"] == "alice@customer.test"
    row = await stored_row(desk, outcome.mail_id)
    assert row.status == InboundStatus.PROCESSED and row.ticket_id is not None


async def test_bounce_for_mail_we_never_sent_opens_no_ticket(desk):
    outcome = await deliver(desk, ctx, fixture("dsn_bounce.eml"))
    assert outcome.kind == Kind.BOUNCE and outcome.ticket_number is None
    assert await count(desk, Ticket) == 0
    assert "not found" in outcome.detail


# --- duplicates and crash replay ------------------------------------------------------------------

async def test_same_mail_delivered_twice_gives_one_message(desk):
    first = await deliver(desk, ctx, fixture("pipeline_new_request.eml"))
    again = await deliver(desk, ctx, b"Received: from backup-mx.example by mx.example\r\n"
                          + fixture("pipeline_new_request.eml"))  # the same mail by another route
    assert again.kind == Kind.DUPLICATE and again.ticket_number == first.ticket_number
    assert await count(desk, Message) == 1 and await count(desk, Ticket) == 1
    row = await stored_row(desk, again.mail_id)
    assert row.status == InboundStatus.PROCESSED and row.reason == f"duplicate of {first.mail_id}"


async def test_a_different_mail_with_the_same_message_id_is_its_own_message(desk):
    first = await deliver(desk, ctx, fixture("pipeline_new_request.eml"))
    other = await deliver(desk, ctx, fixture("pipeline_new_request.eml").replace(b"Hello,", b"Hello again,"))
    assert other.kind in (Kind.OPENED, Kind.ADDED) and "Message-ID is already on another" in other.detail
    assert await count(desk, Message) == 2
    assert first.mail_id != other.mail_id


async def test_same_bytes_without_message_id_twice_gives_one_message(desk):
    raw = simple_mail("erin@customer.test", "No id here")
    first = await deliver(desk, ctx, raw)
    again = await deliver(desk, ctx, raw)
    assert (first.kind, again.kind) == (Kind.OPENED, Kind.DUPLICATE)
    assert await count(desk, Message) == 1


async def test_replay_after_a_crash_between_ticket_and_status_update_adds_nothing(desk, clock):
    first = await deliver(desk, ctx, fixture("pipeline_new_request.eml"))
    # The crash: the ticket service committed, the row's status update never happened.
    async with desk.db.transaction() as session:
        await session.execute(update(InboundMail).where(InboundMail.id == first.mail_id)
                              .values(status=InboundStatus.RECEIVED, ticket_id=None))
    clock.advance(minutes=3)  # on SQLite the dead processor's claim lease runs out first
    replay = await take_stored(desk, ctx, first.mail_id)
    assert replay.kind == Kind.ADDED and replay.ticket_number == first.ticket_number
    assert await count(desk, Message) == 1 and await count(desk, Ticket) == 1
    assert (await stored_row(desk, first.mail_id)).status == InboundStatus.PROCESSED


async def test_processing_a_settled_mail_again_is_skipped(desk):
    first = await deliver(desk, ctx, fixture("pipeline_new_request.eml"))
    assert (await take_stored(desk, ctx, first.mail_id)).kind == Kind.SKIPPED
    assert await count(desk, Message) == 1


async def test_two_workers_at_once_process_each_mail_exactly_once(desk):
    ids = [(await store_received(desk, simple_mail(f"c{i}@customer.test", f"Question {i}"), source="test")).id
           for i in range(6)]
    results = await asyncio.gather(*(take_stored(desk, ctx, i) for i in ids for _ in range(2)))
    assert sorted(r.kind for r in results).count(Kind.OPENED) == 6
    assert await count(desk, Ticket) == 6 and await count(desk, Message) == 6


# --- holds: blocked senders, rate limit, oversize --------------------------------------------------

async def test_rate_limit_holds_the_sixth_new_ticket_in_ten_minutes(desk, clock):
    for i in range(5):
        assert (await deliver(desk, ctx, simple_mail("flood@customer.test", f"Issue {i}"))).kind == Kind.OPENED
        clock.advance(minutes=1)
    sixth = await deliver(desk, ctx, simple_mail("flood@customer.test", "Issue 6"))
    assert sixth.kind == Kind.HELD and "rate-limit" in sixth.detail
    row = await stored_row(desk, sixth.mail_id)
    assert row.status == InboundStatus.HELD and "limit 5" in (row.reason or "")
    assert len(await events_of_type(desk, EventType.MAIL_HELD)) == 1
    # A reply to one of their tickets still threads, and after the window new tickets open again.
    tagged = await deliver(desk, ctx, simple_mail("flood@customer.test", "Re: [#1000] Issue 0"))
    assert (tagged.kind, tagged.ticket_number) == (Kind.ADDED, 1000)
    clock.advance(minutes=10)
    assert (await deliver(desk, ctx, simple_mail("flood@customer.test", "Issue 7"))).kind == Kind.OPENED


async def test_held_mail_asked_again_gets_the_same_answer_and_a_release_lets_it_through(desk, clock):
    limited = make_context(new_tickets_per_sender=1)
    await deliver(desk, limited, simple_mail("x@customer.test", "One"))
    held = await deliver(desk, limited, simple_mail("x@customer.test", "Two"))
    assert held.kind == Kind.HELD
    clock.advance(minutes=11)
    # Limits count by arrival: it came within a minute of the first, so asking again holds it again
    # (the worker lets it through by itself once the window has passed, see below).
    assert await inbound.requeue(desk, [held.mail_id]) == 1
    assert (await take_stored(desk, limited, held.mail_id)).kind == Kind.HELD
    assert await inbound.requeue(desk, [held.mail_id], release=True) == 1
    assert (await take_stored(desk, limited, held.mail_id)).kind == Kind.OPENED


async def test_mail_from_a_blocked_sender_is_held_not_dropped(desk):
    await block_sender(desk, "spammer@evil.test", STAFF, "spam")
    outcome = await deliver(desk, ctx, simple_mail("Spammer <SPAMMER@evil.test>", "Buy now",
                                                   extra="Precedence: bulk\r\n"))
    assert outcome.kind == Kind.HELD and "blocked" in outcome.detail
    assert await count(desk, Ticket) == 0
    assert (await stored_row(desk, outcome.mail_id)).status == InboundStatus.HELD


async def test_oversize_mail_is_held_with_its_size(desk):
    small = make_context(max_message_bytes=2000)
    outcome = await deliver(desk, small, simple_mail("big@customer.test", "Huge", "x" * 5000))
    assert outcome.kind == Kind.HELD and "oversize" in outcome.detail and "2000" in outcome.detail


async def test_an_operators_release_is_honoured_by_whichever_worker_takes_the_mail(desk):
    # The running service's worker may take a requeued row before the CLI does: the release travels
    # with the row, so the hold rules are skipped there too (and not for mail requeued plainly).
    small = make_context(max_message_bytes=2000)
    outcome = await deliver(desk, small, simple_mail("big@customer.test", "Huge", "x" * 5000))
    assert outcome.kind == Kind.HELD
    assert await inbound.requeue(desk, [outcome.mail_id]) == 1
    assert (await InboundWorker(Intake(desk, small)).drain()) == 1
    assert (await stored_row(desk, outcome.mail_id)).status == InboundStatus.HELD  # held again

    assert await inbound.requeue(desk, [outcome.mail_id], release=True) == 1
    assert (await InboundWorker(Intake(desk, small)).drain()) == 1
    row = await stored_row(desk, outcome.mail_id)
    assert row.status == InboundStatus.PROCESSED and row.ticket_id is not None


# --- quarantine and retry --------------------------------------------------------------------------

async def test_mail_that_makes_processing_raise_is_quarantined_and_the_next_is_processed(desk, monkeypatch):
    break_ticket_creation(monkeypatch, "poison")
    bad = await store_received(desk, simple_mail("p@customer.test", "poison pill"), source="test")
    good = await store_received(desk, simple_mail("g@customer.test", "normal question"), source="test")
    worker = InboundWorker(Intake(desk, ctx))
    assert await worker.drain() == 2
    bad_row, good_row = await stored_row(desk, bad.id), await stored_row(desk, good.id)
    assert bad_row.status == InboundStatus.QUARANTINED
    assert bad_row.reason == "RuntimeError: simulated bug in ticket creation"
    assert good_row.status == InboundStatus.PROCESSED and good_row.ticket_id is not None
    assert len(await events_of_type(desk, EventType.MAIL_QUARANTINED)) == 1

    monkeypatch.undo()  # the fix is deployed
    assert await inbound.requeue(desk, [bad.id]) == 1
    retried = await take_stored(desk, ctx, bad.id)
    assert retried.kind == Kind.OPENED
    assert (await stored_row(desk, bad.id)).status == InboundStatus.PROCESSED
    assert await count(desk, Ticket) == 2


# --- routing ---------------------------------------------------------------------------------------

async def test_keywords_set_category_and_priority_of_new_tickets(desk):
    refund = await deliver(desk, ctx, fixture("pipeline_new_request.eml"))
    outage = await deliver(desk, ctx, fixture("pipeline_outage.eml"))
    plain = await deliver(desk, ctx, simple_mail("f@customer.test", "A question", "I downloaded the app."))
    got = {o.ticket_number: await ticket_detail(desk, o.ticket_number) for o in (refund, outage, plain)}
    assert (got[refund.ticket_number].category, got[refund.ticket_number].priority) == ("billing", "medium")
    assert (got[outage.ticket_number].category, got[outage.ticket_number].priority) == ("technical", "high")
    assert got[plain.ticket_number].category is None  # "downloaded" is not the word "down"


async def test_the_address_written_to_sets_the_category(desk):
    raw = simple_mail("g@customer.test", "Question about my plan").replace(
        b"To: support@example.test", b"To: billing@example.test")
    outcome = await deliver(desk, ctx, raw, envelope_to=("billing@example.test",))
    assert (await ticket_detail(desk, outcome.ticket_number)).category == "billing"


async def test_the_address_a_bcc_reached_sets_the_category_through_delivered_to(desk):
    # Read over IMAP there is no envelope: Delivered-To says billing@ was the address reached.
    raw = simple_mail("h@customer.test", "Question about my plan", extra="Delivered-To: billing@example.test\r\n"
                      ).replace(b"To: support@example.test", b"To: h-team@customer.test")
    outcome = await deliver(desk, ctx, raw)
    assert (await ticket_detail(desk, outcome.ticket_number)).category == "billing"


async def test_keywords_do_not_change_an_existing_ticket(desk):
    number = await open_alice_ticket(desk)
    await deliver(desk, ctx, simple_mail("alice@customer.test", f"Re: [#{number}] x", "The site is down!"))
    detail = await ticket_detail(desk, number)
    assert (detail.category, detail.priority) == ("billing", Priority.MEDIUM.value)


# --- the worker ------------------------------------------------------------------------------------

async def test_worker_processes_what_was_waiting_at_start_and_what_arrives_later(desk):
    leftover = await store_received(desk, simple_mail("a1@customer.test", "Left by a crash"), source="test")
    seen: list[int] = []
    arrived = asyncio.Event()

    def note(outcome: Outcome) -> None:
        seen.append(outcome.mail_id)
        if len(seen) == 2:
            arrived.set()

    worker = InboundWorker(Intake(desk, ctx), poll_seconds=30, on_outcome=note)
    await worker.start()
    try:
        later = await store_received(desk, simple_mail("a2@customer.test", "Arrived later"), source="test")
        worker.wake()
        await asyncio.wait_for(arrived.wait(), 10)
    finally:
        await worker.stop()
    assert seen == [leftover.id, later.id]
    assert await count(desk, Ticket) == 2


async def _drain_newest_first(desk: Desk) -> int:
    settled = 0
    for mail_id in reversed(await inbound.pending_ids(desk)):
        settled += (await take_stored(desk, ctx, mail_id)).kind != Kind.SKIPPED
    return settled


async def test_two_processes_sharing_a_database_never_process_the_same_mail(desk, tmp_path, clock):
    """Two desks (two engines, as `supportbot run` and `supportbot ingest` would have) drain one queue.

    PostgreSQL claims rows with FOR NO KEY UPDATE SKIP LOCKED; SQLite with a lease per row.
    """
    other = Desk(Database(desk.db.url.render_as_string(hide_password=False)), desk.settings,
                 AttachmentStore(tmp_path / "other-files"), clock)
    try:
        for i in range(30):
            raw = simple_mail(f"c{i}@customer.test", f"Question {i}", message_id=f"q{i}@customer.test")
            await store_received(desk, raw, source="test")
        # The same mail stored twice as well: the copies must not become two tickets either.
        for i in range(5):
            raw = simple_mail(f"c{i}@customer.test", f"Question {i}", message_id=f"q{i}@customer.test")
            await store_received(other, raw, source="test")
        # One process walks the queue from the end, so copies of one mail meet in flight.
        settled = await asyncio.gather(InboundWorker(Intake(desk, ctx)).drain(), _drain_newest_first(other))
        # Rows another process held are left for its next pass; together all 35 are settled.
        settled_later = await InboundWorker(Intake(desk, ctx)).drain()
        assert sum(settled) + settled_later == 35
        assert await count(desk, Ticket) == 30 and await count(desk, Message) == 30
        assert await count(desk, InboundMail, InboundMail.status == InboundStatus.RECEIVED) == 0
    finally:
        await other.close()


async def test_delay_notification_does_not_mark_our_mail_failed(desk):
    number = await open_alice_ticket(desk)
    outbox_id = await _queue_outbox(desk, number, "<t1000.ack1.ev6wghhzab5i3f55@example.test>")
    delayed = fixture("pipeline_dsn_bounce.eml").replace(b"Action: failed", b"Action: delayed").replace(
        b"Status: 5.1.1", b"Status: 4.4.1").replace(b"<dsn-1@", b"<dsn-2@")
    outcome = await deliver(desk, ctx, delayed)
    assert outcome.kind == Kind.BOUNCE and "nothing failed" in outcome.detail
    async with desk.db.read() as session:
        assert (await session.get(OutboxMail, outbox_id)).status == OutboxStatus.SENT
    assert await events_of_type(desk, EventType.MAIL_BOUNCED) == []


async def test_attachments_are_kept_and_oversized_ones_are_listed_as_held_back(desk):
    kept = await deliver(desk, ctx, fixture("attachment_only.eml"))
    detail = await ticket_detail(desk, kept.ticket_number)
    (attachment,) = detail.messages[0].attachments
    assert attachment.filename == "invoice-0042.pdf" and attachment.sha256 and not attachment.held_back
    assert await desk.files.get(attachment.sha256)

    tiny = make_context(max_attachment_bytes=10)
    raw = fixture("attachment_only.eml").replace(b"Message-ID: <", b"Message-ID: <again-")
    held = await deliver(desk, tiny, raw)
    assert held.kind in (Kind.OPENED, Kind.ADDED)  # the mail still becomes a message
    (listed,) = [a for m in (await ticket_detail(desk, held.ticket_number)).messages
                 if m.message_id and "again-" in m.message_id for a in m.attachments]
    assert listed.held_back and listed.sha256 is None and listed.size == attachment.size


# --- the rules chain on its own ----------------------------------------------------------------------

@pytest.mark.parametrize(("headers", "envelope_from", "rule"), [
    ("Auto-Submitted: auto-generated\r\n", None, "auto-submitted"),
    ("Auto-Submitted: no\r\n", None, None),
    ("Precedence: bulk\r\n", None, "precedence"),
    ("Precedence: junk\r\n", None, "precedence"),
    ("Precedence: first-class\r\n", None, None),
    ("X-Autoreply: yes\r\n", None, "auto-reply-headers"),
    ("X-Autorespond: yes\r\n", None, "auto-reply-headers"),
    ("X-Auto-Response-Suppress: All\r\n", None, "auto-reply-headers"),
    ("List-Id: <team.lists.example.org>\r\n", None, "mailing-list"),
    ("Return-Path: <>\r\n", None, "null-return-path"),
    ("", "<>", "null-return-path"),
    ("X-Loop: support@example.test\r\n", None, "own-loop"),
    ("X-Loop: helpdesk@other.test\r\n", None, None),
    ("X-Loop: Support Desk <support@example.test>\r\n", None, "own-loop"),
    ("Auto-Submitted: no (a person wrote this)\r\n", None, None),
    ("Auto-Submitted: auto-replied (vacation)\r\n", None, "auto-submitted"),
    ("Precedence: bulk; x-list=yes\r\n", None, "precedence"),
    ("", None, None),
])
async def test_machine_mail_rules(headers, envelope_from, rule):
    from core.intake.rules import RuleContext, evaluate
    from mail_gateway.parsing import parse_mail

    mail = parse_mail(simple_mail("someone@customer.test", "Hi", extra=headers))
    rules_ctx = RuleContext(desk=None, uow=None, settings=ctx, sender=None,  # type: ignore[arg-type]
                            envelope_from=envelope_from, raw_size=100, new_ticket=False,
                            received_at=datetime(2026, 3, 2, tzinfo=UTC))
    decision = await evaluate(mail, rules_ctx)
    assert decision.stop is None
    assert (decision.machine.rule if decision.machine else None) == rule


async def test_mail_from_mailer_daemon_is_machine_mail(desk):
    outcome = await deliver(desk, ctx, simple_mail("MAILER-DAEMON@mx.other.test", "Warning: message delayed"))
    assert outcome.machine and "mailer-daemon" in outcome.detail.lower()


async def test_mail_held_by_the_rate_limit_goes_through_by_itself_once_its_window_passes(desk, clock):
    for i in range(5):
        await deliver(desk, ctx, simple_mail("burst@customer.test", f"Question {i}"))
    sixth = await deliver(desk, ctx, simple_mail("burst@customer.test", "Question 6"))
    assert sixth.kind == Kind.HELD
    worker = InboundWorker(Intake(desk, ctx))
    assert await worker.drain() == 0  # still inside the window: it stays held
    assert (await stored_row(desk, sixth.mail_id)).status == InboundStatus.HELD
    clock.advance(minutes=11)
    assert await worker.drain() == 1
    row = await stored_row(desk, sixth.mail_id)
    assert row.status == InboundStatus.PROCESSED and row.ticket_id is not None


async def test_a_backlog_read_at_once_is_limited_by_when_its_mail_arrived_not_by_when_it_is_read(desk, clock):
    """A mailbox read after a day of downtime: one sender's six requests arrived an hour apart, so
    none is a flood; six sent within ten minutes still are, however late they are read."""
    from core.inbound import RawMail, store_raw_many
    from mail_gateway.store import content_digest, message_id_of
    from tests.mail.pipeline_support import take_batch

    def raw(sender: str, i: int, minutes: int) -> RawMail:
        mail = simple_mail(sender, f"Request {i}", message_id=f"{sender.partition('@')[0]}.{i}@customer.test")
        return RawMail(mail, message_id=message_id_of(mail), content_digest=content_digest(mail),
                       received_at=clock() - timedelta(hours=24) + timedelta(minutes=minutes))

    spread = [raw("calm@customer.test", i, 60 * i) for i in range(6)]
    burst = [raw("burst@customer.test", i, i) for i in range(6)]
    stored = await store_raw_many(desk, spread + burst, source="imap:test", mailbox="test")
    outcomes = await take_batch(desk, ctx, [s.id for s in stored])
    assert [o.kind for o in outcomes[:6]] == [Kind.OPENED] * 6
    assert [o.kind for o in outcomes[6:]] == [Kind.OPENED] * 5 + [Kind.HELD]
