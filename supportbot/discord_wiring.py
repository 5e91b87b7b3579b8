"""The Discord bot, wired from [discord]: its settings, and the part `run` starts when it can."""

from __future__ import annotations

import logging

from bot.client import ReportSource
from bot.part import DiscordPart
from bot.settings import BotSettings
from core.desk import Desk
from supportbot.config import Config, DiscordConfig

log = logging.getLogger("supportbot.discord")


def bot_settings(discord: DiscordConfig) -> BotSettings:
    return BotSettings(
        guild_id=discord.guild_id, forum_channel_id=discord.forum_channel_id,
        alerts_channel_id=discord.alerts_channel_id, reports_channel_id=discord.reports_channel_id,
        staff_role_ids=frozenset(discord.staff_role_ids), manager_role_ids=frozenset(discord.manager_role_ids),
        auto_archive_minutes=discord.auto_archive_minutes,
        projector_poll_seconds=discord.projector_poll_seconds, page_size=discord.page_size,
    )


def discord_part(config: Config, desk: Desk, *, reports: ReportSource | None = None) -> DiscordPart | None:
    """None (and one log line why) when the bot cannot run; the rest of the desk runs regardless."""
    discord = config.discord
    if not discord.token:
        log.info("discord: no bot token configured ([discord] token or SUPPORTBOT_DISCORD_TOKEN): the bot is "
                 "not started; mail, tickets and reports by mail still run")
        return None
    missing = [key for key in ("guild_id", "forum_channel_id") if not getattr(discord, key)]
    if missing:
        log.warning("discord: set [discord] %s to start the bot (it is not started)", " and ".join(missing))
        return None
    return DiscordPart(desk, bot_settings(discord), discord.token, reports=reports)
