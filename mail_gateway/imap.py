"""IMAP in: one ImapSource per configured mailbox stores each new mail raw, and only then flags or moves it."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from imapclient.exceptions import LoginError

from core.backoff import Backoff
from core.desk import Desk
from core.imap_models import ImapPosition, ReadUpTo, load_position, save_position
from core.inbound import StoredMail
from mail_gateway.imap_connection import FetchedMail, ImapConnection, MailboxSettings
from mail_gateway.store import store_received_many

log = logging.getLogger("mail_gateway.imap")

T = TypeVar("T")
StoreMany = Callable[..., Awaitable[list[StoredMail]]]  # store_received_many's shape

BACKOFF_START_SECONDS = 1.0
# A blocking call may take this much longer than its socket timeout before we cut the connection.
CALL_GRACE_SECONDS = 5.0
# A FETCH brings at most this many bytes at once (one larger mail still comes alone).
FETCH_BATCH_BYTES = 8 * 1024 * 1024
# Rounds (each after a backoff) a mail may be left out of FETCH answers before it is passed over.
MAX_UNRETURNED_ROUNDS = 5


class ImapSource:
    """Reads one mailbox forever: IDLE (or polling), reconnecting with backoff; a Part of `run`."""

    def __init__(self, desk: Desk, config: MailboxSettings, *,
                 on_stored: Callable[[], None] | None = None, store: StoreMany = store_received_many) -> None:
        self.desk = desk
        self.config = config
        self.name = f"IMAP mailbox {config.name}"
        self.state = "stopped"  # shown by health checks: connecting, idle, polling, backoff, stopped
        self.last_error: str | None = None
        self.stored_count = 0
        self.idle_renewals = 0  # IDLE sessions ended by our own timer, before the server's timeout
        self._on_stored = on_stored
        self._store = store
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._conn = ImapConnection(config)
        self._failures = 0
        self._said_polling = False
        self._unreturned: dict[int, int] = {}  # UID -> rounds in which the server would not return it

    async def start(self) -> None:
        """Returns at once: connecting happens in the background, so a bad mailbox delays nobody."""
        self._stopping.clear()
        # One thread per connection: imapclient is not thread-safe, and a long IDLE must not
        # occupy a worker of the loop's shared default executor.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"imap-{self.config.name}")
        self._task = asyncio.create_task(self._run(), name=self.name)
        log.info("started %s (%s:%s, %s, folder %s)", self.name, self.config.host, self.config.port,
                 self.config.security, self.config.folder)

    async def stop(self) -> None:
        self._stopping.set()
        self._conn.interrupt()
        if self._task is not None:
            done, _ = await asyncio.wait({self._task}, timeout=self.config.timeout_seconds + CALL_GRACE_SECONDS)
            if not done:
                self._conn.abort()
                self._task.cancel()
                await asyncio.wait({self._task})
            self._task = None
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        self._conn.dispose()
        self.state = "stopped"

    async def _run(self) -> None:
        while not self._stopping.is_set():
            error: Exception | None = None
            try:
                await self._session()
            except Exception as e:  # any failure of this mailbox ends only this session
                error = e
            finally:
                await self._close_quietly()  # before the backoff: no dead connection kept open
            if error is not None:
                await self._after_failure(error)

    async def _session(self) -> None:
        self.state = "connecting"
        info = await self._call(self._conn.open)
        if self._failures:
            log.info("%s: connected again after %d failed attempt(s)", self.name, self._failures)
        if not info.can_idle and not self._said_polling:
            self._said_polling = True
            why = "idle = false" if not self.config.idle else "the server offers no IDLE"
            log.info("%s: polling every %g s (%s)", self.name, self.config.poll_seconds, why)
        position = await self._position(info.uidvalidity)
        await self._tidy(position)
        while not self._stopping.is_set():
            position = await self._drain(position)
            # Reset only after a full round: a server that accepts logins and then fails every
            # command should still back off.
            self._failures = 0
            self.last_error = None
            if info.can_idle:
                await self._idle()
            else:
                self.state = "polling"
                await self._sleep(self.config.poll_seconds)

    async def _position(self, uidvalidity: int) -> ImapPosition:
        c = self.config
        saved = await load_position(self.desk.db, c.name, c.folder)
        if saved is not None and saved.uidvalidity == uidvalidity:
            return saved
        if saved is not None:
            # The server renumbered the folder: old UIDs mean nothing now. Read it all again;
            # processing recognises mail stored before by its Message-ID.
            log.warning("%s: UIDVALIDITY changed (%d -> %d); reading folder %s again",
                        self.name, saved.uidvalidity, uidvalidity, c.folder)
        position = ImapPosition(uidvalidity, 0)
        await save_position(self.desk.db, c.name, c.folder, position, self.desk.clock())
        return position

    async def _tidy(self, position: ImapPosition) -> None:
        """Finish what the last connection left: mail stored (with the position) but not yet flagged
        \\Seen or moved, because the connection or the process ended in between."""
        if not position.last_uid:
            return
        if self.config.processed_folder:
            leftovers = await self._call(self._conn.uids_up_to, position.last_uid)
        else:
            leftovers = await self._call(self._conn.unseen_up_to, position.last_uid)
        if leftovers:
            await self._call(self._conn.acknowledge, leftovers)

    async def _drain(self, position: ImapPosition) -> ImapPosition:
        """Store every mail after the saved UID, batch by batch: each batch and the position after
        it in one commit, and only then flag (or move) them on the server."""
        uids = await self._call(self._conn.new_uids, position.last_uid)
        if not uids:
            return position
        sizes = await self._call(self._conn.sizes, uids)
        for batch in _batches(uids, sizes, self.config.fetch_batch, FETCH_BATCH_BYTES):
            if self._stopping.is_set():
                break
            fetched = await self._call(self._conn.fetch, batch)
            if len(fetched) < len(batch):
                fetched.update(await self._fetch_left_out([uid for uid in batch if uid not in fetched]))
            present = [uid for uid in batch if uid in fetched]  # the others were expunged meanwhile
            after = ImapPosition(position.uidvalidity, batch[-1])

            stored = await self._store(self.desk, [fetched[uid].raw for uid in present],
                                       received=[fetched[uid].internaldate for uid in present],
                                       source=f"imap:{self.config.name}", mailbox=self.config.name,
                                       read_up_to=ReadUpTo(self.config.name, self.config.folder, after))
            position = after
            self.stored_count += len(stored)
            log.debug("%s: stored uids %d-%d as %d inbound mails", self.name, batch[0], batch[-1], len(stored))
            if stored and self._on_stored is not None:
                self._on_stored()
            await self._call(self._conn.acknowledge, present)
        return position

    async def _fetch_left_out(self, uids: list[int]) -> dict[int, FetchedMail]:
        """UIDs a FETCH answer left out: expunged meanwhile (nothing to store), or a server that
        skipped them. Those still in the folder are asked for again; if they still do not come, the
        round fails (the source retries after a backoff) rather than move the position past them,
        up to MAX_UNRETURNED_ROUNDS: then one mail the server cannot give stops blocking the rest."""
        still_there = await self._call(self._conn.existing, uids)
        if not still_there:
            return {}
        again = await self._call(self._conn.fetch, still_there)
        missing = [uid for uid in still_there if uid not in again]
        for uid in missing:
            self._unreturned[uid] = self._unreturned.get(uid, 0) + 1
        blocking = [uid for uid in missing if self._unreturned[uid] < MAX_UNRETURNED_ROUNDS]
        if blocking:
            raise ConnectionError(f"the server left UID {blocking[0]} out of its FETCH answers, "
                                  f"though the folder holds it ({len(blocking)} such)")
        for uid in missing:
            log.error("%s: the server would not return UID %d in %d rounds; passed over, NOT stored "
                      "(look at it in a mail client)", self.name, uid, self._unreturned.pop(uid))
        return again

    async def _idle(self) -> None:
        self.state = "idle"
        await self._call(self._conn.idle_start)
        renew_at = time.monotonic() + self.config.idle_renew_seconds
        try:
            while not self._stopping.is_set():
                remaining = renew_at - time.monotonic()
                if remaining <= 0:
                    self.idle_renewals += 1  # renew before the server's own timeout (29-30 minutes)
                    return
                if await self._call(self._conn.idle_wait, remaining, extra_time=remaining):
                    return
        finally:
            await self._call(self._conn.idle_done)

    async def _call(self, fn: Callable[..., T], *args: Any, extra_time: float = 0.0) -> T:
        """Run one blocking IMAP call on this source's thread, with a deadline beyond the socket's."""
        assert self._executor is not None
        future = asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        limit = self.config.timeout_seconds + CALL_GRACE_SECONDS + extra_time
        try:
            return await asyncio.wait_for(future, timeout=limit)
        except TimeoutError:
            self._conn.abort()
            raise TimeoutError(f"IMAP call {getattr(fn, '__name__', fn)} took more than {limit:.0f} s") from None

    async def _after_failure(self, error: Exception) -> None:
        if self._stopping.is_set():
            return
        self._failures += 1
        delay = Backoff(BACKOFF_START_SECONDS, self.config.reconnect_max_seconds).delay(self._failures)
        self.state = "backoff"
        self.last_error = _describe(error)
        level = logging.ERROR if isinstance(error, LoginError) or self._failures >= 5 else logging.WARNING
        log.log(level, "%s: %s; reconnecting in %.1f s", self.name, self.last_error, delay)
        await self._sleep(delay)

    async def _close_quietly(self) -> None:
        if self._executor is None:
            return
        try:
            await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(self._executor, self._conn.close),
                                   timeout=self.config.timeout_seconds)
        except Exception:
            self._conn.abort()

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake at once on stop()."""
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
        except TimeoutError:
            pass


def _batches(uids: Sequence[int], sizes: dict[int, int], max_count: int, max_bytes: int) -> list[list[int]]:
    batches: list[list[int]] = []
    current: list[int] = []
    total = 0
    for uid in uids:
        size = sizes.get(uid, 0)
        if current and (len(current) >= max_count or total + size > max_bytes):
            batches.append(current)
            current, total = [], 0
        current.append(uid)
        total += size
    if current:
        batches.append(current)
    return batches


def _describe(error: Exception) -> str:
    if isinstance(error, LoginError):
        return "login refused (check username and password)"
    text = str(error).strip()
    return f"{type(error).__name__}: {text[:200]}" if text else type(error).__name__


class ImapSources:
    """All configured mailboxes as one Part; each runs on its own, so one failing stops no other."""

    def __init__(self, sources: Sequence[ImapSource]) -> None:
        self.sources = list(sources)
        self.name = "IMAP (" + ", ".join(s.config.name for s in self.sources) + ")"

    async def start(self) -> None:
        for source in self.sources:
            await source.start()

    async def stop(self) -> None:
        await asyncio.gather(*(source.stop() for source in self.sources))
