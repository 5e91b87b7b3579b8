"""The inbound worker: processes every stored mail waiting in line, woken after each store."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from core.desk import Desk
from core.inbound import pending_ids
from mail_gateway.inbound_context import InboundContext
from mail_gateway.parse_process import ParseProcess
from mail_gateway.processing import Kind, Outcome, PreparedBatch, prepare_batch, settle_batch

log = logging.getLogger("mail_gateway.worker")

BATCH = 400  # ids read per look at the queue; settled TRANSACTION_BATCH at a time
# Mails settled in one transaction. SQLite's write lock is held that long (other writers of this
# process, such as the SMTP listener's store, queue behind it), so it stays short: about 70 ms
# here.
TRANSACTION_BATCH = 50
STOP_GRACE_SECONDS = 10.0


class InboundWorker:
    """A Part of `supportbot run`.

    Stores made in this process wake it at once; stores made by other processes (another
    `supportbot run --role mail`, an MTA piping into `supportbot ingest`) are found by polling.
    At start it also finds what a crash left behind: those rows are still "received".
    """

    name = "inbound-worker"

    def __init__(self, desk: Desk, ctx: InboundContext, *, poll_seconds: float = 5.0,
                 on_outcome: Callable[[Outcome], None] | None = None, parse_in_process: bool = True) -> None:
        self.desk = desk
        self.ctx = ctx
        self.poll_seconds = poll_seconds
        self.on_outcome = on_outcome
        self.parse_in_process = parse_in_process
        self.parser: ParseProcess | None = None  # while started (drain() alone parses on threads)
        self._wakeup = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._stopping.clear()
        if self.parse_in_process:
            self.parser = ParseProcess(max_attachment_bytes=self.ctx.max_attachment_bytes,
                                       timeout_seconds=self.ctx.parse_timeout_seconds)
        self._task = asyncio.create_task(self._run(), name=self.name)

    def wake(self) -> None:
        self._wakeup.set()

    async def stop(self) -> None:
        self._stopping.set()
        self._wakeup.set()
        if self._task is None:
            return
        # Let the mail in hand finish (its row is settled in one step); cancel only if it hangs.
        done, _ = await asyncio.wait({self._task}, timeout=STOP_GRACE_SECONDS)
        if not done:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._task = None
        if self.parser is not None:
            await self.parser.stop()
            self.parser = None

    async def drain(self) -> int:
        """Process what is waiting, oldest first, a batch per transaction; returns how many mails
        this call settled. The next batch is read and parsed while the current one is settled."""
        settled = 0
        while not self._stopping.is_set():
            ids = await pending_ids(self.desk, limit=BATCH)
            chunks = [ids[k:k + TRANSACTION_BATCH] for k in range(0, len(ids), TRANSACTION_BATCH)]
            progress = False
            upcoming: asyncio.Future[PreparedBatch] | None = None
            try:
                for k, chunk in enumerate(chunks):
                    if self._stopping.is_set():
                        break
                    batch = await (upcoming or self._prepare(chunk))
                    upcoming = asyncio.ensure_future(self._prepare(chunks[k + 1])) if k + 1 < len(chunks) else None
                    for outcome in await settle_batch(self.desk, batch, self.ctx):
                        if outcome.kind == Kind.SKIPPED:
                            continue  # another worker holds it
                        progress = True
                        settled += 1
                        log.info("%s", outcome.describe(self.desk))
                        if self.on_outcome is not None:
                            self.on_outcome(outcome)
            finally:
                if upcoming is not None:  # stopping, or this batch failed: nothing of it is written yet
                    upcoming.cancel()
                    await asyncio.gather(upcoming, return_exceptions=True)
            if not progress:
                break
        return settled

    async def _prepare(self, mail_ids: list[int]) -> PreparedBatch:
        return await prepare_batch(self.desk, mail_ids, self.ctx, self.parser)

    async def _run(self) -> None:
        while not self._stopping.is_set():
            self._wakeup.clear()
            try:
                await self.drain()
            except Exception:  # the database is away: keep the mail stored, try again later
                log.exception("inbound processing failed; retrying in %.0f s", self.poll_seconds)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), self.poll_seconds)
