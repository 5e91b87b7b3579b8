"""The SMTP listener: aiosmtpd on the app's own loop; stores each accepted mail, then answers 250.

It speaks SMTP (for an MX, or an MTA relaying to it) or LMTP (RFC 2033, for an MTA's final
delivery hop: Postfix `lmtp:inet:host:port`), where the answer after DATA is one line per recipient.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import ssl
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, Envelope, Session

from core.addresses import OwnAddresses
from core.desk import Desk
from core.errors import describe_error
from mail_gateway.store import store_received

log = logging.getLogger("mail_gateway.smtp")

MAX_RECIPIENTS = 100
DESCRIPTOR_RESERVE = 256  # descriptors kept free of SMTP sessions: /healthz, the database, IMAP, Discord
TOO_MANY_CONNECTIONS = b"421 4.7.0 Too many connections, try again later\r\n"
_TRANSACTION = frozenset({"MAIL", "RCPT", "DATA"})


@dataclass(frozen=True)
class SessionLimits:
    """What one client, and all of them together, may hold of the listener (mail.smtp_listener.*)."""

    max_sessions: int = 100  # open sessions in all; beyond: 421 and closed
    max_sessions_per_client: int = 10  # per client address (IPv6: per /64)
    idle_timeout_seconds: float = 60.0  # waiting for the next command, or for more data during DATA
    max_commands_without_progress: int = 20  # in a row; a stored mail is progress (an accepted MAIL/RCPT is neutral)
    max_line_bytes: int = 64 * 1024  # a line of the mail, without its CRLF; longer: 500 5.5.2 after the data


def _redact(address: str) -> str:
    local, at, domain = address.partition("@")
    return f"{local[:1]}…{at}{domain}" if at else "…"


class _Handler:
    """aiosmtpd hooks: refuse unknown recipients early, store before saying yes."""

    def __init__(self, desk: Desk, own: OwnAddresses, on_stored: Callable[[], None] | None) -> None:
        self.desk = desk
        self.own = own
        self.on_stored = on_stored

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        if address not in self.own:
            return "550 5.1.1 Recipient address rejected: no such mailbox here"
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return "452 4.5.3 Too many recipients"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        try:
            stored = await store_received(self.desk, raw, source="smtp", mailbox="smtp",
                                          envelope_from=envelope.mail_from, envelope_to=envelope.rcpt_tos)
        except Exception as e:  # our fault, not the sender's: 4xx so their MTA tries again
            log.error("could not store mail from %s (%d bytes): %s", _redact(envelope.mail_from or ""),
                      len(raw), describe_error(e))
            return "451 4.3.0 Temporary failure storing the message; try again later"
        if self.on_stored is not None:
            self.on_stored()
        return f"250 2.0.0 Ok: queued as {stored.id}"


def client_of(peer: Any) -> str:
    """What the per-client cap counts by: the IPv4 address, or the IPv6 /64 (one host's usual share)."""
    host = peer[0] if isinstance(peer, tuple) and peer else None
    try:
        address = ipaddress.ip_address(str(host).partition("%")[0])
    except ValueError:
        return "unknown"
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def redact_client(client: str) -> str:
    """A client as the log shows it: its /24 (IPv4) or /48 (IPv6), not the address."""
    try:
        network = ipaddress.ip_network(client, strict=False)
    except ValueError:
        return "unknown"
    prefix = 24 if network.version == 4 else 48
    return str(network.supernet(new_prefix=prefix)) if network.prefixlen > prefix else str(network)


class _Throttled:
    """One log line per burst: the first event is logged at once; those within the next `interval`
    are counted and told in one summary line when it ends (and so on while the burst lasts)."""

    def __init__(self, level: int, interval: float) -> None:
        self.level, self.interval = level, interval
        self._counts: Counter[str] = Counter()  # what happened, during the current quiet window
        self._clients: Counter[str] = Counter()
        self._timer: asyncio.TimerHandle | None = None

    def __call__(self, what: str, client: str) -> None:
        if self._timer is None:
            log.log(self.level, "%s (client %s); the same is counted, not logged, for the next %d s",
                    what, redact_client(client), self.interval)
            self._timer = asyncio.get_running_loop().call_later(self.interval, self.flush)
        else:
            self._counts[what] += 1
            self._clients[redact_client(client)] += 1

    def flush(self, *, restart: bool = True) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        if not self._counts:
            return
        happened = "; ".join(f"{what}: {n}" for what, n in self._counts.most_common())
        networks = ", ".join(f"{net} ({n})" for net, n in self._clients.most_common(3))
        more = f" and {len(self._clients) - 3} more networks" if len(self._clients) > 3 else ""
        log.log(self.level, "in the last %d s: %s; from %s%s", self.interval, happened, networks, more)
        self._counts.clear()
        self._clients.clear()
        if restart:  # the burst goes on: at most one line per interval until a quiet one
            self._timer = asyncio.get_running_loop().call_later(self.interval, self.flush)


class _Guard:
    """The sessions a listener holds, counted in all and per client, and the throttled log of refusals."""

    def __init__(self, limits: SessionLimits, *, log_interval: float = 60.0) -> None:
        self.limits = limits
        self.open = 0
        self.per_client: Counter[str] = Counter()
        self.refusals = _Throttled(logging.WARNING, log_interval)
        self.closures = _Throttled(logging.INFO, log_interval)

    def admit(self, client: str) -> bool:
        limits = self.limits
        if self.open >= limits.max_sessions:
            self.refusals(f"SMTP sessions at their limit (max_sessions = {limits.max_sessions}): "
                          "answered 421 and closed", client)
            return False
        if self.per_client[client] >= limits.max_sessions_per_client:
            self.refusals(f"a client at its SMTP session limit (max_sessions_per_client = "
                          f"{limits.max_sessions_per_client}): answered 421 and closed", client)
            return False
        self.open += 1
        self.per_client[client] += 1
        return True

    def release(self, client: str) -> None:
        self.open -= 1
        self.per_client[client] -= 1
        if self.per_client[client] <= 0:
            del self.per_client[client]

    def stop(self) -> None:
        self.refusals.flush(restart=False)
        self.closures.flush(restart=False)


class _Guarded(SMTP):
    """aiosmtpd's protocol under the listener's limits: sessions in all and per client (421 beyond),
    idle time (421 on timeout; data arriving during DATA counts as activity), commands without
    progress (421 and closed), and the line length the listener allows (500 5.5.2 beyond)."""

    def __init__(self, handler: Any, *, guard: _Guard, **kwargs: Any) -> None:
        self._guard = guard
        limits = guard.limits
        # aiosmtpd reads this in __init__ as its StreamReader limit. It counts the CRLF, and RFC 5321
        # 4.5.3.1.6 does not count the dot added for transparency: + 3. (A line of max_line_bytes + 1
        # that does not start with a dot passes too; telling the two apart would need a second pass.)
        self.line_length_limit = limits.max_line_bytes + 3
        super().__init__(handler, timeout=limits.idle_timeout_seconds, **kwargs)
        self._client = "unknown"
        self._state = "new"  # → "admitted" (counted) or "refused" (421, never started) → "closed"
        self._in_data = False
        self._without_progress = 0
        self._last_code = ""
        self._smtp_methods = {name: self._counted(name, method) for name, method in self._smtp_methods.items()}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._state == "new":  # the connection itself, not the TLS layer STARTTLS puts over it
            self._client = client_of(transport.get_extra_info("peername"))
            if not self._guard.admit(self._client):
                self._state = "refused"
                writable = cast(asyncio.Transport, transport)  # uvloop's transports are not registered as such
                writable.write(TOO_MANY_CONNECTIONS)
                writable.close()  # frees the descriptor now: a flood holds at most max_sessions of them
                return
            self._state = "admitted"
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self._state != "admitted":
            return  # refused (aiosmtpd never started), or already reported
        self._state = "closed"
        self._guard.release(self._client)
        super().connection_lost(error)

    def eof_received(self) -> bool | None:
        return False if self._state != "admitted" else super().eof_received()

    def data_received(self, data: bytes) -> None:
        if self._in_data:  # a slow upload of a large mail is not idleness
            self._reset_timeout()
        super().data_received(data)

    def _timeout_cb(self) -> None:
        if self.transport is None:
            return  # lost meanwhile
        if not self.transport.is_closing():
            goodbye = f"421 4.4.2 {self.hostname} Error: timeout exceeded\r\n"
            cast(asyncio.Transport, self.transport).write(goodbye.encode())
        super()._timeout_cb()

    async def _call_handler_hook(self, command: str, *args: Any) -> Any:
        if command != "DATA":
            return await super()._call_handler_hook(command, *args)
        if self._timeout_handle is not None:  # storing the mail is ours to do, not the client's idleness
            self._timeout_handle.cancel()
        try:
            return await super()._call_handler_hook(command, *args)
        finally:
            if self.transport is not None:
                self._reset_timeout()

    def _enhanced(self, status: Any) -> Any:
        """RFC 3463 enhanced status codes on aiosmtpd's own refusals; the line limit is named."""
        if isinstance(status, str):
            if status.startswith("552 Error:"):
                return "552 5.3.4 Message size exceeds fixed maximum message size"
            if status.startswith("500 Line too long"):
                return (f"500 5.5.2 Line too long: at most {self._guard.limits.max_line_bytes} octets "
                        "per line (RFC 5321 4.5.3.1.6)")
            if status == "500 Command line too long":
                return "500 5.5.2 Command line too long"
        return status

    async def push(self, status: Any) -> None:
        status = self._enhanced(status)
        if isinstance(status, str):
            self._last_code = status[:3]
        await super().push(status)

    def _counted(self, command: str, method: Callable[[str], Awaitable[None]]) -> Callable[[str], Awaitable[None]]:
        """The command under the cap on commands without progress. Progress is a stored mail (250
        after the data); an accepted MAIL or RCPT is neutral; anything else (NOOP, RSET, HELP, VRFY,
        EHLO, a refused MAIL/RCPT/DATA …) counts. Past the cap: 421 and the session is closed."""
        cap = self._guard.limits.max_commands_without_progress

        @functools.wraps(method)  # keeps aiosmtpd's syntax attributes, which HELP reads
        async def run(arg: str) -> None:
            if command == "QUIT":
                await method(arg)
                return
            if command not in _TRANSACTION and self._without_progress >= cap:
                await self._give_up()
                return
            self._last_code = ""
            self._in_data = command == "DATA"
            try:
                await method(arg)
            finally:
                self._in_data = False
            if command == "DATA" and self._last_code == "250":
                self._without_progress = 0
            elif not (command in ("MAIL", "RCPT") and self._last_code.startswith("2")):
                self._without_progress += 1
                if command in _TRANSACTION and self._without_progress > cap:
                    await self._give_up()

        return run

    async def _give_up(self) -> None:
        self._guard.closures("SMTP session closed after "
                             f"{self._guard.limits.max_commands_without_progress} commands without progress "
                             "(max_commands_without_progress)", self._client)
        await self.push("421 4.7.0 Too many commands without progress, closing connection")
        if self.transport is not None:
            self.transport.close()


class _Protocol(_Guarded):
    """SMTP. RFC 5321 caps lines at 1000 octets, but real senders exceed it (one-line HTML) and
    Postfix accepts such mail; the listener allows max_line_bytes (64 KiB by default)."""


class _LmtpProtocol(_Guarded, LMTP):
    """After the mail data, LMTP answers once per accepted recipient (RFC 2033 section 4.2).
    The mail is stored once for all of them, so each gets the same answer."""

    _answers_per_reply = 1

    async def smtp_DATA(self, arg: str) -> None:
        try:
            await super().smtp_DATA(arg)
        finally:
            self._answers_per_reply = 1

    async def push(self, status: Any) -> None:
        status = self._enhanced(status)  # before the copies: each recipient's answer is the same
        if isinstance(status, str) and self._answers_per_reply > 1:
            status = "\r\n".join([status] * self._answers_per_reply)
        await super().push(status)
        if isinstance(status, str) and status.startswith("354") and self.envelope is not None:
            self._answers_per_reply = max(1, len(self.envelope.rcpt_tos))  # the data follows


def tls_context(certificate: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificate, key)
    return context


def fit_to_descriptors(limits: SessionLimits) -> SessionLimits:
    """Lower max_sessions (with a warning) when the process's descriptor limit could not hold that
    many sessions and still leave DESCRIPTOR_RESERVE free for /healthz, the database and the rest."""
    try:
        import resource
    except ImportError:  # not on Unix
        return limits
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or limits.max_sessions <= soft - DESCRIPTOR_RESERVE:
        return limits
    fitted = max(1, soft - DESCRIPTOR_RESERVE)
    log.warning("mail.smtp_listener.max_sessions = %d does not fit the process's descriptor limit (%d, "
                "ulimit -n) with %d kept free for the rest of the desk: using %d (raise the limit to allow more)",
                limits.max_sessions, soft, DESCRIPTOR_RESERVE, fitted)
    return replace(limits, max_sessions=fitted,
                   max_sessions_per_client=min(limits.max_sessions_per_client, fitted))


class SmtpListener:
    """A Part of `supportbot run`; `port` holds the bound port after start (useful with port 0)."""

    name = "smtp-listener"

    def __init__(self, desk: Desk, support_addresses: Sequence[str], *, host: str = "127.0.0.1", port: int = 2525,
                 max_message_bytes: int = 35 * 1024 * 1024, tls: ssl.SSLContext | None = None,
                 hostname: str | None = None, on_stored: Callable[[], None] | None = None,
                 lmtp: bool = False, limits: SessionLimits | None = None) -> None:
        self.desk = desk
        self.lmtp = lmtp
        self.host = host
        self.port = port
        self.max_message_bytes = max_message_bytes
        self.tls = tls
        self.limits = limits or SessionLimits()
        self.hostname = hostname or (support_addresses[0].partition("@")[2] or "localhost")
        self._handler = _Handler(desk, OwnAddresses.of(support_addresses), on_stored)
        self._guard = _Guard(self.limits)
        self._server: asyncio.Server | None = None

    @property
    def open_sessions(self) -> int:
        """Sessions admitted and not yet closed."""
        return self._guard.open

    def _protocol(self) -> SMTP:
        protocol = _LmtpProtocol if self.lmtp else _Protocol
        return protocol(self._handler, guard=self._guard, data_size_limit=self.max_message_bytes,
                        enable_SMTPUTF8=True, decode_data=False, hostname=self.hostname, ident="supportbot",
                        tls_context=self.tls, loop=asyncio.get_running_loop())

    async def start(self) -> None:
        # On the app's own loop (not aiosmtpd's Controller, which runs a second loop in a thread).
        loop = asyncio.get_running_loop()
        self._guard = _Guard(fit_to_descriptors(self.limits))
        self._server = await loop.create_server(self._protocol, host=self.host, port=self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        limits = self._guard.limits
        log.info("%s listener on %s:%d%s; at most %d sessions (%d per client), idle timeout %g s",
                 "LMTP" if self.lmtp else "SMTP", self.host, self.port, " (STARTTLS offered)" if self.tls else "",
                 limits.max_sessions, limits.max_sessions_per_client, limits.idle_timeout_seconds)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        self._guard.stop()
