"""Forum tags for status, priority and category: created when missing, never renamed."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import discord

log = logging.getLogger("bot.tags")

MAX_FORUM_TAGS = 20  # Discord: per forum
MAX_POST_TAGS = 5  # Discord: per post


class ForumTags:
    """Looks tags up by name (case-insensitive) and adds the missing ones in one channel edit."""

    def __init__(self) -> None:
        self._warned: set[str] = set()

    async def resolve(self, forum: discord.ForumChannel, names: Sequence[str]) -> list[discord.ForumTag]:
        existing = {t.name.lower(): t for t in forum.available_tags}
        missing = [n for n in dict.fromkeys(names) if n.lower() not in existing]
        if missing:
            room = MAX_FORUM_TAGS - len(existing)
            for name in missing[max(room, 0):]:
                if name not in self._warned:
                    self._warned.add(name)
                    log.warning("forum #%s has no room for tag %r (Discord allows %d per forum): "
                                "remove unused tags there", forum.name, name, MAX_FORUM_TAGS)
            adding = missing[: max(room, 0)]
            if adding:
                # Renames are rate-limited hard by Discord; adding tags is one ordinary channel edit.
                tags = [*forum.available_tags, *(discord.ForumTag(name=n) for n in adding)]
                edited = await forum.edit(available_tags=tags, reason="supportbot: tags for ticket state")
                forum = edited if isinstance(edited, discord.ForumChannel) else forum
                existing = {t.name.lower(): t for t in forum.available_tags}
        return [existing[n.lower()] for n in names if n.lower() in existing][:MAX_POST_TAGS]
