"""Stored mail to intake: read the waiting rows, parse them, hand them to core intake as one batch."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

from core.errors import UserError, describe_error
from core.inbound import waiting_mails
from core.intake import Intake, Kind, Outcome, Parsed, ParsedMail
from mail_gateway import parsing
from mail_gateway.parse_process import ParseProcess

T = TypeVar("T")


class Handoff:
    """Parses in `parser`'s process when there is one (the worker of `supportbot run`), else on a
    thread per mail with the time budget (`supportbot ingest`, retries from the CLI)."""

    def __init__(self, intake: Intake, parser: ParseProcess | None = None) -> None:
        self.intake = intake
        self.desk = intake.desk
        self.max_attachment_bytes = intake.settings.max_attachment_bytes
        self.parse_timeout_seconds = intake.settings.parse_timeout_seconds
        self.parser = parser

    async def take(self, mail_ids: Sequence[int]) -> list[Outcome]:
        """Parse these stored mails and hand them in; a mail no longer waiting comes back SKIPPED."""
        taken = {o.mail_id: o for o in await self.intake.take(await self.prepare(mail_ids))}
        return [taken.get(mail_id) or Outcome(mail_id, Kind.SKIPPED, detail="not waiting for processing")
                for mail_id in mail_ids]

    async def prepare(self, mail_ids: Sequence[int]) -> list[Parsed]:
        """Read and parse, outside any write transaction (the worker prepares the next batch while
        intake takes the current one)."""
        waiting = await waiting_mails(self.desk, mail_ids)
        parsed: list[Parsed] = []
        if self.parser is not None and waiting:
            results = await self.parser.parse_many([mail.raw for mail in waiting])
            parsed = [_parsed(mail.id, result) for mail, result in zip(waiting, results, strict=True)]
        else:
            for mail in waiting:
                try:
                    parsed.append(Parsed(mail.id, await self._parse_on_thread(mail.raw)))
                except Exception as e:  # quarantined by intake, with the reason
                    parsed.append(Parsed(mail.id, error=describe_error(e)))
        return parsed

    async def _parse_on_thread(self, raw: bytes) -> ParsedMail:
        work = _in_daemon_thread(lambda: parsing.parse_mail(raw, max_attachment_bytes=self.max_attachment_bytes))
        try:
            return await asyncio.wait_for(work, self.parse_timeout_seconds)
        except TimeoutError:
            raise UserError(f"parsing took longer than {self.parse_timeout_seconds:g} s") from None


def _parsed(mail_id: int, result: ParsedMail | Exception) -> Parsed:
    if isinstance(result, Exception):
        return Parsed(mail_id, error=describe_error(result))
    return Parsed(mail_id, result)


def _in_daemon_thread(work: Callable[[], T]) -> asyncio.Future[T]:
    """`work` in a thread of its own that nobody waits for at exit. A thread cannot be stopped, so
    a parse past its budget runs on; in the loop's shared executor it would also hold up the
    process's exit (asyncio.run joins those threads), and `supportbot ingest` would hang its MTA.
    The worker of `supportbot run` parses in a process it can stop (mail_gateway.parse_process).
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def deliver(result: T | None, error: BaseException | None) -> None:
        if future.done():  # given up on: wait_for cancelled it at the budget
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        result: T | None = None
        error: BaseException | None = None
        try:
            result = work()
        except BaseException as e:  # handed to the awaiting side
            error = e
        try:
            loop.call_soon_threadsafe(deliver, result, error)
        except RuntimeError:
            pass  # the loop is closed: nobody is waiting any more

    threading.Thread(target=run, name="parse-mail", daemon=True).start()
    return future
