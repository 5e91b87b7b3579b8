"""The SMTP listener against real clients (smtplib and swaks) on a free loopback port."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import shutil
import smtplib
import ssl
import subprocess
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from core.desk import Desk
from core.intake import Intake, Kind
from core.models import InboundMail, Ticket
from mail_gateway.smtp_listener import SessionLimits, SmtpListener, tls_context
from mail_gateway.worker import InboundWorker
from tests.conftest import copy_of, need_server, open_desk
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


# --- Limits: sessions in all and per client, idle time, commands without progress, line length ---


@pytest.fixture
async def sqlite_desk(migrated_sqlite: Path, tmp_path: Path, clock) -> AsyncIterator[Desk]:
    """The limits do not depend on the database: one engine is enough."""
    async with open_desk(copy_of(migrated_sqlite, tmp_path), tmp_path, clock, migrate=False) as opened:
        yield opened


@asynccontextmanager
async def limited(desk: Desk, *, lmtp: bool = False, max_message_bytes: int = LIMIT,
                  **limits: Any) -> AsyncIterator[SmtpListener]:
    server = SmtpListener(desk, ctx.support_addresses, host="127.0.0.1", port=0, lmtp=lmtp,
                          max_message_bytes=max_message_bytes, limits=SessionLimits(**limits))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


class Client:
    """A raw SMTP client on the test's own loop, from a chosen loopback address (all of 127/8 is ours)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int, source: str = "127.0.0.1") -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        return cls(reader, writer)

    async def reply(self) -> tuple[int, str]:
        """One reply (all its lines); (0, '') when the server closed the connection instead."""
        lines = []
        while True:
            line = await asyncio.wait_for(self.reader.readline(), 10)
            if not line:
                return 0, ""
            lines.append(line.decode().rstrip("\r\n"))
            if line[3:4] != b"-":
                return int(lines[0][:3]), "\n".join(text[4:] for text in lines)

    async def command(self, line: str | bytes) -> tuple[int, str]:
        self.writer.write((line.encode() if isinstance(line, str) else line) + b"\r\n")
        await self.writer.drain()
        return await self.reply()

    async def closed_by_server(self) -> bool:
        return await asyncio.wait_for(self.reader.read(), 10) == b""

    def close(self) -> None:
        self.writer.close()


async def greeted(port: int, source: str = "127.0.0.1") -> Client:
    client = await Client.connect(port, source)
    code, _ = await client.reply()
    assert code == 220
    return client


def send_from(port: int, source: str, raw: bytes, rcpt: list[str] | None = None) -> dict:
    with smtplib.SMTP("127.0.0.1", port, timeout=10, source_address=(source, 0)) as client:
        return client.sendmail("alice@customer.test", rcpt or ["support@example.test"], raw)


async def test_connections_beyond_the_session_cap_get_421_and_a_client_gets_its_250_once_some_close(
        sqlite_desk, caplog):
    async with limited(sqlite_desk, max_sessions=5, max_sessions_per_client=5) as server:
        holding = [await greeted(server.port, f"127.0.0.{10 + i}") for i in range(5)]
        assert server.open_sessions == 5
        for i in range(10):  # a burst of refusals, from another network
            extra = await Client.connect(server.port, f"127.0.1.{i + 1}")
            assert await extra.reply() == (421, "4.7.0 Too many connections, try again later")
            assert await extra.closed_by_server()
            extra.close()
        assert server.open_sessions == 5
        with pytest.raises(smtplib.SMTPConnectError) as refused:
            await asyncio.to_thread(send_from, server.port, "127.0.2.1", mail())
        assert refused.value.smtp_code == 421

        for client in holding[:2]:
            client.close()
        await eventually(lambda: server.open_sessions, until=lambda n: n == 3)
        assert await asyncio.to_thread(send_from, server.port, "127.0.2.1", mail()) == {}
        warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        for client in holding[2:]:
            client.close()
    summaries = [r.getMessage() for r in caplog.records if r.getMessage().startswith("in the last")]
    assert len(warnings) == 1  # one line for the burst, not one per refusal
    assert "max_sessions = 5" in warnings[0] and "127.0.1.0/24" in warnings[0] and "127.0.1.1)" not in warnings[0]
    assert summaries and "max_sessions = 5" in summaries[0] and ": 10;" in summaries[0]  # told when stopping
    assert await count(sqlite_desk, InboundMail) == 1


async def test_one_client_gets_at_most_its_share_of_sessions(sqlite_desk, caplog):
    async with limited(sqlite_desk, max_sessions=10, max_sessions_per_client=2) as server:
        holding = [await greeted(server.port, "127.0.0.7") for _ in range(2)]
        third = await Client.connect(server.port, "127.0.0.7")
        assert await third.reply() == (421, "4.7.0 Too many connections, try again later")
        assert await third.closed_by_server()
        assert await asyncio.to_thread(send_from, server.port, "127.0.0.8", mail()) == {}  # another client
        holding[0].close()
        await eventually(lambda: server.open_sessions, until=lambda n: n == 1)
        assert await asyncio.to_thread(send_from, server.port, "127.0.0.7", mail(subject="again")) == {}
        holding[1].close()
        third.close()
    [warning] = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "max_sessions_per_client = 2" in warning and "127.0.0.0/24" in warning and "127.0.0.7" not in warning


async def test_an_idle_session_is_told_421_and_closed(sqlite_desk):
    async with limited(sqlite_desk, idle_timeout_seconds=0.5) as server:
        client = await greeted(server.port)
        assert (await client.command("EHLO client.test"))[0] == 250
        started = time.monotonic()
        code, text = await client.reply()  # nothing sent: the server speaks first
        assert code == 421 and text.startswith("4.4.2") and "timeout" in text
        assert await client.closed_by_server()
        assert 0.4 < time.monotonic() - started < 5
        await eventually(lambda: server.open_sessions, until=lambda n: n == 0)
        client.close()


async def test_a_slow_upload_is_not_idleness(sqlite_desk):
    """The mail arrives in pieces 0.3 s apart, 1.5 s in all, against a 0.5 s idle timeout."""
    async with limited(sqlite_desk, idle_timeout_seconds=0.5) as server:
        client = await greeted(server.port)
        for line in ("EHLO client.test", "MAIL FROM:<alice@customer.test>", "RCPT TO:<support@example.test>"):
            assert (await client.command(line))[0] == 250
        assert (await client.command("DATA"))[0] == 354
        for piece in mail(body="slow\r\n" * 50).split(b"\r\n\r\n", 1) + [b"\r\n" + b"more\r\n" * 3] * 3:
            client.writer.write(piece)
            await client.writer.drain()
            await asyncio.sleep(0.3)
        code, text = await client.command(b"\r\n.")
        assert code == 250 and text.startswith("2.0.0 Ok: queued as")
        client.close()


async def test_a_slow_store_is_not_the_clients_idleness(sqlite_desk, monkeypatch):
    from mail_gateway import smtp_listener

    real_store = smtp_listener.store_received

    async def slow_store(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(1.0)  # a busy database, twice the idle timeout
        return await real_store(*args, **kwargs)

    monkeypatch.setattr(smtp_listener, "store_received", slow_store)
    async with limited(sqlite_desk, idle_timeout_seconds=0.5) as server:
        assert await asyncio.to_thread(send, server.port, mail()) == {}
    assert await count(sqlite_desk, InboundMail) == 1


async def test_noop_flood_gets_421_and_is_closed(sqlite_desk, caplog):
    caplog.set_level(logging.INFO, logger="mail_gateway.smtp")
    async with limited(sqlite_desk, max_commands_without_progress=20) as server:
        client = await greeted(server.port)
        assert (await client.command("EHLO client.test"))[0] == 250
        assert [(await client.command("NOOP"))[0] for _ in range(19)] == [250] * 19  # 20 in a row with EHLO
        assert await client.command("NOOP") == (421, "4.7.0 Too many commands without progress, closing connection")
        assert await client.closed_by_server()
        await eventually(lambda: server.open_sessions, until=lambda n: n == 0)
        client.close()
    assert any("commands without progress" in r.getMessage() and "127.0.0.0/24" in r.getMessage()
               for r in caplog.records)


async def test_refused_recipients_in_a_loop_count_as_no_progress(sqlite_desk):
    async with limited(sqlite_desk, max_commands_without_progress=5) as server:
        client = await greeted(server.port)
        assert (await client.command("EHLO client.test"))[0] == 250
        assert (await client.command("MAIL FROM:<spammer@elsewhere.test>"))[0] == 250  # neutral
        codes = [(await client.command(f"RCPT TO:<victim{i}@elsewhere.test>"))[0] for i in range(4)]
        assert codes == [550] * 4  # EHLO and these: 5 without progress
        assert (await client.command("RCPT TO:<victim5@elsewhere.test>"))[0] == 550  # its own answer, then
        assert (await client.reply())[0] == 421
        assert await client.closed_by_server()
        client.close()


async def test_a_stored_mail_is_progress_and_starts_the_count_again(sqlite_desk):
    async with limited(sqlite_desk, max_commands_without_progress=5) as server:
        client = await greeted(server.port)
        for round_ in range(3):  # 4 + 4 + 4 NOOPs: more than 5 in all, never 5 in a row … plus EHLO once
            assert [(await client.command("NOOP"))[0] for _ in range(4)] == [250] * 4
            if round_ == 0:
                assert (await client.command("EHLO client.test"))[0] == 250
            assert (await client.command("MAIL FROM:<alice@customer.test>"))[0] == 250
            assert (await client.command("RCPT TO:<support@example.test>"))[0] == 250
            assert (await client.command("DATA"))[0] == 354
            assert (await client.command(mail(subject=f"round {round_}") + b"."))[0] == 250
        assert (await client.command("QUIT"))[0] == 221
        client.close()
    assert await count(sqlite_desk, InboundMail) == 3


async def test_help_still_describes_each_command(sqlite_desk):
    async with limited(sqlite_desk) as server:
        client = await greeted(server.port)
        assert await client.command("HELP NOOP") == (250, "Syntax: NOOP [ignored]")
        code, text = await client.command("HELP")
        assert code == 250 and "DATA" in text and "NOOP" in text
        client.close()


def long_line_mail(length: int, *, first: bytes = b"y") -> bytes:
    """A mail whose body is one line of `length` bytes (not counting its CRLF) between two short ones."""
    return mail(body="before").replace(b"before\r\n", b"before\r\n" + first + b"y" * (length - 1) + b"\r\nafter\r\n")


async def test_a_line_as_long_as_the_listener_allows_goes_through_intact(sqlite_desk):
    async with limited(sqlite_desk, max_message_bytes=1024 * 1024) as server:  # max_line_bytes: 64 KiB
        plain, dotted = long_line_mail(65536), long_line_mail(65536, first=b".")  # smtplib doubles the dot
        assert await asyncio.to_thread(send, server.port, plain) == {}
        assert await asyncio.to_thread(send, server.port, dotted) == {}
    async with sqlite_desk.db.read() as session:
        stored = list(await session.scalars(select(InboundMail.raw).order_by(InboundMail.id)))
    assert stored == [plain, dotted]


async def test_a_line_over_the_limit_gets_500_5_5_2_after_the_data_and_the_session_goes_on(sqlite_desk):
    async with limited(sqlite_desk, max_message_bytes=1024 * 1024) as server:
        def too_long_then_fine() -> tuple[int, bytes, dict]:
            with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as client:
                client.ehlo()
                client.mail("alice@customer.test")
                client.rcpt("support@example.test")
                code, text = client.data(long_line_mail(65538))
                return code, text, client.sendmail("alice@customer.test", ["support@example.test"], mail())

        code, text, refused = await asyncio.to_thread(too_long_then_fine)
    assert code == 500 and text.startswith(b"5.5.2 Line too long: at most 65536 octets per line")
    assert refused == {}
    assert await count(sqlite_desk, InboundMail) == 1


async def test_the_line_limit_is_configurable(sqlite_desk):
    async with limited(sqlite_desk, max_message_bytes=1024 * 1024, max_line_bytes=200_000) as server:
        assert await asyncio.to_thread(send, server.port, long_line_mail(150_000)) == {}
    async with limited(sqlite_desk, max_line_bytes=1000) as server:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            await asyncio.to_thread(send, server.port, long_line_mail(1003))
        assert refused.value.smtp_code == 500


async def test_healthz_answers_while_the_smtp_side_is_at_its_cap(tmp_path):
    from supportbot.app import build_app
    from supportbot.config import Config
    from supportbot.health import HealthServer

    defaults = Config()
    config = defaults.model_copy(update={
        "desk": defaults.desk.model_copy(update={"data_dir": tmp_path / "data"}),
        "http": defaults.http.model_copy(update={"port": 0}),
        "mail": defaults.mail.model_copy(update={"smtp_listener": defaults.mail.smtp_listener.model_copy(
            update={"port": 0, "max_sessions": 30, "max_sessions_per_client": 10})})})
    app = await build_app(config)
    await app.start()
    clients: list[Client] = []
    try:
        listener = next(p for p in app.started if isinstance(p, SmtpListener))
        health = next(p for p in app.started if isinstance(p, HealthServer))
        assert listener.limits.max_sessions == 30  # from the config, through smtp_listener_part
        for i in range(60):  # 3 clients fill the 30 sessions; the other 30 connections are refused
            client = await Client.connect(listener.port, f"127.0.{3 + i // 10}.{1 + i % 10}" if i >= 30
                                          else f"127.0.0.{1 + i // 10}")
            clients.append(client)
            assert (await client.reply())[0] == (220 if i < 30 else 421)
        assert listener.open_sessions == 30

        reader, writer = await asyncio.open_connection("127.0.0.1", health.port)
        writer.write(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        response = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        assert response.startswith(b"HTTP/1.1 200") or response.startswith(b"HTTP/1.0 200")
        assert b'"status": "ok"' in response
    finally:
        for client in clients:
            client.close()
        await app.stop()


def test_the_limits_come_from_the_config_and_are_checked(tmp_path):
    from supportbot.config import ConfigError, load_config

    path = tmp_path / "supportbot.toml"
    path.write_text("[mail.smtp_listener]\nmax_sessions = 5\nmax_sessions_per_client = 6\n")
    with pytest.raises(ConfigError) as error:
        load_config(path, environ={})
    assert "mail.smtp_listener.max_sessions_per_client = 6: expected at most max_sessions (5)" in str(error.value)
    path.write_text("[mail.smtp_listener]\nidle_timeout_seconds = 0\n")
    with pytest.raises(ConfigError, match="idle_timeout_seconds = 0"):
        load_config(path, environ={})


def test_max_sessions_is_lowered_to_fit_the_descriptor_limit(monkeypatch, caplog):
    import resource

    from mail_gateway.smtp_listener import fit_to_descriptors

    monkeypatch.setattr(resource, "getrlimit", lambda which: (1024, 4096))
    assert fit_to_descriptors(SessionLimits()) == SessionLimits()
    fitted = fit_to_descriptors(SessionLimits(max_sessions=5000, max_sessions_per_client=5000))
    assert (fitted.max_sessions, fitted.max_sessions_per_client) == (768, 768)
    assert "ulimit -n" in caplog.text
