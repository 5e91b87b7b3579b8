"""The SMTP listener against real clients (smtplib and swaks) on a free loopback port."""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import smtplib
import ssl
import subprocess
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text

from core.desk import Desk
from core.intake import Intake, Kind
from core.models import InboundMail, Ticket
from mail_gateway.smtp_listener import SmtpListener, tls_context
from mail_gateway.worker import InboundWorker
from tests.conftest import need_server
from tests.kit import eventually
from tests.mail.pipeline_support import (
    count,
    fixture,
    make_context,
    make_inserts_fail,
)

ctx = make_context()
LIMIT = 50_000


def mail(sender: str = "alice@customer.test", subject: str = "Printer on fire", body: str = "Help!") -> bytes:
    return (f"From: {sender}\r\nTo: support@example.test\r\nSubject: {subject}\r\n"
            f"Message-ID: <{abs(hash((sender, subject, body)))}@customer.test>\r\n\r\n{body}\r\n").encode()


@pytest.fixture
async def listener(desk: Desk) -> AsyncIterator[SmtpListener]:
    server = SmtpListener(desk, ctx.support_addresses, host="127.0.0.1", port=0, max_message_bytes=LIMIT)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def send(port: int, raw: bytes, *, rcpt: list[str] | None = None, starttls_ca: Path | None = None) -> dict:
    """smtplib blocks, so the tests call it in a thread while the listener runs on their loop."""
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        if starttls_ca is not None:
            client.starttls(context=ssl.create_default_context(cafile=str(starttls_ca)))
        return client.sendmail("alice@customer.test", rcpt or ["support@example.test"], raw)


def transcript(port: int, commands: list[bytes]) -> list[tuple[int, bytes]]:
    """Raw SMTP commands, one reply each (for what smtplib would refuse to send)."""
    replies = []
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo()
        for command in commands:
            client.send(command + b"\r\n")
            replies.append(client.getreply())
    return replies


async def test_accepted_mail_is_stored_before_250_and_becomes_a_ticket(desk, listener):
    refused = await asyncio.to_thread(send, listener.port, mail())
    assert refused == {}
    stored = await count(desk, InboundMail)
    assert stored == 1  # committed by the time the client got its 250
    worker = InboundWorker(Intake(desk, ctx))
    assert await worker.drain() == 1
    assert await count(desk, Ticket) == 1


async def test_250_reply_names_the_stored_mail(desk, listener):
    replies = await asyncio.to_thread(transcript, listener.port, [
        b"MAIL FROM:<alice@customer.test>", b"RCPT TO:<support@example.test>", b"DATA",
        mail() + b".", b"QUIT"])
    assert replies[3][0] == 250 and replies[3][1].startswith(b"2.0.0 Ok: queued as ")
    mail_id = int(replies[3][1].rsplit(b" ", 1)[1])
    async with desk.db.read() as session:
        row = await session.get(InboundMail, mail_id)
    assert row is not None and row.raw == mail() and row.envelope_to == ["support@example.test"]


async def test_plus_addressed_and_differently_cased_recipients_are_accepted(desk, listener):
    refused = await asyncio.to_thread(send, listener.port, mail(), rcpt=[
        "support+1000-abc@example.test", "Billing@Example.TEST"])
    assert refused == {}


async def test_unknown_recipient_is_refused_at_rcpt_with_550_5_1_1(desk, listener):
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        await asyncio.to_thread(send, listener.port, mail(), rcpt=["someone@elsewhere.test"])
    code, message = refused.value.recipients["someone@elsewhere.test"]
    assert code == 550 and message.startswith(b"5.1.1")
    assert await count(desk, InboundMail) == 0


async def test_mixed_recipients_deliver_once_for_the_known_one(desk, listener):
    refused = await asyncio.to_thread(send, listener.port, mail(), rcpt=["support@example.test", "x@elsewhere.test"])
    assert list(refused) == ["x@elsewhere.test"] and refused["x@elsewhere.test"][0] == 550
    assert await count(desk, InboundMail) == 1


async def test_size_limit_is_advertised_and_oversize_mail_refused_with_552(desk, listener):
    def ehlo_and_send_big() -> tuple[str | None, int, bytes]:
        with smtplib.SMTP("127.0.0.1", listener.port, timeout=10) as client:
            client.ehlo()
            advertised = client.esmtp_features.get("size")
            # Without the SIZE parameter, so the refusal has to come after DATA.
            client.docmd("MAIL FROM:<alice@customer.test>")
            client.docmd("RCPT TO:<support@example.test>")
            code, message = client.data(mail(body=("x" * 70 + "\r\n") * (LIMIT // 70 + 10)))
            return advertised, code, message

    advertised, code, message = await asyncio.to_thread(ehlo_and_send_big)
    assert advertised == str(LIMIT)
    assert code == 552 and message.startswith(b"5.3.4")
    assert await count(desk, InboundMail) == 0


async def test_long_lines_are_accepted_not_refused_permanently(desk, listener):
    refused = await asyncio.to_thread(send, listener.port, mail(body="<p>" + "y" * 5000 + "</p>"))
    assert refused == {}


async def test_declared_size_over_the_limit_is_refused_at_mail_from(desk, listener):
    replies = await asyncio.to_thread(transcript, listener.port, [
        f"MAIL FROM:<alice@customer.test> SIZE={LIMIT + 1}".encode()])
    assert replies[0][0] == 552 and replies[0][1].startswith(b"5.3.4")


async def test_store_failure_answers_451_and_leaves_nothing_half_written(desk, listener):
    await make_inserts_fail(desk)
    with pytest.raises(smtplib.SMTPDataError) as failed:
        await asyncio.to_thread(send, listener.port, mail())
    assert failed.value.smtp_code == 451 and failed.value.smtp_error.startswith(b"4.3.0")
    assert await count(desk, InboundMail) == 0


async def test_swaks_delivery_becomes_a_ticket(desk, listener):
    if shutil.which("swaks") is None:
        need_server("swaks is not installed (apt-get install swaks)")
    process = await asyncio.create_subprocess_exec(
        "swaks", "--server", "127.0.0.1", "--port", str(listener.port), "--from", "bob@customer.test",
        "--to", "support@example.test", "--header", "Subject: Sent with swaks", "--body", "Hello from swaks",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    output, _ = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, output.decode()
    assert b"250 2.0.0 Ok: queued as" in output
    assert await InboundWorker(Intake(desk, ctx)).drain() == 1
    async with desk.db.read() as session:
        subject = await session.scalar(text("SELECT subject FROM tickets"))
    assert subject == "Sent with swaks"


async def test_swaks_unknown_recipient_gets_550(desk, listener):
    if shutil.which("swaks") is None:
        need_server("swaks is not installed (apt-get install swaks)")
    process = await asyncio.create_subprocess_exec(
        "swaks", "--server", "127.0.0.1", "--port", str(listener.port), "--to", "nobody@elsewhere.test",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    output, _ = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode != 0 and b"550 5.1.1" in output


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    import ipaddress

    try:
        from cryptography import x509
    except ImportError:  # not a declared dependency: fall back to the openssl command
        return _self_signed_with_openssl(tmp_path)
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def _self_signed_with_openssl(tmp_path: Path) -> tuple[Path, Path]:
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-addext", "basicConstraints=critical,CA:TRUE",
                    "-keyout", str(key_path), "-out", str(cert_path)], check=True, capture_output=True)
    return cert_path, key_path


async def test_starttls_with_the_configured_certificate(desk, tmp_path):
    cert, key = _self_signed(tmp_path)
    server = SmtpListener(desk, ctx.support_addresses, host="127.0.0.1", port=0, tls=tls_context(cert, key))
    await server.start()
    try:
        def ehlo_features() -> bool:
            with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as client:
                client.ehlo()
                return client.has_extn("starttls")

        assert await asyncio.to_thread(ehlo_features)
        refused = await asyncio.to_thread(send, server.port, mail(), starttls_ca=cert)
    finally:
        await server.stop()
    assert refused == {}
    assert await count(desk, InboundMail) == 1


async def test_listener_runs_on_the_callers_loop_and_wakes_the_worker(desk):
    woken = asyncio.Event()
    threads_before = {t.ident for t in threading.enumerate()}
    server = SmtpListener(desk, ctx.support_addresses, host="127.0.0.1", port=0, on_stored=woken.set)
    await server.start()
    try:
        started_threads = {t.ident for t in threading.enumerate()} - threads_before
        assert started_threads == set()  # no Controller thread: aiosmtpd shares our loop
        await asyncio.to_thread(send, server.port, fixture("pipeline_new_request.eml"))
        await asyncio.wait_for(woken.wait(), 5)
    finally:
        await server.stop()
    outcome_kinds = []
    worker = InboundWorker(Intake(desk, ctx), on_outcome=lambda o: outcome_kinds.append(o.kind))
    await worker.drain()
    assert outcome_kinds == [Kind.OPENED]


async def test_run_on_the_built_in_defaults_turns_mail_to_support_at_localhost_into_a_ticket(tmp_path):
    from core.queries import list_tickets
    from supportbot.app import build_app
    from supportbot.config import Config

    defaults = Config()
    assert defaults.mail.smtp_listener.port == 2525 and defaults.mail.support_addresses == ("support@localhost",)
    # The defaults, except a free port, no HTTP endpoint, and a data folder of our own.
    config = defaults.model_copy(update={
        "desk": defaults.desk.model_copy(update={"data_dir": tmp_path / "data"}),
        "http": defaults.http.model_copy(update={"enabled": False}),
        "mail": defaults.mail.model_copy(update={
            "smtp_listener": defaults.mail.smtp_listener.model_copy(update={"port": 0})})})
    app = await build_app(config)
    await app.start()
    try:
        listener = next(p for p in app.started if isinstance(p, SmtpListener))
        raw = b"From: Zoe <zoe@customer.test>\r\nTo: support@localhost\r\nSubject: Fresh install\r\n\r\nHi!\r\n"

        def deliver() -> dict:
            with smtplib.SMTP("127.0.0.1", listener.port, timeout=10) as client:
                return client.sendmail("zoe@customer.test", ["support@localhost"], raw)

        assert await asyncio.to_thread(deliver) == {}
        tickets = await eventually(lambda: list_tickets(app.desk))  # the worker was woken by the store
    finally:
        await app.stop()
    assert [(t.subject, t.requester) for t in tickets] == [("Fresh install", "zoe@customer.test")]
