"""What the bot needs from the configuration, as one frozen object (bot/ does not import supportbot)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

ArchiveMinutes = Literal[60, 1440, 4320, 10080]  # what Discord accepts


@dataclass(frozen=True)
class BotSettings:
    guild_id: int
    forum_channel_id: int
    alerts_channel_id: int = 0
    reports_channel_id: int = 0
    staff_role_ids: frozenset[int] = frozenset()
    manager_role_ids: frozenset[int] = frozenset()
    auto_archive_minutes: ArchiveMinutes = 10080
    projector_poll_seconds: float = 2.0
    page_size: int = 10
    sync_commands: bool = True  # register the slash commands in the guild at start

    @classmethod
    def from_config(cls, discord: Any) -> BotSettings:
        """From supportbot.config.DiscordConfig (duck-typed so bot/ stays free of supportbot)."""
        return cls(
            guild_id=discord.guild_id, forum_channel_id=discord.forum_channel_id,
            alerts_channel_id=discord.alerts_channel_id, reports_channel_id=discord.reports_channel_id,
            staff_role_ids=frozenset(discord.staff_role_ids), manager_role_ids=frozenset(discord.manager_role_ids),
            auto_archive_minutes=discord.auto_archive_minutes,
            projector_poll_seconds=discord.projector_poll_seconds, page_size=discord.page_size,
        )
