"""The blocking side of IMAP in: one imapclient connection per mailbox, used only from its
source's own thread (mail_gateway.imap runs it off the event loop, with a timeout per call)."""

from __future__ import annotations

import os
import select
import socket
import ssl
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, Protocol

from imapclient import IMAPClient, SocketTimeout

# UIDs named in one command: keeps command lines far below servers' limits (Dovecot: 64 KiB).
UIDS_PER_COMMAND = 1000
SEEN = b"\\Seen"


class MailboxSettings(Protocol):
    """What a source needs of one [[mail.imap]] block (supportbot.config.ImapMailboxConfig)."""

    @property
    def name(self) -> str: ...
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def security(self) -> Literal["tls", "starttls", "plain"]: ...
    @property
    def username(self) -> str: ...
    @property
    def password(self) -> str: ...
    @property
    def folder(self) -> str: ...
    @property
    def processed_folder(self) -> str: ...
    @property
    def ca_file(self) -> Path | None: ...
    @property
    def timeout_seconds(self) -> float: ...
    @property
    def idle(self) -> bool: ...
    @property
    def poll_seconds(self) -> float: ...
    @property
    def idle_renew_seconds(self) -> float: ...
    @property
    def reconnect_max_seconds(self) -> float: ...
    @property
    def fetch_batch(self) -> int: ...


@dataclass(frozen=True)
class FetchedMail:
    raw: bytes
    internaldate: datetime | None  # when the server received it (RFC 3501), in UTC


def _aware(value: object) -> datetime | None:
    """imapclient gives INTERNALDATE as a naive local time (normalise_times): make it UTC-aware."""
    if not isinstance(value, datetime):
        return None
    return value.astimezone(UTC)  # a naive value is read as local time


@dataclass(frozen=True)
class FolderInfo:
    uidvalidity: int
    can_idle: bool


class ImapConnection:
    """The blocking side: one imapclient connection, only ever used from its source's own thread."""

    def __init__(self, config: MailboxSettings) -> None:
        self.config = config
        self.client: IMAPClient | None = None
        self._idling = False
        # interrupt() writes to this pipe to end an IDLE wait at once (stop() must not wait for
        # the server). Made on first use, from either thread, hence the lock.
        self._wake: tuple[int, int] | None = None
        self._wake_lock = threading.Lock()

    def open(self) -> FolderInfo:
        c = self.config
        timeout = SocketTimeout(connect=c.timeout_seconds, read=c.timeout_seconds)
        context = None
        if c.security != "plain":
            context = ssl.create_default_context(cafile=str(c.ca_file) if c.ca_file else None)
        client = IMAPClient(c.host, c.port, ssl=c.security == "tls", ssl_context=context, timeout=timeout)
        self.client = client
        _keep_alive(client.socket())
        if c.security == "starttls":
            client.starttls(context)
        client.login(c.username, c.password)
        if c.processed_folder and not client.folder_exists(c.processed_folder):
            client.create_folder(c.processed_folder)
        selected = client.select_folder(c.folder)
        return FolderInfo(int(selected[b"UIDVALIDITY"]), c.idle and client.has_capability("IDLE"))

    def new_uids(self, after: int) -> list[int]:
        # "N:*" also matches the highest UID when that is below N, hence the filter.
        return sorted(uid for uid in self._client.search(["UID", f"{after + 1}:*"]) if uid > after)

    def uids_up_to(self, last: int) -> list[int]:
        return sorted(uid for uid in self._client.search(["UID", f"1:{last}"]) if uid <= last) if last else []

    def unseen_up_to(self, last: int) -> list[int]:
        return sorted(uid for uid in self._client.search(["UNSEEN", "UID", f"1:{last}"]) if uid <= last)

    def existing(self, uids: Sequence[int]) -> list[int]:
        """Which of these UIDs the folder still holds."""
        found: list[int] = []
        for start in range(0, len(uids), UIDS_PER_COMMAND):
            chunk = list(uids[start:start + UIDS_PER_COMMAND])
            found += self._client.search(["UID", ",".join(map(str, chunk))])
        return sorted(set(found) & set(uids))

    def sizes(self, uids: Sequence[int]) -> dict[int, int]:
        sizes: dict[int, int] = {}
        for start in range(0, len(uids), UIDS_PER_COMMAND):
            chunk = list(uids[start:start + UIDS_PER_COMMAND])
            for uid, data in self._client.fetch(chunk, ["RFC822.SIZE"]).items():
                sizes[uid] = int(data.get(b"RFC822.SIZE", 0))
        return sizes

    def fetch(self, uids: Sequence[int]) -> dict[int, FetchedMail]:
        """Raw bytes and arrival time by UID; BODY.PEEK leaves \\Seen alone (set after the commit)."""
        fetched = self._client.fetch(list(uids), ["BODY.PEEK[]", "INTERNALDATE"])
        return {uid: FetchedMail(data[b"BODY[]"], _aware(data.get(b"INTERNALDATE")))
                for uid, data in fetched.items() if b"BODY[]" in data}

    def acknowledge(self, uids: Sequence[int]) -> None:
        """Flag \\Seen and, if configured, move to the processed folder (never before the commit)."""
        for start in range(0, len(uids), UIDS_PER_COMMAND):
            self._acknowledge(list(uids[start:start + UIDS_PER_COMMAND]))

    def _acknowledge(self, uids: list[int]) -> None:
        client = self._client
        client.add_flags(uids, [SEEN], silent=True)
        target = self.config.processed_folder
        if not target:
            return
        if client.has_capability("MOVE"):
            client.move(uids, target)
        else:
            client.copy(uids, target)
            client.delete_messages(uids, silent=True)
            # Without UIDPLUS, EXPUNGE also removes what others flagged \\Deleted: the best there is.
            client.expunge(uids if client.has_capability("UIDPLUS") else None)

    def idle_start(self) -> None:
        self._client.idle()
        self._idling = True

    def idle_wait(self, seconds: float) -> bool:
        """Wait in IDLE. True: the server said something (new mail, a flag change, BYE, EOF), so
        end IDLE (idle_done reads and checks it all) and look; False: time is up or interrupt().

        Not imapclient's idle_check: it polls the socket only, and misses an EXISTS that arrived
        together with the "+ idling" line, which imaplib has already read into its buffer.
        """
        client = self._client
        sock = client.socket()
        if self._has_unread_input(client):
            return True
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        wake_r = self._wake_fds()[0]
        poller.register(wake_r, select.POLLIN)
        ready = {fd for fd, _ in poller.poll(max(0.0, seconds) * 1000)}
        if wake_r in ready:
            self._drain_wake()
            return False
        return bool(ready)

    def _has_unread_input(self, client: IMAPClient) -> bool:
        """Bytes already read off the socket into imaplib's buffer (or TLS's): poll() cannot see them."""
        sock = client.socket()
        if getattr(sock, "pending", lambda: 0)():
            return True
        sock.setblocking(False)  # so peek() never waits when the buffer is empty
        try:
            return bool(client._imap.file.peek(1))
        except OSError:  # nothing there (EAGAIN, or TLS wants more)
            return False
        finally:
            sock.settimeout(self.config.timeout_seconds)

    def interrupt(self) -> None:
        """From any thread: make a current or the next idle_wait() return."""
        try:
            os.write(self._wake_fds()[1], b"x")
        except OSError:
            pass  # the pipe is full: already signalled

    def _wake_fds(self) -> tuple[int, int]:
        with self._wake_lock:
            if self._wake is None:
                r, w = os.pipe()
                os.set_blocking(r, False)
                os.set_blocking(w, False)
                self._wake = (r, w)
            return self._wake

    def _drain_wake(self) -> None:
        try:
            while os.read(self._wake_fds()[0], 64):
                pass
        except OSError:
            pass

    def dispose(self) -> None:
        """Close the connection and the wake pipe (both are made again if used again)."""
        self.close()
        with self._wake_lock:
            fds, self._wake = self._wake, None
        for fd in fds or ():
            os.close(fd)

    def idle_done(self) -> None:
        if self._idling:
            self._idling = False
            self._client.idle_done()

    def close(self) -> None:
        """Log out politely; a dead connection is just dropped."""
        client, self.client = self.client, None
        self._idling = False
        if client is None:
            return
        try:
            client.logout()
        except Exception:
            self._shutdown_socket(client)

    def abort(self) -> None:
        """Cut the connection from another thread, so a call blocked on it returns at once."""
        if self.client is not None:
            self._shutdown_socket(self.client)

    @staticmethod
    def _shutdown_socket(client: IMAPClient) -> None:
        try:
            client.shutdown()
        except Exception:
            pass

    @property
    def _client(self) -> IMAPClient:
        if self.client is None:
            raise ConnectionError("not connected")
        return self.client


def _keep_alive(sock: socket.socket) -> None:
    """TCP keepalive: a peer that vanished without a FIN (NAT timeout, dead host) wakes an IDLE
    wait within about 90 s as an error, instead of at the next IDLE renewal."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (("TCP_KEEPIDLE", 60), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, option):  # Linux; elsewhere the system defaults apply
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)
