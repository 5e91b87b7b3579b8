"""The round trip against real servers: staff reply -> outbox -> Postfix -> LMTP -> the customer's Dovecot
mailbox; the customer's answer, written as a mail client writes it, comes back through IMAP onto the same ticket.
"""

from __future__ import annotations

import asyncio
import email
import smtplib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path

import pytest
from imapclient import IMAPClient
from sqlalchemy import func, select

from core.desk import Desk
from core.enums import Direction
from core.events import run_consumer
from core.intake import Intake, IntakeSettings
from core.models import Message, Ticket
from core.notifier import CONSUMER, Notifier
from core.services import NewAttachment, StaffRef, reply
from core.tokens import Signer
from mail_gateway.imap import ImapSource
from mail_gateway.outbound.sender import OutboxSender
from mail_gateway.outbound.smtp import RelaySettings, SmtpTransport
from mail_gateway.worker import InboundWorker
from supportbot.config import ImapMailboxConfig
from tests.conftest import open_desk, sqlite_url
from tests.kit import eventually
from tests.outbound.conftest import SECRET, SUPPORT, make_composer
from tests.servers import Dovecot, Postfix, dovecot_and_postfix

pytestmark = [pytest.mark.dovecot, pytest.mark.slow]

CUSTOMER = "customer@example.org"
USERS = {SUPPORT: "secret", CUSTOMER: "secret"}
BOB = StaffRef("Bob", discord_id=42)


@pytest.fixture
def servers() -> Iterator[tuple[Dovecot, Postfix]]:
    """Dovecot with a support and a customer mailbox, and Postfix delivering to both over LMTP."""
    with dovecot_and_postfix(USERS) as both:
        yield both


@dataclass
class Desks:
    desk: Desk
    dovecot: Dovecot
    postfix: Postfix


@pytest.fixture
async def running(servers: tuple[Dovecot, Postfix], tmp_path: Path) -> AsyncIterator[Desks]:
    """The desk with everything mail runs: IMAP in, the pipeline, the notifier and the sender via Postfix."""
    dovecot, postfix = servers
    async with open_desk(sqlite_url(tmp_path), tmp_path) as desk:  # real time, as the servers run
        signer = Signer(SECRET, "example.test")
        settings = IntakeSettings(signer, support_addresses=(SUPPORT,))
        worker = InboundWorker(Intake(desk, settings), poll_seconds=0.2)
        source = ImapSource(desk, ImapMailboxConfig(
            name="main", host=dovecot.host, port=dovecot.imap_port, security="plain", username=SUPPORT,
            password=USERS[SUPPORT], timeout_seconds=5), on_stored=worker.wake)
        notifier = Notifier(desk, make_composer(signer=signer), support_addresses=[SUPPORT],
                            automatic_per_hour=10)
        sender = OutboxSender(desk, SmtpTransport(RelaySettings(
            host=postfix.host, port=postfix.smtp_port, security="plain", timeout_seconds=10)), poll_seconds=0.2)
        stop = asyncio.Event()
        consumer = asyncio.create_task(run_consumer(desk.db, CONSUMER, notifier.handle, clock=desk.clock,
                                                    poll_seconds=0.2, stop=stop))
        for part in (sender, worker, source):
            await part.start()
        try:
            await eventually(lambda: source.state, until=lambda state: state in ("idle", "polling"), timeout=20)
            yield Desks(desk, dovecot, postfix)
        finally:
            for part in (source, worker, sender):
                await part.stop()
            stop.set()
            await consumer


def customer_mailbox(dovecot: Dovecot) -> list[EmailMessage]:
    with IMAPClient(dovecot.host, dovecot.imap_port, ssl=False, timeout=5) as client:
        client.login(CUSTOMER, USERS[CUSTOMER])
        client.select_folder("INBOX", readonly=True)
        fetched = client.fetch(client.search(["ALL"]), ["BODY.PEEK[]"])
    messages = []
    for uid in sorted(fetched):
        parsed = email.message_from_bytes(fetched[uid][b"BODY[]"], policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        messages.append(parsed)
    return messages


async def received(dovecot: Dovecot, count: int) -> list[EmailMessage]:
    """The customer's mailbox once it holds at least `count` mails."""
    return await eventually(lambda: asyncio.to_thread(customer_mailbox, dovecot),
                            until=lambda mails: len(mails) >= count, timeout=20, interval=0.1)


async def inbound_messages(desk: Desk) -> list[tuple[int, str]]:
    """(ticket number, text) of every inbound message, oldest first."""
    async with desk.db.read() as session:
        rows = await session.execute(select(Ticket.number, Message.new_text)
                                     .join(Ticket, Ticket.id == Message.ticket_id)
                                     .where(Message.direction == Direction.INBOUND).order_by(Message.id))
        return [(n, t) for n, t in rows]


async def ticket_count(desk: Desk) -> int:
    async with desk.db.read() as session:
        return int(await session.scalar(select(func.count()).select_from(Ticket)) or 0)


def customer_writes(postfix: Postfix, *, to: str, subject: str, text: str, in_reply_to: str | None = None,
                    references: str | None = None) -> None:
    """What a mail client sends: the customer's own headers, and only the threading it chose to keep."""
    msg = EmailMessage()
    msg["From"] = f"Carla Customer <{CUSTOMER}>"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain="example.org")
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
    if references:
        msg["References"] = references
    msg.set_content(text)
    with smtplib.SMTP(postfix.host, postfix.smtp_port, timeout=30) as smtp:
        smtp.send_message(msg, from_addr=CUSTOMER, to_addrs=[to.split("<")[-1].rstrip(">")])


def plain(msg: EmailMessage) -> str:
    body = msg.get_body(("plain",))
    assert body is not None
    return str(body.get_content())


async def test_staff_reply_reaches_the_customer_and_every_kind_of_answer_threads_back(running: Desks) -> None:
    desk, dovecot, postfix = running.desk, running.dovecot, running.postfix
    customer_writes(postfix, to=SUPPORT, subject="Printer on fire", text="My printer is on fire. Help!")
    await eventually(lambda: ticket_count(desk), until=lambda n: n == 1, timeout=20)
    (number, _), = await inbound_messages(desk)

    # The acknowledgement, then the staff reply with an attachment, arrive in the customer's mailbox.
    (ack,) = await received(dovecot, 1)
    assert ack["Auto-Submitted"] == "auto-replied" and f"[#{number}]" in ack["Subject"]
    await reply(desk, number, BOB, "Unplug it, then send us a photo.",
                attachments=[NewAttachment("steps.txt", "text/plain", b"1. unplug\n2. wait\n")])
    ours = (await received(dovecot, 2))[1]
    assert ours["Subject"] == f"Re: [#{number}] Printer on fire"
    assert ours["Auto-Submitted"] is None
    assert [a.get_filename() for a in ours.iter_attachments()] == ["steps.txt"]
    reply_to = ours["Reply-To"].addresses[0].addr_spec
    assert Signer(SECRET, "example.test").ticket_from_address(reply_to) == number

    # 1. A full reply from a mail client: to the Reply-To address, with In-Reply-To, References and a quote.
    quoted = "\n".join("> " + line for line in plain(ours).splitlines())
    customer_writes(postfix, to=reply_to, subject="Re: " + ours["Subject"], text=f"Unplugged it.\n\n{quoted}",
                    in_reply_to=ours["Message-ID"], references=f"{ours['References']} {ours['Message-ID']}")
    # 2. Only the subject survived (a ticket system in between dropped the headers; plain address).
    customer_writes(postfix, to=SUPPORT, subject="RE: AW: " + ours["Subject"], text="Photo follows.")
    # 3. Only In-Reply-To survived, and the customer changed the subject.
    customer_writes(postfix, to=SUPPORT, subject="Another question", text="Is it safe to plug in again?",
                    in_reply_to=ours["Message-ID"])

    messages = await eventually(lambda: inbound_messages(desk), until=lambda got: len(got) == 4, timeout=20)
    assert await ticket_count(desk) == 1
    assert [n for n, _ in messages] == [number] * 4
    # Postfix may deliver the three in any order.
    answers = sorted(text.strip() for _, text in messages[1:])
    assert answers == ["Is it safe to plug in again?", "Photo follows.", "Unplugged it."], \
        "each answer on the ticket, the full reply cut at our marker (the quote is not new text)"
