"""The listener as an MTA's final hop over LMTP (RFC 2033): smtplib's LMTP client, and real Postfix."""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy import select

from core.desk import Desk
from core.intake import Intake
from core.models import InboundMail, Ticket
from mail_gateway.smtp_listener import SmtpListener
from mail_gateway.worker import InboundWorker
from tests.kit import eventually
from tests.mail.pipeline_support import count, make_context, make_inserts_fail
from tests.mail.test_smtp_listener import Client, greeted, limited, long_line_mail, mail
from tests.servers import Postfix, start_postfix, started

ctx = make_context()


@pytest.fixture
async def lmtp(desk: Desk) -> AsyncIterator[SmtpListener]:
    server = SmtpListener(desk, ctx.support_addresses, host="127.0.0.1", port=0, max_message_bytes=50_000, lmtp=True)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def conversation(port: int, recipients: list[str], raw: bytes) -> tuple[list[int], list[tuple[int, bytes]]]:
    """One LMTP transaction by hand (smtplib's LMTP.data() reads one reply, LMTP sends one per
    recipient): the RCPT reply codes, then every reply after the data."""
    with smtplib.LMTP("127.0.0.1", port, timeout=10) as client:
        code, _ = client.ehlo()  # smtplib's LMTP says LHLO
        assert code == 250
        assert client.mail("alice@customer.test")[0] == 250
        rcpt_codes = [client.rcpt(r)[0] for r in recipients]
        assert client.docmd("DATA")[0] == 354
        client.send(raw.replace(b"\r\n.", b"\r\n..") + b".\r\n")
        replies = [client.getreply() for _ in range(sum(1 for c in rcpt_codes if c == 250))]
        client.sock.settimeout(0.5)  # nothing more may follow: a next reply would be out of step
        with pytest.raises(OSError):
            client.sock.recv(1)
    return rcpt_codes, replies


async def test_lmtp_answers_the_data_once_per_accepted_recipient_and_stores_the_mail_once(desk, lmtp):
    rcpt_codes, replies = await asyncio.to_thread(
        conversation, lmtp.port, ["support@example.test", "nobody@elsewhere.test", "billing@example.test"], mail())

    assert rcpt_codes == [250, 550, 250]
    assert [code for code, _ in replies] == [250, 250]
    assert all(text.startswith(b"2.0.0 Ok: queued as") for _, text in replies)
    assert await count(desk, InboundMail) == 1
    assert await InboundWorker(Intake(desk, ctx)).drain() == 1
    assert await count(desk, Ticket) == 1


async def test_lmtp_store_failure_is_a_451_for_every_recipient(desk, lmtp):
    await make_inserts_fail(desk)
    _, replies = await asyncio.to_thread(
        conversation, lmtp.port, ["support@example.test", "billing@example.test"], mail())
    assert [code for code, _ in replies] == [451, 451]
    assert await count(desk, InboundMail) == 0


async def test_lmtp_oversize_mail_is_refused_for_every_recipient(desk, lmtp):
    _, replies = await asyncio.to_thread(
        conversation, lmtp.port, ["support@example.test", "billing@example.test"], mail(body="x" * 60_000))
    assert [(code, text[:5]) for code, text in replies] == [(552, b"5.3.4")] * 2
    assert await count(desk, InboundMail) == 0


async def test_lmtp_greets_with_lhlo_only(lmtp):
    def greet(verb: str) -> int:
        with smtplib.LMTP("127.0.0.1", lmtp.port, timeout=10) as client:
            return client.docmd(verb, "client.example.test")[0]

    assert await asyncio.to_thread(greet, "EHLO") == 500
    assert await asyncio.to_thread(greet, "LHLO") == 250


@pytest.fixture
def postfix_to_lmtp(lmtp: SmtpListener) -> Iterator[Postfix]:
    server = started(lambda: start_postfix(lmtp.port))
    try:
        yield server
    finally:
        server.stop()


async def test_postfix_delivers_over_lmtp_into_tickets(desk, lmtp, postfix_to_lmtp):
    raw = mail(subject="Through Postfix and LMTP")
    await asyncio.to_thread(postfix_to_lmtp.send, raw, ["support@example.test", "billing@example.test",
                                                        "nobody@example.test"], "alice@customer.test")
    maillog = postfix_to_lmtp.state_dir / "maillog"
    log = await eventually(lambda: maillog.read_text(errors="replace") if maillog.exists() else "",
                           until=lambda log: log.count("status=sent") >= 2 and "to=<nobody@example.test>" in log,
                           timeout=30, interval=0.1)
    sent = [line for line in log.splitlines() if "status=sent" in line]
    refused = [line for line in log.splitlines() if "to=<nobody@example.test>" in line]
    assert len(sent) == 2 and all("Ok: queued as" in line for line in sent), log[-3000:]
    assert len(refused) == 1 and "status=bounced" in refused[0] and "550 5.1.1" in refused[0], log[-3000:]

    assert await InboundWorker(Intake(desk, ctx)).drain() == 1
    async with desk.db.read() as session:
        subjects = list(await session.scalars(select(Ticket.subject)))
    assert subjects == ["Through Postfix and LMTP"]


async def test_lmtp_has_the_same_limits_as_smtp(desk):
    async with limited(desk, lmtp=True, max_sessions=2, max_sessions_per_client=2,
                       max_commands_without_progress=3) as server:
        first, second = await greeted(server.port), await greeted(server.port)
        third = await Client.connect(server.port)
        assert await third.reply() == (421, "4.7.0 Too many connections, try again later")
        assert (await first.command("LHLO mta.test"))[0] == 250
        assert [(await first.command("NOOP"))[0] for _ in range(2)] == [250, 250]
        assert (await first.command("NOOP"))[0] == 421
        assert await first.closed_by_server()
        for client in (first, second, third):
            client.close()


async def test_lmtp_line_length_answer_comes_once_per_recipient(desk):
    async with limited(desk, lmtp=True, max_message_bytes=1024 * 1024) as server:
        recipients = ["support@example.test", "billing@example.test"]
        _, allowed = await asyncio.to_thread(conversation, server.port, recipients, long_line_mail(65536))
        _, too_long = await asyncio.to_thread(conversation, server.port, recipients, long_line_mail(65538))
    assert [code for code, _ in allowed] == [250, 250]
    assert [(code, text[:28]) for code, text in too_long] == [(500, b"5.5.2 Line too long: at most")] * 2
    assert await count(desk, InboundMail) == 1
