"""Tables of the Discord projection: which forum post and which Discord messages mirror what."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from core.models import Base


class DiscordTicketPost(Base):
    """The forum post (thread + starter message) that shows one ticket in Discord."""

    __tablename__ = "discord_ticket_posts"
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), primary_key=True)
    thread_id: Mapped[int] = mapped_column(BigInteger, unique=True)
    starter_message_id: Mapped[int] = mapped_column(BigInteger)
    # Hash of what the starter embed, tags and archive state last showed: skip edits that change nothing.
    shown_state: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class DiscordPost(Base):
    """One Discord message the projector sent, keyed by what it shows (e.g. "msg:42:1", "event:7").

    The projector looks a key up before sending, so replaying events posts nothing twice.
    """

    __tablename__ = "discord_posts"
    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    channel_id: Mapped[int] = mapped_column(BigInteger)
    discord_message_id: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime]


__all__ = ["DiscordPost", "DiscordTicketPost"]
