"""Commands on one ticket's conversation: reply, note, close, reopen, merge, show."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.commands._common import (
    TICKET_HELP,
    client,
    resolve_ticket,
    ticket_autocomplete,
)
from bot.errors import answer, thinking
from bot.format import detail_embed
from bot.permissions import staff_only, staff_ref
from bot.uploads import read_attachments
from bot.views import REPLY_MAX, ReplyModal, send_reply
from core import projection, services
from core.enums import Status
from core.queries import ticket_detail
from core.sla.queries import ticket_sla

if TYPE_CHECKING:
    from bot.client import SupportBot

STATUS_CHOICES = [app_commands.Choice(name=s.value.replace("_", " "), value=s.value) for s in Status]
Ticket = app_commands.Range[int, 1]


class Tickets(commands.Cog):
    def __init__(self, bot: SupportBot) -> None:
        self.bot = bot

    @app_commands.command(description="Reply to the customer by mail (leave text empty for a larger editor)")
    @app_commands.describe(text="What the customer receives", ticket=TICKET_HELP,
                           status="Status afterwards (default: waiting on the customer)",
                           attachment="A file to send with the reply", attachment2="Another file")
    @app_commands.choices(status=STATUS_CHOICES)
    @app_commands.autocomplete(ticket=ticket_autocomplete)
    @staff_only
    async def reply(self, interaction: discord.Interaction[Any],
                    text: app_commands.Range[str, 1, REPLY_MAX] | None = None,
                    attachment: discord.Attachment | None = None, attachment2: discord.Attachment | None = None,
                    status: str | None = None, ticket: Ticket | None = None) -> None:
        number = await resolve_ticket(interaction, ticket)
        after = Status(status) if status else None
        if text is None:
            uploads = [a for a in (attachment, attachment2) if a is not None]
            await interaction.response.send_modal(ReplyModal(self.bot, number, uploads=uploads, status=after))
            return
        await thinking(interaction)
        files = await read_attachments(attachment, attachment2)
        await send_reply(self.bot, interaction, number, text, files, after)

    @app_commands.command(description="Add an internal note (never sent to the customer)")
    @app_commands.describe(text="The note", ticket=TICKET_HELP, attachment="A file for colleagues")
    @app_commands.autocomplete(ticket=ticket_autocomplete)
    @staff_only
    async def note(self, interaction: discord.Interaction[Any], text: app_commands.Range[str, 1, 4000],
                   attachment: discord.Attachment | None = None, ticket: Ticket | None = None) -> None:
        number = await resolve_ticket(interaction, ticket)
        await thinking(interaction)
        files = await read_attachments(attachment)
        await services.add_note(self.bot.desk, number, staff_ref(self.bot, interaction.user), text, attachments=files)
        await answer(interaction, f"Note added to {self.bot.desk.format_number(number)}.")

    @app_commands.command(description="Close the ticket (its post is archived and locked)")
    @app_commands.describe(ticket=TICKET_HELP)
    @app_commands.autocomplete(ticket=ticket_autocomplete)
    @staff_only
    async def close(self, interaction: discord.Interaction[Any], ticket: Ticket | None = None) -> None:
        await self._set(interaction, ticket, Status.CLOSED, "closed")

    @app_commands.command(description="Reopen a closed or resolved ticket")
    @app_commands.describe(ticket=TICKET_HELP)
    @app_commands.autocomplete(ticket=ticket_autocomplete)
    @staff_only
    async def reopen(self, interaction: discord.Interaction[Any], ticket: Ticket | None = None) -> None:
        await self._set(interaction, ticket, Status.OPEN, "open again")

    async def _set(self, interaction: discord.Interaction[Any], ticket: int | None, status: Status, said: str) -> None:
        number = await resolve_ticket(interaction, ticket)
        await thinking(interaction)
        await services.set_status(self.bot.desk, number, status, staff_ref(self.bot, interaction.user))
        await answer(interaction, f"{self.bot.desk.format_number(number)} is {said}.")

    @app_commands.command(description="Merge this ticket into another one (its messages move there)")
    @app_commands.describe(into="The ticket that stays", ticket=TICKET_HELP)
    @app_commands.autocomplete(into=ticket_autocomplete, ticket=ticket_autocomplete)
    @staff_only
    async def merge(self, interaction: discord.Interaction[Any], into: Ticket, ticket: Ticket | None = None) -> None:
        number = await resolve_ticket(interaction, ticket)
        await thinking(interaction)
        target = await services.merge(self.bot.desk, number, into, staff_ref(self.bot, interaction.user))
        fmt = self.bot.desk.format_number
        await answer(interaction, f"{fmt(number)} is merged into {fmt(target.number)}.")

    @app_commands.command(description="Show a ticket: its state and latest messages")
    @app_commands.describe(ticket=TICKET_HELP)
    @app_commands.autocomplete(ticket=ticket_autocomplete)
    @staff_only
    async def show(self, interaction: discord.Interaction[Any], ticket: Ticket | None = None) -> None:
        number = await resolve_ticket(interaction, ticket)
        detail = await ticket_detail(client(interaction).desk, number)
        threads = await projection.threads_for_numbers(self.bot.desk, [detail.number])
        due = (await ticket_sla(self.bot.desk, detail.number)).lines()
        await interaction.response.send_message(embed=detail_embed(detail, threads.get(detail.number), due),
                                                ephemeral=True, allowed_mentions=discord.AllowedMentions.none())

