"""Who may do what: staff roles for ticket work, manager roles for snippets, blocking and reports."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import discord
from discord import app_commands

from core.enums import StaffRole
from core.services import StaffRef

if TYPE_CHECKING:
    from bot.client import SupportBot

T = TypeVar("T")


class NotAllowed(app_commands.CheckFailure):
    """The member lacks the role; the message is shown to them as is."""


def _role_ids(user: discord.abc.User) -> set[int]:
    roles = getattr(user, "roles", None)  # a Member has roles; a User (in DMs) has none
    return {r.id for r in roles} if roles else set()


def is_manager(bot: SupportBot, user: discord.abc.User) -> bool:
    return bool(_role_ids(user) & bot.settings.manager_role_ids)


def is_staff(bot: SupportBot, user: discord.abc.User) -> bool:
    # A manager can do everything staff can, without needing both roles.
    return bool(_role_ids(user) & (bot.settings.staff_role_ids | bot.settings.manager_role_ids))


def require_staff(interaction: discord.Interaction[Any]) -> None:
    bot: SupportBot = interaction.client
    if interaction.guild_id != bot.settings.guild_id or not is_staff(bot, interaction.user):
        raise NotAllowed("This needs the support staff role. Ask a manager to give it to you.")


def require_manager(interaction: discord.Interaction[Any]) -> None:
    bot: SupportBot = interaction.client
    if interaction.guild_id != bot.settings.guild_id or not is_manager(bot, interaction.user):
        raise NotAllowed("This needs the support manager role.")


def _as_check(requirement: Callable[[discord.Interaction[Any]], None]) -> Callable[[T], T]:
    def predicate(interaction: discord.Interaction[Any]) -> bool:
        requirement(interaction)
        return True

    return app_commands.check(predicate)


# Decorators for app commands. Discord's default_permissions is only a hint (and ignored on
# subcommands), so the bot checks the role itself on every invocation.
staff_only = _as_check(require_staff)
manager_only = _as_check(require_manager)


def staff_ref(bot: SupportBot, member: discord.abc.User) -> StaffRef:
    """How the core knows this member: the audit log records the Discord id and name."""
    role = StaffRole.MANAGER if is_manager(bot, member) else StaffRole.AGENT
    return StaffRef(name=member.display_name, discord_id=member.id, role=role)
