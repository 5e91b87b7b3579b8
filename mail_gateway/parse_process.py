"""Parsing inbound mail in a process of its own, a batch at a time.

Two reasons. Parsing is pure Python, so on threads it holds the interpreter lock the event loop
needs (the SQLite work, the SMTP listener, the bot): in a process it runs on the other core. And
a parse that runs past its budget (hostile mail) can be stopped for real by ending the process,
where a thread can only be abandoned.

A batch gets the budget of one mail. When it runs out, the process is ended and started again,
and that batch's mails are parsed one at a time, each with the budget, so the one at fault is
named and the others go on.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING

from core.errors import UserError

if TYPE_CHECKING:
    from mail_gateway.parsing import ParsedMail

log = logging.getLogger("mail_gateway.parse_process")

def _warm_up() -> None:
    import mail_gateway.parsing  # noqa: F401  (imported once, before the first batch arrives)


def _parse_batch(raws: Sequence[bytes], max_attachment_bytes: int) -> list[ParsedMail | Exception]:
    """In the parsing process: each mail's result, or the exception that stopped it."""
    from mail_gateway.parsing import parse_mail

    results: list[ParsedMail | Exception] = []
    for raw in raws:
        try:
            results.append(parse_mail(raw, max_attachment_bytes=max_attachment_bytes))
        except Exception as e:  # parse_mail is built not to raise; if it does, that mail says why
            results.append(UserError(f"{type(e).__name__}: {str(e)[:300]}"))
    return results


class ParseProcess:
    """One parsing process for the inbound worker; start() before use, stop() at the end."""

    def __init__(self, *, max_attachment_bytes: int, timeout_seconds: float) -> None:
        self.max_attachment_bytes = max_attachment_bytes
        self.timeout_seconds = timeout_seconds
        self._pool: ProcessPoolExecutor | None = None

    def start(self) -> None:
        # spawn, not fork: the parent has threads (aiosqlite, IMAP), which fork does not copy safely.
        self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=_warm_up)

    def stop(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    @property
    def pid(self) -> int | None:
        """The parsing process's id, once it runs (for the benchmark's memory figure)."""
        processes = getattr(self._pool, "_processes", None) or {}
        return next(iter(processes), None)

    async def parse_many(self, raws: Sequence[bytes]) -> list[ParsedMail | Exception]:
        try:
            return await self._run(raws)
        except (TimeoutError, BrokenProcessPool) as e:
            if len(raws) == 1:
                return [_budget_error(self.timeout_seconds) if isinstance(e, TimeoutError)
                        else UserError("the parsing process died on this mail")]
            log.warning("parsing a batch of %d mails failed (%s); parsing them one at a time",
                        len(raws), type(e).__name__)
            return [result for raw in raws for result in await self.parse_many([raw])]

    async def _run(self, raws: Sequence[bytes]) -> list[ParsedMail | Exception]:
        if self._pool is None:
            raise RuntimeError("ParseProcess.start() was not called")
        work = asyncio.get_running_loop().run_in_executor(self._pool, _parse_batch, list(raws),
                                                           self.max_attachment_bytes)
        try:
            return await asyncio.wait_for(work, self.timeout_seconds)
        except (TimeoutError, BrokenProcessPool):
            self._restart()  # a runaway parse keeps the process busy: end it, and start afresh
            raise

    def _restart(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            for process in list(getattr(pool, "_processes", {}).values()):
                process.kill()
            pool.shutdown(wait=False, cancel_futures=True)
        self.start()


def _budget_error(seconds: float) -> UserError:
    return UserError(f"parsing took longer than {seconds:g} s")
