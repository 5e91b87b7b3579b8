"""SQLite search picks a plan by how many messages match; both plans give the same tickets in order."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from core import queries, services
from core.attachments import AttachmentStore
from core.db import Database
from core.desk import CoreSettings, Desk
from core.enums import Priority, Status
from core.migrate import upgrade
from core.queries import TicketFilters, search_tickets
from core.services import ContactRef, MailContent, StaffRef

SAM = StaffRef("Sam", discord_id=1)


@pytest.fixture
async def sqlite_desk(tmp_path: Path, clock) -> AsyncIterator[Desk]:
    desk = Desk(Database(f"sqlite+aiosqlite:///{tmp_path / 'desk.db'}"), CoreSettings(),
                AttachmentStore(tmp_path / "files"), clock)
    await upgrade(desk.db)
    yield desk
    await desk.close()


async def both_plans(desk: Desk, monkeypatch: pytest.MonkeyPatch, words: str,
                     filters: TicketFilters | None = None, limit: int = 50) -> list[int]:
    """The numbers the search finds with the few-hits plan, after checking the many-hits plan agrees."""
    filters = filters or TicketFilters()
    monkeypatch.setattr(queries, "SQLITE_MANY_HITS", 10**9)
    few = [t.number for t in await search_tickets(desk, words, filters, limit=limit)]
    monkeypatch.setattr(queries, "SQLITE_MANY_HITS", 1)
    many = [t.number for t in await search_tickets(desk, words, filters, limit=limit)]
    assert many == few
    return few


async def opened(desk: Desk, subject: str, text: str, who: str = "alice@example.org") -> int:
    change = await services.open_ticket(desk, ContactRef(who), MailContent(text=text, subject=subject))
    return change.ticket.number


async def test_both_plans_order_by_latest_activity_even_when_it_was_no_message(sqlite_desk, clock,
                                                                              monkeypatch):
    old = await opened(sqlite_desk, "Printer", "the invoice is wrong")
    clock.advance(hours=1)
    newer = await opened(sqlite_desk, "Question", "second invoice please")
    clock.advance(hours=1)
    await services.set_status(sqlite_desk, old, Status.IN_PROGRESS, SAM)  # no message, but activity
    assert await both_plans(sqlite_desk, monkeypatch, "invoice") == [old, newer]


async def test_both_plans_find_subject_only_matches_and_staff_replies(sqlite_desk, clock, monkeypatch):
    subject_only = await opened(sqlite_desk, "Refund request", "money back")
    clock.advance(minutes=5)
    in_reply = await opened(sqlite_desk, "Hello", "something else")
    await services.reply(sqlite_desk, in_reply, SAM, "A refund is on its way")
    assert await both_plans(sqlite_desk, monkeypatch, "refund") == [in_reply, subject_only]
    assert await both_plans(sqlite_desk, monkeypatch, "nothinglikethis") == []


async def test_both_plans_apply_every_filter_and_the_limit(sqlite_desk, clock, monkeypatch):
    numbers = []
    for i in range(6):
        clock.advance(minutes=1)
        numbers.append(await opened(sqlite_desk, f"Case {i}", "delivery late", who=f"c{i % 2}@example.org"))
    await services.set_status(sqlite_desk, numbers[0], Status.RESOLVED, SAM)
    await services.set_priority(sqlite_desk, numbers[1], Priority.URGENT, SAM)
    await services.tag(sqlite_desk, numbers[2], SAM, add=["vip"])
    await services.assign(sqlite_desk, numbers[3], SAM, SAM)
    await services.merge(sqlite_desk, numbers[5], numbers[4], SAM)
    def check(**f):
        return both_plans(sqlite_desk, monkeypatch, "delivery", TicketFilters(**f))
    assert await check(status=(Status.RESOLVED,)) == [numbers[0]]
    assert await check(priority=(Priority.URGENT,)) == [numbers[1]]
    assert await check(tag="VIP") == [numbers[2]]
    assert await check(assignee="Sam") == [numbers[3]]
    assert sorted(await check(requester="c0@example.org")) == [numbers[0], numbers[2], numbers[4]]
    found = await check()
    assert numbers[5] not in found and sorted(found) == sorted(numbers[:5])  # merged: only its target
    assert len(await both_plans(sqlite_desk, monkeypatch, "delivery", limit=2)) == 2
