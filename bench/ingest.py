"""Mail-in benchmark: N mixed mails in a real Dovecot mailbox, read over IMAP into tickets, against a naive loop.

Run `python -m bench.ingest --help`. Prints figures; asserts nothing (tests check behaviour), but
checks that every mail is accounted for: a ticket, a reply on its original's ticket, or machine mail.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any, TypeVar

from imapclient import IMAPClient
from sqlalchemy import select

from bench._util import peak_rss_mib, peak_rss_mib_of, percentile, print_table, reset_peak_rss, rss_mib
from core.attachments import AttachmentStore
from core.db import Database
from core.desk import CoreSettings, Desk
from core.inbound import store_raw
from core.intake import Intake, IntakeSettings
from core.migrate import upgrade
from core.models import InboundMail, Ticket
from core.tokens import Signer
from mail_gateway.handoff import Handoff
from mail_gateway.imap import ImapSource
from mail_gateway.store import message_id_of, store_received_many
from mail_gateway.worker import InboundWorker
from supportbot import runloop
from supportbot.config import ImapMailboxConfig
from tests.servers import Dovecot, start_dovecot

T = TypeVar("T")
SUPPORT = "support@example.test"
BASELINE_USER = "other@example.test"
# Share of each kind among generated mails; "opener" kinds start a ticket, replies and auto-replies follow.
MIX = (("new", 0.45), ("reply", 0.25), ("html", 0.12), ("attachment", 0.10), ("auto", 0.08))
OPENERS = ("new", "html", "attachment")
# Mail is delivered in windows of this many over several LMTP connections at once (Dovecot fsyncs
# each delivery); a reply always replies to a mail of an earlier window, so it arrives after it.
WINDOW = 200
LMTP_CONNECTIONS = 4
WORDS = ("invoice printer login password refund outage error upgrade account shipping delay "
         "broken screen crash export report billing renewal coupon license server timeout").split()


@dataclass(frozen=True)
class Spec:
    """One generated mail, small enough to keep 5,000 of (its bytes are made when delivered)."""

    index: int
    kind: str
    msgid: str  # without angle brackets
    sender: str
    subject: str
    parent: str | None = None  # the msgid it replies to


def plan(n: int, seed: int) -> list[Spec]:
    rng = random.Random(seed)
    kinds = [k for k, _ in MIX]
    weights = [w for _, w in MIX]
    specs: list[Spec] = []
    openers: list[Spec] = []
    for i in range(n):
        earlier = [o for o in openers[-5 * WINDOW:] if o.index < i - i % WINDOW]
        kind = rng.choices(kinds, weights)[0]
        if kind == "reply" and not earlier:
            kind = "new"
        msgid = f"bench.{seed}.{i}@example.org"
        if kind == "reply":
            parent = rng.choice(earlier)
            specs.append(Spec(i, kind, msgid, parent.sender, "Re: " + parent.subject, parent.msgid))
        elif kind == "auto":
            specs.append(Spec(i, kind, msgid, f"ooo{i}@example.org", "Automatic reply: out of office"))
        else:
            subject = f"{' '.join(rng.sample(WORDS, 3))} ({i})"
            spec = Spec(i, kind, msgid, f"customer{i}@example.org", subject)
            openers.append(spec)
            specs.append(spec)
    return specs


def render(spec: Spec, rng: random.Random) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Customer {spec.index} <{spec.sender}>"
    msg["To"] = SUPPORT
    msg["Subject"] = spec.subject
    msg["Date"] = format_datetime(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))
    msg["Message-ID"] = f"<{spec.msgid}>"
    body = " ".join(rng.choices(WORDS, k=rng.randint(20, 120)))
    if spec.parent:
        msg["In-Reply-To"] = f"<{spec.parent}>"
        msg["References"] = f"<{spec.parent}>"
        quoted = "\n".join("> " + line for line in body[:300].split(". "))
        msg.set_content(f"Thanks, still not working.\n\nOn Mon, 2 Mar 2026 you wrote:\n{quoted}\n")
    elif spec.kind == "auto":
        msg["Auto-Submitted"] = "auto-replied"
        msg["X-Autoreply"] = "yes"
        msg.set_content("I am out of the office until Monday and will read your mail then.\n")
    elif spec.kind == "html":
        links = "".join(f'<li><a href="https://example.org/{w}">{w}</a></li>' for w in body.split()[:20])
        msg.set_content(f"<html><body><p>{body}</p><ul>{links}</ul></body></html>", subtype="html")
    else:
        msg.set_content(f"Hello,\n\n{body}\n\nRegards,\nCustomer {spec.index}\n-- \nSent from my phone\n")
        if spec.kind == "attachment":
            msg.add_attachment(rng.randbytes(rng.randint(20_000, 80_000)), maintype="application",
                               subtype="pdf", filename=f"scan-{spec.index}.pdf")
    return msg.as_bytes()


def fill(server: Dovecot, specs: Sequence[Spec], seed: int, *, also_to: str | None = None,
         also_count: int = 0) -> tuple[dict[str, float], int]:
    """Deliver every mail over LMTP; returns each msgid's delivery time and the bytes delivered."""
    from concurrent.futures import ThreadPoolExecutor

    delivered: dict[str, float] = {}
    sizes: list[int] = []

    def deliver(part: Sequence[Spec]) -> None:
        import smtplib

        with smtplib.LMTP(server.host, server.lmtp_port, timeout=60) as lmtp:
            for spec in part:
                raw = render(spec, random.Random(seed * 1_000_003 + spec.index))
                sizes.append(len(raw))
                lmtp.sendmail(spec.sender, [SUPPORT], raw)
                delivered[spec.msgid] = time.time()
                if also_to and spec.index < also_count:
                    lmtp.sendmail(spec.sender, [also_to], raw)

    # Parallel LMTP deliveries contend for Dovecot's UID list lock; a delivery that cannot get it
    # leaves its file for the next sync to number. A NOOP after each window forces that sync, so
    # UIDs (the order the gateway reads in) follow the windows and every reply comes after its original.
    syncers = [_selected(server, user) for user in filter(None, [SUPPORT, also_to])]
    try:
        with ThreadPoolExecutor(LMTP_CONNECTIONS) as pool:
            for start in range(0, len(specs), WINDOW):
                window = specs[start:start + WINDOW]
                list(pool.map(deliver, [window[k::LMTP_CONNECTIONS] for k in range(LMTP_CONNECTIONS)]))
                for client in syncers:
                    client.noop()
    finally:
        for client in syncers:
            client.logout()
    return delivered, sum(sizes)


def _selected(server: Dovecot, user: str) -> IMAPClient:
    client = IMAPClient(server.host, server.imap_port, ssl=False, timeout=60)
    client.login(user, server.users[user])
    client.select_folder("INBOX", readonly=True)
    return client


def replies_before_their_original(server: Dovecot, specs: Sequence[Spec]) -> int:
    """How many replies the gateway would read before the mail they answer (should be 0)."""
    client = _selected(server, SUPPORT)
    try:
        fetched = client.fetch(client.search(["ALL"]), ["BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"])
    finally:
        client.logout()
    position = {}
    for uid, data in fetched.items():
        header = data[b"BODY[HEADER.FIELDS (MESSAGE-ID)]"].decode()
        position[header.partition("<")[2].partition(">")[0]] = uid
    return sum(1 for s in specs if s.parent and position.get(s.msgid, 0) < position.get(s.parent, 0))


async def open_desk(directory: Path) -> Desk:
    db = Database(f"sqlite+aiosqlite:///{directory / 'desk.db'}")
    await upgrade(db)
    return Desk(db, CoreSettings(), AttachmentStore(directory / "attachments"))


def context() -> IntakeSettings:
    return IntakeSettings(Signer(b"bench-secret" * 3, "example.test"), support_addresses=(SUPPORT,))


def mailbox(server: Dovecot, user: str = SUPPORT) -> ImapMailboxConfig:
    return ImapMailboxConfig(name="bench", host=server.host, port=server.imap_port, security="plain",
                             username=user, password=server.users[user])


@dataclass
class Run:
    seconds: float
    settled: int
    first_stored_all: float | None = None  # seconds until the IMAP side had stored everything
    peak_mib: float = 0.0
    cpu_seconds: float = 0.0  # this process, all threads: less sensitive to other load than wall time
    parser_peak_mib: float = 0.0  # the inbound worker's parsing process
    load: float = 0.0  # the machine's 1-minute load average at the end (2 cores here)


# Coroutine functions of core.intake.take, looked up there (it imports them by name).
PROCESSING_STEPS = ("match_thread", "evaluate", "open_tickets", "remember_contacts", "add_customer_message")


def instrument(spent: dict[str, float]) -> None:
    """Add each intake step's wall time to `spent` (a bench-only probe around the pipeline's steps)."""
    from core.intake import take

    for name in PROCESSING_STEPS:
        step = getattr(take, name, None)
        if step is not None:
            setattr(take, name, _timed(step, name, spent))


def _timed(step: Callable[..., Awaitable[T]], name: str, spent: dict[str, float]) -> Callable[..., Awaitable[T]]:
    async def timed(*args: Any, **kwargs: Any) -> T:
        started = time.perf_counter()
        try:
            return await step(*args, **kwargs)
        finally:
            spent[name] = spent.get(name, 0.0) + time.perf_counter() - started
    return timed


async def run_gateway(desk: Desk, server: Dovecot, n: int, spent: dict[str, float] | None = None) -> Run:
    """The real thing: ImapSource (IDLE, batched BODY.PEEK[] fetches) and the InboundWorker."""
    done = asyncio.Event()
    settled = 0

    def on_outcome(_: object) -> None:
        nonlocal settled
        settled += 1
        if settled >= n:
            done.set()

    worker = InboundWorker(Intake(desk, context()), poll_seconds=1.0, on_outcome=on_outcome)
    store = store_received_many if spent is None else _timed(store_received_many, "store (IMAP side)", spent)
    source = ImapSource(desk, mailbox(server), on_stored=worker.wake, store=store)
    all_stored: float | None = None
    started, cpu = time.perf_counter(), time.process_time()
    await worker.start()
    await source.start()
    try:
        while not done.is_set():
            await asyncio.wait({asyncio.ensure_future(done.wait())}, timeout=0.05)
            if all_stored is None and source.stored_count >= n:
                all_stored = time.perf_counter() - started
        seconds = time.perf_counter() - started
        parser_peak = peak_rss_mib_of(worker.parser.pid if worker.parser else None)
        cpu_seconds = time.process_time() - cpu + _children_cpu(worker)
    finally:
        await source.stop()
        await worker.stop()
    return Run(seconds, settled, all_stored, peak_rss_mib(), cpu_seconds, parser_peak_mib=parser_peak,
               load=os.getloadavg()[0])


def _children_cpu(worker: InboundWorker) -> float:
    """CPU seconds of the worker's parsing process so far (it is not in this process's figure)."""
    pid = worker.parser.pid if worker.parser else None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split() if pid else []
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK") if fields else 0.0


async def run_naive(desk: Desk, server: Dovecot, user: str, n: int) -> Run:
    """Baseline in the style of common helpdesks: one FETCH RFC822 per mail, store, process, next."""
    client = IMAPClient(server.host, server.imap_port, ssl=False, timeout=30)
    handoff = Handoff(Intake(desk, context()))
    started, cpu = time.perf_counter(), time.process_time()
    settled = 0
    try:
        await asyncio.to_thread(client.login, user, server.users[user])
        await asyncio.to_thread(client.select_folder, "INBOX")
        for uid in (await asyncio.to_thread(client.search, ["ALL"]))[:n]:
            fetched = await asyncio.to_thread(client.fetch, [uid], ["RFC822"])
            raw = fetched[uid][b"RFC822"]
            stored = await store_raw(desk, raw, source="imap:naive", mailbox="naive", message_id=message_id_of(raw))
            await handoff.take([stored.id])
            settled += 1
    finally:
        await asyncio.to_thread(client.logout)
    return Run(time.perf_counter() - started, settled, peak_mib=peak_rss_mib(),
               cpu_seconds=time.process_time() - cpu, load=os.getloadavg()[0])


async def stream(desk: Desk, server: Dovecot, specs: Sequence[Spec], rate: float, seed: int) -> list[float]:
    """Latency at a steady offered rate: LMTP DATA done -> the mail's row settled (committed)."""
    worker = InboundWorker(Intake(desk, context()), poll_seconds=1.0)
    source = ImapSource(desk, mailbox(server), on_stored=worker.wake)
    await worker.start()
    await source.start()
    while source.state != "idle":
        await asyncio.sleep(0.01)
    delivered: dict[str, float] = {}

    def deliver() -> None:
        import smtplib

        with smtplib.LMTP(server.host, server.lmtp_port, timeout=60) as lmtp:
            start = time.perf_counter()
            for k, spec in enumerate(specs):
                pause = start + k / rate - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
                lmtp.sendmail(spec.sender, [SUPPORT], render(spec, random.Random(seed + spec.index)))
                delivered[spec.msgid] = time.time()

    try:
        await asyncio.to_thread(deliver)
        keys = {s.msgid.lower() for s in specs}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            rows = await settled_rows(desk, keys)
            if len(rows) >= len(keys):
                break
            await asyncio.sleep(0.2)
    finally:
        await source.stop()
        await worker.stop()
    return [rows[k.lower()][0].timestamp() - t for k, t in delivered.items() if k.lower() in rows]


async def settled_rows(desk: Desk, keys: set[str] | None = None) -> dict[str, tuple[datetime, str, int | None]]:
    async with desk.db.read() as session:
        result = await session.execute(select(InboundMail.dedupe_key, InboundMail.processed_at,
                                              InboundMail.status, InboundMail.ticket_id)
                                       .where(InboundMail.processed_at.is_not(None)))
        # Keyed by Message-ID: the dedupe key is "message-id|content digest".
        settled = {k.partition("|")[0]: (at, str(status), ticket) for k, at, status, ticket in result if at is not None}
        return {k: v for k, v in settled.items() if keys is None or k in keys}


async def account(desk: Desk, specs: Sequence[Spec]) -> list[str]:
    """Problems found: every mail must be a ticket, a reply on its original's ticket, or machine mail."""
    rows = await settled_rows(desk)
    problems: list[str] = []
    ticket_of: dict[str, int | None] = {}
    for spec in specs:
        row = rows.get(spec.msgid.lower())
        if row is None:
            problems.append(f"{spec.msgid} ({spec.kind}) never settled")
            continue
        _, status, ticket = row
        ticket_of[spec.msgid] = ticket
        if status == "quarantined" or (spec.kind != "auto" and (status != "processed" or ticket is None)):
            problems.append(f"{spec.msgid} ({spec.kind}): {status}, ticket {ticket}")
        elif spec.kind == "reply" and ticket != ticket_of.get(spec.parent or ""):
            problems.append(f"{spec.msgid} (reply) landed on ticket {ticket}, not its original's")
    openers = sum(1 for s in specs if s.kind in OPENERS)
    opener_tickets = {ticket_of.get(s.msgid) for s in specs if s.kind in OPENERS}
    if len(opener_tickets - {None}) != openers:
        problems.append(f"{openers} new requests made {len(opener_tickets - {None})} distinct tickets")
    return problems


async def ticket_count(desk: Desk) -> int:
    async with desk.db.read() as session:
        return len(list(await session.scalars(select(Ticket.id))))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.ingest",
        description="Fills a real Dovecot mailbox over LMTP with N mixed mails (new requests, replies, "
                    "HTML-only, attachments, auto-replies), then runs the real gateway (IMAP source + "
                    "inbound worker, one SQLite desk) until every mail is settled; prints mails per second, "
                    "latency and peak memory, and the same for a naive one-FETCH-RFC822-per-mail loop.",
        epilog="Quick check: python -m bench.ingest -n 500 --baseline 200 --stream 200")
    p.add_argument("-n", type=int, default=5000, help="mails in the backlog (default: %(default)s)")
    p.add_argument("--baseline", type=int, default=1000, metavar="N",
                   help="mails for the naive baseline (default: %(default)s; 0 skips it)")
    p.add_argument("--stream", type=int, default=300, metavar="N",
                   help="mails delivered at a steady rate while the gateway runs, for latency (default: "
                        "%(default)s; 0 skips)")
    p.add_argument("--rate", type=float, default=10.0,
                   help="mails per second in --stream; keep it below the backlog rate (default: %(default)s)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--breakdown", action="store_true",
                   help="also print wall time per processing step (wraps the pipeline's steps)")
    return p.parse_args(argv)


async def bench(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-", dir="/tmp"))
    server = start_dovecot()
    try:
        specs = plan(args.n, args.seed)
        kinds = Counter(s.kind for s in specs)
        t0 = time.perf_counter()
        delivered, size = await asyncio.to_thread(fill, server, specs, args.seed, also_to=BASELINE_USER,
                                                  also_count=args.baseline)
        fill_s = time.perf_counter() - t0
        misordered = await asyncio.to_thread(replies_before_their_original, server, specs)
        print(f"filled {len(specs):,} mails ({size / 2**20:.1f} MiB; " + ", ".join(
            f"{k} {v}" for k, v in sorted(kinds.items())) + f") over LMTP in {fill_s:.1f} s "
            f"({len(specs) / fill_s:,.0f}/s); replies ahead of their original in UID order: {misordered}")
        rows: list[list[object]] = []

        (work / "gateway").mkdir()
        desk = await open_desk(work / "gateway")
        base_rss = rss_mib()
        reset_peak_rss()
        spent: dict[str, float] | None = {} if args.breakdown else None
        if spent is not None:
            instrument(spent)
        gw = await run_gateway(desk, server, len(specs), spent)
        problems = await account(desk, specs)
        settled = await settled_rows(desk, {s.msgid.lower() for s in specs})
        latency = [settled[k.lower()][0].timestamp() - t for k, t in delivered.items() if k.lower() in settled]
        rows.append(["gateway (IDLE, batched PEEK, worker)", len(specs), gw.seconds, len(specs) / gw.seconds,
                     percentile(latency, 50), percentile(latency, 95), 1000 * gw.cpu_seconds / len(specs),
                     gw.peak_mib + gw.parser_peak_mib, gw.load])
        print(f"gateway: every mail stored after {gw.first_stored_all or gw.seconds:.1f} s, settled after "
              f"{gw.seconds:.1f} s; peak memory {gw.peak_mib:.0f} MiB + parsing process {gw.parser_peak_mib:.0f} MiB "
              f"= {gw.peak_mib + gw.parser_peak_mib:.0f} MiB; {await ticket_count(desk):,} tickets; accounting: "
              + ("every mail accounted for" if not problems else f"{len(problems)} PROBLEMS"))
        for problem in problems[:10]:
            print("   ", problem)
        if spent is not None:
            by_cost = sorted(spent.items(), key=lambda kv: -kv[1])
            print_table(["step", "ms per mail (wall)"], [[k, 1000 * v / len(specs)] for k, v in by_cost],
                        title="where the time goes (steps overlap: the IMAP side stores while the worker processes)")

        if args.stream:
            stream_specs = plan(args.stream, args.seed + 100)
            lat = await stream(desk, server, stream_specs, args.rate, args.seed)
            rows.append([f"gateway, steady {args.rate:g}/s (latency)", len(lat), float("nan"), float("nan"),
                         percentile(lat, 50), percentile(lat, 95), float("nan"), peak_rss_mib(),
                         os.getloadavg()[0]])
        await desk.close()

        if args.baseline:
            (work / "naive").mkdir()
            naive_desk = await open_desk(work / "naive")
            reset_peak_rss()
            nv = await run_naive(naive_desk, server, BASELINE_USER, args.baseline)
            rows.append(["naive loop (FETCH RFC822 each)", nv.settled, nv.seconds, nv.settled / nv.seconds,
                         float("nan"), float("nan"), 1000 * nv.cpu_seconds / max(1, nv.settled), nv.peak_mib,
                         nv.load])
            await naive_desk.close()
        print_table(["run", "mails", "seconds", "mails/s", "p50 s", "p95 s", "CPU ms/mail", "peak RSS MiB*",
                     "load"], rows,
                    title=f"mail in, end to end (RSS before the gateway started: {base_rss:.0f} MiB); "
                          "latency = LMTP DATA done -> row settled with its ticket; *gateway rows: this "
                          "process plus the worker's parsing process, CPU likewise")
    finally:
        server.stop(purge=True)
        shutil.rmtree(work, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    runloop.run(bench(args))  # the loop `supportbot run` uses
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
