"""The projector's loop: woken by commits, and paused (not hammering) after Discord refused it."""

from __future__ import annotations

import asyncio
import dataclasses
import logging

from sqlalchemy import func, select

from bot import projector as projector_module
from bot.client import SupportBot
from bot.projector import ProjectionBlocked, Projector
from bot.settings import BotSettings
from core import services
from core.enums import Priority
from core.events import cursor_position
from core.models import Event
from core.services import StaffRef
from tests.bot.helpers import customer_mail
from tests.kit import eventually


async def test_a_refused_projection_waits_out_its_backoff_even_while_mail_keeps_arriving(bot_desk, caplog):
    bot = SupportBot(bot_desk, BotSettings(guild_id=1, forum_channel_id=2, projector_poll_seconds=0.05))
    projector = Projector(bot, bot_desk)
    attempts = 0

    async def refused() -> int:
        nonlocal attempts
        attempts += 1
        raise ProjectionBlocked("forum channel 2 not found or not a forum: fix [discord] forum_channel_id")

    projector.catch_up = refused  # type: ignore[method-assign]
    stop = asyncio.Event()
    running = asyncio.create_task(projector.run(stop))
    for _ in range(5):
        await customer_mail(bot_desk)  # each commit would wake a healthy projector at once
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(running, 5)
    await bot.close()
    assert attempts == 1
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        "discord projector paused for 30 s: forum channel 2 not found or not a forum: fix [discord] forum_channel_id"]


async def test_a_healthy_projector_is_woken_by_each_commit(bot_desk):
    bot = SupportBot(bot_desk, BotSettings(guild_id=1, forum_channel_id=2, projector_poll_seconds=60))
    projector = Projector(bot, bot_desk)
    woken = asyncio.Event()
    calls = 0

    async def counting() -> int:
        nonlocal calls
        calls += 1
        if calls == 2:
            woken.set()
        return 0

    projector.catch_up = counting  # type: ignore[method-assign]
    stop = asyncio.Event()
    running = asyncio.create_task(projector.run(stop))
    await eventually(lambda: calls, until=lambda n: n == 1)  # the first catch-up; now it sleeps
    await customer_mail(bot_desk)
    await asyncio.wait_for(woken.wait(), 5)  # far sooner than the 60 s poll
    stop.set()
    await asyncio.wait_for(running, 5)
    await bot.close()


async def test_an_event_that_keeps_failing_is_skipped_after_five_attempts_and_the_rest_still_posted(
        world, monkeypatch, no_logged_errors):
    real = projector_module.activity_line

    def broken_on_priority(event, *args):  # a bug that only this kind of event hits
        if event.type == "PriorityChanged":
            raise ValueError("cannot render")
        return real(event, *args)

    monkeypatch.setattr(projector_module, "activity_line", broken_on_priority)
    world.bot.settings = dataclasses.replace(world.settings, projector_poll_seconds=0.01)
    first = await customer_mail(world.desk, subject="First")
    await services.set_priority(world.desk, first, Priority.HIGH, StaffRef("Alice", discord_id=1))
    second = await customer_mail(world.desk, subject="Second")

    projector = world.projector
    stop = asyncio.Event()
    running = asyncio.create_task(projector.run(stop))
    async with world.desk.db.read() as session:
        last = await session.scalar(select(func.max(Event.id)))

    async def position() -> int:
        async with world.desk.db.read() as session:
            return await cursor_position(session, "discord-projector")

    await eventually(position, until=lambda at: at == last)
    stop.set()
    await asyncio.wait_for(running, 5)
    await world.env.settle()

    assert [t.name for t in world.forum.threads] == [f"[#{first}] First", f"[#{second}] Second"]
    errors = [r.getMessage() for r in no_logged_errors.records]
    assert len(errors) == 1 and errors[0].startswith("consumer discord-projector skips event")
    assert "after 5 failures" in errors[0]
    no_logged_errors.records.clear()  # expected here
