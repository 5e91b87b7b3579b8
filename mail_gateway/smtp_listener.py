"""The SMTP listener: aiosmtpd on the app's own loop; stores each accepted mail, then answers 250.

It speaks SMTP (for an MX, or an MTA relaying to it) or LMTP (RFC 2033, for an MTA's final
delivery hop: Postfix `lmtp:inet:host:port`), where the answer after DATA is one line per recipient.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, Envelope, Session

from core.addresses import OwnAddresses
from core.desk import Desk
from core.errors import describe_error
from mail_gateway.store import store_received

log = logging.getLogger("mail_gateway.smtp")

MAX_RECIPIENTS = 100
SESSION_TIMEOUT_SECONDS = 300.0


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


def _enhanced(status: Any) -> Any:
    """RFC 3463 enhanced status code on aiosmtpd's own size refusal."""
    if isinstance(status, str) and status.startswith("552 Error:"):
        return "552 5.3.4 Message size exceeds fixed maximum message size"
    return status


class _Protocol(SMTP):
    # RFC 5321 caps lines at 1000 octets, but real senders exceed it (one-line HTML) and Postfix
    # accepts such mail; refusing it with a permanent 500 would bounce a customer's mail.
    line_length_limit = 64 * 1024

    async def push(self, status: Any) -> None:
        await super().push(_enhanced(status))


class _LmtpProtocol(LMTP):
    """After the mail data, LMTP answers once per accepted recipient (RFC 2033 section 4.2).
    The mail is stored once for all of them, so each gets the same answer."""

    line_length_limit = _Protocol.line_length_limit
    _answers_per_reply = 1

    async def smtp_DATA(self, arg: str) -> None:
        try:
            await super().smtp_DATA(arg)
        finally:
            self._answers_per_reply = 1

    async def push(self, status: Any) -> None:
        status = _enhanced(status)
        if isinstance(status, str) and self._answers_per_reply > 1:
            status = "\r\n".join([status] * self._answers_per_reply)
        await super().push(status)
        if isinstance(status, str) and status.startswith("354") and self.envelope is not None:
            self._answers_per_reply = max(1, len(self.envelope.rcpt_tos))  # the data follows


def tls_context(certificate: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificate, key)
    return context


class SmtpListener:
    """A Part of `supportbot run`; `port` holds the bound port after start (useful with port 0)."""

    name = "smtp-listener"

    def __init__(self, desk: Desk, support_addresses: Sequence[str], *, host: str = "127.0.0.1", port: int = 2525,
                 max_message_bytes: int = 35 * 1024 * 1024, tls: ssl.SSLContext | None = None,
                 hostname: str | None = None, on_stored: Callable[[], None] | None = None,
                 lmtp: bool = False) -> None:
        self.desk = desk
        self.lmtp = lmtp
        self.host = host
        self.port = port
        self.max_message_bytes = max_message_bytes
        self.tls = tls
        self.hostname = hostname or (support_addresses[0].partition("@")[2] or "localhost")
        self._handler = _Handler(desk, OwnAddresses.of(support_addresses), on_stored)
        self._server: asyncio.Server | None = None

    def _protocol(self) -> SMTP:
        protocol = _LmtpProtocol if self.lmtp else _Protocol
        return protocol(self._handler, data_size_limit=self.max_message_bytes, enable_SMTPUTF8=True,
                         decode_data=False, hostname=self.hostname, ident="supportbot",
                         tls_context=self.tls, timeout=SESSION_TIMEOUT_SECONDS,
                         loop=asyncio.get_running_loop())

    async def start(self) -> None:
        # On the app's own loop (not aiosmtpd's Controller, which runs a second loop in a thread).
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._protocol, host=self.host, port=self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("%s listener on %s:%d%s", "LMTP" if self.lmtp else "SMTP", self.host, self.port,
                 " (STARTTLS offered)" if self.tls else "")

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
