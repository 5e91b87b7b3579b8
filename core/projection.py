"""The Discord projection's records: which forum post shows which ticket, which messages were sent,
and the few facts about tickets, messages and staff the projector asks for by id."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import select

from core.desk import Desk
from core.discord_models import DiscordPost, DiscordTicketPost
from core.models import Message, Staff, Ticket


async def post_for_ticket(desk: Desk, ticket_id: int) -> DiscordTicketPost | None:
    async with desk.db.read() as session:
        return await session.get(DiscordTicketPost, ticket_id)


async def ticket_number_for_thread(desk: Desk, thread_id: int) -> int | None:
    """The ticket shown in this forum post, if it is one of ours."""
    async with desk.db.read() as session:
        return await session.scalar(
            select(Ticket.number).join(DiscordTicketPost, DiscordTicketPost.ticket_id == Ticket.id)
            .where(DiscordTicketPost.thread_id == thread_id))


async def threads_for_numbers(desk: Desk, numbers: Iterable[int]) -> dict[int, int]:
    """Ticket number -> forum post id, for linking lists to posts."""
    wanted = list(numbers)
    if not wanted:
        return {}
    async with desk.db.read() as session:
        rows = await session.execute(
            select(Ticket.number, DiscordTicketPost.thread_id)
            .join(DiscordTicketPost, DiscordTicketPost.ticket_id == Ticket.id).where(Ticket.number.in_(wanted)))
        return {number: thread for number, thread in rows}


async def sent_message(desk: Desk, key: str) -> int | None:
    async with desk.db.read() as session:
        post = await session.get(DiscordPost, key)
        return post.discord_message_id if post else None


async def remember_message(desk: Desk, key: str, channel_id: int, message_id: int, at: datetime) -> None:
    # Committed right after each send: a crash later in the batch does not resend this one.
    async with desk.db.transaction() as session:
        session.add(DiscordPost(key=key, channel_id=channel_id, discord_message_id=message_id, created_at=at))


async def remember_post(desk: Desk, ticket_id: int, thread_id: int, starter_id: int, state: str,
                        at: datetime) -> DiscordTicketPost:
    async with desk.db.transaction() as session:
        post = DiscordTicketPost(ticket_id=ticket_id, thread_id=thread_id, starter_message_id=starter_id,
                                 shown_state=state, created_at=at, updated_at=at)
        session.add(post)
        return post


async def update_shown_state(desk: Desk, ticket_id: int, state: str, at: datetime) -> None:
    async with desk.db.transaction() as session:
        post = await session.get(DiscordTicketPost, ticket_id)
        if post is not None:
            post.shown_state, post.updated_at = state, at


async def forget_post(desk: Desk, ticket_id: int) -> None:
    """The post was deleted in Discord: the next event makes a new one."""
    async with desk.db.transaction() as session:
        post = await session.get(DiscordTicketPost, ticket_id)
        if post is not None:
            await session.delete(post)


async def ticket_number(desk: Desk, ticket_id: int) -> int | None:
    async with desk.db.read() as session:
        return await session.scalar(select(Ticket.number).where(Ticket.id == ticket_id))


async def ticket_of_message(desk: Desk, message_id: int) -> int | None:
    """The id of the ticket a message is on now (merges move messages); None when it is gone."""
    async with desk.db.read() as session:
        return await session.scalar(select(Message.ticket_id).where(Message.id == message_id))


async def staff_name(desk: Desk, staff_id: int) -> str | None:
    async with desk.db.read() as session:
        return await session.scalar(select(Staff.display_name).where(Staff.id == staff_id))
