"""How far each IMAP mailbox has been read: its UIDVALIDITY and the last UID stored (table and queries)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import BigInteger, String
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Database
from core.models import Base


class ImapState(Base):
    """One row per configured mailbox and folder; the position survives restarts.

    UIDs, not the \\Seen flag, say what was read: another client may mark mail as read before we
    see it. A UID only means something together with the folder's UIDVALIDITY.
    """

    __tablename__ = "imap_state"
    mailbox: Mapped[str] = mapped_column(String(100), primary_key=True)  # the config's mailbox name
    folder: Mapped[str] = mapped_column(String(500), primary_key=True)
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    last_uid: Mapped[int] = mapped_column(BigInteger)  # every UID up to this one is stored
    updated_at: Mapped[datetime]


@dataclass(frozen=True)
class ImapPosition:
    uidvalidity: int
    last_uid: int


@dataclass(frozen=True)
class ReadUpTo:
    """A mailbox's folder read up to a position: stored together with the mails up to it."""

    mailbox: str
    folder: str
    position: ImapPosition


async def load_position(db: Database, mailbox: str, folder: str) -> ImapPosition | None:
    async with db.read() as session:
        row = await session.get(ImapState, (mailbox, folder))
        return None if row is None else ImapPosition(row.uidvalidity, row.last_uid)


async def save_position(db: Database, mailbox: str, folder: str, position: ImapPosition,
                        at: datetime) -> None:
    """Record the new position in a transaction of its own."""
    async with db.transaction() as session:
        await save_position_in(session, mailbox, folder, position, at)


async def save_position_in(session: AsyncSession, mailbox: str, folder: str, position: ImapPosition,
                           at: datetime) -> None:
    """Record the new position in the caller's transaction (the one that stores the mails up to it)."""
    row = await session.get(ImapState, (mailbox, folder), with_for_update=True)
    if row is None:
        session.add(ImapState(mailbox=mailbox, folder=folder, uidvalidity=position.uidvalidity,
                              last_uid=position.last_uid, updated_at=at))
    else:
        row.uidvalidity = position.uidvalidity
        row.last_uid = position.last_uid
        row.updated_at = at
