"""What the commands share: finding the ticket (implied inside its post), autocomplete, attachments."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands

from bot.permissions import is_staff
from core import projection
from core.errors import NotFound, UserError
from core.queries import TicketSummary, list_tickets, search_tickets, ticket_detail

if TYPE_CHECKING:
    from bot.client import SupportBot

TICKET_HELP = "Ticket number (not needed inside the ticket's post)"


def client(interaction: discord.Interaction[Any]) -> SupportBot:
    return interaction.client


async def resolve_ticket(interaction: discord.Interaction[Any], ticket: int | None) -> int:
    """The named ticket, else the one whose forum post this command was run in."""
    if ticket is not None:
        return ticket
    if interaction.channel_id is not None:
        number = await projection.ticket_number_for_thread(client(interaction).desk, interaction.channel_id)
        if number is not None:
            return number
    raise UserError("Run this inside a ticket's post, or name the ticket with the `ticket` option.")


async def ticket_autocomplete(interaction: discord.Interaction[Any], current: str) -> list[app_commands.Choice[int]]:
    bot = client(interaction)
    if not is_staff(bot, interaction.user):
        return []  # autocomplete skips command checks: do not show subjects to outsiders
    desk = bot.desk
    typed = current.strip().removeprefix(desk.settings.ticket_prefix).strip()
    found: list[TicketSummary] = []
    if typed.isdigit():
        try:
            found.append(await ticket_detail(desk, int(typed)))
        except NotFound:
            pass
        found += [t for t in await list_tickets(desk, limit=100) if str(t.number).startswith(typed)]
    elif typed:
        try:
            found = await search_tickets(desk, typed, limit=25)
        except UserError:
            found = []
    else:
        found = await list_tickets(desk, limit=25)
    seen: set[int] = set()
    choices = []
    for t in found:
        if t.number not in seen:
            seen.add(t.number)
            choices.append(app_commands.Choice(name=f"{t.ref} {t.subject}"[:100], value=t.number))
    return choices[:25]
