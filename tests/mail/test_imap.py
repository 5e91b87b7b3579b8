"""IMAP in, against a real Dovecot: IDLE, polling, restarts, UIDVALIDITY, drops, bad mailboxes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from imapclient import IMAPClient
from sqlalchemy import select

from core.desk import Desk
from core.imap_models import load_position
from core.inbound import StoredMail
from core.intake import Intake, IntakeSettings
from core.models import InboundMail, Ticket
from core.tokens import Signer
from mail_gateway import imap
from mail_gateway.imap import ImapSource, _batches
from mail_gateway.imap_connection import FetchedMail, ImapConnection
from mail_gateway.store import store_received_many
from mail_gateway.worker import InboundWorker
from supportbot.config import Config, ImapMailboxConfig
from supportbot.imap_wiring import imap_part
from tests.conftest import copy_of, open_desk
from tests.kit import eventually
from tests.servers import Dovecot, Postfix, dovecot, postfix  # noqa: F401  (fixtures)

pytestmark = pytest.mark.dovecot

SUPPORT = "support@example.test"


def mail(subject: str, msgid: str | None = None, sender: str = "alice@example.org") -> bytes:
    lines = [f"From: Alice <{sender}>", f"To: {SUPPORT}", f"Subject: {subject}",
             "Date: Mon, 02 Mar 2026 09:00:00 +0000"]
    if msgid:
        lines.append(f"Message-ID: <{msgid}>")
    return ("\r\n".join(lines) + "\r\n\r\nHello, " + subject + "\r\n").encode()


def mailbox(server: Dovecot, **overrides: Any) -> ImapMailboxConfig:
    settings: dict[str, Any] = dict(name="main", host=server.host, port=server.imap_port, security="plain",
                                    username=SUPPORT, password=server.users[SUPPORT], timeout_seconds=5)
    settings.update(overrides)
    return ImapMailboxConfig(**settings)


@pytest.fixture
async def sqlite_desk(tmp_path: Path, migrated_sqlite: Path) -> AsyncIterator[Desk]:
    """The IMAP side does not depend on the engine; test_restart… also runs on PostgreSQL.

    Unlike the shared `sqlite_desk` (a fixed clock), on real time, like the server it reads.
    """
    async with open_desk(copy_of(migrated_sqlite, tmp_path), tmp_path, migrate=False) as desk:
        yield desk


@pytest.fixture
async def running() -> AsyncIterator[Callable[[ImapSource], Awaitable[ImapSource]]]:
    """Start sources; every one is stopped when the test ends, whatever happened."""
    started: list[ImapSource] = []

    async def start(source: ImapSource) -> ImapSource:
        await source.start()
        started.append(source)
        return source

    yield start
    for source in started:
        await source.stop()


async def stored(desk: Desk) -> list[InboundMail]:
    async with desk.db.read() as session:
        return list(await session.scalars(select(InboundMail).order_by(InboundMail.id)))


def summary(rows: Sequence[InboundMail]) -> list[tuple[str, str, str]]:
    """What a failed wait shows of the stored mails."""
    return [(r.mailbox, r.dedupe_key.partition("|")[0], str(r.status)) for r in rows]


async def stored_count(desk: Desk, n: int, timeout: float = 10.0) -> list[InboundMail]:
    """The stored mails, once there are `n`."""
    return await eventually(lambda: stored(desk), until=lambda rows: len(rows) == n, timeout=timeout,
                            what=f"{n} mail(s) stored", show=summary)


async def settled_count(desk: Desk, n: int, timeout: float = 10.0) -> list[InboundMail]:
    """The stored mails, once there are `n` and the pipeline has processed every one."""
    return await eventually(lambda: stored(desk),
                            until=lambda rows: len(rows) == n and all(r.status != "received" for r in rows),
                            timeout=timeout, what=f"{n} mail(s) stored and processed", show=summary)


async def in_state(source: ImapSource, state: str, timeout: float = 10.0) -> None:
    await eventually(lambda: (source.state, source.last_error), until=lambda seen: seen[0] == state,
                     timeout=timeout, what=f"{source.name} {state}")


async def tickets(desk: Desk) -> list[Ticket]:
    async with desk.db.read() as session:
        return list(await session.scalars(select(Ticket).order_by(Ticket.id)))


def inbound_worker(desk: Desk) -> InboundWorker:
    """The real pipeline, polling fast so a test never waits for it."""
    ctx = IntakeSettings(Signer(b"k" * 32, "example.test"), support_addresses=(SUPPORT,))
    return InboundWorker(Intake(desk, ctx), poll_seconds=0.2)


def flags_by_subject(server: Dovecot, folder: str = "INBOX") -> dict[str, set[bytes]]:
    with IMAPClient(server.host, server.imap_port, ssl=False, timeout=5) as client:
        client.login(SUPPORT, server.users[SUPPORT])
        client.select_folder(folder, readonly=True)
        found = client.fetch(client.search(["ALL"]), ["FLAGS", "BODY.PEEK[HEADER.FIELDS (SUBJECT)]"])
    return {data[b"BODY[HEADER.FIELDS (SUBJECT)]"].decode().split(":", 1)[1].strip(): set(data[b"FLAGS"])
            for data in found.values()}


async def flags_when(server: Dovecot, until: Callable[[dict[str, set[bytes]]], bool],
                     folder: str = "INBOX") -> dict[str, set[bytes]]:
    """The folder's flags by subject, once `until` accepts them."""
    return await eventually(lambda: asyncio.to_thread(flags_by_subject, server, folder), until=until)


async def test_new_mail_arrives_through_idle_without_a_renewal_or_a_poll_and_is_then_flagged_seen(
        dovecot: Dovecot, sqlite_desk: Desk, running: Any) -> None:
    source = await running(ImapSource(sqlite_desk, mailbox(dovecot, idle_renew_seconds=600)))
    await in_state(source, "idle")
    dovecot.deliver(mail("printer on fire", "fire@example.org"))
    # The session stays in IDLE for 10 minutes, far beyond this wait: only IDLE's news brings the mail in.
    (row,) = await stored_count(sqlite_desk, 1)
    assert source.idle_renewals == 0
    assert b"printer on fire" in row.raw
    assert (row.source, row.mailbox, row.dedupe_key.partition("|")[0]) == ("imap:main", "main", "fire@example.org")
    await flags_when(dovecot, lambda flags: b"\\Seen" in flags.get("printer on fire", set()))


async def test_mail_arriving_between_the_search_and_idle_is_not_missed(
        dovecot: Dovecot, sqlite_desk: Desk, running: Any) -> None:
    source = ImapSource(sqlite_desk, mailbox(dovecot))
    search = source._conn.new_uids
    calls = 0

    def search_then_deliver(after: int) -> list[int]:
        # Runs on the source's IMAP thread: the mail lands after the SEARCH, before IDLE starts,
        # so Dovecot announces it right with "+ idling" (often in the same packet).
        nonlocal calls
        calls += 1
        found = search(after)
        if calls == 1:
            dovecot.deliver(mail("in the gap", "gap@example.org"))
        return found

    source._conn.new_uids = search_then_deliver  # type: ignore[method-assign]
    await running(source)
    await stored_count(sqlite_desk, 1)  # IDLE is renewed only after 25 minutes: it saw the mail
    assert source.idle_renewals == 0


async def test_mail_marked_read_by_another_client_before_we_saw_it_is_still_ingested(
        dovecot: Dovecot, sqlite_desk: Desk, running: Any) -> None:
    dovecot.deliver(mail("already read by a colleague", "read@example.org"))
    with IMAPClient(dovecot.host, dovecot.imap_port, ssl=False, timeout=5) as other_client:
        other_client.login(SUPPORT, "secret")
        other_client.select_folder("INBOX")
        other_client.add_flags(other_client.search(["ALL"]), [b"\\Seen"])
    await running(ImapSource(sqlite_desk, mailbox(dovecot)))
    await stored_count(sqlite_desk, 1)
    assert (await stored(sqlite_desk))[0].dedupe_key.partition("|")[0] == "read@example.org"


async def test_stored_mail_is_moved_to_the_processed_folder(
        dovecot: Dovecot, sqlite_desk: Desk, running: Any) -> None:
    dovecot.deliver_many([mail("one", "one@example.org"), mail("two", "two@example.org")])
    await running(ImapSource(sqlite_desk, mailbox(dovecot, processed_folder="Processed")))
    await stored_count(sqlite_desk, 2)
    await flags_when(dovecot, lambda flags: not flags)
    moved = await asyncio.to_thread(flags_by_subject, dovecot, "Processed")
    assert set(moved) == {"one", "two"} and all(b"\\Seen" in flags for flags in moved.values())


async def test_store_failure_leaves_mail_unseen_and_the_source_retries_it(
        dovecot: Dovecot, sqlite_desk: Desk, running: Any) -> None:
    attempts = 0

    async def flaky_store(desk: Desk, raws: list[bytes], **kw: Any) -> list[StoredMail]:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise ConnectionError("database unreachable")
        return await store_received_many(desk, raws, **kw)

    dovecot.deliver(mail("first try fails", "flaky@example.org"))
    source = await running(ImapSource(sqlite_desk, mailbox(dovecot), store=flaky_store))
    await in_state(source, "backoff")
    assert b"\\Seen" not in (await asyncio.to_thread(flags_by_subject, dovecot))["first try fails"]
    assert "database unreachable" in (source.last_error or "")
    await stored_count(sqlite_desk, 1)  # after about 1 s of backoff
    assert attempts == 2


class _SkippingConnection(ImapConnection):
    """The real connection to the real Dovecot, except that its first FETCH answer leaves one mail
    out, as some servers do under load with no error (Dovecot cannot be made to)."""

    def __init__(self, config: ImapMailboxConfig) -> None:
        super().__init__(config)
        self.skipped: list[int] = []

    def fetch(self, uids: Sequence[int]) -> dict[int, FetchedMail]:
        fetched = super().fetch(uids)
        if not self.skipped and fetched:
            self.skipped.append(min(fetched))
            del fetched[min(fetched)]
        return fetched


async def test_a_mail_the_server_leaves_out_of_a_fetch_is_asked_for_again_not_passed_over(
        dovecot: Dovecot, sqlite_desk: Desk, running: Any) -> None:
    for subject in ("left out", "returned"):
        dovecot.deliver(mail(subject, f"{subject.replace(' ', '-')}@example.org"))
    source = ImapSource(sqlite_desk, mailbox(dovecot))
    connection = source._conn = _SkippingConnection(mailbox(dovecot))
    await running(source)
    await stored_count(sqlite_desk, 2)
    assert connection.skipped  # the server did leave one out
    ids = sorted(r.dedupe_key.partition("|")[0] for r in await stored(sqlite_desk))
    assert ids == ["left-out@example.org", "returned@example.org"]


class _NeverReturningConnection(ImapConnection):
    """The real connection, except that the server never returns the mail with the lowest UID."""

    def fetch(self, uids: Sequence[int]) -> dict[int, FetchedMail]:
        fetched = super().fetch(uids)
        fetched.pop(1, None)
        return fetched


async def test_a_mail_the_server_never_returns_is_passed_over_after_some_rounds_and_said_loudly(
        dovecot: Dovecot, sqlite_desk: Desk, running: Any, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(imap, "MAX_UNRETURNED_ROUNDS", 2)  # one backoff (about 1 s) instead of four
    for subject in ("unreadable", "fine"):
        dovecot.deliver(mail(subject, f"{subject}@example.org"))
    source = ImapSource(sqlite_desk, mailbox(dovecot))
    source._conn = _NeverReturningConnection(mailbox(dovecot))
    with caplog.at_level(logging.WARNING, logger="mail_gateway.imap"):
        await running(source)
        await stored_count(sqlite_desk, 1)
    assert [r.dedupe_key.partition("|")[0] for r in await stored(sqlite_desk)] == ["fine@example.org"]
    assert "UID 1 out of its FETCH answers" in caplog.text  # the first round failed and retried
    assert "would not return UID 1 in 2 rounds; passed over, NOT stored" in caplog.text


@pytest.mark.parametrize("crash", ["before the commit", "after the commit, before the flag"])
async def test_restart_after_a_crash_fetches_the_mail_again_and_keeps_one_copy_per_key(
        dovecot: Dovecot, desk: Desk, running: Any, crash: str) -> None:
    reached = asyncio.Event()

    async def crashing_store(d: Desk, raws: list[bytes], **kw: Any) -> list[StoredMail]:
        if crash == "after the commit, before the flag":
            await store_received_many(d, raws, **kw)
        reached.set()
        await asyncio.Event().wait()  # the process dies here
        raise AssertionError("unreachable")

    dovecot.deliver(mail("survives a crash", "crash@example.org"))
    first = ImapSource(desk, mailbox(dovecot), store=crashing_store)
    await first.start()
    await asyncio.wait_for(reached.wait(), 10)
    assert first._task is not None
    first._task.cancel()  # like a kill: no cleanup code of ours runs to completion
    await first.stop()
    assert b"\\Seen" not in (await asyncio.to_thread(flags_by_subject, dovecot))["survives a crash"]

    worker = inbound_worker(desk)
    await running(ImapSource(desk, mailbox(dovecot), on_stored=worker.wake))
    await worker.start()
    try:
        # Before the commit nothing was stored; after it, the position went into the same commit,
        # so the restart does not fetch the mail again: it only sets the flag the crash skipped.
        rows = await stored_count(desk, 1)
        assert [r.dedupe_key.partition("|")[0] for r in rows] == ["crash@example.org"]
        await settled_count(desk, 1)
    finally:
        await worker.stop()
    assert [t.subject for t in await tickets(desk)] == ["survives a crash"]
    await flags_when(dovecot, lambda flags: b"\\Seen" in flags.get("survives a crash", set()))
    position = await load_position(desk.db, "main", "INBOX")
    assert position is not None and position.last_uid == 1


async def test_uidvalidity_change_reads_the_recreated_folder_again(
        dovecot: Dovecot, sqlite_desk: Desk, running: Any) -> None:
    with IMAPClient(dovecot.host, dovecot.imap_port, ssl=False, timeout=5) as admin:
        admin.login(SUPPORT, "secret")
        admin.create_folder("Support")
        admin.append("Support", mail("before the change", "before@example.org"))
    config = mailbox(dovecot, folder="Support")
    source = await running(ImapSource(sqlite_desk, config))
    await stored_count(sqlite_desk, 1)
    old = await load_position(sqlite_desk.db, "main", "Support")
    await source.stop()

    # Deleting and recreating the folder gives it a new UIDVALIDITY, and its UIDs start at 1 again:
    # a reader trusting the old last UID (1) would skip the new mail with UID 1.
    await asyncio.sleep(1.1)  # Dovecot derives UIDVALIDITY from the clock
    with IMAPClient(dovecot.host, dovecot.imap_port, ssl=False, timeout=5) as admin:
        admin.login(SUPPORT, "secret")
        admin.delete_folder("Support")
        admin.create_folder("Support")
        admin.append("Support", mail("after the change", "after@example.org"))
    await running(ImapSource(sqlite_desk, config))
    await stored_count(sqlite_desk, 2)
    assert (await stored(sqlite_desk))[1].dedupe_key.partition("|")[0] == "after@example.org"
    new = await load_position(sqlite_desk.db, "main", "Support")
    assert old is not None and new is not None
    assert new.uidvalidity != old.uidvalidity and new.last_uid == 1


async def test_connection_kicked_by_the_server_is_reestablished(
        dovecot: Dovecot, sqlite_desk: Desk, running: Any) -> None:
    source = await running(ImapSource(sqlite_desk, mailbox(dovecot)))
    await in_state(source, "idle")
    await asyncio.to_thread(dovecot.kick)
    await in_state(source, "backoff")
    dovecot.deliver(mail("after the kick", "kick@example.org"))
    await stored_count(sqlite_desk, 1)
    assert source.state in ("idle", "connecting")


async def test_server_restart_is_survived_with_backoff(
        dovecot: Dovecot, sqlite_desk: Desk, running: Any) -> None:
    source = await running(ImapSource(sqlite_desk, mailbox(dovecot)))
    await in_state(source, "idle")
    await asyncio.to_thread(dovecot.stop)  # SIGKILL: the connection dies without a BYE
    await in_state(source, "backoff")
    await asyncio.to_thread(dovecot.start)
    dovecot.deliver(mail("after the restart", "restart@example.org"))
    await stored_count(sqlite_desk, 1, timeout=15)


async def test_server_that_stops_answering_hits_the_timeout_and_the_source_reconnects(
        dovecot: Dovecot, sqlite_desk: Desk, running: Any) -> None:
    import os
    import signal
    import subprocess

    source = await running(ImapSource(sqlite_desk, mailbox(dovecot, timeout_seconds=1, idle_renew_seconds=0.5)))
    await in_state(source, "idle")
    # Freeze the IMAP process serving us: the TCP connection stays up, nothing answers any more.
    frozen = [int(pid) for pid in subprocess.run(["pgrep", "-g", str(dovecot.pid), "-x", "imap"],
                                                 capture_output=True, text=True, check=False).stdout.split()]
    assert frozen
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    try:
        await in_state(source, "backoff")
        assert "timed out" in (source.last_error or "") or "Timeout" in (source.last_error or "")
        dovecot.deliver(mail("after the hang", "hang@example.org"))
        await stored_count(sqlite_desk, 1)  # a new connection, a new imap process
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)


async def test_idle_is_renewed_before_the_server_timeout_and_mail_still_arrives(
        dovecot: Dovecot, sqlite_desk: Desk, running: Any) -> None:
    source = await running(ImapSource(sqlite_desk, mailbox(dovecot, idle_renew_seconds=0.3)))
    await eventually(lambda: source.idle_renewals, until=lambda renewals: renewals >= 3)
    dovecot.deliver(mail("between renewals", "renew@example.org"))
    await stored_count(sqlite_desk, 1)


async def test_polling_finds_new_mail_when_idle_is_switched_off(
        dovecot: Dovecot, sqlite_desk: Desk, running: Any) -> None:
    source = await running(ImapSource(sqlite_desk, mailbox(dovecot, idle=False, poll_seconds=0.3)))
    await in_state(source, "polling")
    dovecot.deliver(mail("polled", "poll@example.org"))
    await stored_count(sqlite_desk, 1)
    assert source.idle_renewals == 0


async def test_mailbox_with_a_wrong_password_does_not_stop_a_good_one(
        dovecot: Dovecot, sqlite_desk: Desk, running: Any) -> None:
    bad = await running(ImapSource(sqlite_desk, mailbox(dovecot, name="bad", password="wrong")))
    good = await running(ImapSource(sqlite_desk, mailbox(dovecot, name="good")))
    dovecot.deliver(mail("for the good one", "good@example.org"))
    await stored_count(sqlite_desk, 1)
    assert (await stored(sqlite_desk))[0].mailbox == "good"
    await in_state(bad, "backoff")
    assert "login refused" in (bad.last_error or "")
    assert good.last_error is None


@pytest.mark.parametrize("security", ["tls", "starttls"])
async def test_encrypted_connections_verify_the_server_certificate(
        dovecot: Dovecot, sqlite_desk: Desk, running: Any, security: str) -> None:
    port = dovecot.imaps_port if security == "tls" else dovecot.imap_port
    dovecot.deliver(mail(f"over {security}", f"{security}@example.org"))
    await running(ImapSource(sqlite_desk, mailbox(dovecot, security=security, port=port,
                                                  ca_file=dovecot.ca_file)))
    await stored_count(sqlite_desk, 1)
    untrusted = await running(ImapSource(sqlite_desk, mailbox(dovecot, name="untrusted", security=security,
                                                               port=port)))
    await in_state(untrusted, "backoff")
    assert "CERTIFICATE_VERIFY_FAILED" in (untrusted.last_error or "")


async def test_stop_while_idle_interrupts_the_idle_and_logs_out(dovecot: Dovecot, sqlite_desk: Desk) -> None:
    source = ImapSource(sqlite_desk, mailbox(dovecot))  # its IDLE would last 25 minutes
    cut: list[bool] = []
    cut_off = source._conn.abort
    source._conn.abort = lambda: (cut.append(True), cut_off())[-1]  # type: ignore[method-assign]
    await source.start()
    await in_state(source, "idle")
    await source.stop()
    assert source.state == "stopped"
    # Not cut off after the grace time (10 s here): the IDLE was interrupted and the session said LOGOUT.
    assert cut == []
    log = dovecot.state_dir / "log" / "dovecot.log"
    await eventually(lambda: log.read_text(errors="replace"), until=lambda text: "Logged out" in text)


async def test_imap_part_reads_every_configured_mailbox_and_wakes_the_worker(
        dovecot: Dovecot, sqlite_desk: Desk) -> None:
    wakes: list[None] = []
    config = Config.model_validate({"mail": {"imap": [
        mailbox(dovecot, name="first").model_dump(),
        mailbox(dovecot, name="second", username="other@example.test").model_dump()]}})
    part = imap_part(config, sqlite_desk, on_stored=lambda: wakes.append(None))
    assert part is not None and [s.config.name for s in part.sources] == ["first", "second"]
    await part.start()
    try:
        dovecot.deliver(mail("to both", "both@example.org"), to=[SUPPORT, "other@example.test"])
        await stored_count(sqlite_desk, 2)
        assert {r.mailbox for r in await stored(sqlite_desk)} == {"first", "second"}
        assert len(wakes) >= 2
    finally:
        await part.stop()


async def test_no_imap_part_without_configured_mailboxes(sqlite_desk: Desk) -> None:
    assert imap_part(Config(), sqlite_desk, on_stored=lambda: None) is None


def test_fetch_batches_respect_both_count_and_bytes() -> None:
    sizes = {1: 10, 2: 10, 3: 100, 4: 10, 5: 10}
    assert _batches([1, 2, 3, 4, 5], sizes, max_count=2, max_bytes=50) == [[1, 2], [3], [4, 5]]
    assert _batches([1, 2, 3], sizes, max_count=10, max_bytes=1000) == [[1, 2, 3]]



def test_the_commented_example_mailbox_parses_to_the_documented_defaults() -> None:
    import re
    import tomllib

    from tests.conftest import REPO

    text = (REPO / "config.example.toml").read_text()
    block = text[text.index("# [[mail.imap]]"):].split("\n\n", 1)[0]
    uncommented = "\n".join(line.removeprefix("# ") for line in block.splitlines())
    uncommented = re.sub(r'^ca_file = "".*$', "", uncommented, flags=re.MULTILINE)  # TOML has no null
    parsed = Config.model_validate(tomllib.loads(uncommented)).mail.imap[0]
    defaults = ImapMailboxConfig(name="main", host="imap.example.com", username="support@example.com")
    assert parsed == defaults


def test_a_mailbox_cannot_move_mail_into_the_folder_it_reads() -> None:
    with pytest.raises(ValueError, match="processed_folder must differ"):
        ImapMailboxConfig(name="x", host="h", username="u", processed_folder="INBOX")


@pytest.mark.slow  # starting Postfix takes a few seconds
async def test_mail_sent_through_postfix_becomes_a_ticket_via_dovecot_and_imap(
        postfix: Postfix, dovecot: Dovecot, sqlite_desk: Desk, running: Any) -> None:
    worker = inbound_worker(sqlite_desk)
    await worker.start()
    try:
        await running(ImapSource(sqlite_desk, mailbox(dovecot), on_stored=worker.wake))
        await asyncio.to_thread(postfix.send, mail("through the whole chain", "mta@example.org"))
        try:
            await settled_count(sqlite_desk, 1, timeout=30)
        except BaseException:
            maillog = postfix.state_dir / "maillog"
            print(maillog.read_text()[-3000:] if maillog.exists() else "no Postfix maillog")  # shown on failure
            raise
    finally:
        await worker.stop()
    (row,) = await stored(sqlite_desk)
    assert b"Received: from" in row.raw and b"mx.example.test" in row.raw  # Postfix's trace header
    (ticket,) = await tickets(sqlite_desk)
    assert ticket.subject == "through the whole chain" and row.ticket_id == ticket.id


def test_a_fetched_mail_comes_with_the_time_the_server_received_it(dovecot: Dovecot) -> None:
    from datetime import UTC, datetime, timedelta

    dovecot.deliver(mail("when did it come", "when@example.org"))
    connection = ImapConnection(mailbox(dovecot))
    connection.open()
    try:
        [(uid, fetched)] = connection.fetch(connection.new_uids(0)).items()
    finally:
        connection.close()
    assert b"when did it come" in fetched.raw
    assert fetched.internaldate is not None and fetched.internaldate.tzinfo is not None
    assert abs(datetime.now(UTC) - fetched.internaldate) < timedelta(minutes=5)
