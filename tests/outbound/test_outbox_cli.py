"""Operators' view of mail out: `supportbot mail outbox list | retry`, and `run` with no relay configured."""

from __future__ import annotations

import asyncio
import json
import mailbox
import re
from pathlib import Path

import pytest

from core.enums import OutboxStatus
from core.events import consume_once
from core.migrate import upgrade
from core.outbox import RetryPolicy, claim_due, list_mail, mark_failed
from core.services import ContactRef, MailContent, open_ticket
from supportbot.app import open_desk, run
from supportbot.cli import main
from supportbot.config import load_config
from supportbot.outbound import build_notifier
from tests.kit import eventually


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    path = tmp_path / "supportbot.toml"
    path.write_text('[desk]\ndata_dir = "data"\n[mail]\nsupport_addresses = ["support@example.test"]\n'
                    'secret = "cli-test"\n[mail.smtp_listener]\nenabled = false\n[http]\nenabled = false\n')
    return path


def queue_and_fail_one(config_path: Path) -> int:
    async def go() -> int:
        config = load_config(config_path)
        desk = open_desk(config)
        try:
            await upgrade(desk.db)
            await open_ticket(desk, ContactRef("alice@example.org"), MailContent(text="hi", subject="Hello"))
            await consume_once(desk.db, "mail-notifier", build_notifier(config, desk, b"cli-test").handle,
                               clock=desk.clock)
            (mail,) = await claim_due(desk, RetryPolicy())
            await mark_failed(desk, mail.id, "550 5.1.1 no such user")
            return mail.id
        finally:
            await desk.close()

    return asyncio.run(go())


def test_outbox_list_shows_status_and_error_and_retry_queues_it_again(
        config_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mail_id = queue_and_fail_one(config_path)
    assert main(["--config", str(config_path), "mail", "outbox", "list"]) == 0
    out = capsys.readouterr().out
    assert re.search(rf"^{mail_id}\s+failed\s+ack\s+1\s", out, re.MULTILINE)
    assert "last error: 550 5.1.1 no such user" in out
    assert main(["--config", str(config_path), "mail", "outbox", "list", "--status", "failed", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["id"] == mail_id and row["status"] == "failed" and row["recipients"] == ["alice@example.org"]
    assert main(["--config", str(config_path), "mail", "outbox", "retry", str(mail_id)]) == 0
    assert "queued again" in capsys.readouterr().out
    assert main(["--config", str(config_path), "mail", "outbox", "list", "--status", "queued", "--json"]) == 0
    assert [r["id"] for r in json.loads(capsys.readouterr().out)] == [mail_id]


def test_outbox_retry_of_an_unknown_mail_is_a_clear_error(
        config_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    queue_and_fail_one(config_path)
    assert main(["--config", str(config_path), "mail", "outbox", "retry", "999"]) == 1
    assert "no outbox mail 999" in capsys.readouterr().err


async def test_run_without_a_relay_writes_the_acknowledgement_to_the_maildir(config_path: Path) -> None:
    config = load_config(config_path)
    ready, stop = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(run(config, ready=ready, stop=stop))
    await asyncio.wait_for(ready.wait(), 20)
    desk = open_desk(config)
    try:
        await open_ticket(desk, ContactRef("alice@example.org"), MailContent(text="hi", subject="Hello"))
        maildir = config.desk.data_dir / "outbox-maildir"
        # The app's own desk polls for other processes' commits every few seconds.
        await eventually(lambda: sorted((maildir / "new").iterdir()) if (maildir / "new").is_dir() else [],
                         timeout=20)
        (mail,) = list(mailbox.Maildir(maildir, create=False))
        assert mail["Subject"].endswith("Hello") and mail["To"] == "alice@example.org"
        assert {m.status for m in await list_mail(desk)} == {OutboxStatus.SENT}
    finally:
        await desk.close()
        stop.set()
        await asyncio.wait_for(task, 20)
