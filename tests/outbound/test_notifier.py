"""The notifier: which events become mail, to whom, and how they thread; delivered to a real sink."""

from __future__ import annotations

from sqlalchemy import select

from core.desk import Desk
from core.enums import OutboxStatus, Status
from core.models import Message, OutboxMail
from core.outbox import list_mail
from core.services import (
    ContactRef,
    MailContent,
    NewAttachment,
    StaffRef,
    add_customer_message,
    block_sender,
    open_ticket,
    reply,
    set_status,
)
from core.tokens import FOOTER_TOKEN, Signer
from tests.conftest import FixedClock
from tests.outbound.conftest import SECRET, SUPPORT, MailOut, Sink

ALICE = ContactRef("alice@example.org", "Alice Liddell")
BOB = StaffRef("Bob", discord_id=42)


async def open_from_alice(desk: Desk, subject: str = "Printer on fire", **content: object) -> int:
    mail = MailContent(text="My printer is on fire.\nPlease help.", subject=subject,
                       message_id="<c1@example.org>", **content)  # type: ignore[arg-type]
    change = await open_ticket(desk, ALICE, mail)
    return change.ticket.number


async def test_new_ticket_gets_an_acknowledgement_with_number_and_expectation_but_none_of_the_customers_text(
        desk: Desk, mail_out: MailOut, sink: Sink) -> None:
    number = await open_from_alice(desk)
    await mail_out.flush()
    assert len(sink.received) == 1
    got = sink.received[0]
    assert got.rcpt_tos == ["alice@example.org"] and got.mail_from == SUPPORT
    msg = got.message
    assert msg["Subject"] == f"Re: [#{number}] Printer on fire"
    assert msg["In-Reply-To"] == "<c1@example.org>"
    assert msg["Auto-Submitted"] == "auto-replied"
    text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    # The ack goes wherever the mail claims to be from: repeating its text would relay a stranger's
    # words (and links) through us. Only the subject comes back.
    assert f"#{number}" in text and "My printer is on fire." not in text
    assert "get back to you" in text
    assert Signer(SECRET, "example.test").ticket_from_message_id(msg["Message-ID"]) == number


async def test_machine_mail_gets_no_acknowledgement(desk: Desk, mail_out: MailOut, sink: Sink) -> None:
    await open_from_alice(desk, subject="Out of office", is_machine=True)
    await mail_out.flush()
    assert sink.received == [] and await list_mail(desk) == []


async def test_blocked_contact_gets_no_mail_at_all(desk: Desk, mail_out: MailOut, sink: Sink) -> None:
    await block_sender(desk, ALICE.email, BOB)
    number = await open_from_alice(desk)
    await reply(desk, number, BOB, "We will not answer you.")
    await set_status(desk, number, Status.RESOLVED, BOB)
    await mail_out.flush()
    assert sink.received == [] and await list_mail(desk) == []


async def test_our_own_support_address_is_never_mailed(desk: Desk, mail_out: MailOut, sink: Sink) -> None:
    await open_ticket(desk, ContactRef("support+1001-aaaaaaaaaaaaaaaa@example.test"),
                      MailContent(text="loop?", subject="loop"))
    await mail_out.flush()
    assert sink.received == []


async def test_staff_reply_goes_to_requester_and_cc_with_attachments(
        desk: Desk, mail_out: MailOut, sink: Sink) -> None:
    number = await open_from_alice(desk)
    await add_customer_message(desk, number, ALICE, MailContent(text="more", message_id="<c2@example.org>"),
                               cc=[ContactRef("carol@example.org", "Carol")])
    pdf = b"%PDF-1.4 manual" * 100
    await reply(desk, number, BOB, "Unplug it.\n\nThen call us.",
                attachments=[NewAttachment("manual.pdf", "application/pdf", pdf)])
    await mail_out.flush()
    replies = [r for r in sink.received if r.message["Auto-Submitted"] is None]
    assert len(replies) == 1
    got = replies[0]
    assert sorted(got.rcpt_tos) == ["alice@example.org", "carol@example.org"]
    msg = got.message
    assert msg["To"] == "Alice Liddell <alice@example.org>" and msg["Cc"] == "Carol <carol@example.org>"
    assert msg.get_content_type() == "multipart/mixed"
    (attachment,) = list(msg.iter_attachments())
    assert attachment.get_filename() == "manual.pdf" and attachment.get_payload(decode=True) == pdf
    assert "Unplug it." in msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "Bob" in msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    async with desk.db.read() as session:
        stored = await session.scalar(select(Message.message_id).where(Message.body_text.startswith("Unplug")))
    assert stored == msg["Message-ID"], "the reply's Message-ID is kept on the message for threading"


async def test_replies_thread_onto_the_customers_mail_over_several_rounds(
        desk: Desk, mail_out: MailOut, sink: Sink, clock: FixedClock) -> None:
    number = await open_from_alice(desk)
    await reply(desk, number, BOB, "First answer")
    await mail_out.flush()
    first = next(r.message for r in sink.received if "First answer" in r.raw.decode())
    assert first["In-Reply-To"] == "<c1@example.org>" and first["References"] == "<c1@example.org>"
    # Alice answers our reply, as a mail client does: References = ours + the one she replies to.
    clock.advance(minutes=5)
    await add_customer_message(desk, number, ALICE, MailContent(
        text="Still burning", message_id="<c2@example.org>", in_reply_to=first["Message-ID"],
        references=f"<c1@example.org> {first['Message-ID']}"))
    await reply(desk, number, BOB, "Second answer")
    await mail_out.flush()
    second = next(r.message for r in sink.received if "Second answer" in r.raw.decode())
    assert second["In-Reply-To"] == "<c2@example.org>"
    assert second["References"].split() == ["<c1@example.org>", first["Message-ID"], "<c2@example.org>"]
    assert second["Message-ID"] != first["Message-ID"]
    subjects = {r.message["Subject"] for r in sink.received}
    assert subjects == {f"Re: [#{number}] Printer on fire"}, "never Re: Re:"
    tokens = {FOOTER_TOKEN.search(r.message.get_body(("plain",)).get_content()).group(1)  # type: ignore[union-attr]
              for r in sink.received}
    assert tokens == {Signer(SECRET, "example.test").ticket_token(number)}


async def test_resolved_and_closed_tickets_tell_the_customer(
        desk: Desk, mail_out: MailOut, sink: Sink) -> None:
    number = await open_from_alice(desk)
    await mail_out.flush()
    await set_status(desk, number, Status.RESOLVED, BOB)
    await set_status(desk, number, Status.CLOSED, BOB)
    await mail_out.flush()
    kinds = [m.kind for m in sorted(await list_mail(desk), key=lambda m: m.id)]
    assert kinds == ["ack", "resolved", "closed"]
    resolved = sink.received[1].message
    assert "reply to this mail" in resolved.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert resolved["In-Reply-To"] == "<c1@example.org>"
    assert resolved["Auto-Submitted"] == "auto-replied"


async def test_a_reply_that_resolves_sends_only_the_reply(desk: Desk, mail_out: MailOut, sink: Sink) -> None:
    number = await open_from_alice(desk)
    await reply(desk, number, BOB, "Fixed it", status=Status.RESOLVED)
    await mail_out.flush()
    assert sorted(m.kind for m in await list_mail(desk)) == ["ack", "reply"]


async def test_automatic_mail_is_capped_per_recipient_but_replies_are_not(
        desk: Desk, mail_out: MailOut, sink: Sink, clock: FixedClock) -> None:
    # The fixture allows 3 automatic mails per recipient per hour.
    numbers = [await open_from_alice(desk, subject=f"Problem {i}") for i in range(5)]
    for n in numbers:
        await reply(desk, n, BOB, f"Answer to {n}")
    await mail_out.flush()
    mails = await list_mail(desk, limit=100)
    assert sum(1 for m in mails if m.kind == "ack") == 3
    assert sum(1 for m in mails if m.kind == "reply") == 5
    assert len(sink.received) == 8
    clock.advance(minutes=61)
    await open_from_alice(desk, subject="Next hour")
    await mail_out.flush()
    assert sum(1 for m in await list_mail(desk, limit=100) if m.kind == "ack") == 4


async def test_each_event_is_queued_once_even_when_replayed(desk: Desk, mail_out: MailOut) -> None:
    number = await open_from_alice(desk)
    await reply(desk, number, BOB, "Hello")
    assert await mail_out.notify() > 0
    assert await mail_out.notify() == 0
    async with desk.db.transaction() as session:  # an operator resets the cursor by hand
        from core.models import ConsumerCursor

        cursor = await session.get(ConsumerCursor, "mail-notifier")
        assert cursor is not None
        cursor.position = 0
    await mail_out.notify()
    async with desk.db.read() as session:
        rows = list(await session.scalars(select(OutboxMail)))
    assert sorted(r.kind for r in rows) == ["ack", "reply"]
    assert {r.status for r in rows} == {OutboxStatus.QUEUED}


async def test_acknowledgement_states_the_first_response_target_of_the_priority(
        desk: Desk, mail_out: MailOut, sink: Sink) -> None:
    from datetime import timedelta

    from core.enums import Priority
    from core.notifier import Notifier, expectation_from_sla
    from core.sla.policy import SlaPolicy, SlaSettings
    from tests.outbound.conftest import make_composer

    sla = SlaSettings(policies={Priority.URGENT: SlaPolicy(first_response=timedelta(hours=4), business_hours=False)})
    mail_out.notifier = Notifier(desk, make_composer(), support_addresses=[SUPPORT], automatic_per_hour=10,
                                 expectation=expectation_from_sla(sla))
    await open_ticket(desk, ALICE, MailContent(text="down!", subject="Site down"), priority=Priority.URGENT)
    await open_ticket(desk, ALICE, MailContent(text="typo", subject="Typo"), priority=Priority.LOW)
    await mail_out.flush()
    texts = {r.message["Subject"]: r.message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
             for r in sink.received}
    (urgent,) = [t for s, t in texts.items() if "Site down" in s]
    (low,) = [t for s, t in texts.items() if "Typo" in s]
    assert "We aim to send you a first answer within 4 hours." in urgent
    assert "as soon as possible" in low and "within" not in low


async def test_a_mail_that_cannot_be_built_is_reported_and_does_not_block_the_rest(
        desk: Desk, mail_out: MailOut, sink: Sink, tmp_path: object) -> None:
    from pathlib import Path

    from core.events import EventType
    from core.models import Event
    from core.notifier import Notifier
    from supportbot.templating import template_environment
    from tests.outbound.conftest import make_composer

    assert isinstance(tmp_path, Path)
    (tmp_path / "mine" / "email").mkdir(parents=True)
    (tmp_path / "mine" / "email" / "acknowledgement.txt.j2").write_text("{{ no_such_variable }}")
    broken = make_composer(templates=template_environment(tmp_path / "mine"))
    mail_out.notifier = Notifier(desk, broken, support_addresses=[SUPPORT], automatic_per_hour=10)
    number = await open_from_alice(desk)
    await reply(desk, number, BOB, "The reply still goes out")
    await mail_out.flush()
    assert [m.kind for m in await list_mail(desk)] == ["reply"]
    assert len(sink.received) == 1
    async with desk.db.read() as session:
        (failed,) = list(await session.scalars(select(Event).where(Event.type == EventType.OUTBOUND_FAILED)))
    assert failed.data["kind"] == "ack" and "no_such_variable" in failed.data["error"]


async def test_a_pending_reminder_event_mails_the_customer_once_while_still_pending(
        desk: Desk, mail_out: MailOut, sink: Sink) -> None:
    from core.event_types import PendingReminderDue
    from core.models import Ticket

    number = await open_from_alice(desk)
    await reply(desk, number, BOB, "Could you send a photo?", status=Status.PENDING)
    async with desk.unit_of_work() as uow:
        ticket_id = await uow.session.scalar(select(Ticket.id).where(Ticket.number == number))
        uow.record(PendingReminderDue(ticket_id=ticket_id, ticket=number, resolve_at="2026-03-09T09:00:00+00:00"),
                   at=desk.clock())
    await mail_out.flush()
    reminder = [r.message for r in sink.received if "waiting for your answer" in
                r.message.get_body(("plain",)).get_content()]  # type: ignore[union-attr]
    assert len(reminder) == 1
    assert "09 March 2026" in reminder[0].get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert reminder[0]["Auto-Submitted"] == "auto-replied"
    # Answered in the meantime: a late reminder event sends nothing.
    await add_customer_message(desk, number, ALICE, MailContent(text="here it is"))
    async with desk.unit_of_work() as uow:
        uow.record(PendingReminderDue(ticket_id=ticket_id, ticket=number, resolve_at=None), at=desk.clock())
    await mail_out.flush()
    assert sorted(m.kind for m in await list_mail(desk)) == ["ack", "reminder", "reply"]


async def test_a_team_that_wants_it_gets_the_customers_text_in_the_acknowledgement(desk: Desk, sink: Sink) -> None:
    from core.events import consume_once
    from core.notifier import CONSUMER, Notifier
    from tests.outbound.conftest import make_composer

    number = await open_from_alice(desk)
    notifier = Notifier(desk, make_composer(), support_addresses=[SUPPORT], automatic_per_hour=3,
                        quote_customer=True)
    await consume_once(desk.db, CONSUMER, notifier.handle, clock=desk.clock)
    [ack] = await list_mail(desk)
    assert b"My printer is on fire." in ack.content and f"#{number}".encode() in ack.content


async def test_forged_mail_in_plus_variants_of_one_mailbox_gets_the_mailbox_cap_not_one_ack_each(
        desk: Desk, mail_out: MailOut) -> None:
    """The backscatter attack: 100 mails forged as victim+1@, victim+2@, Victim+3@ … The fixture's cap
    is 3 automatic mails per mailbox per hour; before, every variant counted as its own mailbox."""
    from core.services import ContactRef

    for i in range(100):
        forged = ContactRef(f"{'V' if i % 2 else 'v'}ictim+{i}@example.net")
        await open_ticket(desk, forged, MailContent(text="Click http://attacker.test/x", subject=f"Offer {i}"))
    await mail_out.notify()
    acks = [m for m in await list_mail(desk, limit=200) if m.kind == "ack"]
    assert len(acks) == 3
    assert all(b"attacker.test" not in m.content for m in acks)  # no text of theirs goes out


async def test_automatic_mail_in_all_is_capped_per_hour(desk: Desk) -> None:
    from core.events import consume_once
    from core.notifier import CONSUMER, Notifier
    from core.services import ContactRef
    from tests.outbound.conftest import make_composer

    for i in range(12):
        await open_ticket(desk, ContactRef(f"sender{i}@example.net"), MailContent(text="Hi", subject=f"Hi {i}"))
    notifier = Notifier(desk, make_composer(), support_addresses=[SUPPORT], automatic_per_hour=3,
                        automatic_total_per_hour=10)
    await consume_once(desk.db, CONSUMER, notifier.handle, clock=desk.clock)
    assert len([m for m in await list_mail(desk, limit=100) if m.kind == "ack"]) == 10


async def test_staff_reply_never_mails_a_dangerous_file_and_the_log_says_so(
        desk: Desk, mail_out: MailOut, sink: Sink, caplog) -> None:
    number = await open_from_alice(desk)
    pdf = b"%PDF-1.4 manual" * 100
    await reply(desk, number, BOB, "Run this fix.", attachments=[
        NewAttachment("fix.exe", "application/octet-stream", b"MZ\x90\x00" + bytes(64)),
        NewAttachment("readme.txt", "text/plain", b"MZ\x90\x00" + bytes(64)),  # an executable by another name
        NewAttachment("manual.pdf", "application/pdf", pdf),
    ])
    with caplog.at_level("WARNING", logger="core.notifier"):
        await mail_out.flush()
    (got,) = [r for r in sink.received if r.message["Auto-Submitted"] is None]
    assert [a.get_filename() for a in got.message.iter_attachments()] == ["manual.pdf"]
    warned = [r.getMessage() for r in caplog.records if r.name == "core.notifier"]
    assert any("'fix.exe'" in line and "executable" in line and "never mailed" in line for line in warned)
    assert any("'readme.txt'" in line for line in warned)


async def test_a_backlog_read_at_once_gets_the_acknowledgements_live_delivery_would(
        desk: Desk, mail_out: MailOut, clock: FixedClock) -> None:
    """Twelve requests from one customer that arrived an hour apart, read in one go after downtime:
    the per-mailbox cap (3 an hour here) counts them by arrival, so each gets its acknowledgement,
    as it would have live; twelve that arrived within the hour still get three."""
    from datetime import timedelta

    from core.services import ContactRef

    start = clock() - timedelta(hours=24)
    for i in range(12):
        await open_ticket(desk, ContactRef("patient@example.net"),
                          MailContent(text="Hi", subject=f"Spread {i}", received_at=start + timedelta(hours=i)))
        await open_ticket(desk, ContactRef("burst@example.net"),
                          MailContent(text="Hi", subject=f"Burst {i}", received_at=start + timedelta(minutes=i)))
    await mail_out.notify()
    acks = [m for m in await list_mail(desk, limit=100) if m.kind == "ack"]
    assert sum("patient@example.net" in m.recipients for m in acks) == 12
    assert sum("burst@example.net" in m.recipients for m in acks) == 3
