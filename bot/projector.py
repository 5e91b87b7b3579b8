"""The Discord projector: mirrors the event log into forum posts, idempotently, from its own cursor.

Each Discord message it sends is recorded (bot.links) right after the send, keyed by what it
shows, and looked up before sending: replaying events after a crash or an outage posts nothing
twice. Starter embeds, tags and archive state are re-rendered from the ticket as it is now,
once per batch, so a replay shows the current state without a burst of edits.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import logging
from datetime import date
from typing import TYPE_CHECKING, Any

import aiohttp
import discord

from bot.activity import ALERT_EVENTS, SLA_EVENTS, activity_line, alert_text, held_alert, sla_warning
from bot.format import (
    format_size,
    message_embeds,
    needs_full_text,
    starter_embed,
    summary_message,
    tag_names,
    thread_name,
    truncate,
)
from bot.tags import ForumTags
from bot.views import held_buttons, ticket_buttons
from core import attachment_policy, projection
from core.backoff import Backoff
from core.desk import Desk
from core.discord_models import DiscordTicketPost
from core.events import EventType, FailurePolicy, move_cursor, unseen_events
from core.models import Event
from core.queries import MessageView, TicketDetail, ticket_detail
from core.sla.queries import ticket_sla

if TYPE_CHECKING:
    from bot.client import SupportBot

log = logging.getLogger("bot.projector")

CONSUMER = "discord-projector"
NO_PINGS = discord.AllowedMentions.none()
REQUEST_MAX = 25 * 1024 * 1024  # Discord's request body limit, whatever the guild's upload limit
FILES_PER_MESSAGE = 10
MESSAGE_EVENTS = {EventType.TICKET_OPENED, EventType.CUSTOMER_REPLIED, EventType.STAFF_REPLIED,
                  EventType.NOTE_ADDED}


# Failures on Discord's side (or the network's): retried with backoff, never skipped.
DISCORD_SIDE = (discord.HTTPException, discord.GatewayNotFound, aiohttp.ClientError, TimeoutError, OSError)


class ProjectionBlocked(Exception):
    """Discord is not set up for us yet (forum missing, no permission): retry later, say what to fix."""


class EventFailed(Exception):
    def __init__(self, event_id: int) -> None:
        super().__init__(f"projecting event {event_id} failed")
        self.event_id = event_id


class Projector:
    def __init__(self, bot: SupportBot, desk: Desk, *, batch: int = 100) -> None:
        self.bot, self.desk, self.batch = bot, desk, batch
        self.tags = ForumTags()
        # Tickets as read during the current batch: each is read once per batch, not once per step.
        self._details: dict[int, TicketDetail] = {}
        self._posts: dict[int, DiscordTicketPost] = {}  # ticket id -> its post, during the batch
        self._due: dict[int, list[str]] = {}  # ticket id -> its SLA due times, during the batch
        # An event that fails for a bug, not for Discord being away, is given up on after a few tries:
        # one broken ticket must not stop every other post.
        self._failures = FailurePolicy(CONSUMER)
        self._skipped: set[int] = set()  # events given up on (replays skip them too)

    async def catch_up(self) -> int:
        """Project every event after the cursor; returns how many were handled."""
        handled = 0
        while True:
            events = await unseen_events(self.desk.db, CONSUMER, self.batch)
            if not events:
                return handled
            dirty: dict[int, None] = {}  # tickets whose starter/tags/archive state to refresh, in order
            self._details.clear()
            self._posts.clear()  # per batch, so memory stays bounded however many tickets there are
            self._due.clear()
            for event in events:
                if event.id not in self._skipped:
                    await self._project_or_fail(event, dirty)
            for ticket_id in dirty:
                await self._refresh_or_log(ticket_id)
            await move_cursor(self.desk.db, CONSUMER, events[-1].id, self.desk.clock())
            handled += len(events)

    async def run(self, stop: asyncio.Event) -> None:
        """Catch up whenever this process commits events, and poll for other processes' events.

        After a failure it waits out a growing backoff whatever is committed meanwhile, so a
        Discord that refuses us (403, outage) is not asked again for every new event.
        """
        committed = self.desk.db.listen_for_events()
        poll = self.bot.settings.projector_poll_seconds
        failing, blocked_for = Backoff(poll, 300.0, jitter=0), Backoff(30.0, 300.0, jitter=0)
        failures = 0
        while not stop.is_set():
            committed.clear()
            backoff = 0.0
            try:
                await self.catch_up()
                failures = 0
            except EventFailed as failed:
                failures += 1
                if self._failures.give_up(failed.event_id, failed.__cause__):
                    self._skipped.add(failed.event_id)
                else:
                    backoff = failing.delay(failures)
            except ProjectionBlocked as blocked:
                failures += 1
                backoff = blocked_for.delay(failures)
                log.warning("discord projector paused for %.0f s: %s", backoff, blocked)
            except discord.HTTPException as e:
                # discord.py has already waited out 429s; anything else here is worth a pause.
                failures += 1
                backoff = failing.delay(failures)
                log.error("discord projector: Discord answered %s %s; retrying in %.0f s", e.status,
                          e.text[:200], backoff)
            except Exception:
                failures += 1
                backoff = failing.delay(failures)
                log.exception("discord projector failed; retrying in %.0f s", backoff)
            if stop.is_set():
                break
            wake = [stop.wait()] if backoff else [committed.wait(), stop.wait()]
            waiters = {asyncio.ensure_future(w) for w in wake}
            await asyncio.wait(waiters, timeout=backoff or poll, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()

    async def _project_or_fail(self, event: Event, dirty: dict[int, None]) -> None:
        try:
            await self._project(event, dirty)
        except (ProjectionBlocked, *DISCORD_SIDE):
            raise
        except Exception as e:
            raise EventFailed(event.id) from e

    async def _refresh_or_log(self, ticket_id: int) -> None:
        try:
            await self.refresh(ticket_id)
        except (ProjectionBlocked, *DISCORD_SIDE):
            raise
        except Exception:
            # The starter embed is redrawn on the ticket's next event; its messages still go out.
            log.exception("discord projector could not redraw the post of ticket id %d", ticket_id)

    async def _project(self, event: Event, dirty: dict[int, None]) -> None:
        kind = event.type
        if kind in ALERT_EVENTS:
            await self._alert(event)
        if kind == EventType.MAIL_HELD:
            text = held_alert(event)
            if text is not None:  # machine-mail is only counted (daily report)
                await self._alert(event, text=text, view=held_buttons(event.id))
        if kind == EventType.DAILY_REPORT_READY:
            await self._post_report(event)
        if event.ticket_id is None:
            return
        dirty[event.ticket_id] = None
        if kind in SLA_EVENTS:
            await self._sla_alert(event)
        elif kind in MESSAGE_EVENTS and event.message_id is not None:
            await self._post_message(event.ticket_id, event.message_id)
        else:
            line = await self._activity_line(event)
            if line:
                await self._send_once(f"event:{event.id}", event.ticket_id, content=line)

    # -- posts ---------------------------------------------------------------------------------

    async def _post_message(self, ticket_id: int, message_id: int) -> None:
        detail, message = await self._message(ticket_id, message_id)
        if message is None:
            return  # deleted since; nothing to show
        embeds = message_embeds(message, ref=detail.ref)
        for index, embed in enumerate(embeds, 1):
            file = None
            if index == len(embeds) and needs_full_text(message):
                file = discord.File(io.BytesIO(message.text.encode()), filename=f"message-{message.id}.txt")
            await self._send_once(f"msg:{message.id}:{index}", ticket_id, embed=embed, file=file)
        await self._post_attachments(ticket_id, message, detail.ref)

    async def _post_attachments(self, ticket_id: int, message: MessageView, ref: str) -> None:
        if not message.attachments:
            return
        limit = self._upload_limit()
        uploads, listed = [], []
        dangerous = await attachment_policy.dangerous_reasons(self.desk.db, [a.id for a in message.attachments])
        for a in message.attachments:
            also = f"; dangerous: {dangerous[a.id]}" if a.id in dangerous else ""
            if a.held_back or a.sha256 is None:
                listed.append(f"{a.filename} ({format_size(a.size)}): held back by the mail size limit{also}")
            elif a.size > limit:
                listed.append(f"{a.filename} ({format_size(a.size)}): larger than this server's upload limit "
                              f"({format_size(limit)}); kept on the desk{also}")
            elif a.id in dangerous:  # never uploaded: Discord would hand it to anyone who clicks
                listed.append(f"{a.filename} ({format_size(a.size)}): kept on the desk, not shown here: "
                              f"{dangerous[a.id]}")
            else:
                uploads.append(a)
        groups: list[list[Any]] = []
        for a in uploads:  # at most 10 files and 25 MiB per message
            full = bool(groups) and (len(groups[-1]) == FILES_PER_MESSAGE
                                     or sum(x.size for x in groups[-1]) + a.size > REQUEST_MAX)
            if not groups or full:
                groups.append([])
            groups[-1].append(a)
        for n, group in enumerate(groups, 1):
            key = f"msg:{message.id}:files:{n}"
            if await projection.sent_message(self.desk, key) is None:
                files = [discord.File(io.BytesIO(await self.desk.files.get(a.sha256)), filename=a.filename)
                         for a in group]
                await self._send_once(key, ticket_id, content=f"Attachments of {ref}:", files=files)
        if listed:
            text = truncate("Not shown here:\n" + "\n".join(f"• {line}" for line in listed), 2000)
            await self._send_once(f"msg:{message.id}:files:listed", ticket_id, content=text)

    async def _send_once(self, key: str, ticket_id: int, **kwargs: Any) -> None:
        if await projection.sent_message(self.desk, key) is not None:
            return
        thread = await self._open_thread(ticket_id)
        kwargs.setdefault("allowed_mentions", NO_PINGS)
        sent = await thread.send(**{k: v for k, v in kwargs.items() if v is not None})
        await projection.remember_message(self.desk, key, thread.id, sent.id, self.desk.clock())

    async def _sla_alert(self, event: Event) -> None:
        """At risk or breached: in the post and in the alerts channel, pinging whoever should act."""
        text, pings = sla_warning(event)
        await self._send_once(f"event:{event.id}", event.ticket_id or 0, content=text, allowed_mentions=pings)
        subject = (event.data or {}).get("subject", "")
        await self._alert(event, text=truncate(f"{text} · {subject}", 2000), pings=pings)

    async def _post_report(self, event: Event) -> None:
        """The daily report, also mailed to managers, as an embed with its chart in the reports channel."""
        key = f"event:{event.id}:report"
        channel_id = self.bot.settings.reports_channel_id
        if not channel_id or self.bot.reports is None or await projection.sent_message(self.desk, key) is not None:
            return
        channel = self.bot.get_channel(channel_id)
        if not isinstance(channel, discord.abc.Messageable):
            log.warning("daily report not posted: reports channel %s not found or not a text channel (fix "
                        "[discord] reports_channel_id)", channel_id)
            return
        report, chart = await self.bot.reports(date.fromisoformat(event.data["day"]))
        sent = await channel.send(**summary_message(report, chart), allowed_mentions=NO_PINGS)
        await projection.remember_message(self.desk, key, channel_id, sent.id, self.desk.clock())

    async def _alert(self, event: Event, *, text: str | None = None,
                     pings: discord.AllowedMentions = NO_PINGS, view: discord.ui.View | None = None) -> None:
        key = f"event:{event.id}:alert"
        channel_id = self.bot.settings.alerts_channel_id
        text = text or await self._alert_text(event)
        if not channel_id:
            log.warning("alert (no alerts channel configured): %s", event.type)
            return
        if await projection.sent_message(self.desk, key) is not None:
            return
        channel = self.bot.get_channel(channel_id)
        if not isinstance(channel, discord.abc.Messageable):
            # Ticket posts go on regardless; the wrong id is also named at start (setup_problems).
            log.warning("alert not posted: alerts channel %s not found or not a text channel (fix [discord] "
                        "alerts_channel_id): %s", channel_id, event.type)
            return
        if view is None:
            sent = await channel.send(truncate(text, 2000), allowed_mentions=pings)
        else:
            sent = await channel.send(truncate(text, 2000), allowed_mentions=pings, view=view)
        await projection.remember_message(self.desk, key, channel_id, sent.id, self.desk.clock())

    # -- the post itself ---------------------------------------------------------------------

    async def refresh(self, ticket_id: int) -> None:
        """Make the starter embed, buttons, tags and archive state match the ticket as it is now."""
        post = await self._ensure_post(ticket_id)
        detail = await self._detail(ticket_id)
        forum = self._forum()
        tags = await self.tags.resolve(forum, tag_names(detail))
        closed = detail.status == "closed"
        state = _state_hash(detail, self._due.get(ticket_id, []), tags, closed)
        if state == post.shown_state:
            return
        thread = await self._thread(post)
        if thread.archived or thread.locked:
            await thread.edit(archived=False, locked=False)  # an archived post's messages cannot be edited
        await thread.get_partial_message(post.starter_message_id).edit(
            embed=starter_embed(detail, self._due.get(ticket_id, ())),
            view=ticket_buttons(detail.number, detail.status), allowed_mentions=NO_PINGS)
        await thread.edit(applied_tags=tags, archived=closed, locked=closed)
        await self._set_shown_state(post, state)

    async def _set_shown_state(self, post: DiscordTicketPost, state: str) -> None:
        post.shown_state = state
        await projection.update_shown_state(self.desk, post.ticket_id, state, self.desk.clock())

    async def _ensure_post(self, ticket_id: int) -> DiscordTicketPost:
        post = self._posts.get(ticket_id) or await projection.post_for_ticket(self.desk, ticket_id)
        if post is not None:
            self._posts[ticket_id] = post
            return post
        detail = await self._detail(ticket_id)
        forum = self._forum()
        tags = await self.tags.resolve(forum, tag_names(detail))
        closed = detail.status == "closed"
        created = await forum.create_thread(
            name=thread_name(detail.ref, detail.subject), embed=starter_embed(detail, self._due.get(ticket_id, ())),
            view=ticket_buttons(detail.number, detail.status), applied_tags=tags,
            auto_archive_duration=self.bot.settings.auto_archive_minutes,
            allowed_mentions=NO_PINGS, reason=f"supportbot: ticket {detail.ref}")
        # Stored before anything else is sent, so a replay finds the post instead of making another.
        state = "" if closed else _state_hash(detail, self._due.get(ticket_id, []), tags, closed)
        post = self._posts[ticket_id] = await projection.remember_post(
            self.desk, ticket_id, created.thread.id, created.message.id, state, self.desk.clock())
        return post

    async def _open_thread(self, ticket_id: int) -> discord.Thread:
        post = await self._ensure_post(ticket_id)
        thread = await self._thread(post)
        if thread.archived or thread.locked:
            await thread.edit(archived=False, locked=False)  # re-archived by refresh() when still closed
            await self._set_shown_state(post, "")
        return thread

    async def _thread(self, post: DiscordTicketPost) -> discord.Thread:
        thread = self.bot.get_channel(post.thread_id)
        if isinstance(thread, discord.Thread) and not thread.archived:
            return thread
        try:
            fetched = await self.bot.fetch_channel(post.thread_id)
        except discord.NotFound:
            # Someone deleted the post: forget it, and the next attempt makes a new one.
            self._posts.pop(post.ticket_id, None)
            await projection.forget_post(self.desk, post.ticket_id)
            raise ProjectionBlocked(f"the forum post {post.thread_id} was deleted; a new one will be made") from None
        assert isinstance(fetched, discord.Thread)
        return fetched

    def _forum(self) -> discord.ForumChannel:
        forum = self.bot.get_channel(self.bot.settings.forum_channel_id)
        if not isinstance(forum, discord.ForumChannel):
            raise ProjectionBlocked(f"forum channel {self.bot.settings.forum_channel_id} not found or not a forum: "
                                    "fix [discord] forum_channel_id")
        return forum

    def _upload_limit(self) -> int:
        guild = self.bot.get_guild(self.bot.settings.guild_id)
        return guild.filesize_limit if guild else 10 * 1024 * 1024

    # -- reading the desk ----------------------------------------------------------------------

    async def _detail(self, ticket_id: int) -> TicketDetail:
        cached = self._details.get(ticket_id)
        if cached is not None:
            return cached
        number = await projection.ticket_number(self.desk, ticket_id)
        assert number is not None
        # Read after the batch's events were read, so it is at least as new as any of them.
        detail = self._details[ticket_id] = await ticket_detail(self.desk, number)
        self._due[ticket_id] = (await ticket_sla(self.desk, number)).lines()
        return detail

    async def _message(self, ticket_id: int, message_id: int) -> tuple[TicketDetail, MessageView | None]:
        detail = await self._detail(ticket_id)
        found = next((m for m in detail.messages if m.id == message_id), None)
        if found is not None:
            return detail, found
        moved_to = await projection.ticket_of_message(self.desk, message_id)
        if moved_to is None:
            return detail, None  # deleted since
        detail = await self._detail(moved_to)  # the message's ticket now (it was merged)
        return detail, next((m for m in detail.messages if m.id == message_id), None)

    async def _actor(self, event: Event) -> str:
        if event.actor_staff_id is None:
            return "the desk"
        return await projection.staff_name(self.desk, event.actor_staff_id) or "staff"

    async def _activity_line(self, event: Event) -> str | None:
        alert = await self._alert_text(event) if event.type in ALERT_EVENTS else ""
        return activity_line(event, await self._actor(event), self.desk.format_number, alert)

    async def _alert_text(self, event: Event) -> str:
        ref = None
        if event.ticket_id is not None:
            number = await projection.ticket_number(self.desk, event.ticket_id)
            ref = self.desk.format_number(number) if number is not None else None
        return alert_text(event, ref)


def _state_hash(detail: TicketDetail, due: list[str], tags: list[discord.ForumTag], closed: bool) -> str:
    shown = {"embed": starter_embed(detail, due).to_dict(), "tags": sorted(t.id for t in tags), "closed": closed,
             "status": detail.status}
    return hashlib.sha256(json.dumps(shown, sort_keys=True, default=str).encode()).hexdigest()
