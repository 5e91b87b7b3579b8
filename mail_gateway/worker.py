"""The inbound worker: hands every stored mail waiting in line to intake, woken after each store."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from core.inbound import pending_ids, requeue_when_due
from core.intake import Intake, Kind, Outcome, Parsed
from mail_gateway.handoff import Handoff
from mail_gateway.parse_process import ParseProcess

log = logging.getLogger("mail_gateway.worker")

BATCH = 400  # ids read per look at the queue; taken TRANSACTION_BATCH at a time
# Mails taken in one unit of work. SQLite's write lock is held that long (other writers of this
# process, such as the SMTP listener's store, queue behind it), so it stays short: about 70 ms
# here.
TRANSACTION_BATCH = 50
STOP_GRACE_SECONDS = 10.0


class InboundWorker:
    """A Part of `supportbot run`.

    Stores made in this process wake it at once; stores made by other processes (an MTA piping
    into `supportbot ingest`) are found by polling. At start it also finds what a crash left
    behind: those rows are still "received".
    """

    name = "inbound-worker"

    def __init__(self, intake: Intake, *, poll_seconds: float = 5.0,
                 on_outcome: Callable[[Outcome], None] | None = None, parse_in_process: bool = True) -> None:
        self.desk = intake.desk
        self.handoff = Handoff(intake)
        self.poll_seconds = poll_seconds
        self.on_outcome = on_outcome
        self.parse_in_process = parse_in_process
        self._wakeup = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def parser(self) -> ParseProcess | None:
        return self.handoff.parser

    async def start(self) -> None:
        self._stopping.clear()
        if self.parse_in_process:
            self.handoff.parser = ParseProcess(max_attachment_bytes=self.handoff.max_attachment_bytes,
                                               timeout_seconds=self.handoff.parse_timeout_seconds)
        self._task = asyncio.create_task(self._run(), name=self.name)

    def wake(self) -> None:
        self._wakeup.set()

    async def stop(self) -> None:
        self._stopping.set()
        self._wakeup.set()
        if self._task is not None:
            # Let the batch in hand finish (it commits as a whole); cancel only if it hangs.
            done, _ = await asyncio.wait({self._task}, timeout=STOP_GRACE_SECONDS)
            if not done:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            self._task = None
        if self.handoff.parser is not None:
            await self.handoff.parser.stop()
            self.handoff.parser = None

    async def drain(self) -> int:
        """Take what is waiting, oldest first, a batch per unit of work; returns how many mails this
        call settled. The next batch is read and parsed while the current one is taken. Mail the
        rate limit held is put back in line first once its window has passed."""
        settings = self.handoff.intake.settings
        released = await requeue_when_due(self.desk, "rate-limit", settings.new_tickets_window)
        if released:
            log.info("%d mail(s) held by the rate limit waited out its window and go through again", released)
        settled = 0
        while not self._stopping.is_set():
            ids = await pending_ids(self.desk, limit=BATCH)
            chunks = [ids[k:k + TRANSACTION_BATCH] for k in range(0, len(ids), TRANSACTION_BATCH)]
            progress = False
            upcoming: asyncio.Future[list[Parsed]] | None = None
            try:
                for k, chunk in enumerate(chunks):
                    if self._stopping.is_set():
                        break
                    batch = await (upcoming or self.handoff.prepare(chunk))
                    upcoming = asyncio.ensure_future(self.handoff.prepare(chunks[k + 1])) if k + 1 < len(chunks) \
                        else None
                    for outcome in await self.handoff.intake.take(batch):
                        if outcome.kind == Kind.SKIPPED:
                            continue  # another worker holds it
                        progress = True
                        settled += 1
                        log.info("%s", outcome.describe(self.desk.format_number))
                        if self.on_outcome is not None:
                            self.on_outcome(outcome)
            finally:
                if upcoming is not None:  # stopping, or this batch failed: nothing of it is written yet
                    upcoming.cancel()
                    await asyncio.gather(upcoming, return_exceptions=True)
            if not progress:
                break
        return settled

    async def _run(self) -> None:
        while not self._stopping.is_set():
            self._wakeup.clear()
            try:
                await self.drain()
            except Exception:  # the database is away: keep the mail stored, try again later
                log.exception("inbound processing failed; retrying in %.0f s", self.poll_seconds)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), self.poll_seconds)
