"""Parsing inbound mail in a process of its own, a batch at a time.

Two reasons. Parsing is pure Python, so on threads it holds the interpreter lock the event loop
needs (the SQLite work, the SMTP listener, the bot): in a process it runs on the other core. And
a parse that runs past its budget (hostile mail) can be stopped for real by ending the process,
where a thread can only be abandoned.

A batch gets the budget of one mail. When it runs out, the process is ended (the next batch
starts a new one) and that batch's mails are parsed one at a time, each with the budget, so the
one at fault is named and the others go on.

Memory: a mail over BIG_MAIL_BYTES is a batch of its own, and smaller ones share a batch only up
to that many bytes together, so two big mails never share a parse. Within a batch the mails go
over the pipe one after another as they are (no pickle, in chunks) and the process parses and
answers them one at a time (mail_gateway.parse_worker): it holds one mail and one result at a time.

The process is `python -m mail_gateway.parse_worker` with pipes, not multiprocessing: a spawned
multiprocessing child imports the parent's main module too, which tripled its memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import sys
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, cast

from core.errors import UserError
from mail_gateway.parse_worker import HEADER

if TYPE_CHECKING:
    from mail_gateway.parsing import ParsedMail

log = logging.getLogger("mail_gateway.parse_process")

STOP_GRACE_SECONDS = 5.0
BIG_MAIL_BYTES = 5 * 1024 * 1024  # parsed alone; also what smaller mails may add up to in one batch
_WRITE_CHUNK = 1024 * 1024  # of a mail handed to the pipe at a time, so none is buffered whole
# glibc serves a block over this from mmap and gives it back to the system when it is freed. Left
# to itself it raises the threshold after the first large free (up to 32 MiB), and a 30 MB mail's
# blocks then stay in the heap after it: the next mail's parse peaked 50% higher (bench/parse_memory.py).
_WORKER_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(1024 * 1024)}


class ParseFailed(Exception):
    """The parsing process ended or went silent while parsing."""


class ParseProcess:
    """One parsing process for the inbound worker, started on first use; stop() at the end."""

    def __init__(self, *, max_attachment_bytes: int, timeout_seconds: float,
                 big_mail_bytes: int = BIG_MAIL_BYTES) -> None:
        self.max_attachment_bytes = max_attachment_bytes
        self.timeout_seconds = timeout_seconds
        self.big_mail_bytes = big_mail_bytes
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
        """Parse `raws` in order: big ones alone, smaller ones in batches (see the module)."""
        results: list[ParsedMail | Exception] = []
        for batch in batches(raws, self.big_mail_bytes):
            results.extend(await self._parse_batch(batch))
        return results

    async def _parse_batch(self, raws: Sequence[bytes]) -> list[ParsedMail | Exception]:
        try:
            return await self._exchange(raws)
        except (TimeoutError, ParseFailed) as e:
            if len(raws) == 1:
                return [UserError(f"parsing took longer than {self.timeout_seconds:g} s")
                        if isinstance(e, TimeoutError) else UserError(f"the parsing process failed: {e}")]
            log.warning("parsing a batch of %d mails failed (%s); parsing them one at a time",
                        len(raws), type(e).__name__)
            return [result for raw in raws for result in await self._parse_batch([raw])]

    async def _exchange(self, raws: Sequence[bytes]) -> list[ParsedMail | Exception]:
        async with self._lock:
            process = await self._running()
            assert process.stdin is not None and process.stdout is not None
            try:
                return await asyncio.wait_for(self._talk(process.stdin, process.stdout, raws), self.timeout_seconds)
            except TimeoutError:
                await self._end(process)  # a runaway parse keeps it busy
                raise
            except (ConnectionError, asyncio.IncompleteReadError) as e:
                await self._end(process)  # it died, or closed its side
                raise ParseFailed(type(e).__name__) from e

    async def _talk(self, stdin: asyncio.StreamWriter, stdout: asyncio.StreamReader,
                    raws: Sequence[bytes]) -> list[ParsedMail | Exception]:
        request = pickle.dumps((len(raws), self.max_attachment_bytes), protocol=pickle.HIGHEST_PROTOCOL)
        stdin.write(HEADER.pack(len(request)) + request)
        for raw in raws:
            stdin.write(HEADER.pack(len(raw)))
            view = memoryview(raw)
            for start in range(0, len(raw), _WRITE_CHUNK):
                stdin.write(view[start : start + _WRITE_CHUNK])
                await stdin.drain()  # the pipe's buffer holds a chunk, not a copy of the mail
        await stdin.drain()
        results = []
        for _ in raws:  # the answers come one mail at a time, in order
            size = HEADER.unpack(await stdout.readexactly(HEADER.size))[0]
            results.append(cast("ParsedMail | Exception", pickle.loads(await stdout.readexactly(size))))
        return results

    async def _running(self) -> asyncio.subprocess.Process:
        if self._process is None or self._process.returncode is not None:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "mail_gateway.parse_worker",
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                limit=64 * 1024 * 1024, env={**os.environ, **_WORKER_MALLOC})
        return self._process

    async def _end(self, process: asyncio.subprocess.Process) -> None:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        if self._process is process:
            self._process = None


def batches(raws: Sequence[bytes], big_mail_bytes: int = BIG_MAIL_BYTES) -> Iterator[list[bytes]]:
    """`raws` in order, cut into batches: a mail over `big_mail_bytes` alone, smaller ones together
    up to `big_mail_bytes` bytes in all."""
    batch: list[bytes] = []
    size = 0
    for raw in raws:
        if batch and (len(raw) > big_mail_bytes or size + len(raw) > big_mail_bytes):
            yield batch
            batch, size = [], 0
        batch.append(raw)
        size += len(raw)
    if batch:
        yield batch
