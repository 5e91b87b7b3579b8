"""Discord latency: SMTP DATA -> forum post request at a fake Discord, and /reply -> the relay's 250.

    python -m bench.discord [--mails 500] [--replies 100] [--rate MAILS_PER_SECOND]

The whole desk runs as `supportbot run` runs it (SMTP listener, inbound worker, notifier, sender,
the bot and its projector) on SQLite, with discord.py connected over HTTP and websocket to the fake
Discord of tests/bot/fake_discord.py and outbound mail going to an aiosmtpd sink on loopback.
Baselines in the same run: the listener's own DATA -> 250 (mail stored and committed), and the
interaction -> first answer of /reply (the bot's command path without mail).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import smtplib
import sys
import tempfile
import threading
import time
from email.message import EmailMessage
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from bench._util import peak_rss_mib, percentile, print_table
from supportbot.app import run
from supportbot.config import Config
from tests.bot.fake_discord import FakeDiscord, Recorded
from tests.servers import free_ports

SUPPORT = "support@example.test"
REPLY_TOKEN = re.compile(rb"bench-reply-(\d+)")


class Sink:
    """The relay: notes when each staff reply was accepted (just before its 250)."""

    def __init__(self) -> None:
        self.replies: dict[int, float] = {}
        self.lock = threading.Lock()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        found = REPLY_TOKEN.search(envelope.original_content or b"")
        if found:
            with self.lock:
                self.replies[int(found.group(1))] = time.perf_counter()
        return "250 OK"


def customer_mail(n: int) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = f"customer{n}@example.org"
    msg["To"] = SUPPORT
    msg["Subject"] = f"bench mail {n}"
    msg["Message-ID"] = f"<bench-{n}-{time.time_ns()}@example.org>"
    msg.set_content(f"My order {n} has not arrived. Could you check it, please?\n" * 5)
    return msg


def send_mails(port: int, count: int, rate: float, first_n: int = 0) -> tuple[dict[int, float], list[float]]:
    """Send on one connection (at `rate` mails/s, 0: back to back); returns when each DATA started,
    and each DATA -> 250 (the baseline)."""
    started, acked = {}, []
    first = time.perf_counter()
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        smtp.ehlo()
        for n in range(first_n, first_n + count):
            if rate:
                time.sleep(max(0.0, first + (n - first_n) / rate - time.perf_counter()))
            msg = customer_mail(n)
            smtp.mail(msg["From"])
            smtp.rcpt(SUPPORT)
            started[n] = time.perf_counter()
            code, _ = smtp.data(msg.as_bytes())
            acked.append(time.perf_counter() - started[n])
            assert code == 250, code
    return started, acked


async def wait_until(condition, timeout: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the desk did not keep up within the time limit")
        await asyncio.sleep(0.02)


def ms(values: list[float]) -> list[str]:
    if not values:
        return ["-", "-", "-"]
    return [f"{percentile(values, p) * 1000:.1f}" for p in (50, 95)] + [f"{max(values) * 1000:.1f}"]


async def opened_at(data: Path) -> dict[int, float]:
    """Subject number -> when its ticket was committed, as a perf_counter value."""
    from sqlalchemy import select

    from core.db import Database
    from core.models import Ticket

    offset = time.time() - time.perf_counter()
    db = Database(f"sqlite+aiosqlite:///{data / 'desk.db'}")
    async with db.read() as session:
        rows = await session.execute(select(Ticket.subject, Ticket.created_at))
        found = {int(subject.rsplit(" ", 1)[1]): created.timestamp() - offset for subject, created in rows}
    await db.dispose()
    return found


async def bench(mails: int, replies: int, rate: float) -> None:
    fake = FakeDiscord()
    await fake.start()
    forum, alerts, staff = fake.add_channel("tickets", 15), fake.add_channel("alerts", 0), fake.add_role("staff")
    alice = fake.add_user("alice", [staff])
    posted: dict[int, float] = {}

    def on_request(record: Recorded) -> None:
        if record.method == "POST" and record.path == f"/channels/{forum}/threads":
            posted[int(record.body["name"].rsplit(" ", 1)[1])] = record.at

    fake.listeners.append(on_request)
    sink = Sink()
    smtp_port, relay_port = free_ports(2)
    relay = Controller(sink, hostname="127.0.0.1", port=relay_port)
    relay.start()
    data = Path(tempfile.mkdtemp(prefix="bench-discord-"))
    config = Config.model_validate({
        "desk": {"data_dir": str(data)}, "log_level": "warning", "http": {"enabled": False},
        "mail": {"support_addresses": [SUPPORT], "secret": "bench", "new_tickets_per_sender": 1000,
                 "smtp_listener": {"host": "127.0.0.1", "port": smtp_port},
                 "outbound": {"host": "127.0.0.1", "port": relay.port, "security": "plain",
                              "max_automatic_per_recipient_per_hour": 1000}},
        "discord": {"token": "bench", "guild_id": fake.guild_id, "forum_channel_id": forum,
                    "alerts_channel_id": alerts, "staff_role_ids": [staff]}})
    ready, stop = asyncio.Event(), asyncio.Event()
    app = asyncio.create_task(run(config, ready=ready, stop=stop))
    try:
        await asyncio.wait_for(ready.wait(), 60)
        await asyncio.wait_for(fake.identified.wait(), 60)
        # One mail first, not measured: the bot becomes ready (discord.py waits for the guild) and
        # the forum's tags get created, once, as in any running desk.
        await asyncio.to_thread(send_mails, smtp_port, 1, 0, -1)
        await wait_until(lambda: -1 in posted, 120)
        began = time.perf_counter()
        started, acked = await asyncio.to_thread(send_mails, smtp_port, mails, rate)
        await wait_until(lambda: len(posted) >= mails + 1, 600)
        elapsed = time.perf_counter() - began
        to_post = [posted[n] - started[n] for n in range(mails)]
        opened = await opened_at(data)
        to_ticket = [opened[n] - started[n] for n in range(mails)]  # the clocks differ by < 1 ms
        ticket_to_post = [posted[n] - opened[n] for n in range(mails)]
        threads = {t["name"].rsplit(" ", 1)[1]: int(t["id"]) for t in fake.threads_of(forum)}

        answered, to_relay = [], []
        for n in range(min(replies, mails)):
            t0 = time.perf_counter()
            answer = await fake.slash(alice, threads[str(n)], "reply", text=f"Found it: bench-reply-{n} ships today.")
            answered.append(time.perf_counter() - t0)
            assert "queued" in answer.text, answer.text
            await wait_until(lambda n=n: n in sink.replies, 60)  # type: ignore[misc]
            to_relay.append(sink.replies[n] - t0)
    finally:
        stop.set()
        await app
        relay.stop()
        await fake.stop()
    print_table(["path", "n", "p50 ms", "p95 ms", "max ms"], [
        ["SMTP DATA -> forum post request", mails, *ms(to_post)],
        ["  of which DATA -> ticket committed", mails, *ms(to_ticket)],
        ["  of which ticket committed -> post", mails, *ms(ticket_to_post)],
        ["  baseline: SMTP DATA -> 250", mails, *ms(acked)],
        ["/reply -> relay 250", len(to_relay), *ms(to_relay)],
        ["  baseline: /reply -> bot's answer", len(answered), *ms(answered)],
    ], title=f"Discord latency ({mails} mails {f'at {rate:g}/s' if rate else 'back to back'}, all posted in "
             f"{elapsed:.1f} s = {mails / elapsed:.1f} mails/s, "
             f"peak RSS {peak_rss_mib():.0f} MiB, Python {sys.version.split()[0]})")
    if fake.unknown:
        print("routes the fake did not know:", fake.unknown)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mails", type=int, default=500)
    parser.add_argument("--replies", type=int, default=100)
    parser.add_argument("--rate", type=float, default=0.0, help="mails per second (default: back to back)")
    args = parser.parse_args(argv)
    asyncio.run(bench(args.mails, args.replies, args.rate))


if __name__ == "__main__":
    main()
