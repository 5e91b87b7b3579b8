"""A 12-day mail history delivered live, and the same history read at once after downtime: the
desk must make the same decisions both ways (issue 14, "a backlog is not abuse").

Live: each mail is stored when it arrives (the desk's clock at its arrival time), taken alone and
its acknowledgement decided then. Backlog: every mail stored with its arrival time (as the IMAP
source stores INTERNALDATE), then taken in batches of 50 and acknowledged in one pass, the clock
at the end of the 12 days. Shipped settings (supportbot.config defaults) on both desks.

    python -m bench.backlog -n 5000
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select

from bench._util import print_table
from core.attachments import AttachmentStore
from core.db import Database
from core.desk import CoreSettings, Desk
from core.events import consume_once
from core.inbound import RawMail, store_raw_many
from core.intake import Intake, Parsed
from core.migrate import upgrade
from core.models import InboundMail, OutboxMail, Ticket
from core.notifier import CONSUMER
from mail_gateway import parsing
from mail_gateway.store import content_digest, message_id_of
from supportbot.config import Config
from supportbot.mail_wiring import intake_settings
from supportbot.outbound import build_notifier

START = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
DAYS = 12
SECRET = b"backlog-bench-secret-0123456789ab"


@dataclass(frozen=True)
class Mail:
    raw: bytes
    at: datetime


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def history(n: int, seed: int) -> list[Mail]:
    """Customers writing over 12 days; a few write in bursts (several requests within minutes),
    colleagues answer with the ticket's tag alone, auto-replies come back."""
    rng = random.Random(seed)
    span = DAYS * 24 * 3600
    mails: list[tuple[float, str, str, str]] = []
    customers = [f"c{i}@firm{i % 400}.example" for i in range(1500)]
    for i in range(n):
        kind = rng.choices(["new", "burst", "auto"], [0.80, 0.12, 0.08])[0]
        at = rng.uniform(0, span)
        if kind == "burst":  # one sender, several requests a minute apart
            sender = rng.choice(customers[:60])
            for k in range(rng.randint(3, 8)):
                mails.append((at + 60 * k, sender, f"Burst {i}.{k}", ""))
            continue
        sender = f"ooo{i}@away.example" if kind == "auto" else rng.choice(customers)
        extra = "Auto-Submitted: auto-replied\r\n" if kind == "auto" else ""
        mails.append((at, sender, f"Request {i}", extra))
    mails.sort()
    out = []
    for j, (at, sender, subject, extra) in enumerate(mails[:n]):
        raw = (f"From: {sender}\r\nTo: support@localhost\r\nSubject: {subject}\r\n"
               f"Message-ID: <h{seed}.{j}@{sender.partition('@')[2]}>\r\n{extra}"
               "Content-Type: text/plain; charset=utf-8\r\n\r\nPlease help with this.\r\n").encode()
        out.append(Mail(raw, START + timedelta(seconds=at)))
    return out


async def open_desk(directory: Path, clock: Clock) -> Desk:
    db = Database(f"sqlite+aiosqlite:///{directory / 'desk.db'}")
    await upgrade(db)
    return Desk(db, CoreSettings(), AttachmentStore(directory / "files"), clock)


def raw_mail(mail: Mail) -> RawMail:
    return RawMail(mail.raw, message_id=message_id_of(mail.raw), content_digest=content_digest(mail.raw),
                   received_at=mail.at)


async def take(intake: Intake, ids: list[int], raws: list[bytes]) -> None:
    await intake.take([Parsed(i, parsing.parse_mail(r)) for i, r in zip(ids, raws, strict=True)])


async def run(directory: Path, mails: list[Mail], *, live: bool) -> dict[str, object]:
    config = Config()
    clock = Clock(mails[0].at if live else mails[-1].at + timedelta(hours=1))
    desk = await open_desk(directory, clock)
    intake = Intake(desk, intake_settings(config, SECRET))
    notifier = build_notifier(config, desk, SECRET)
    started = time.perf_counter()
    try:
        if live:
            for mail in mails:
                clock.now = mail.at
                [stored] = await store_raw_many(desk, [raw_mail(mail)], source="bench", mailbox="m")
                await take(intake, [stored.id], [mail.raw])
                await consume_once(desk.db, CONSUMER, notifier.handle, clock=desk.clock, batch=1000)
        else:
            stored = await store_raw_many(desk, [raw_mail(m) for m in mails], source="bench", mailbox="m")
            for k in range(0, len(mails), 50):
                await take(intake, [s.id for s in stored[k:k + 50]], [m.raw for m in mails[k:k + 50]])
            while await consume_once(desk.db, CONSUMER, notifier.handle, clock=desk.clock, batch=1000):
                pass
        seconds = time.perf_counter() - started
        async with desk.db.read() as session:
            tickets = await session.scalar(select(func.count()).select_from(Ticket))
            acks = await session.scalar(select(func.count()).select_from(OutboxMail).where(OutboxMail.kind == "ack"))
            rows = (await session.execute(select(InboundMail.dedupe_key, InboundMail.status, InboundMail.reason))).all()
        held = Counter((reason or "").partition(":")[0] for _, status, reason in rows if status == "held")
        decisions = {key.partition("|")[0]: f"{status}:{(reason or '').partition(':')[0]}"
                     for key, status, reason in rows}
        return {"tickets": tickets, "acks": acks, "held": dict(held), "decisions": decisions, "seconds": seconds}
    finally:
        await desk.close()


async def main(n: int, seed: int) -> None:
    mails = history(n, seed)
    with tempfile.TemporaryDirectory() as live_dir, tempfile.TemporaryDirectory() as backlog_dir:
        live = await run(Path(live_dir), mails, live=True)
        backlog = await run(Path(backlog_dir), mails, live=False)
    differ = [k for k, v in live["decisions"].items() if backlog["decisions"].get(k) != v]  # type: ignore[union-attr]
    runs = (("live, at its own pace", live), ("backlog, read at once", backlog))
    rows = [[name, r["tickets"], r["acks"], ", ".join(f"{k} {v}" for k, v in sorted(r["held"].items())) or "none",
             f"{r['seconds']:.1f}"] for name, r in runs]
    print_table(["run", "tickets", "acknowledgements", "held (rule count)", "seconds"], rows,
                title=f"{len(mails)} mails over {DAYS} days, shipped settings")
    print(f"mails decided differently: {len(differ)} of {len(mails)}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", type=int, default=5000)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    asyncio.run(main(a.n, a.seed))
