"""One way to answer a failed interaction: a clear ephemeral line, never a traceback."""

from __future__ import annotations

import logging
from typing import Any

import discord
from discord import app_commands

from bot.permissions import NotAllowed
from core.errors import UserError

log = logging.getLogger("bot.errors")

OUR_FAULT = "Something went wrong on our side and it has been logged. Please try again in a moment."


async def answer(interaction: discord.Interaction[Any], text: str, **kwargs: Any) -> None:
    """Ephemeral answer whether or not the interaction was already acknowledged."""
    kwargs.setdefault("allowed_mentions", discord.AllowedMentions.none())
    if interaction.response.is_done():
        await interaction.followup.send(text, ephemeral=True, **kwargs)
    else:
        await interaction.response.send_message(text, ephemeral=True, **kwargs)


async def thinking(interaction: discord.Interaction[Any]) -> None:
    """Acknowledge first: a write may wait behind others for longer than Discord's 3 seconds."""
    if not interaction.response.is_done():
        await interaction.response.defer(ephemeral=True, thinking=True)


async def report_error(interaction: discord.Interaction[Any], error: BaseException) -> None:
    if isinstance(error, (app_commands.CommandInvokeError, app_commands.TransformerError)) and error.__cause__:
        error = error.__cause__
    if isinstance(error, app_commands.CommandInvokeError):
        error = error.original
    if isinstance(error, (NotAllowed, UserError)):
        # The class only: a UserError's text may quote what the member typed (an address, say).
        log.info("refused %s for member %s (%s)", _what(interaction), interaction.user.id, type(error).__name__)
        text = str(error)
    elif isinstance(error, app_commands.CheckFailure):
        text = "You cannot use this command here."
    else:
        log.error("interaction %s failed", _what(interaction), exc_info=error)
        text = OUR_FAULT
    try:
        await answer(interaction, text)
    except discord.HTTPException:
        log.warning("could not tell member %s about a failed %s", interaction.user.id, _what(interaction))


def _what(interaction: discord.Interaction[Any]) -> str:
    if interaction.command is not None:
        return f"/{interaction.command.qualified_name}"
    data: dict[str, Any] = dict(interaction.data or {})
    return str(data.get("custom_id", interaction.type.name))
