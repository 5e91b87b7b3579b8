"""The discord.py client: takes the desk and settings, loads the command groups, checks its setup."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import date
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.errors import report_error
from bot.settings import BotSettings
from bot.views import HeldMailButton, TicketButton
from core.desk import Desk

log = logging.getLogger("bot.client")

# What the bot needs in the forum channel, by discord.py permission name.
FORUM_PERMISSIONS = ("view_channel", "send_messages", "send_messages_in_threads", "create_public_threads",
                     "manage_threads", "manage_channels", "embed_links", "attach_files", "read_message_history")
ALERT_PERMISSIONS = ("view_channel", "send_messages")


ReportSource = Callable[[date | None], Awaitable[tuple[Any, bytes]]]


class SupportBot(commands.Bot):
    def __init__(self, desk: Desk, settings: BotSettings) -> None:
        intents = discord.Intents.default()
        intents.message_content = False  # plain chat in a post is internal: we never read it
        super().__init__(command_prefix=commands.when_mentioned, intents=intents, help_command=None,
                         allowed_mentions=discord.AllowedMentions.none())
        self.desk, self.settings = desk, settings
        # Set by the composition root: day (None = last full day) -> (DailyReport, chart PNG).
        self.reports: ReportSource | None = None
        self.tree.error(self._on_app_command_error)

    async def setup_hook(self) -> None:
        # The ticket number (or the MailHeld event) is in each button's custom_id: one registration
        # serves every post and alert.
        self.add_dynamic_items(TicketButton, HeldMailButton)
        from bot.commands import load_commands

        await load_commands(self)
        if self.settings.sync_commands and self.settings.guild_id:
            guild = discord.Object(id=self.settings.guild_id)
            self.tree.copy_global_to(guild=guild)
            await self.tree.sync(guild=guild)

    async def on_message(self, message: discord.Message, /) -> None:
        """Plain chat (even mentioning the bot) is staff talk: never a command, never sent anywhere."""

    async def on_ready(self) -> None:
        for problem in self.setup_problems():
            log.warning("discord setup: %s", problem)

    def setup_problems(self) -> list[str]:
        """What is missing (guild, channels, permissions), each as one line saying what to fix."""
        guild = self.get_guild(self.settings.guild_id)
        if guild is None:
            return [f"the bot is not in guild {self.settings.guild_id}: invite it, or fix [discord] guild_id"]
        problems = []
        forum = guild.get_channel(self.settings.forum_channel_id)
        if not isinstance(forum, discord.ForumChannel):
            problems.append(f"forum channel {self.settings.forum_channel_id} not found in {guild.name!r} "
                            "(or not a forum): fix [discord] forum_channel_id")
        else:
            problems += _missing(forum, FORUM_PERMISSIONS, guild.me)
        if self.settings.alerts_channel_id:
            alerts = guild.get_channel(self.settings.alerts_channel_id)
            if alerts is None:
                problems.append(f"alerts channel {self.settings.alerts_channel_id} not found: fix "
                                "[discord] alerts_channel_id")
            else:
                problems += _missing(alerts, ALERT_PERMISSIONS, guild.me)
        if not self.settings.staff_role_ids and not self.settings.manager_role_ids:
            problems.append("no staff or manager role configured: nobody can use the commands; set "
                            "[discord] staff_role_ids")
        return problems

    async def _on_app_command_error(self, interaction: discord.Interaction[Any],
                                    error: app_commands.AppCommandError) -> None:
        await report_error(interaction, error)


def _missing(channel: discord.abc.GuildChannel, needed: tuple[str, ...], me: discord.Member) -> list[str]:
    allowed = channel.permissions_for(me)
    lacking = [name.replace("_", " ").title() for name in needed if not getattr(allowed, name)]
    if not lacking:
        return []
    return [f"the bot lacks {', '.join(lacking)} in #{channel.name}: grant them to its role there"]
