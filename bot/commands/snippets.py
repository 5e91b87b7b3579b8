"""/snippet use|add|edit|remove|list: canned replies with {customer_name} and {ticket} filled in."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.commands._common import TICKET_HELP, client, resolve_ticket, ticket_autocomplete
from bot.commands.tickets import Ticket
from bot.errors import answer, thinking
from bot.format import truncate
from bot.permissions import is_staff, manager_only, staff_only, staff_ref
from bot.views import ReplyModal, TextModal
from core import services
from core.queries import ticket_detail

if TYPE_CHECKING:
    from bot.client import SupportBot


async def snippet_autocomplete(interaction: discord.Interaction[Any], current: str) -> list[app_commands.Choice[str]]:
    bot = client(interaction)
    if not is_staff(bot, interaction.user):
        return []
    names = [s.name for s in await services.list_snippets(bot.desk)]
    return [app_commands.Choice(name=n, value=n) for n in names if current.lower() in n][:25]


class Snippets(commands.GroupCog, group_name="snippet", group_description="Canned replies"):
    def __init__(self, bot: SupportBot) -> None:
        self.bot = bot
        super().__init__()

    @app_commands.command(description="Reply with a snippet: opens the reply editor, filled in, to check first")
    @app_commands.describe(name="The snippet", ticket=TICKET_HELP)
    @app_commands.autocomplete(name=snippet_autocomplete)
    @app_commands.autocomplete(ticket=ticket_autocomplete)
    @staff_only
    async def use(self, interaction: discord.Interaction[Any], name: str, ticket: Ticket | None = None) -> None:
        number = await resolve_ticket(interaction, ticket)
        snippet = await services.get_snippet(self.bot.desk, name)
        detail = await ticket_detail(self.bot.desk, number)
        text = services.render_snippet(snippet.body, {
            "customer_name": detail.requester_name or detail.requester.split("@")[0],
            "ticket": detail.ref, "subject": detail.subject, "agent": interaction.user.display_name})
        await interaction.response.send_modal(ReplyModal(self.bot, number, text=text))

    @app_commands.command(description="Create a snippet (leave text empty for a larger editor)")
    @app_commands.describe(name="Short name: letters, digits, - and _", text="The text; may use {customer_name} "
                           "and {ticket}")
    @manager_only
    async def add(self, interaction: discord.Interaction[Any], name: str, text: str | None = None) -> None:
        await self._save(interaction, name, text, create=True)

    @app_commands.command(description="Change a snippet's text")
    @app_commands.describe(name="The snippet", text="The new text (empty: edit the current one in an editor)")
    @app_commands.autocomplete(name=snippet_autocomplete)
    @manager_only
    async def edit(self, interaction: discord.Interaction[Any], name: str, text: str | None = None) -> None:
        await self._save(interaction, name, text, create=False)

    async def _save(self, interaction: discord.Interaction[Any], name: str, text: str | None, *, create: bool) -> None:
        actor = staff_ref(self.bot, interaction.user)

        async def save(inter: discord.Interaction[Any], body: str) -> None:
            await thinking(inter)
            saved = await services.save_snippet(self.bot.desk, name, body, actor, create=create)
            await answer(inter, f"Snippet `{saved.name}` {'created' if create else 'saved'}.")

        if text is not None:
            await save(interaction, text)
            return
        current = "" if create else (await services.get_snippet(self.bot.desk, name)).body
        await interaction.response.send_modal(TextModal(f"Snippet {name}", "Text ({customer_name}, {ticket} …)",
                                                        save, default=current))

    @app_commands.command(description="Delete a snippet")
    @app_commands.describe(name="The snippet")
    @app_commands.autocomplete(name=snippet_autocomplete)
    @manager_only
    async def remove(self, interaction: discord.Interaction[Any], name: str) -> None:
        await thinking(interaction)
        await services.remove_snippet(self.bot.desk, name, staff_ref(self.bot, interaction.user))
        await answer(interaction, f"Snippet `{name}` removed.")

    @app_commands.command(name="list", description="All snippets")
    @staff_only
    async def list_(self, interaction: discord.Interaction[Any]) -> None:
        snippets = await services.list_snippets(self.bot.desk)
        lines = [f"`{s.name}`: {truncate(' '.join(s.body.split()), 80)}" for s in snippets] or ["No snippets yet."]
        await answer(interaction, truncate("\n".join(lines), 2000))
