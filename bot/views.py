"""Buttons on every ticket post (Claim, Reply, Close/Reopen) and on held-mail alerts (Release, Block
sender) that survive restarts, and the modals."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import discord

from bot.errors import answer, report_error, thinking
from bot.permissions import require_staff, staff_ref
from bot.uploads import read_attachments
from core import inbound, services
from core.enums import Status
from core.services import NewAttachment

if TYPE_CHECKING:
    from bot.client import SupportBot

REPLY_MAX = 4000  # a modal text input holds no more
CUSTOM_ID = re.compile(r"ticket:(?P<action>claim|reply|close|reopen):(?P<number>[0-9]{1,18})")
LABELS = {
    "claim": ("Claim", discord.ButtonStyle.primary),
    "reply": ("Reply", discord.ButtonStyle.success),
    "close": ("Close", discord.ButtonStyle.danger),
    "reopen": ("Reopen", discord.ButtonStyle.secondary),
}


class TicketButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=CUSTOM_ID.pattern):
    """The ticket number lives in the custom_id, so any post's buttons work after a restart."""

    def __init__(self, action: str, number: int) -> None:
        label, style = LABELS[action]
        super().__init__(discord.ui.Button(label=label, style=style, custom_id=f"ticket:{action}:{number}"))
        self.action, self.number = action, number

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any],
                             match: re.Match[str], /) -> TicketButton:
        return cls(match["action"], int(match["number"]))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        # Errors raised in dynamic items would only reach discord.py's log, so answer them here.
        try:
            require_staff(interaction)
            await self._act(interaction)
        except Exception as error:  # noqa: BLE001  (report_error logs bugs with their traceback)
            await report_error(interaction, error)

    async def _act(self, interaction: discord.Interaction[Any]) -> None:
        bot: SupportBot = interaction.client
        actor = staff_ref(bot, interaction.user)
        ref = bot.desk.format_number(self.number)
        if self.action == "reply":
            await interaction.response.send_modal(ReplyModal(bot, self.number))
        elif self.action == "claim":
            await thinking(interaction)
            await services.claim(bot.desk, self.number, actor)
            await answer(interaction, f"You now own {ref}.")
        elif self.action == "close":
            await thinking(interaction)
            await services.set_status(bot.desk, self.number, Status.CLOSED, actor)
            await answer(interaction, f"{ref} is closed.")
        else:
            await thinking(interaction)
            await services.set_status(bot.desk, self.number, Status.OPEN, actor)
            await answer(interaction, f"{ref} is open again.")


def ticket_buttons(number: int, status: str) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    last = "reopen" if status == Status.CLOSED else "close"
    for action in ("claim", "reply", last):
        view.add_item(TicketButton(action, number))
    return view


HELD_ID = re.compile(r"held:(?P<action>release|block):(?P<event>[0-9]{1,18})")
HELD_LABELS = {
    "release": ("Release", discord.ButtonStyle.success),
    "block": ("Block sender", discord.ButtonStyle.danger),
}


class HeldMailButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=HELD_ID.pattern):
    """On a held-mail alert; the MailHeld event's id lives in the custom_id (it names mail and sender)."""

    def __init__(self, action: str, event_id: int) -> None:
        label, style = HELD_LABELS[action]
        super().__init__(discord.ui.Button(label=label, style=style, custom_id=f"held:{action}:{event_id}"))
        self.action, self.event_id = action, event_id

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any],
                             match: re.Match[str], /) -> HeldMailButton:
        return cls(match["action"], int(match["event"]))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        try:
            require_staff(interaction)
            await thinking(interaction)
            await self._act(interaction)
        except Exception as error:  # noqa: BLE001  (report_error logs bugs with their traceback)
            await report_error(interaction, error)

    async def _act(self, interaction: discord.Interaction[Any]) -> None:
        bot: SupportBot = interaction.client
        held = await inbound.held_mail(bot.desk, self.event_id)
        if held is None:
            await answer(interaction, "This held mail is no longer on the desk.")
        elif self.action == "release":
            # Only a mail still held: a second click must not take in a mail that was dealt with since.
            if not held.still_held or not await inbound.requeue(bot.desk, [held.mail_id], release=True):
                await answer(interaction, f"Mail {held.mail_id} is no longer held (released or dealt with already).")
            else:
                await answer(interaction, f"Mail {held.mail_id} released: it is taken in again shortly, without "
                                          "the hold rules.")
        elif not held.sender:
            await answer(interaction, f"Mail {held.mail_id} has no sender address to block.")
        else:
            contact = await services.block_sender(bot.desk, held.sender, staff_ref(bot, interaction.user),
                                                  f"held mail {held.mail_id} ({held.rule})")
            await answer(interaction, f"{discord.utils.escape_markdown(contact.email)} is blocked: their mail "
                                      "opens no ticket. The held mail stays held.")


def held_buttons(event_id: int) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    for action in ("release", "block"):
        view.add_item(HeldMailButton(action, event_id))
    return view


class ReplyModal(discord.ui.Modal):
    """Long replies, and snippets to edit before sending: nothing leaves until Submit."""

    def __init__(self, bot: SupportBot, number: int, *, text: str = "",
                 uploads: Sequence[discord.Attachment] = (), status: Status | None = None) -> None:
        super().__init__(title=f"Reply to {bot.desk.format_number(number)}"[:45], timeout=900)
        self.bot, self.number, self.uploads, self.status = bot, number, uploads, status
        self.text: discord.ui.TextInput[ReplyModal] = discord.ui.TextInput(
            label="Reply to the customer (sent by mail)", style=discord.TextStyle.paragraph, custom_id="text",
            max_length=REPLY_MAX, default=text[:REPLY_MAX] or None)
        self.add_item(self.text)

    async def on_submit(self, interaction: discord.Interaction[Any]) -> None:
        files: list[NewAttachment] = []
        if self.uploads:
            # Files are fetched only now, after acknowledging: a download may take longer than 3 s.
            await thinking(interaction)
            files = await read_attachments(*self.uploads)
        await send_reply(self.bot, interaction, self.number, self.text.value, files, self.status)

    async def on_error(self, interaction: discord.Interaction[Any], error: Exception) -> None:  # type: ignore[override]
        await report_error(interaction, error)


async def send_reply(bot: SupportBot, interaction: discord.Interaction[Any], number: int, text: str,
                     attachments: Sequence[NewAttachment] = (), status: Status | None = None) -> None:
    require_staff(interaction)  # again: a modal may be submitted after the role was taken away
    await thinking(interaction)
    change = await services.reply(bot.desk, number, staff_ref(bot, interaction.user), text,
                                  attachments=attachments, status=status)
    ref = bot.desk.format_number(change.ticket.number)
    await answer(interaction, f"Reply to {ref} queued for mail to {change.ticket.requester.email}.")


class TextModal(discord.ui.Modal):
    """One paragraph of text (a snippet body), handed to `save` on submit."""

    def __init__(self, title: str, label: str, save: Callable[[discord.Interaction[Any], str], Awaitable[None]],
                 *, default: str = "") -> None:
        super().__init__(title=title[:45], timeout=900)
        self.save = save
        self.body: discord.ui.TextInput[TextModal] = discord.ui.TextInput(
            label=label[:45], style=discord.TextStyle.paragraph, max_length=REPLY_MAX, default=default or None,
            custom_id="body")
        self.add_item(self.body)

    async def on_submit(self, interaction: discord.Interaction[Any]) -> None:
        await self.save(interaction, self.body.value)

    async def on_error(self, interaction: discord.Interaction[Any], error: Exception) -> None:  # type: ignore[override]
        await report_error(interaction, error)


PageLoader = Callable[[int], Awaitable[tuple[discord.Embed, bool]]]


class Pager(discord.ui.View):
    """Previous/Next for /list and /search; the embed for a page comes from `load(page)`."""

    def __init__(self, load: PageLoader, has_more: bool) -> None:
        super().__init__(timeout=600)
        self.load, self.page = load, 0
        self._sync(has_more)

    def _sync(self, has_more: bool) -> None:
        self.previous.disabled = self.page == 0
        self.next.disabled = not has_more

    async def _show(self, interaction: discord.Interaction[Any], step: int) -> None:
        self.page = max(0, self.page + step)
        embed, has_more = await self.load(self.page)
        self._sync(has_more)
        await interaction.response.edit_message(embed=embed, view=self)

    @discord.ui.button(label="Previous", style=discord.ButtonStyle.secondary)
    async def previous(self, interaction: discord.Interaction[Any], _: discord.ui.Button[Pager]) -> None:
        await self._show(interaction, -1)

    @discord.ui.button(label="Next", style=discord.ButtonStyle.secondary)
    async def next(self, interaction: discord.Interaction[Any], _: discord.ui.Button[Pager]) -> None:
        await self._show(interaction, 1)

    async def on_error(self, interaction: discord.Interaction[Any], error: Exception,
                       item: discord.ui.Item[Any]) -> None:
        await report_error(interaction, error)
