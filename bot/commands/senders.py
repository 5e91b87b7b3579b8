"""Commands on senders: block and unblock (manager only)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.commands._common import TICKET_HELP, resolve_ticket, ticket_autocomplete
from bot.commands.tickets import Ticket
from bot.errors import answer, thinking
from bot.permissions import manager_only, staff_ref
from core import services
from core.queries import ticket_detail

if TYPE_CHECKING:
    from bot.client import SupportBot


class Senders(commands.Cog):
    def __init__(self, bot: SupportBot) -> None:
        self.bot = bot

    @app_commands.command(description="Block a sender: their mail is kept but opens no ticket and gets no answer")
    @app_commands.describe(email="The address (default: the requester of this post's ticket)",
                           reason="Why, for colleagues", ticket=TICKET_HELP)
    @app_commands.autocomplete(ticket=ticket_autocomplete)
    @manager_only
    async def block(self, interaction: discord.Interaction[Any], email: str | None = None, reason: str = "",
                    ticket: Ticket | None = None) -> None:
        if email is None:
            email = (await ticket_detail(self.bot.desk, await resolve_ticket(interaction, ticket))).requester
        await thinking(interaction)
        contact = await services.block_sender(self.bot.desk, email, staff_ref(self.bot, interaction.user), reason)
        await answer(interaction, f"{contact.email} is blocked.")

    @app_commands.command(description="Unblock a sender")
    @app_commands.describe(email="The address")
    @manager_only
    async def unblock(self, interaction: discord.Interaction[Any], email: str) -> None:
        await thinking(interaction)
        contact = await services.unblock_sender(self.bot.desk, email, staff_ref(self.bot, interaction.user))
        await answer(interaction, f"{contact.email} is no longer blocked.")
