"""The outbox sender against real aiosmtpd relays: outages, 4xx, 5xx, ordering, TLS and AUTH."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from sqlalchemy import select

from core.desk import Desk
from core.enums import OutboxStatus
from core.events import EventType
from core.models import Event
from core.notifier import Notifier
from core.outbox import RetryPolicy, list_mail, retry
from core.services import ContactRef, MailContent, StaffRef, open_ticket, reply
from mail_gateway.outbound.maildir import MaildirTransport
from mail_gateway.outbound.sender import OutboxSender
from mail_gateway.outbound.smtp import RelaySettings, SmtpTransport
from tests.conftest import FixedClock
from tests.kit import eventually
from tests.outbound.conftest import (
    SUPPORT,
    MailOut,
    Sink,
    make_composer,
    password_check,
    relay_to,
    self_signed_certificate,
    server_tls_context,
)

BOB = StaffRef("Bob", discord_id=42)


def mail_out_via(desk: Desk, transport: SmtpTransport | MaildirTransport) -> MailOut:
    notifier = Notifier(desk, make_composer(), support_addresses=[SUPPORT], automatic_per_hour=100)
    return MailOut(desk, notifier, OutboxSender(desk, transport, RetryPolicy()))


async def tickets_with_replies(desk: Desk, tickets: int, replies: int) -> list[int]:
    numbers = []
    for t in range(tickets):
        change = await open_ticket(desk, ContactRef(f"customer{t}@example.org"),
                                   MailContent(text="help", subject=f"Problem {t}", message_id=f"<c{t}@example.org>"))
        numbers.append(change.ticket.number)
        for r in range(replies):
            await reply(desk, change.ticket.number, BOB, f"Answer {r} on ticket {change.ticket.number}")
    return numbers


def sent_order(sink: Sink) -> dict[str, list[str]]:
    """Per recipient, the bodies' first line in the order the relay accepted them."""
    order: dict[str, list[str]] = {}
    for got in sink.received:
        text = got.message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        first = next(line for line in text.splitlines()[1:] if line.strip())
        order.setdefault(got.rcpt_tos[0], []).append(first)
    return order


async def test_relay_down_for_hours_then_up_delivers_every_mail_once_in_order(
        desk: Desk, clock: FixedClock) -> None:
    relay = Sink()  # not started yet: connection refused
    out = mail_out_via(desk, relay_to(relay))
    await tickets_with_replies(desk, tickets=3, replies=3)
    await out.notify()
    for _ in range(6):  # six rounds of an outage, hours apart
        await out.sender.deliver_due()
        clock.advance(hours=1)
    waiting = await list_mail(desk, limit=100)
    assert len(waiting) == 12 and {m.status for m in waiting} == {OutboxStatus.QUEUED}
    firsts = [m for m in waiting if m.attempts > 0]
    assert len(firsts) == 3, "only the oldest mail of each ticket is tried while it waits"
    assert all(m.attempts == 6 and "cannot reach" in (m.last_error or "") for m in firsts)
    relay.start()
    try:
        for _ in range(10):
            await out.sender.deliver_due()
            clock.advance(hours=1)
        mails = await list_mail(desk, limit=100)
        assert {m.status for m in mails} == {OutboxStatus.SENT}
        ids = [r.message["Message-ID"] for r in relay.received]
        assert len(ids) == 12 and len(set(ids)) == 12, "each mail exactly once"
        assert set(ids) == {m.rfc822_message_id for m in mails}, "the Message-ID fixed at queue time"
        for customer, lines in sent_order(relay).items():
            assert lines[0].startswith("Hello"), customer  # the acknowledgement first
            assert [line.split(" on ")[0] for line in lines[1:]] == ["Answer 0", "Answer 1", "Answer 2"]
    finally:
        relay.stop()


async def test_retry_delays_grow_exponentially_with_jitter() -> None:
    import random
    from datetime import timedelta

    policy = RetryPolicy(initial=timedelta(seconds=60), maximum=timedelta(hours=1))
    rng = random.Random(1)
    delays = [policy.delay(n, rng).total_seconds() for n in range(1, 10)]
    for n, delay in enumerate(delays[:6]):
        assert 0.8 * 60 * 2**n <= delay <= 1.2 * 60 * 2**n
    assert max(delays) <= 1.2 * 3600 and delays[-1] >= 0.8 * 3600
    assert len({round(policy.delay(3).total_seconds(), 3) for _ in range(20)}) > 1, "jittered"


async def test_temporary_refusal_is_retried_later_and_then_delivered(
        desk: Desk, sink: Sink, clock: FixedClock) -> None:
    out = mail_out_via(desk, relay_to(sink))
    sink.handler.data_replies = ["451 4.3.0 try again later", "421 4.3.2 shutting down"]
    await tickets_with_replies(desk, tickets=1, replies=0)
    await out.flush()
    (mail,) = await list_mail(desk)
    assert mail.status == OutboxStatus.QUEUED and mail.last_error and "451" in mail.last_error
    assert mail.next_attempt_at > clock.now
    assert await out.sender.deliver_due() == 0, "not due before its backoff"
    for _ in range(3):
        clock.advance(hours=1)
        await out.sender.deliver_due()
    (mail,) = await list_mail(desk)
    assert mail.status == OutboxStatus.SENT and mail.attempts == 3 and len(sink.received) == 1


async def test_permanent_refusal_marks_the_mail_failed_and_records_an_event(
        desk: Desk, sink: Sink, clock: FixedClock) -> None:
    out = mail_out_via(desk, relay_to(sink))
    sink.handler.refuse_rcpt["customer0@example.org"] = "550 5.1.1 no such user"
    await tickets_with_replies(desk, tickets=1, replies=1)
    await out.flush()
    mails = sorted(await list_mail(desk), key=lambda m: m.id)
    assert [m.status for m in mails] == [OutboxStatus.FAILED, OutboxStatus.FAILED]
    assert "550" in (mails[0].last_error or "")
    async with desk.db.read() as session:
        events = list(await session.scalars(select(Event).where(Event.type == EventType.OUTBOUND_FAILED)))
    assert [e.data["outbox_id"] for e in events] == [m.id for m in mails]
    assert all(e.ticket_id == mails[0].ticket_id and "550" in e.data["error"] for e in events)
    assert sink.received == []
    # An operator fixes the address at the relay and retries: the same mail goes out.
    sink.handler.refuse_rcpt.clear()
    await retry(desk, mails[0].id)
    await out.sender.deliver_due()
    assert [r.message["Message-ID"] for r in sink.received] == [mails[0].rfc822_message_id]


async def test_temporary_failures_give_up_after_the_configured_time(desk: Desk, clock: FixedClock) -> None:
    from datetime import timedelta

    relay = Sink()  # never started
    out = mail_out_via(desk, relay_to(relay))
    out.sender.policy = RetryPolicy(give_up_after=timedelta(hours=3))
    await tickets_with_replies(desk, tickets=1, replies=0)
    await out.notify()
    for _ in range(5):
        await out.sender.deliver_due()
        clock.advance(hours=1)
    (mail,) = await list_mail(desk)
    assert mail.status == OutboxStatus.FAILED and "gave up" in (mail.last_error or "")


async def test_some_recipients_refused_is_sent_with_a_note(desk: Desk, sink: Sink) -> None:
    out = mail_out_via(desk, relay_to(sink))
    change = await open_ticket(desk, ContactRef("alice@example.org"), MailContent(text="x", subject="s"),
                               cc=[ContactRef("gone@example.org")])
    await out.flush()
    sink.handler.refuse_rcpt["gone@example.org"] = "550 5.1.1 no such user"
    await reply(desk, change.ticket.number, BOB, "hello both")
    await out.flush()
    reply_mail = next(m for m in await list_mail(desk) if m.kind == "reply")
    assert reply_mail.status == OutboxStatus.SENT
    assert reply_mail.last_error and "g***@example.org 550" in reply_mail.last_error
    assert sink.received[-1].rcpt_tos == ["alice@example.org"]


async def test_starttls_and_auth_against_a_relay_that_requires_both(
        sqlite_desk: Desk, tmp_path: Path) -> None:
    desk = sqlite_desk
    cert, key = self_signed_certificate(tmp_path)
    relay = Sink(tls_context=server_tls_context(cert, key), require_starttls=True, auth_require_tls=True,
                 authenticator=password_check("mailer", "s3cret"), auth_required=True).start()
    try:
        good = mail_out_via(desk, SmtpTransport(RelaySettings(
            host="127.0.0.1", port=relay.port, security="starttls", username="mailer", password="s3cret",
            ca_file=cert, timeout_seconds=5)))
        await tickets_with_replies(desk, tickets=1, replies=0)
        await good.flush()
        assert len(relay.received) == 1
        assert {m.status for m in await list_mail(desk)} == {OutboxStatus.SENT}
    finally:
        relay.stop()


@pytest.mark.parametrize("security,password", [("starttls", "wrong"), ("plain", "s3cret")])
async def test_bad_password_or_missing_tls_keeps_the_mail_queued(
        sqlite_desk: Desk, tmp_path: Path, security: str, password: str) -> None:
    desk = sqlite_desk
    cert, key = self_signed_certificate(tmp_path)
    relay = Sink(tls_context=server_tls_context(cert, key), require_starttls=True, auth_require_tls=True,
                 authenticator=password_check("mailer", "s3cret"), auth_required=True).start()
    try:
        out = mail_out_via(desk, SmtpTransport(RelaySettings(
            host="127.0.0.1", port=relay.port, security=security, username="mailer",  # type: ignore[arg-type]
            password=password, ca_file=cert, timeout_seconds=5)))
        await tickets_with_replies(desk, tickets=1, replies=0)
        await out.flush()
        (mail,) = await list_mail(desk)
        assert mail.status == OutboxStatus.QUEUED, "a relay or config problem is never the mail's failure"
        assert relay.received == []
    finally:
        relay.stop()


async def test_implicit_tls_relay(sqlite_desk: Desk, tmp_path: Path) -> None:
    desk = sqlite_desk
    cert, key = self_signed_certificate(tmp_path)
    relay = Sink(ssl_context=server_tls_context(cert, key)).start()
    try:
        out = mail_out_via(desk, SmtpTransport(RelaySettings(
            host="127.0.0.1", port=relay.port, security="tls", ca_file=cert, timeout_seconds=5)))
        await tickets_with_replies(desk, tickets=1, replies=0)
        await out.flush()
        assert len(relay.received) == 1
    finally:
        relay.stop()


async def test_a_relay_with_an_untrusted_certificate_is_not_used(sqlite_desk: Desk, tmp_path: Path) -> None:
    desk = sqlite_desk
    cert, key = self_signed_certificate(tmp_path)
    relay = Sink(ssl_context=server_tls_context(cert, key)).start()
    try:
        out = mail_out_via(desk, SmtpTransport(RelaySettings(
            host="127.0.0.1", port=relay.port, security="tls", timeout_seconds=5)))
        await tickets_with_replies(desk, tickets=1, replies=0)
        await out.flush()
        (mail,) = await list_mail(desk)
        assert mail.status == OutboxStatus.QUEUED and "CERTIFICATE" in (mail.last_error or "").upper()
        assert relay.received == []
    finally:
        relay.stop()


async def test_without_a_relay_mail_goes_to_a_maildir_and_the_log_says_so_once(
        sqlite_desk: Desk, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    desk = sqlite_desk
    import mailbox

    caplog.set_level(logging.INFO)
    out = mail_out_via(desk, MaildirTransport(tmp_path / "outbox-maildir"))
    await tickets_with_replies(desk, tickets=2, replies=1)
    await out.flush()
    box = mailbox.Maildir(tmp_path / "outbox-maildir", create=False)
    assert len(box) == 4
    assert {m["Subject"].split("] ")[1] for m in box} == {"Problem 0", "Problem 1"}
    said = [r for r in caplog.records if "maildir" in r.getMessage() and "no SMTP relay" in r.getMessage()]
    assert len(said) == 1
    assert {m.status for m in await list_mail(desk)} == {OutboxStatus.SENT}


async def test_running_sender_delivers_a_reply_without_being_asked(desk: Desk, sink: Sink) -> None:
    out = mail_out_via(desk, relay_to(sink))
    out.sender.poll_seconds = 30  # so only the commit wake-up can explain a quick delivery
    from core.events import run_consumer

    stop = asyncio.Event()
    consumer = asyncio.create_task(run_consumer(desk.db, "mail-notifier", out.notifier.handle,
                                                clock=desk.clock, poll_seconds=30, stop=stop))
    await out.sender.start()
    try:
        await tickets_with_replies(desk, tickets=1, replies=1)
        # Well inside the 30 s polls: only the commit's wake-up can deliver them this soon.
        await eventually(lambda: sink.received, until=lambda got: len(got) == 2, timeout=10)
        assert len(sink.received) == 2
    finally:
        await out.sender.stop()
        stop.set()
        await consumer


@pytest.mark.slow
async def test_two_senders_sharing_the_database_never_send_a_mail_twice(desk: Desk, sink: Sink) -> None:
    # On PostgreSQL the claims use FOR UPDATE SKIP LOCKED; SQLite has a single writer anyway.
    first = mail_out_via(desk, relay_to(sink))
    second = OutboxSender(desk, relay_to(sink), RetryPolicy(), batch=5)
    first.sender.batch = 5
    await tickets_with_replies(desk, tickets=30, replies=0)
    await first.notify()

    async def drain(sender: OutboxSender) -> None:
        while await sender.deliver_due():
            pass

    await asyncio.gather(drain(first.sender), drain(second))
    ids = [r.message["Message-ID"] for r in sink.received]
    assert len(ids) == 30 and len(set(ids)) == 30
