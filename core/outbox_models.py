"""Table of outbox recipients: lets the per-recipient cap on automatic mail use an index."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from core.models import Base, BigId


class OutboxRecipient(Base):
    """One row per recipient of each queued mail (recipients JSON cannot be indexed portably)."""

    __tablename__ = "outbox_recipients"
    __table_args__ = (Index("ix_outbox_recipients_email_created_at", "email", "created_at"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    outbox_id: Mapped[int] = mapped_column(ForeignKey("outbox.id"), index=True)
    email: Mapped[str] = mapped_column(String(320))  # lowercased
    automatic: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime]


__all__ = ["OutboxRecipient"]
