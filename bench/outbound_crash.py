"""Exactly-once sending under kill -9: acknowledgements sent by a sender process killed at random moments.

    python -m bench.outbound_crash [--mails 1000] [--kills 20] [--lease 2] [--relay-ms 0] [--seed 14]
                                   [--code DIR] [--database-url URL]

1. Opens `--mails` tickets, so the mail notifier queues one acknowledgement each (the outbox rows).
2. Starts a real aiosmtpd sink in a process of its own, which appends "<monotonic time> <Message-ID>"
   to a file for every mail it accepts, before its 250 (after `--relay-ms` of work per mail, as a
   relay that writes its queue file first; 0 is a loopback sink, the worst case for the window).
3. Starts a sender process (an OutboxSender over SMTP to the sink, as `supportbot run` has it, with a
   `--lease` second lease), waits until the sink has accepted a mail from it, then waits a random
   0..`--max-delay` seconds and SIGKILLs it; `--kills` times, then one last sender runs until every
   mail is sent.
4. Counts at the sink: mails delivered, duplicates, and of those how many were "in the window": the
   first copy was the last mail the killed sender handed over (its data had gone out; the relay's
   250 was being made, on its way or read, and the commit of "sent" not yet done: RFC 1047's window,
   which no SMTP client can close). Any other duplicate is a mail sent again although its sender had
   gone on to the next one, i.e. a bug. The senders also report
   each mail's 250 -> commit time (OutboxSender.windows), printed as p50 / p99 / max.

`--code DIR` runs the sender processes on another checkout (e.g. `git worktree add /tmp/before
<commit>`) against the same database, to measure the code before a change in the same way.
CLOCK_MONOTONIC is system-wide on Linux, so the sink's and this process's times compare.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import func, select

from bench._util import percentile, print_table
from core.desk import Desk
from core.enums import OutboxStatus
from core.events import consume_once
from core.migrate import upgrade
from core.models import OutboxMail
from core.notifier import CONSUMER, Notifier
from core.services import ContactRef, MailContent, open_ticket
from core.tokens import Signer
from mail_gateway.outbound.compose import Composer
from supportbot.templating import template_environment

REPO = Path(__file__).resolve().parent.parent
SUPPORT = "support@example.test"

SINK = r"""
import asyncio, sys, threading, time
from aiosmtpd.controller import Controller

class Counting:
    def __init__(self, path, relay_ms):
        self.out = open(path, "a", buffering=1)
        self.lock = threading.Lock()
        self.relay_seconds = float(relay_ms) / 1000

    async def handle_DATA(self, server, session, envelope):
        if self.relay_seconds:  # a real relay's work before it takes the mail (queue file, fsync, scans)
            await asyncio.sleep(self.relay_seconds)
        head = (envelope.original_content or b"").split(b"\r\n\r\n", 1)[0]
        mid = next((line.split(b":", 1)[1].strip().decode() for line in head.split(b"\r\n")
                    if line.lower().startswith(b"message-id:")), "-")
        with self.lock:  # written (to the kernel) before the 250 goes out
            self.out.write(f"{time.monotonic():.6f} {mid}\n")
        return "250 2.0.0 accepted"

Controller(Counting(sys.argv[2], sys.argv[3]), hostname="127.0.0.1", port=int(sys.argv[1])).start()
print("SINK READY", flush=True)
threading.Event().wait()
"""

# Runs on whichever checkout is first on sys.path (cwd and PYTHONPATH are set to it): the API used
# here is the same before and after issue 14.
SENDER = r"""
import asyncio, sys
from datetime import timedelta
from pathlib import Path
import core.outbox
from core.desk import Desk
from core.outbox import RetryPolicy
from mail_gateway.outbound.sender import OutboxSender
from mail_gateway.outbound.smtp import RelaySettings, SmtpTransport

async def main(url, port, folder, lease, windows_path):
    print("sender code:", core.outbox.__file__, file=sys.stderr, flush=True)
    desk = Desk.open(url, Path(folder))
    sender = OutboxSender(desk, SmtpTransport(RelaySettings(host="127.0.0.1", port=int(port), security="plain",
                          timeout_seconds=30)), RetryPolicy(lease=timedelta(seconds=float(lease))))
    windows = getattr(sender, "windows", None)  # the 250 -> commit times (after issue 14 only)
    if windows is not None:
        out = open(windows_path, "a", buffering=1)
        add = windows.add
        def add_and_write(seconds):
            add(seconds)
            out.write(f"{seconds:.9f}\n")
        windows.add = add_and_write
    while True:
        if not await sender.deliver_due():
            await asyncio.sleep(0.05)

asyncio.run(main(*sys.argv[1:]))
"""


@dataclass
class Run:
    starts: list[float] = field(default_factory=list)  # monotonic times each sender process was started
    kills: list[float] = field(default_factory=list)  # monotonic times of the SIGKILLs
    accepted: list[tuple[float, str]] = field(default_factory=list)  # the sink's (time, Message-ID)
    windows: list[float] = field(default_factory=list)
    seconds: float = 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


async def queue_acks(url: str, folder: Path, mails: int) -> list[str]:
    desk = Desk.open(url, folder)
    try:
        await upgrade(desk.db)
        composer = Composer(signer=Signer(b"bench", "example.test"), support_address=SUPPORT,
                            desk_name="Bench Support", from_name="Bench Support", templates=template_environment())
        notifier = Notifier(desk, composer, support_addresses=[SUPPORT], automatic_per_hour=10**6)
        for n in range(mails):
            await open_ticket(desk, ContactRef(f"customer{n}@example.org", "A Customer"),
                              MailContent(text="The export totals are wrong.", subject=f"Export {n}",
                                          message_id=f"<c{n}@customer.example.org>"))
        while await consume_once(desk.db, CONSUMER, notifier.handle, clock=desk.clock, batch=500):
            pass
        async with desk.db.read() as session:
            return list(await session.scalars(select(OutboxMail.rfc822_message_id)))
    finally:
        await desk.close()


async def outbox_statuses(url: str, folder: Path) -> Counter[str]:
    desk = Desk.open(url, folder)
    try:
        async with desk.db.read() as session:
            rows = (await session.execute(select(OutboxMail.status, func.count()).group_by(OutboxMail.status))).all()
        return Counter({status.value: count for status, count in rows})
    finally:
        await desk.close()


def start_sender(args: argparse.Namespace, url: str, port: int, folder: Path, log: Path) -> subprocess.Popen[bytes]:
    code = str(Path(args.code).resolve())
    env = {**os.environ, "PYTHONPATH": code}
    with log.open("ab") as err:
        return subprocess.Popen([sys.executable, "-c", SENDER, url, str(port), str(folder), str(args.lease),
                                 str(folder / "windows.txt")], cwd=code, env=env, stdout=err, stderr=err)


def kill(process: subprocess.Popen[bytes]) -> float:
    process.send_signal(signal.SIGKILL)
    at = time.monotonic()
    process.wait()
    return at


def wait_for(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up waiting for {what} after {timeout:.0f}s")
        time.sleep(0.005)


def crash_run(args: argparse.Namespace, url: str, folder: Path, expected: int) -> Run:
    rng = random.Random(args.seed)
    accepted_file, log = folder / "sink.txt", folder / "senders.log"
    port = free_port()
    sink = subprocess.Popen([sys.executable, "-c", SINK, str(port), str(accepted_file), str(args.relay_ms)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=REPO)
    run = Run()
    started = time.monotonic()
    try:
        assert sink.stdout is not None and b"SINK READY" in sink.stdout.readline()
        for _ in range(args.kills):
            before = len(lines(accepted_file))
            if before >= expected * 2:
                break
            run.starts.append(time.monotonic())
            sender = start_sender(args, url, port, folder, log)
            try:
                wait_for(lambda b=before: len(lines(accepted_file)) > b, 60, "the sender's first mail")
                time.sleep(rng.uniform(0, args.max_delay))
            finally:
                run.kills.append(kill(sender))
        run.starts.append(time.monotonic())
        sender = start_sender(args, url, port, folder, log)
        try:
            def all_sent() -> bool:
                return asyncio.run(outbox_statuses(url, folder)).get(OutboxStatus.SENT.value, 0) >= expected

            wait_for(all_sent, 600, "every mail marked sent")
            time.sleep(args.lease + 0.5)  # a late duplicate would come within a lease
        finally:
            kill(sender)
        run.seconds = time.monotonic() - started
    finally:
        sink.terminate()
        sink.wait()
    for line in lines(accepted_file):
        at, _, message_id = line.partition(" ")
        run.accepted.append((float(at), message_id))
    run.windows = [float(v) for v in lines(folder / "windows.txt")]
    code_lines = sorted({line for line in lines(log) if line.startswith("sender code:")})
    print("\n".join(code_lines))
    errors = [line for line in lines(log) if "Traceback" in line or "Error" in line]
    if errors:
        print(f"sender log ({log}) has {len(errors)} error line(s), e.g. {errors[0]}")
    return run


def in_window(first: float, accepted_times: Sequence[float], run: Run) -> bool:
    """The first copy was the last mail a killed sender handed over: the one whose data had gone out
    and whose "sent" was not committed yet. The sink may take it after the kill (the relay's own work
    before its 250), but before the next sender starts (a process start takes far longer)."""
    started = [s for s in run.starts if s <= first]
    if not started or len(started) > len(run.kills):
        return False  # before any sender, or by the last one, which was never killed
    next_start = run.starts[len(started)]
    return not any(first < t < next_start for t in accepted_times)


def report(run: Run, expected_ids: Sequence[str], label: str) -> None:
    counts = Counter(message_id for _, message_id in run.accepted)
    times = sorted(at for at, _ in run.accepted)
    first_seen: dict[str, float] = {}
    for at, message_id in sorted(run.accepted):
        first_seen.setdefault(message_id, at)
    duplicated = {m: c - 1 for m, c in counts.items() if c > 1}
    inside = sum(n for m, n in duplicated.items() if in_window(first_seen[m], times, run))
    missing = len(set(expected_ids) - set(counts))
    ms = [w * 1000 for w in run.windows]
    # Where in a mail's cycle each kill fell: ms since the sink's last acceptance before it.
    since = [(k - max((t for t in times if t <= k), default=k)) * 1000 for k in run.kills]
    print("each kill, ms after the sink's last acceptance:", " ".join(f"{v:.1f}" for v in sorted(since)))
    rows: list[list[object]] = [
        ["acknowledgements queued", len(expected_ids)],
        ["SIGKILLs while sending", len(run.kills)],
        ["delivered (distinct Message-IDs)", len(counts)],
        ["missing", missing],
        ["accepted by the sink in all", len(run.accepted)],
        ["duplicates", sum(duplicated.values())],
        ["  in the window (a kill between a mail's data and its commit)", inside],
        ["  outside it (resent after its sender had gone on to the next mail)", sum(duplicated.values()) - inside],
        ["250 -> commit window p50 ms", f"{percentile(ms, 50):.2f}" if ms else "n/a"],
        ["250 -> commit window p99 ms", f"{percentile(ms, 99):.2f}" if ms else "n/a"],
        ["250 -> commit window max ms", f"{max(ms):.2f}" if ms else "n/a"],
        ["  (mails measured)", len(ms)],
        ["run seconds", f"{run.seconds:.1f}"],
    ]
    print_table(["", label], rows, title="Exactly-once sending under kill -9")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.outbound_crash", description=__doc__.splitlines()[0])
    parser.add_argument("--mails", type=int, default=1000, help="acknowledgements (default: %(default)s)")
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs while sending (default: %(default)s)")
    parser.add_argument("--lease", type=float, default=2.0, help="the claim's lease, seconds (default: %(default)s)")
    parser.add_argument("--max-delay", type=float, default=0.2,
                        help="kill 0..this many seconds after a sender's first mail (default: %(default)s)")
    parser.add_argument("--relay-ms", type=float, default=0.0,
                        help="the sink works this long on each mail before taking it, as a real relay does "
                             "(default: %(default)s, a loopback sink: the worst case for the window)")
    parser.add_argument("--seed", type=int, default=14, help="random kill moments (default: %(default)s)")
    parser.add_argument("--code", default=str(REPO),
                        help="checkout the sender processes run (default: this one, %(default)s)")
    parser.add_argument("--database-url", help="an empty PostgreSQL database; default: SQLite in a temp dir")
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="supportbot-bench-crash-"))
    try:
        url = args.database_url or f"sqlite+aiosqlite:///{folder / 'desk.db'}"
        print(f"queueing {args.mails} acknowledgements ({'PostgreSQL' if args.database_url else 'SQLite'}) …",
              flush=True)
        expected = asyncio.run(queue_acks(url, folder, args.mails))
        assert len(expected) == args.mails, (len(expected), args.mails)
        run = crash_run(args, url, folder, len(expected))
        report(run, expected, Path(args.code).resolve().name if args.code != str(REPO) else "this checkout")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
