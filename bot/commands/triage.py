"""Commands that sort a ticket: claim, assign, unassign, status, priority, category, tag."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.commands._common import TICKET_HELP, client, resolve_ticket, ticket_autocomplete
from bot.commands.tickets import STATUS_CHOICES, Ticket
from bot.errors import answer, thinking
from bot.permissions import is_staff, staff_only, staff_ref
from core import services
from core.enums import Priority, Status
from core.errors import UserError

if TYPE_CHECKING:
    from bot.client import SupportBot

PRIORITY_CHOICES = [app_commands.Choice(name=p.value, value=p.value) for p in Priority]


async def category_autocomplete(interaction: discord.Interaction[Any], current: str) -> list[app_commands.Choice[str]]:
    names = client(interaction).desk.settings.categories
    return [app_commands.Choice(name=n, value=n) for n in names if current.lower() in n][:25]


def _tags(value: str | None) -> list[str]:
    return [t for t in (value or "").replace(",", " ").split() if t]


class Triage(commands.Cog):
    def __init__(self, bot: SupportBot) -> None:
        self.bot = bot

    def _ref(self, number: int) -> str:
        return self.bot.desk.format_number(number)

    @app_commands.command(description="Take the ticket yourself")
    @app_commands.describe(ticket=TICKET_HELP, force="Take it even if a colleague holds it")
    @app_commands.autocomplete(ticket=ticket_autocomplete)
    @staff_only
    async def claim(self, interaction: discord.Interaction[Any], ticket: Ticket | None = None,
                    force: bool = False) -> None:
        number = await resolve_ticket(interaction, ticket)
        await thinking(interaction)
        await services.claim(self.bot.desk, number, staff_ref(self.bot, interaction.user), force=force)
        await answer(interaction, f"You now own {self._ref(number)}.")

    @app_commands.command(description="Give the ticket to a staff member")
    @app_commands.describe(member="Who takes it", ticket=TICKET_HELP)
    @app_commands.autocomplete(ticket=ticket_autocomplete)
    @staff_only
    async def assign(self, interaction: discord.Interaction[Any], member: discord.Member,
                     ticket: Ticket | None = None) -> None:
        if not is_staff(self.bot, member):
            raise UserError(f"{member.display_name} does not have the staff role, so cannot take tickets.")
        number = await resolve_ticket(interaction, ticket)
        await thinking(interaction)
        await services.assign(self.bot.desk, number, staff_ref(self.bot, member), staff_ref(self.bot, interaction.user))
        await answer(interaction, f"{self._ref(number)} is assigned to {member.display_name}.")

    @app_commands.command(description="Leave the ticket unassigned")
    @app_commands.describe(ticket=TICKET_HELP)
    @app_commands.autocomplete(ticket=ticket_autocomplete)
    @staff_only
    async def unassign(self, interaction: discord.Interaction[Any], ticket: Ticket | None = None) -> None:
        number = await resolve_ticket(interaction, ticket)
        await thinking(interaction)
        await services.unassign(self.bot.desk, number, staff_ref(self.bot, interaction.user))
        await answer(interaction, f"{self._ref(number)} is unassigned.")

    @app_commands.command(description="Set the ticket's status")
    @app_commands.describe(status="The new status", ticket=TICKET_HELP)
    @app_commands.choices(status=STATUS_CHOICES)
    @app_commands.autocomplete(ticket=ticket_autocomplete)
    @staff_only
    async def status(self, interaction: discord.Interaction[Any], status: str, ticket: Ticket | None = None) -> None:
        number = await resolve_ticket(interaction, ticket)
        await thinking(interaction)
        await services.set_status(self.bot.desk, number, Status(status), staff_ref(self.bot, interaction.user))
        await answer(interaction, f"{self._ref(number)} is now {status.replace('_', ' ')}.")

    @app_commands.command(description="Set the ticket's priority")
    @app_commands.describe(priority="The new priority", ticket=TICKET_HELP)
    @app_commands.choices(priority=PRIORITY_CHOICES)
    @app_commands.autocomplete(ticket=ticket_autocomplete)
    @staff_only
    async def priority(self, interaction: discord.Interaction[Any], priority: str,
                       ticket: Ticket | None = None) -> None:
        number = await resolve_ticket(interaction, ticket)
        await thinking(interaction)
        await services.set_priority(self.bot.desk, number, Priority(priority), staff_ref(self.bot, interaction.user))
        await answer(interaction, f"{self._ref(number)} has priority {priority}.")

    @app_commands.command(description="Set the ticket's category")
    @app_commands.describe(category="One of the desk's categories", ticket=TICKET_HELP)
    @app_commands.autocomplete(category=category_autocomplete)
    @app_commands.autocomplete(ticket=ticket_autocomplete)
    @staff_only
    async def category(self, interaction: discord.Interaction[Any], category: str,
                       ticket: Ticket | None = None) -> None:
        number = await resolve_ticket(interaction, ticket)
        await thinking(interaction)
        await services.set_category(self.bot.desk, number, category, staff_ref(self.bot, interaction.user))
        await answer(interaction, f"{self._ref(number)} is in category {category.strip().lower()}.")

    @app_commands.command(description="Add or remove the ticket's tags")
    @app_commands.describe(add="Tags to add (separated by spaces or commas)", remove="Tags to remove",
                           ticket=TICKET_HELP)
    @app_commands.autocomplete(ticket=ticket_autocomplete)
    @staff_only
    async def tag(self, interaction: discord.Interaction[Any], add: str | None = None, remove: str | None = None,
                  ticket: Ticket | None = None) -> None:
        if not _tags(add) and not _tags(remove):
            raise UserError("Name tags to `add` or to `remove`.")
        number = await resolve_ticket(interaction, ticket)
        await thinking(interaction)
        tags = await services.tag(self.bot.desk, number, staff_ref(self.bot, interaction.user),
                                  add=_tags(add), remove=_tags(remove))
        await answer(interaction, f"{self._ref(number)} tags: {', '.join(tags) or 'none'}.")
