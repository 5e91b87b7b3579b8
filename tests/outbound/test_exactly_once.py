"""Exactly-once sending (issue 14): each mail is marked sent right after its own 250, the claim is a
short lease renewed while a batch is out, and a crashed sender's mail goes out again within the lease.

Against a real aiosmtpd sink on loopback, on SQLite and PostgreSQL; the crash is a real sender
process killed with SIGKILL while it is sending, or a transport that dies after mail k's 250.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from core.desk import Desk
from core.enums import OutboxStatus
from core.models import OutboxMail
from core.notifier import Notifier
from core.outbox import RetryPolicy, claim_due, list_mail, mark_failed, mark_retry, mark_sent, renew_lease
from core.services import ContactRef, MailContent, open_ticket
from core.timeutil import utcnow
from mail_gateway.outbound.sender import OutboxSender
from mail_gateway.outbound.transport import Outcome, Report, Transport
from tests.conftest import REPO, FixedClock
from tests.kit import eventually
from tests.outbound.conftest import SUPPORT, MailOut, Sink, SinkHandler, make_composer, relay_to


class Crash(Exception):
    """The sender process dying, as far as the code in it can tell."""


class DiesAfter:
    """A transport that dies once `k` outcomes are recorded, as the (k+1)-th mail is about to go out."""

    def __init__(self, inner: Transport, k: int) -> None:
        self.inner, self.k = inner, k
        self.description = f"{inner.description}, dying after {k} mails"

    async def deliver(self, batch: Sequence[OutboxMail], report: Report) -> None:
        recorded = 0

        async def counting(mail: OutboxMail, outcome: Outcome) -> bool:
            nonlocal recorded
            go_on = await report(mail, outcome)
            recorded += 1
            if recorded == self.k:
                raise Crash(f"killed after mail {self.k}")
            return go_on

        await self.inner.deliver(batch, counting)


class GatedSink(SinkHandler):
    """Accepts mail; the `stop_at`-th MAIL FROM waits for `gate` and is then refused (nobody is left)."""

    def __init__(self, stop_at: int | None = None, data_delay: float = 0.0) -> None:
        super().__init__()
        self.stop_at = stop_at
        self.data_delay = data_delay
        self.mails_begun = 0
        self.reached = threading.Event()
        self.gate = threading.Event()

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          mail_options: list[str]) -> str:
        self.mails_begun += 1
        if self.mails_begun == self.stop_at:
            self.reached.set()
            await asyncio.to_thread(self.gate.wait, 30)
            return "421 4.3.2 closing"
        envelope.mail_from = address
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.data_delay:
            await asyncio.sleep(self.data_delay)  # a slow relay: the batch outlives the lease
        return await super().handle_DATA(server, session, envelope)


def message_ids(sink: Sink) -> Counter[str]:
    return Counter(str(r.message["Message-ID"]) for r in sink.received)


async def queue_acks(desk: Desk, count: int) -> list[OutboxMail]:
    """One acknowledgement per new ticket, queued by the notifier as in `supportbot run`."""
    for n in range(count):
        await open_ticket(desk, ContactRef(f"customer{n}@example.org"),
                          MailContent(text="help", subject=f"Problem {n}", message_id=f"<c{n}@example.org>"))
    out = MailOut(desk, Notifier(desk, make_composer(), support_addresses=[SUPPORT], automatic_per_hour=100),
                  OutboxSender(desk, relay_to(Sink())))
    await out.notify()
    mails = sorted(await list_mail(desk, limit=500), key=lambda m: m.id)
    assert len(mails) == count and {m.kind for m in mails} == {"ack"}
    return mails


def by_status(mails: Sequence[OutboxMail]) -> dict[OutboxStatus, list[int]]:
    result: dict[OutboxStatus, list[int]] = {}
    for mail in sorted(mails, key=lambda m: m.id):
        result.setdefault(mail.status, []).append(mail.id)
    return result


async def test_a_sender_dying_after_mail_k_leaves_1_to_k_sent_and_the_next_sender_sends_only_the_rest(
        desk: Desk, sink: Sink, clock: FixedClock) -> None:
    queued = await queue_acks(desk, 10)
    policy = RetryPolicy(lease=timedelta(seconds=60))
    dying = OutboxSender(desk, DiesAfter(relay_to(sink), k=4), policy)
    with pytest.raises(Crash):
        await dying.deliver_due()
    ids = [m.id for m in queued]
    assert by_status(await list_mail(desk, limit=500)) == {OutboxStatus.SENT: ids[:4],
                                                           OutboxStatus.SENDING: ids[4:]}
    assert len(sink.received) == 4, "each mail was marked sent before the next one went out"
    assert dying.windows.count == 4 and dying.windows.percentile(99) < 5

    successor = OutboxSender(desk, relay_to(sink), policy)
    clock.advance(seconds=59)
    assert await successor.deliver_due() == 0, "the dead sender's claim holds until its lease runs out"
    clock.advance(seconds=2)
    assert await successor.deliver_due() == 6
    assert await successor.deliver_due() == 0
    assert {m.status for m in await list_mail(desk, limit=500)} == {OutboxStatus.SENT}
    got = message_ids(sink)
    assert sorted(got) == sorted(m.rfc822_message_id for m in queued)
    assert set(got.values()) == {1}, "no mail twice at the relay"


SENDER = """
import asyncio, sys
from datetime import timedelta
from pathlib import Path
from core.desk import Desk
from core.outbox import RetryPolicy
from mail_gateway.outbound.sender import OutboxSender
from mail_gateway.outbound.smtp import RelaySettings, SmtpTransport

async def main(url, port, folder):
    desk = Desk.open(url, Path(folder))
    sender = OutboxSender(desk, SmtpTransport(RelaySettings(host="127.0.0.1", port=int(port), security="plain",
                          timeout_seconds=30)), RetryPolicy(lease=timedelta(seconds=2)))
    while True:
        await sender.deliver_due()
        await asyncio.sleep(0.05)

asyncio.run(main(*sys.argv[1:]))
"""


async def test_a_sender_process_killed_while_sending_resends_nothing_and_its_mail_goes_within_the_lease(
        desk: Desk, tmp_path: Path) -> None:
    desk.clock = utcnow  # the sender process keeps real time
    queued = await queue_acks(desk, 12)
    sink = Sink()
    sink.handler = GatedSink(stop_at=8)  # mails 1..7 accepted, then the 8th waits at MAIL FROM
    sink.start()
    log = (tmp_path / "sender.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SENDER, desk.db.url.render_as_string(hide_password=False), str(sink.port),
        str(tmp_path), cwd=REPO, stdout=log, stderr=log)
    try:
        await eventually(lambda: sink.handler.reached.is_set(), timeout=30)  # type: ignore[attr-defined]
        os.kill(process.pid, signal.SIGKILL)
        killed = time.monotonic()
        assert await process.wait() == -signal.SIGKILL
        sink.handler.gate.set()  # type: ignore[attr-defined]
        ids = [m.id for m in queued]
        assert by_status(await list_mail(desk, limit=500)) == {OutboxStatus.SENT: ids[:7],
                                                               OutboxStatus.SENDING: ids[7:]}

        successor = OutboxSender(desk, relay_to(sink), RetryPolicy(lease=timedelta(seconds=2)))

        async def all_sent() -> set[OutboxStatus]:
            await successor.deliver_due()
            return {m.status for m in await list_mail(desk, limit=500)}

        await eventually(all_sent, until=lambda statuses: statuses == {OutboxStatus.SENT}, timeout=20)
        assert time.monotonic() - killed < 2 + 2, "picked up within about the lease"
        got = message_ids(sink)
        assert sorted(got) == sorted(m.rfc822_message_id for m in queued)
        assert set(got.values()) == {1}, "no mail twice at the relay"
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        log.close()
        sink.handler.gate.set()  # type: ignore[attr-defined]
        sink.stop()


@pytest.mark.slow
async def test_lease_renewal_keeps_a_slow_batch_from_a_second_sender(desk: Desk) -> None:
    desk.clock = utcnow  # the lease runs in real time here
    queued = await queue_acks(desk, 8)
    sink = Sink()
    sink.handler = GatedSink(data_delay=0.35)  # 8 mails take ~2.8 s, the lease is 1 s
    sink.start()
    try:
        policy = RetryPolicy(lease=timedelta(seconds=1))
        slow = OutboxSender(desk, relay_to(sink), policy, batch=20)
        rival = OutboxSender(desk, relay_to(sink), policy, batch=20)
        first = asyncio.create_task(slow.deliver_due())
        await eventually(lambda: sink.handler.mails_begun)  # type: ignore[attr-defined]
        stolen = 0
        while not first.done():
            stolen += await rival.deliver_due()
            await asyncio.sleep(0.05)
        assert await first == 8
        assert stolen == 0, "the renewed lease kept every row of the batch with its sender"
        assert slow.windows.count == 8 and rival.windows.count == 0
        got = message_ids(sink)
        assert sorted(got) == sorted(m.rfc822_message_id for m in queued) and set(got.values()) == {1}
    finally:
        sink.stop()


async def test_stopping_mid_batch_gives_back_the_mail_not_yet_sent(desk: Desk) -> None:
    desk.clock = utcnow
    queued = await queue_acks(desk, 6)
    sink = Sink()
    sink.handler = GatedSink(data_delay=0.2)
    sink.start()
    try:
        sender = OutboxSender(desk, relay_to(sink), RetryPolicy(lease=timedelta(seconds=30)), poll_seconds=30)
        await sender.start()
        await eventually(lambda: sink.received, until=lambda got: len(got) >= 2)
        await sender.stop()
        mails = await list_mail(desk, limit=500)
        statuses = by_status(mails)
        sent = statuses[OutboxStatus.SENT]
        assert set(statuses) == {OutboxStatus.SENT, OutboxStatus.QUEUED}, "nothing left waiting for a lease"
        assert sent == [m.id for m in queued][:len(sent)] and len(sink.received) == len(sent) < 6
        assert all(m.attempts == 0 for m in mails if m.status == OutboxStatus.QUEUED), "a release is no attempt"
    finally:
        sink.stop()


async def test_a_sender_whose_lease_ran_out_cannot_renew_requeue_or_fail_the_row(
        desk: Desk, clock: FixedClock) -> None:
    await queue_acks(desk, 1)
    policy = RetryPolicy(lease=timedelta(seconds=60))
    (stale,) = await claim_due(desk, policy)
    assert await renew_lease(desk, {stale.id: stale.attempts}, policy) == {stale.id}
    clock.advance(seconds=61)
    (taken,) = await claim_due(desk, policy)  # the first sender looked dead: another claims the row
    assert taken.id == stale.id and taken.attempts == stale.attempts + 1
    assert await renew_lease(desk, {stale.id: stale.attempts}, policy) == set()
    assert await mark_retry(desk, stale.id, "451 later", policy, attempt=stale.attempts) is None
    assert not await mark_failed(desk, stale.id, "550 no", attempt=stale.attempts)
    (row,) = await list_mail(desk)
    assert row.status == OutboxStatus.SENDING and row.attempts == taken.attempts and row.last_error is None
    assert await mark_sent(desk, taken.id, attempt=taken.attempts)
    assert not await mark_sent(desk, stale.id, attempt=stale.attempts), "late 250: sent, and said to be suspect"
    (row,) = await list_mail(desk)
    assert row.status == OutboxStatus.SENT
