"""The bot as a part of `supportbot run`: connect to Discord, keep connecting, run the projector."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aiohttp
import discord

from bot.client import ReportSource, SupportBot
from bot.projector import Projector
from bot.settings import BotSettings
from core.backoff import Backoff
from core.desk import Desk

log = logging.getLogger("bot.part")

READY_TIMEOUT = 60.0
RECONNECT = Backoff(first=5.0, cap=300.0)


class DiscordPart:
    name = "discord bot"

    def __init__(self, desk: Desk, settings: BotSettings, token: str, *, reports: ReportSource | None = None) -> None:
        self.bot = SupportBot(desk, settings)
        self.bot.reports = reports
        self.projector = Projector(self.bot, desk)
        self._token = token
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Returns at once: connecting (and retrying while Discord is unreachable) runs in the background."""
        self._tasks.append(asyncio.create_task(self._connect(), name="discord gateway"))
        self._tasks.append(asyncio.create_task(self._project(), name="discord projector"))
        log.info("started %s", self.name)

    async def _connect(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                if not self.bot.is_ready() and self.bot.user is None:
                    await self.bot.login(self._token)
                await self.bot.connect(reconnect=True)  # discord.py itself reconnects after drops
                return
            except discord.LoginFailure:
                log.warning("discord: the token was refused; fix [discord] token or SUPPORTBOT_DISCORD_TOKEN "
                            "(the rest of the desk keeps running)")
                return
            except discord.PrivilegedIntentsRequired:
                log.warning("discord: a privileged intent is not enabled for this bot in the developer portal")
                return
            except (OSError, aiohttp.ClientError, TimeoutError, discord.HTTPException,
                    discord.GatewayNotFound, discord.ConnectionClosed) as e:
                # Mail keeps flowing meanwhile; the projector catches up once we are back.
                failures += 1
                delay = RECONNECT.delay(failures)
                log.warning("discord: cannot reach Discord (%s); trying again in %.0f s", type(e).__name__, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)

    async def _project(self) -> None:
        try:
            await asyncio.wait_for(self.bot.wait_until_ready(), READY_TIMEOUT)
        except TimeoutError:
            log.warning("discord: not ready after %.0f s; the projector waits on", READY_TIMEOUT)
            await self.bot.wait_until_ready()
        await self.projector.run(self._stop)

    async def stop(self) -> None:
        self._stop.set()
        for task in self._tasks[1:]:  # the projector: let it finish what it is sending
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(task, 10)
        await self.bot.close()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
