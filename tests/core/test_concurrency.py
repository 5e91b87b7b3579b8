"""Concurrent writers lose nothing and never see "database is locked"."""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select

from core import services
from core.db import Database
from core.desk import Desk
from core.enums import Status
from core.models import Event, Message
from core.queries import ticket_detail
from core.services import ContactRef, MailContent, StaffRef

SAM = StaffRef("Sam", discord_id=1)
KIM = StaffRef("Kim", discord_id=2)
ROUNDS = 100


async def test_reply_and_status_change_on_one_ticket_100_times_lose_nothing(desk):
    number = (await services.open_ticket(desk, ContactRef("a@example.org"),
                                         MailContent(text="x", subject="s"))).ticket.number

    async def replies():
        for i in range(ROUNDS):
            await services.reply(desk, number, SAM, f"reply {i}", status=Status.PENDING)

    async def status_flips():
        for i in range(ROUNDS):
            await services.set_status(desk, number, Status.IN_PROGRESS if i % 2 else Status.OPEN, KIM)

    await asyncio.gather(replies(), status_flips())
    detail = await ticket_detail(desk, number)
    assert [m.text for m in detail.messages[1:]] == [f"reply {i}" for i in range(ROUNDS)]
    async with desk.db.read() as s:
        replied = await s.scalar(select(func.count()).select_from(Event).where(Event.type == "StaffReplied"))
    assert replied == ROUNDS


async def test_two_database_connections_as_two_processes_would_write_without_locking_errors(desk, tmp_path):
    """Separate Database objects share no in-process lock: only SQLite's own locking serializes them."""
    if not desk.db.is_sqlite:
        return  # PostgreSQL is covered by the test above; this one is about SQLite's file lock
    other = Desk(Database(desk.db.url.render_as_string(hide_password=False)), desk.settings, desk.files,
                 desk.clock)
    try:
        async def writer(d: Desk, who: str):
            for i in range(ROUNDS // 2):
                await services.open_ticket(d, ContactRef(f"{who}@example.org"),
                                           MailContent(text=f"{who} {i}", subject=who))

        await asyncio.gather(writer(desk, "one"), writer(other, "two"))
    finally:
        await other.close()
    async with desk.db.read() as s:
        assert await s.scalar(select(func.count()).select_from(Message)) == ROUNDS
