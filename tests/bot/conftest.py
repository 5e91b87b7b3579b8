"""Bot fixtures: the real discord.py against SimCord's offline Discord, on the shared SQLite desk.

Also fails any test in which discord.py or the project logged an ERROR: discord.py catches
exceptions in commands, views and listeners and only logs them, which would otherwise pass silently.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
from simcord.actors import MemberActor
from simcord.builders import ChannelHandle, GuildHandle
from simcord.env import Env

from bot.client import SupportBot
from bot.permissions import NotAllowed
from bot.projector import Projector
from bot.settings import BotSettings
from core.desk import Desk
from core.errors import UserError

WATCHED = ("discord", "bot", "core", "supportbot", "mail_gateway")


class _ErrorCollector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.split(".")[0] in WATCHED:
            self.records.append(record)


@pytest.fixture(autouse=True)
def no_logged_errors() -> Iterator[_ErrorCollector]:
    collector = _ErrorCollector()
    root = logging.getLogger()
    root.addHandler(collector)
    try:
        yield collector
    finally:
        root.removeHandler(collector)
    if collector.records:
        lines = [f"{r.name}: {r.getMessage()}" + (f"\n{logging.Formatter().formatException(r.exc_info)}"
                                                  if r.exc_info else "") for r in collector.records]
        pytest.fail("logged at ERROR during the test:\n" + "\n".join(lines))


@pytest.fixture
def bot_desk(sqlite_desk: Desk) -> Desk:
    """The shared SQLite desk (tests/conftest.py): the bot's behaviour does not depend on the engine."""
    return sqlite_desk


@dataclass
class World:
    """A guild with a ticket forum, an alerts channel, staff, a manager and an outsider."""

    env: Env
    desk: Desk
    settings: BotSettings
    guild: GuildHandle
    forum: ChannelHandle
    alerts: ChannelHandle
    lobby: ChannelHandle
    alice: MemberActor  # staff
    boss: MemberActor  # manager
    eve: MemberActor  # no role
    tolerated: tuple[type[BaseException], ...] = ()  # errors a test provokes on purpose

    @property
    def bot(self) -> SupportBot:
        return self.env.bot  # type: ignore[return-value]

    @property
    def projector(self) -> Projector:
        return Projector(self.bot, self.desk)

    async def project(self) -> int:
        """Run the projector to the end of the event log, then let discord.py take in the results."""
        handled = await self.projector.catch_up()
        await self.env.settle()
        return handled

    async def restart(self) -> None:
        """A new bot process on the same desk and the same Discord."""
        await self.env.restart_bot(SupportBot(self.desk, self.settings))

    def post(self, number: int) -> ChannelHandle:
        posts = [t for t in self.forum.threads if (t.name or "").startswith(f"[#{number}]")]
        assert len(posts) == 1, f"expected one post for #{number}, found {[t.name for t in posts]}"
        return posts[0]


async def make_world(desk: Desk) -> World:
    placeholder = SupportBot(desk, BotSettings(guild_id=0, forum_channel_id=0, sync_commands=False))
    env = Env(placeholder)
    guild = env.create_guild("Support HQ")
    forum = guild.create_forum_channel("tickets")
    alerts = guild.create_text_channel("alerts")
    lobby = guild.create_text_channel("lobby")
    staff, managers = guild.create_role("staff"), guild.create_role("managers")
    settings = BotSettings(guild_id=guild.id, forum_channel_id=forum.id, alerts_channel_id=alerts.id,
                           staff_role_ids=frozenset({staff.id}), manager_role_ids=frozenset({managers.id}),
                           page_size=3)
    # The ids exist only once the guild does, so the real bot is made now, before the env starts.
    env.bot = SupportBot(desk, settings)
    await env.start()
    alice = guild.add_member(env.create_user("alice"), roles=[staff])
    boss = guild.add_member(env.create_user("boss"), roles=[managers])
    eve = guild.add_member(env.create_user("eve"))
    await env.settle()
    return World(env, desk, settings, guild, forum, alerts, lobby, alice, boss, eve)


@pytest.fixture
async def world(bot_desk: Desk) -> AsyncIterator[World]:
    w = await make_world(bot_desk)
    try:
        yield w
    finally:
        # SimCord keeps every error that reached the command tree; refusals (UserError, missing
        # role) get there on purpose and were answered. Anything else is a bug.
        unexpected = [e for e in w.env.errors if not _refusal(e) and not _caused_by(e, w.tolerated)]
        await w.env.shutdown()
        assert not unexpected, f"the bot raised: {unexpected!r}"


def _caused_by(error: BaseException | None, kinds: tuple[type[BaseException], ...]) -> bool:
    while error is not None:
        if isinstance(error, kinds):
            return True
        error = error.__cause__
    return False


def _refusal(error: BaseException) -> bool:
    """A refusal the bot answered on purpose: bad input (UserError) or a missing role."""
    return _caused_by(error, (UserError, NotAllowed))


@pytest.fixture
async def any_world(desk: Desk) -> AsyncIterator[World]:
    """The same world on each engine of tests/conftest.py's `desk` (SQLite and PostgreSQL)."""
    w = await make_world(desk)
    try:
        yield w
    finally:
        unexpected = [e for e in w.env.errors if not _refusal(e)]
        await w.env.shutdown()
        assert not unexpected, f"the bot raised: {unexpected!r}"
