"""The outbox sender: a running part that claims due mail, hands it to a transport and records the outcome."""

from __future__ import annotations

import logging

from core.addresses import redact_addresses
from core.background import Background, nap
from core.desk import Desk
from core.outbox import RetryPolicy, claim_due, mark_failed, mark_retry, mark_sent
from mail_gateway.outbound.transport import Failed, Retry, Sent, Transport

log = logging.getLogger(__name__)


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
        self._background = Background()
        self._stop = self._background.stopping

    async def deliver_due(self) -> int:
        """One round: claim due mail, send it, record each outcome. Returns how many were claimed."""
        claimed = await claim_due(self.desk, self.policy, self.batch)
        if not claimed:
            return 0
        outcomes = await self.transport.deliver(claimed)
        for mail, outcome in zip(claimed, outcomes, strict=True):
            where = f"outbox mail {mail.id} ({mail.kind}, ticket id {mail.ticket_id})"
            # The database keeps the relay's words; the log gets them with addresses shortened.
            if isinstance(outcome, Sent):
                await mark_sent(self.desk, mail.id, outcome.note)
                log.info("sent %s to %d recipient(s)%s", where, len(mail.recipients),
                         f"; {redact_addresses(outcome.note)}" if outcome.note else "")
            elif isinstance(outcome, Retry):
                shown = redact_addresses(outcome.error)
                if await mark_retry(self.desk, mail.id, outcome.error, self.policy):
                    log.info("%s not sent yet (attempt %d): %s", where, mail.attempts, shown)
                else:
                    log.error("%s failed for good after %d attempts: %s", where, mail.attempts, shown)
            elif isinstance(outcome, Failed):
                await mark_failed(self.desk, mail.id, outcome.error)
                log.error("%s failed permanently: %s", where, redact_addresses(outcome.error))
        return len(claimed)

    async def start(self) -> None:
        log.info("outbox sender started: %s", self.transport.description)
        self._background.start(self._run(), self.name)

    async def stop(self) -> None:
        await self._background.stop()

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
