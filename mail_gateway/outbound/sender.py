"""The outbox sender: a running part that claims due mail, hands it to a transport and records the outcome.

Exactly once, as far as SMTP allows: each mail is marked sent in its own short transaction right
after its own 250, before the next mail of the batch goes out (one connection still carries the
batch). The claim is a short lease, renewed while the batch is being sent, so a slow batch is never
taken over by another sender and a crashed sender's mail goes out again within about the lease. The
one way left to send a mail twice is a crash between a relay's 250 and that commit: `windows`
measures that gap.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress

from core.addresses import redact_addresses
from core.background import Background, nap
from core.desk import Desk
from core.models import OutboxMail
from core.outbox import RetryPolicy, claim_due, mark_failed, mark_retry, mark_sent, release, renew_lease
from mail_gateway.outbound.transport import Failed, Outcome, Retry, Sent, Transport

log = logging.getLogger(__name__)

# Tries at recording "sent" after a 250 (a busy or restarting database): each failure here is a
# mail that would go out twice, so it is worth a few seconds of waiting.
MARK_SENT_TRIES = 4


class SendWindows:
    """Seconds from a relay's 250 to the commit of "sent", for the last `keep` mails sent."""

    def __init__(self, keep: int = 10_000) -> None:
        self.samples: deque[float] = deque(maxlen=keep)
        self.count = 0
        self.longest = 0.0

    def add(self, seconds: float) -> None:
        self.samples.append(seconds)
        self.count += 1
        self.longest = max(self.longest, seconds)

    def percentile(self, pct: float) -> float:
        """Nearest-rank percentile of the kept samples, in seconds; NaN before the first mail."""
        if not self.samples:
            return math.nan
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, max(0, math.ceil(pct / 100 * len(ordered)) - 1))]

    def summary(self) -> str:
        if not self.samples:
            return "no mail sent"
        return (f"250 -> committed 'sent': p50 {self.percentile(50) * 1000:.2f} ms, "
                f"p99 {self.percentile(99) * 1000:.2f} ms, max {self.longest * 1000:.2f} ms over {self.count} mails")


class _Lease:
    """The claim of one batch, renewed in the background while any of it is still unrecorded."""

    def __init__(self, desk: Desk, policy: RetryPolicy, rows: Sequence[OutboxMail], claimed_at: float) -> None:
        self.desk = desk
        self.policy = policy
        self.claim = {row.id: row.attempts for row in rows}  # (id, attempts) names this claim of the row
        self.held = dict(self.claim)  # the rows whose outcome is not recorded yet, and still ours
        self.seconds = policy.lease.total_seconds()
        self.valid_until = claimed_at + self.seconds  # monotonic; claimed_at is taken before the claim
        self.lost: set[int] = set()

    def fresh(self) -> bool:
        """May another mail be started? Only while at least half the lease is left and nothing was lost."""
        return not self.lost and time.monotonic() < self.valid_until - self.seconds / 2

    @asynccontextmanager
    async def kept(self) -> AsyncIterator[_Lease]:
        task = asyncio.create_task(self._keep(), name="outbox-lease")
        try:
            yield self
        finally:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task

    async def _keep(self) -> None:
        every = self.policy.renew_every.total_seconds()
        while True:
            await asyncio.sleep(every)
            asked = dict(self.held)
            if not asked:
                continue
            started = time.monotonic()
            try:
                kept = await renew_lease(self.desk, asked, self.policy)
            except Exception:
                log.warning("could not renew the lease of %d outbox mail(s); trying again in %.0fs",
                            len(asked), every, exc_info=True)
                continue
            self.valid_until = started + self.seconds
            # Rows recorded meanwhile left `held` (and the claim); any other missing row was taken over.
            lost = {mail_id for mail_id in asked.keys() - kept if mail_id in self.held}
            if lost:
                log.warning("outbox mail %s: the lease ran out and another sender claimed it; not sending it",
                            ", ".join(map(str, sorted(lost))))
                self.lost |= lost
                for mail_id in lost:
                    del self.held[mail_id]


class OutboxSender:
    """Sends whatever is due, woken by commits in this process and polling for the rest.

    Nothing is lost while the relay is down: each mail stays queued with a growing delay and
    keeps its Message-ID, so the customer gets one mail that threads, however late.
    """

    name = "mail-sender"

    def __init__(self, desk: Desk, transport: Transport, policy: RetryPolicy | None = None, *,
                 batch: int = 20, poll_seconds: float = 5.0) -> None:
        self.desk = desk
        self.transport = transport
        self.policy = policy or RetryPolicy()
        self.batch = batch
        self.poll_seconds = poll_seconds
        self.windows = SendWindows()
        self._background = Background()
        self._stop = self._background.stopping

    async def deliver_due(self) -> int:
        """One round: claim due mail, send it, record each outcome as it comes. Returns how many were claimed."""
        claimed_at = time.monotonic()
        claimed = await claim_due(self.desk, self.policy, self.batch)
        if not claimed:
            return 0
        lease = _Lease(self.desk, self.policy, claimed, claimed_at)

        async def report(mail: OutboxMail, outcome: Outcome) -> bool:
            still_held = lease.held.pop(mail.id, None) is not None
            await self._record(mail, lease.claim[mail.id], outcome)
            return still_held and lease.fresh() and not self._stop.is_set()

        async with lease.kept():
            # Should the transport raise, the unrecorded rows keep their claim until the lease runs
            # out: the mail in progress may have been accepted, so none is released early.
            await self.transport.deliver(claimed, report)
        if lease.held:
            # Never handed to the relay (stopping, or the lease could no longer be trusted): due again now.
            await release(self.desk, lease.held)
        return len(claimed)

    async def _record(self, mail: OutboxMail, attempt: int, outcome: Outcome) -> None:
        where = f"outbox mail {mail.id} ({mail.kind}, ticket id {mail.ticket_id})"
        # The database keeps the relay's words; the log gets them with addresses shortened.
        if isinstance(outcome, Sent):
            held = await self._mark_sent(mail, attempt, outcome)
            if not held:
                log.warning("%s was sent after another sender had claimed it again: it may go out twice", where)
            log.info("sent %s to %d recipient(s)%s", where, len(mail.recipients),
                     f"; {redact_addresses(outcome.note)}" if outcome.note else "")
        elif isinstance(outcome, Retry):
            shown = redact_addresses(outcome.error)
            retried = await mark_retry(self.desk, mail.id, outcome.error, self.policy, attempt=attempt)
            if retried is None:
                log.warning("%s not sent (%s) and meanwhile claimed by another sender", where, shown)
            elif retried:
                log.info("%s not sent yet (attempt %d): %s", where, mail.attempts, shown)
            else:
                log.error("%s failed for good after %d attempts: %s", where, mail.attempts, shown)
        elif isinstance(outcome, Failed):
            if await mark_failed(self.desk, mail.id, outcome.error, attempt=attempt):
                log.error("%s failed permanently: %s", where, redact_addresses(outcome.error))
            else:
                log.warning("%s refused (%s) and meanwhile claimed by another sender", where,
                            redact_addresses(outcome.error))

    async def _mark_sent(self, mail: OutboxMail, attempt: int, outcome: Sent) -> bool:
        tries = 1
        while True:
            try:
                held = await mark_sent(self.desk, mail.id, outcome.note, attempt=attempt)
            except Exception:
                if tries >= MARK_SENT_TRIES:
                    raise  # the row keeps its claim until the lease runs out, then goes out again
                log.warning("could not record outbox mail %d as sent (try %d of %d)", mail.id, tries,
                            MARK_SENT_TRIES, exc_info=True)
                await asyncio.sleep(0.25 * 2**tries)
                tries += 1
                continue
            self.windows.add(time.monotonic() - outcome.accepted_at)
            return held

    async def start(self) -> None:
        log.info("outbox sender started: %s (lease %.0fs)", self.transport.description,
                 self.policy.lease.total_seconds())
        self._background.start(self._run(), self.name)

    async def stop(self) -> None:
        await self._background.stop()
        log.info("outbox sender stopped; %s", self.windows.summary())

    async def _run(self) -> None:
        committed = self.desk.db.listen_for_events()
        while not self._stop.is_set():
            committed.clear()
            try:
                while await self.deliver_due() and not self._stop.is_set():
                    pass
            except Exception:
                log.exception("outbox sender round failed; trying again in %.0fs", self.poll_seconds)
            await nap(self.poll_seconds, committed, self._stop)
