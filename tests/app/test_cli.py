"""The `supportbot` command as a user types it: init, migrate, check, tickets list/show/search."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from core import services
from core.services import ContactRef, MailContent, NewAttachment, StaffRef
from supportbot.app import open_desk
from supportbot.cli import main
from supportbot.config import load_config

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    path = tmp_path / "supportbot.toml"
    assert main(["init", str(path)]) == 0
    return path


def seed(config_path: Path) -> tuple[int, int]:
    async def go() -> tuple[int, int]:
        desk = open_desk(load_config(config_path))
        from core.migrate import upgrade

        await upgrade(desk.db)
        try:
            a = await services.open_ticket(desk, ContactRef("alice@example.org", "Alice"), MailContent(
                text="The printer is on fire", subject="Printer trouble",
                attachments=[NewAttachment("photo.jpg", "image/jpeg", b"\xff\xd8jpeg")]))
            b = await services.open_ticket(desk, ContactRef("bob@example.org"), MailContent(
                text="Where is my refund?", subject="Refund"))
            await services.reply(desk, a.ticket.number, StaffRef("Sam", discord_id=1), "Unplug it please")
            return a.ticket.number, b.ticket.number
        finally:
            await desk.close()

    return asyncio.run(go())


def test_init_writes_the_documented_example_and_refuses_to_overwrite(config_path, capsys):
    assert config_path.read_text() == (REPO / "config.example.toml").read_text()
    assert main(["init", str(config_path)]) == 1
    assert "exists already" in capsys.readouterr().err


def test_migrate_then_check_reports_every_part_ok(config_path, capsys):
    assert main(["--config", str(config_path), "migrate"]) == 0
    assert "created the database schema (revision " in capsys.readouterr().out
    assert main(["--config", str(config_path), "migrate"]) == 0
    assert "up to date" in capsys.readouterr().out
    assert main(["--config", str(config_path), "check"]) == 0
    out = capsys.readouterr().out
    assert "template email/acknowledgement.txt.j2: ok" in out
    assert "database: ok" in out


def test_tickets_list_json_is_an_array_of_tickets(config_path, capsys):
    printer, refund = seed(config_path)
    assert main(["--config", str(config_path), "tickets", "list", "--json"]) == 0
    tickets = json.loads(capsys.readouterr().out)
    assert [t["number"] for t in tickets] == [printer, refund]  # most recently updated first
    assert tickets[0]["status"] == "pending" and tickets[0]["ref"] == f"#{printer}"
    assert main(["--config", str(config_path), "tickets", "list", "--status", "open", "--json"]) == 0
    assert [t["number"] for t in json.loads(capsys.readouterr().out)] == [refund]


def test_tickets_show_json_has_fields_and_messages_with_attachments(config_path, capsys):
    printer, _ = seed(config_path)
    assert main(["--config", str(config_path), "tickets", "show", f"#{printer}", "--json"]) == 0
    ticket = json.loads(capsys.readouterr().out)
    assert ticket["subject"] == "Printer trouble" and ticket["requester"] == "alice@example.org"
    assert [(m["direction"], m["author"], m["text"]) for m in ticket["messages"]] == [
        ("inbound", "alice@example.org", "The printer is on fire"), ("outbound", "Sam", "Unplug it please")]
    assert ticket["messages"][0]["attachments"][0]["filename"] == "photo.jpg"
    assert ticket["messages"][0]["created_at"].startswith("20")
    assert "sla" in ticket  # due times, empty while no SLA policy is configured


def test_tickets_show_as_text_and_search(config_path, capsys):
    printer, refund = seed(config_path)
    assert main(["--config", str(config_path), "tickets", "show", str(printer)]) == 0
    out = capsys.readouterr().out
    assert "Printer trouble" in out and "[attachment] photo.jpg" in out and "reply by Sam" in out
    assert main(["--config", str(config_path), "tickets", "search", "refund", "--json"]) == 0
    assert [t["number"] for t in json.loads(capsys.readouterr().out)] == [refund]
    assert main(["--config", str(config_path), "tickets", "list"]) == 0
    assert "Printer trouble" in capsys.readouterr().out


def test_unknown_ticket_is_one_clear_line(config_path, capsys):
    seed(config_path)
    assert main(["--config", str(config_path), "tickets", "show", "424242"]) == 1
    err = capsys.readouterr().err
    assert err.strip() == "supportbot: no ticket #424242"
