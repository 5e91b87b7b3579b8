"""`tickets list --limit N` returns N tickets (or all there are), however large N is: it pages through
the database (a query per 500) and prints each page as it comes, instead of stopping at 500."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

import core.queries
import supportbot.commands
from core import services
from core.migrate import upgrade
from core.services import ContactRef, MailContent, StaffRef
from supportbot.app import open_desk
from supportbot.cli import main
from supportbot.config import load_config

TICKETS = 620  # more than one page of core.queries.MAX_PAGE (500)


def make_desk(path: Path, tickets: int) -> tuple[Path, list[int]]:
    """A desk with `tickets` tickets; returns the config and the numbers, most recently updated first."""
    config = path / "supportbot.toml"
    config.write_text("")

    async def go() -> list[int]:
        desk = open_desk(load_config(config, environ={}))
        try:
            await upgrade(desk.db)
            return [(await services.open_ticket(desk, ContactRef(f"c{n % 7}@example.org"), MailContent(
                text="hello", subject=f"Ticket {n}"))).ticket.number for n in range(tickets)]
        finally:
            await desk.close()

    return config, list(reversed(asyncio.run(go())))


@pytest.fixture(scope="module")
def big_desk(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[int]]:
    return make_desk(tmp_path_factory.mktemp("big"), TICKETS)


def listed(config: Path, capsys: pytest.CaptureFixture[str], *args: str) -> list[dict]:
    assert main(["--config", str(config), "tickets", "list", "--json", *args]) == 0
    out = capsys.readouterr().out
    tickets = json.loads(out)
    assert out == json.dumps(tickets, indent=2, ensure_ascii=False) + "\n"  # same JSON as before, streamed
    return tickets


@pytest.mark.slow
def test_limit_above_one_page_returns_what_was_asked_for(big_desk, capsys):
    config, numbers = big_desk
    assert [t["number"] for t in listed(config, capsys, "--limit", "600")] == numbers[:600]
    assert [t["number"] for t in listed(config, capsys, "--limit", "5000")] == numbers  # all there are
    assert [t["number"] for t in listed(config, capsys, "--limit", "100", "--offset", "550")] == numbers[550:]
    assert [t["number"] for t in listed(config, capsys, "--limit", "501", "--status", "open")] == numbers[:501]


@pytest.mark.slow
def test_the_table_pages_too(big_desk, capsys):
    config, numbers = big_desk
    assert main(["--config", str(config), "tickets", "list", "--limit", "600"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["TICKET", "STATUS", "PRIORITY", "UPDATED", "REQUESTER", "ASSIGNEE", "SUBJECT"]
    assert [line.split()[0] for line in lines[1:]] == [f"#{n}" for n in numbers[:600]]
    assert len({line.index("open") for line in lines[1:]}) == 1  # the columns line up across pages


def test_a_ticket_updated_while_paging_is_not_shown_twice(tmp_path, capsys, monkeypatch):
    config, numbers = make_desk(tmp_path, 12)
    monkeypatch.setattr(supportbot.commands, "MAX_PAGE", 3)
    monkeypatch.setattr(core.queries, "MAX_PAGE", 3)
    real = supportbot.commands.list_tickets
    calls = 0

    async def list_then_update(desk, filters, **kwargs):
        nonlocal calls
        page = await real(desk, filters, **kwargs)
        calls += 1
        if calls == 1:  # staff answer a ticket further down: it moves to the top, the rest one down
            await services.reply(desk, numbers[8], StaffRef("Sam", discord_id=1), "On it")
        return page

    monkeypatch.setattr(supportbot.commands, "list_tickets", list_then_update)
    shown = [t["number"] for t in listed(config, capsys, "--limit", "7")]
    assert calls >= 3 and len(shown) == 7 and len(set(shown)) == 7
    assert shown == [n for n in numbers if n != numbers[8]][:7]


def test_nothing_to_list(tmp_path, capsys):
    config, _ = make_desk(tmp_path, 0)
    assert listed(config, capsys) == []
    assert main(["--config", str(config), "tickets", "list"]) == 0
    assert capsys.readouterr().out == "no tickets\n"


def test_search_says_its_limit_instead_of_cutting_silently(tmp_path, capsys):
    config, _ = make_desk(tmp_path, 1)
    assert main(["--config", str(config), "tickets", "search", "hello", "--limit", "501"]) == 1
    assert capsys.readouterr().err.startswith("supportbot: tickets search shows at most 500 tickets (--limit 501)")


@pytest.mark.parametrize(("args", "message"), [
    (["list", "--limit", "0"], "argument --limit: not a positive number: '0'"),
    (["list", "--offset", "-1"], "argument --offset: not 0 or more: '-1'"),
    (["search", "x", "--limit", "many"], "argument --limit: not a whole number: 'many'"),
])
def test_a_limit_that_means_nothing_is_refused(args, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(["tickets", *args])
    assert e.value.code == 2
    assert message in capsys.readouterr().err
