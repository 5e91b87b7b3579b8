"""Mail out: mails rendered and delivered per second to a local aiosmtpd sink, and reply-to-250 latency.

    python -m bench.outbound [--mails 500] [--tickets 50] [--latency-replies 100] [--database-url URL]

Three phases, each with a baseline measured in the same run:
1. render: Composer.compose of a staff reply (text + HTML + DKIM-free), vs. a bare EmailMessage;
2. delivery: queue N replies, then notifier (events -> outbox) and sender (outbox -> sink), vs.
   aiosmtplib sending the same bytes over one connection with no database at all;
3. latency: `core.services.reply` with notifier and sender running, until the sink answers 250.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from bench._util import peak_rss_mib, percentile, print_table, timer
from core.desk import Desk
from core.events import consume_once, run_consumer
from core.mail_drafts import Draft, Recipient
from core.migrate import upgrade
from core.notifier import CONSUMER, Notifier
from core.services import ContactRef, MailContent, StaffRef, open_ticket, reply
from core.tokens import Signer
from mail_gateway.outbound.compose import Composer, text_to_html
from mail_gateway.outbound.sender import OutboxSender
from mail_gateway.outbound.smtp import RelaySettings, SmtpTransport
from supportbot.templating import template_environment

SUPPORT = "support@example.test"
STAFF = StaffRef("Bench", discord_id=1)
BODY = ("Thanks for the details. I have reset the export job and it ran through this time.\n\n"
        "Could you check the file on your side and tell us whether the totals match?\n") * 3


class Sink:
    """Counts accepted mail and notes when each was accepted (just before the 250 goes out)."""

    def __init__(self) -> None:
        self.accepted: dict[str, float] = {}  # Message-ID -> perf_counter at 250
        self.count = 0
        self.lock = threading.Lock()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        head = content.split(b"\r\n\r\n", 1)[0]
        message_id = ""
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"message-id:"):
                message_id = line.split(b":", 1)[1].strip().decode()
        with self.lock:
            self.count += 1
            self.accepted[message_id] = time.perf_counter()
        return "250 OK"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def composer() -> Composer:
    return Composer(signer=Signer(b"bench", "example.test"), support_address=SUPPORT, desk_name="Bench Support",
                    from_name="Bench Support", templates=template_environment())


def bench_render(count: int) -> list[list[object]]:
    c = composer()
    context = {"body_text": BODY, "body_html": text_to_html(BODY), "staff_name": "Bench", "attachments": []}
    now = datetime.now(UTC)
    with timer() as t:
        for i in range(count):
            c.compose(Draft(template="reply", ticket_number=1000 + i % 50, ticket_ref=f"#{1000 + i % 50}",
                            ticket_subject="Export totals wrong", message_key=f"m{i}",
                            to=[Recipient(f"customer{i % 50}@example.org", "A Customer")], date=now,
                            automatic=False, context=context, in_reply_to=f"<c{i}@example.org>",
                            references=[f"<c{i}@example.org>"]))
    with timer() as base:
        for i in range(count):
            m = EmailMessage()
            m["From"], m["To"], m["Subject"] = SUPPORT, f"customer{i}@example.org", "Re: Export totals wrong"
            m.set_content(BODY)
            m.as_bytes()
    return [["compose (templates, headers, MIME)", count, t.seconds, count / t.seconds],
            ["baseline: bare EmailMessage, text only", count, base.seconds, count / base.seconds]]


async def seed(desk: Desk, tickets: int) -> list[int]:
    numbers = []
    for t in range(tickets):
        change = await open_ticket(desk, ContactRef(f"customer{t}@example.org", "A Customer"),
                                   MailContent(text="The export totals are wrong.", subject=f"Export {t}",
                                               message_id=f"<c{t}@example.org>"))
        numbers.append(change.ticket.number)
    return numbers


async def bench_delivery(desk: Desk, sink: Sink, port: int, mails: int, tickets: int) -> list[list[object]]:
    notifier = Notifier(desk, composer(), support_addresses=[SUPPORT], automatic_per_hour=10**6)
    transport = SmtpTransport(RelaySettings(host="127.0.0.1", port=port, security="plain", timeout_seconds=10))
    sender = OutboxSender(desk, transport, batch=50)
    numbers = await seed(desk, tickets)
    await consume_once(desk.db, CONSUMER, notifier.handle, clock=desk.clock, batch=10**6)  # the acks
    while await sender.deliver_due():
        pass
    with timer() as queue_t:
        for i in range(mails):
            await reply(desk, numbers[i % tickets], STAFF, f"{BODY}\n(reply {i})")
    with timer() as notify_t:
        while await consume_once(desk.db, CONSUMER, notifier.handle, clock=desk.clock, batch=1000):
            pass
    before = sink.count
    with timer() as send_t:
        while await sender.deliver_due():
            pass
    assert sink.count - before == mails, (sink.count - before, mails)
    contents = [composer().compose(Draft(
        template="reply", ticket_number=1, ticket_ref="#1", ticket_subject="x", message_key=f"b{i}",
        to=[Recipient("customer@example.org")], date=datetime.now(UTC), automatic=False,
        context={"body_text": BODY, "body_html": text_to_html(BODY), "staff_name": "B", "attachments": []},
    )).content for i in range(mails)]
    with timer() as raw_t:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=10)
        await client.connect()
        for content in contents:
            await client.sendmail(SUPPORT, ["customer@example.org"], content)
        await client.quit()
    return [
        ["core.services.reply (message + event)", mails, queue_t.seconds, mails / queue_t.seconds],
        ["notifier: event -> rendered mail in outbox", mails, notify_t.seconds, mails / notify_t.seconds],
        [f"sender: outbox -> sink ({tickets} tickets)", mails, send_t.seconds, mails / send_t.seconds],
        ["baseline: aiosmtplib alone, one connection", mails, raw_t.seconds, mails / raw_t.seconds],
    ]


async def bench_latency(desk: Desk, sink: Sink, port: int, count: int) -> list[list[object]]:
    notifier = Notifier(desk, composer(), support_addresses=[SUPPORT], automatic_per_hour=10**6)
    sender = OutboxSender(desk, SmtpTransport(RelaySettings(host="127.0.0.1", port=port, security="plain",
                                                            timeout_seconds=10)), poll_seconds=5)
    stop = asyncio.Event()
    consumer = asyncio.create_task(run_consumer(desk.db, CONSUMER, notifier.handle, clock=desk.clock,
                                                poll_seconds=5, stop=stop))
    await sender.start()
    numbers = await seed(desk, 20)
    await asyncio.sleep(0.5)
    latencies: list[float] = []
    try:
        for i in range(count):
            started = time.perf_counter()
            change = await reply(desk, numbers[i % len(numbers)], STAFF, f"latency probe {i}")
            signer = Signer(b'bench', 'example.test')
            message_id = f"<{signer.message_id(change.ticket.number, f'm{change.message.id}')}>"  # type: ignore[union-attr]
            for _ in range(2000):
                if message_id in sink.accepted:
                    break
                await asyncio.sleep(0.001)
            latencies.append(sink.accepted[message_id] - started)
            await asyncio.sleep(0.02)  # one reply at a time, as staff type them
    finally:
        await sender.stop()
        stop.set()
        await consumer
    ms = [v * 1000 for v in latencies]
    return [["reply() -> relay's 250", count, percentile(ms, 50), percentile(ms, 95), max(ms)]]


async def run(args: argparse.Namespace, folder: Path) -> None:
    sink = Sink()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        print_table(["phase", "mails", "seconds", "mails/s"], bench_render(args.mails),
                    title="1. Rendering (one process, no I/O)")
        rows: list[list[object]] = []
        latency: list[list[object]] = []
        for phase in ("delivery", "latency"):
            url = args.database_url or f"sqlite+aiosqlite:///{folder / f'{phase}.db'}"
            desk = Desk.open(url, folder / phase)
            await upgrade(desk.db)
            try:
                if phase == "delivery":
                    rows = await bench_delivery(desk, sink, port, args.mails, args.tickets)
                else:
                    latency = await bench_latency(desk, sink, port, args.latency_replies)
            finally:
                await desk.close()
        engine = "PostgreSQL" if args.database_url else "SQLite"
        print_table(["phase", "mails", "seconds", "mails/s"], rows,
                    title=f"2. Delivery to a local aiosmtpd sink ({engine})")
        if latency:
            print_table(["path", "replies", "p50 ms", "p95 ms", "max ms"], latency,
                        title=f"3. Latency, notifier and sender running ({engine})")
        print(f"\npeak RSS {peak_rss_mib():.0f} MiB")
    finally:
        controller.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.outbound", description=__doc__.splitlines()[0])
    parser.add_argument("--mails", type=int, default=500, help="mails per phase (default: %(default)s)")
    parser.add_argument("--tickets", type=int, default=50, help="tickets they spread over (default: %(default)s)")
    parser.add_argument("--latency-replies", type=int, default=100, help="replies timed (default: %(default)s)")
    parser.add_argument("--database-url", help="PostgreSQL URL (an empty database); default: SQLite in a temp dir")
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="supportbot-bench-out-"))
    try:
        asyncio.run(run(args, folder))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
