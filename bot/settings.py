"""What the bot needs from the configuration, as one frozen object (bot/ does not import supportbot)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

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
