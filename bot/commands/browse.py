"""Commands that look across tickets: list (filtered, paginated), search, stats."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import date
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.commands.tickets import STATUS_CHOICES
from bot.commands.triage import PRIORITY_CHOICES, category_autocomplete
from bot.format import stats_embed, summary_message, ticket_list_embed
from bot.permissions import manager_only, staff_only
from bot.views import Pager
from core import projection
from core.enums import ACTIVE_STATUSES, Priority, Status
from core.errors import UserError
from core.queries import TicketFilters, TicketSummary, list_tickets, search_tickets
from core.stats import desk_stats

if TYPE_CHECKING:
    from bot.client import SupportBot

Fetch = Callable[[int, int], Awaitable[list[TicketSummary]]]


class Browse(commands.Cog):
    def __init__(self, bot: SupportBot) -> None:
        self.bot = bot

    @app_commands.command(name="list", description="List tickets, most recently updated first")
    @app_commands.describe(status="Only this status (default: all active ones)", priority="Only this priority",
                           category="Only this category", assignee="Only tickets of this member",
                           unassigned="Only tickets nobody holds", tag="Only tickets with this tag")
    @app_commands.choices(status=STATUS_CHOICES, priority=PRIORITY_CHOICES)
    @app_commands.autocomplete(category=category_autocomplete)
    @staff_only
    async def list_(self, interaction: discord.Interaction[Any], status: str | None = None,
                    priority: str | None = None, category: str | None = None,
                    assignee: discord.Member | None = None, unassigned: bool = False,
                    tag: str | None = None) -> None:
        filters = TicketFilters(
            status=(Status(status),) if status else ACTIVE_STATUSES,
            priority=(Priority(priority),) if priority else (), category=category,
            assignee="none" if unassigned else (str(assignee.id) if assignee else None), tag=tag)

        async def fetch(limit: int, offset: int) -> list[TicketSummary]:
            return await list_tickets(self.bot.desk, filters, limit=limit, offset=offset)

        await self._paged(interaction, "Tickets", fetch)

    @app_commands.command(description="Find tickets by words in their subject or messages")
    @app_commands.describe(words="All must match; word beginnings match too", status="Only this status")
    @app_commands.choices(status=STATUS_CHOICES)
    @staff_only
    async def search(self, interaction: discord.Interaction[Any], words: app_commands.Range[str, 1, 200],
                     status: str | None = None) -> None:
        filters = TicketFilters(status=(Status(status),) if status else ())

        async def fetch(limit: int, offset: int) -> list[TicketSummary]:
            # Search has no offset: read up to the end of the page and cut.
            return (await search_tickets(self.bot.desk, words, filters, limit=offset + limit))[offset:]

        await self._paged(interaction, f"Search: {words}", fetch)

    async def _paged(self, interaction: discord.Interaction[Any], title: str, fetch: Fetch) -> None:
        size = self.bot.settings.page_size

        async def load(page: int) -> tuple[discord.Embed, bool]:
            found = await fetch(size + 1, page * size)  # one extra tells whether a next page exists
            shown = found[:size]
            threads = await projection.threads_for_numbers(self.bot.desk, [t.number for t in shown])
            return ticket_list_embed(title, shown, threads, page, len(found) > size), len(found) > size

        embed, has_more = await load(0)
        await interaction.response.send_message(embed=embed, view=Pager(load, has_more), ephemeral=True,
                                                allowed_mentions=discord.AllowedMentions.none())

    @app_commands.command(description="The daily summary for managers, with the 14-day chart")
    @app_commands.describe(day="The day as YYYY-MM-DD (default: yesterday)")
    @manager_only
    async def summary(self, interaction: discord.Interaction[Any], day: str | None = None) -> None:
        if self.bot.reports is None:
            raise UserError("daily reports are not available in this setup")
        try:
            wanted = date.fromisoformat(day) if day else None
        except ValueError:
            raise UserError(f"{day!r} is not a date like 2026-03-01") from None
        await interaction.response.defer(ephemeral=True, thinking=True)
        report, chart = await self.bot.reports(wanted)
        await interaction.followup.send(**summary_message(report, chart), ephemeral=True)

    @app_commands.command(description="Desk figures: tickets by status and priority, recent flow")
    @manager_only
    async def stats(self, interaction: discord.Interaction[Any]) -> None:
        embed = stats_embed(await desk_stats(self.bot.desk))
        await interaction.response.send_message(embed=embed, ephemeral=True)
