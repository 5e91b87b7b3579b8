"""Slash commands for staff, one cog per area; `load_commands` adds them all to the bot."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.client import SupportBot


async def load_commands(bot: SupportBot) -> None:
    from bot.commands.browse import Browse
    from bot.commands.senders import Senders
    from bot.commands.snippets import Snippets
    from bot.commands.tickets import Tickets
    from bot.commands.triage import Triage

    for cog in (Tickets(bot), Triage(bot), Browse(bot), Snippets(bot), Senders(bot)):
        await bot.add_cog(cog)
