"""Parsing inbound mail in a process of its own, a batch at a time.

Two reasons. Parsing is pure Python, so on threads it holds the interpreter lock the event loop
needs (the SQLite work, the SMTP listener, the bot): in a process it runs on the other core. And
a parse that runs past its budget (hostile mail) can be stopped for real by ending the process,
where a thread can only be abandoned.

A batch gets the budget of one mail. When it runs out, the process is ended (the next batch
starts a new one) and that batch's mails are parsed one at a time, each with the budget, so the
one at fault is named and the others go on.

The process is `python -m mail_gateway.parse_worker` with pipes, not multiprocessing: a spawned
multiprocessing child imports the parent's main module too, which tripled its memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pickle
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

from core.errors import UserError
from mail_gateway.parse_worker import HEADER

if TYPE_CHECKING:
    from mail_gateway.parsing import ParsedMail

log = logging.getLogger("mail_gateway.parse_process")

STOP_GRACE_SECONDS = 5.0


class ParseFailed(Exception):
    """The parsing process ended or went silent while parsing."""


class ParseProcess:
    """One parsing process for the inbound worker, started on first use; stop() at the end."""

    def __init__(self, *, max_attachment_bytes: int, timeout_seconds: float) -> None:
        self.max_attachment_bytes = max_attachment_bytes
        self.timeout_seconds = timeout_seconds
        self._process: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()  # one batch at a time on the pipe

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    async def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        assert process.stdin is not None
        process.stdin.close()  # the worker ends at the end of its input
        try:
            await asyncio.wait_for(process.wait(), STOP_GRACE_SECONDS)
        except TimeoutError:
            process.kill()
            await process.wait()

    async def parse_many(self, raws: Sequence[bytes]) -> list[ParsedMail | Exception]:
        try:
            return await self._exchange(raws)
        except (TimeoutError, ParseFailed) as e:
            if len(raws) == 1:
                return [UserError(f"parsing took longer than {self.timeout_seconds:g} s")
                        if isinstance(e, TimeoutError) else UserError(f"the parsing process failed: {e}")]
            log.warning("parsing a batch of %d mails failed (%s); parsing them one at a time",
                        len(raws), type(e).__name__)
            return [result for raw in raws for result in await self.parse_many([raw])]

    async def _exchange(self, raws: Sequence[bytes]) -> list[ParsedMail | Exception]:
        async with self._lock:
            process = await self._running()
            assert process.stdin is not None and process.stdout is not None
            request = pickle.dumps((list(raws), self.max_attachment_bytes), protocol=pickle.HIGHEST_PROTOCOL)
            try:
                process.stdin.write(HEADER.pack(len(request)) + request)
                reply = await asyncio.wait_for(self._reply(process.stdin, process.stdout), self.timeout_seconds)
                return cast("list[ParsedMail | Exception]", pickle.loads(reply))
            except TimeoutError:
                await self._end(process)  # a runaway parse keeps it busy
                raise
            except (ConnectionError, asyncio.IncompleteReadError) as e:
                await self._end(process)  # it died, or closed its side
                raise ParseFailed(type(e).__name__) from e

    @staticmethod
    async def _reply(stdin: asyncio.StreamWriter, stdout: asyncio.StreamReader) -> bytes:
        await stdin.drain()
        size = HEADER.unpack(await stdout.readexactly(HEADER.size))[0]
        return await stdout.readexactly(size)

    async def _running(self) -> asyncio.subprocess.Process:
        if self._process is None or self._process.returncode is not None:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "mail_gateway.parse_worker",
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                limit=64 * 1024 * 1024)
        return self._process

    async def _end(self, process: asyncio.subprocess.Process) -> None:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        if self._process is process:
            self._process = None
