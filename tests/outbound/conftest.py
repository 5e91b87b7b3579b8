"""Fixtures for mail out: a real aiosmtpd sink on loopback, and a notifier + sender wired to it.

The desks come from tests/conftest.py: `desk` (SQLite and PostgreSQL) and `sqlite_desk` (for tests
of the SMTP side alone, which do not depend on the database engine).
"""

from __future__ import annotations

import email
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from core.desk import Desk
from core.events import consume_once
from core.notifier import CONSUMER, Notifier
from core.outbox import RetryPolicy
from core.tokens import Signer
from mail_gateway.outbound.compose import Composer
from mail_gateway.outbound.sender import OutboxSender
from mail_gateway.outbound.smtp import RelaySettings, SmtpTransport
from supportbot.templating import template_environment

SUPPORT = "support@example.test"
SECRET = b"test-secret-for-signing"


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes

    @property
    def message(self) -> EmailMessage:
        parsed = email.message_from_bytes(self.raw, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass
class SinkHandler:
    """Records what arrives; `data_replies` (e.g. "451 …") answer DATA before mail is accepted."""

    received: list[Received] = field(default_factory=list)
    data_replies: list[str] = field(default_factory=list)
    refuse_rcpt: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        if address in self.refuse_rcpt:
            return self.refuse_rcpt[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self.lock:
            if self.data_replies:
                return self.data_replies.pop(0)
            content = envelope.original_content or b""
            self.received.append(Received(str(envelope.mail_from), list(envelope.rcpt_tos), content))
        return "250 Message accepted"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Sink:
    """An aiosmtpd server in its own thread; can be stopped and started again on the same port."""

    def __init__(self, port: int | None = None, **controller_kwargs: Any) -> None:
        self.handler = SinkHandler()
        self.port = port or free_port()
        self.kwargs = controller_kwargs
        self.controller: Controller | None = None

    def start(self) -> Sink:
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port, **self.kwargs)
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    @property
    def received(self) -> list[Received]:
        return self.handler.received


@pytest.fixture
def sink() -> Iterator[Sink]:
    server = Sink().start()
    try:
        yield server
    finally:
        server.stop()


def make_composer(**overrides: Any) -> Composer:
    kwargs: dict[str, Any] = {"signer": Signer(SECRET, "example.test"), "support_address": SUPPORT,
                              "desk_name": "Example Support", "from_name": "Example Support",
                              "templates": template_environment()}
    kwargs.update(overrides)
    return Composer(**kwargs)


@dataclass
class MailOut:
    """The notifier and the sender of one desk, driven step by step by a test."""

    desk: Desk
    notifier: Notifier
    sender: OutboxSender

    async def notify(self) -> int:
        handled = 0
        while count := await consume_once(self.desk.db, CONSUMER, self.notifier.handle, clock=self.desk.clock):
            handled += count
        return handled

    async def flush(self) -> int:
        """Queue mail for every new event and send whatever is due; returns how many were claimed."""
        await self.notify()
        claimed = 0
        while count := await self.sender.deliver_due():
            claimed += count
        return claimed


def relay_to(sink: Sink, **settings: Any) -> SmtpTransport:
    return SmtpTransport(RelaySettings(host="127.0.0.1", port=sink.port, security="plain",
                                       timeout_seconds=5, **settings))


@pytest.fixture
def mail_out(desk: Desk, sink: Sink) -> MailOut:
    notifier = Notifier(desk, make_composer(), support_addresses=[SUPPORT], automatic_per_hour=3)
    return MailOut(desk, notifier, OutboxSender(desk, relay_to(sink), RetryPolicy()))


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1, made on the spot (cryptography ships with aiosmtplib's deps)."""
    from datetime import UTC, datetime, timedelta
    from ipaddress import IPv4Address

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(IPv4Address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def server_tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def password_check(username: str, password: str) -> Any:
    """An aiosmtpd authenticator accepting exactly username/password (LOGIN and PLAIN)."""

    def authenticate(server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any) -> AuthResult:
        if isinstance(data, LoginPassword) and data.login == username.encode() and data.password == password.encode():
            return AuthResult(success=True)
        return AuthResult(success=False, handled=False)

    return authenticate
