"""SQLAlchemy tables of the desk: tickets, messages, contacts, staff, mail, events, outbox."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
)
from sqlalchemy import Enum as SqlEnum
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeEngine

from core.enums import (
    Direction,
    InboundStatus,
    OutboxStatus,
    ParticipantRole,
    Priority,
    StaffRole,
    Status,
)
from core.timeutil import UTCDateTime

# Named constraints so Alembic migrations are the same on SQLite and PostgreSQL.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

def enum_column(enum: type[StrEnum]) -> SqlEnum:
    """Stored as plain text (no native enum, no CHECK) so new values need no table rebuild."""
    return SqlEnum(enum, native_enum=False, create_constraint=False, length=20,
                   values_callable=lambda e: [m.value for m in e])


# BIGINT on PostgreSQL, but INTEGER on SQLite so the column stays the rowid alias.
BigId: TypeEngine[int] = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON()}


class Counter(Base):
    """Monotonic counters (the public ticket number): never reused, even after a rollback elsewhere."""

    __tablename__ = "counters"
    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger)


class Contact(Base):
    __tablename__ = "contacts"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)  # lowercased
    name: Mapped[str] = mapped_column(String(200), default="")
    blocked: Mapped[bool] = mapped_column(Boolean, default=False)
    blocked_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]


class Staff(Base):
    __tablename__ = "staff"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    discord_id: Mapped[int | None] = mapped_column(BigInteger, unique=True)
    display_name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(320))
    role: Mapped[StaffRole] = mapped_column(enum_column(StaffRole), default=StaffRole.AGENT)
    created_at: Mapped[datetime]


class Ticket(Base):
    __tablename__ = "tickets"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    number: Mapped[int] = mapped_column(BigInteger, unique=True)
    subject: Mapped[str] = mapped_column(String(998))
    status: Mapped[Status] = mapped_column(enum_column(Status), default=Status.OPEN, index=True)
    priority: Mapped[Priority] = mapped_column(enum_column(Priority), default=Priority.MEDIUM, index=True)
    category: Mapped[str | None] = mapped_column(String(100), index=True)
    requester_id: Mapped[int] = mapped_column(ForeignKey("contacts.id"), index=True)
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"), index=True)
    merged_into_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"))
    # A customer wrote to a ticket closed too long ago: the new ticket points at the old one.
    follow_up_of_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"))
    # The support address the first mail reached (plus-tag folded): the desk answers from it.
    # None: opened by staff, or by mail to none of the configured addresses (the first one answers).
    support_address: Mapped[str | None] = mapped_column(String(320))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime] = mapped_column(index=True)
    first_response_at: Mapped[datetime | None]
    last_customer_message_at: Mapped[datetime | None]
    resolved_at: Mapped[datetime | None]
    closed_at: Mapped[datetime | None]

    requester: Mapped[Contact] = relationship(lazy="joined", foreign_keys=[requester_id])
    assignee: Mapped[Staff | None] = relationship(lazy="joined", foreign_keys=[assignee_id])


class TicketTag(Base):
    __tablename__ = "ticket_tags"
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(50), primary_key=True, index=True)


class Participant(Base):
    __tablename__ = "ticket_participants"
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), primary_key=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id"), primary_key=True, index=True)
    role: Mapped[ParticipantRole] = mapped_column(enum_column(ParticipantRole))


class InboundMail(Base):
    """Raw mail exactly as received, stored and committed before the sender is told 'accepted'."""

    __tablename__ = "inbound_mail"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    source: Mapped[str] = mapped_column(String(100))  # smtp, imap:<mailbox>, pipe
    mailbox: Mapped[str] = mapped_column(String(320), default="")
    envelope_from: Mapped[str | None] = mapped_column(String(998))
    envelope_to: Mapped[list[str]] = mapped_column(JSON, default=list)
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    sha256: Mapped[str] = mapped_column(String(64))
    # Message-ID, or sha256 of the raw bytes when there is none: the duplicate key.
    dedupe_key: Mapped[str] = mapped_column(String(998))  # indexed with status: core/inbound_models.py
    status: Mapped[InboundStatus] = mapped_column(enum_column(InboundStatus), default=InboundStatus.RECEIVED,
                                                  index=True)
    reason: Mapped[str | None] = mapped_column(Text)
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"))
    received_at: Mapped[datetime]
    processed_at: Mapped[datetime | None]
    # SQLite only: a processor holds the row until then (PostgreSQL uses row locks instead).
    claimed_until: Mapped[datetime | None]


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (Index("ix_messages_ticket_id_id", "ticket_id", "id"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"))
    direction: Mapped[Direction] = mapped_column(enum_column(Direction))
    author_contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id"))
    author_staff_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))
    subject: Mapped[str] = mapped_column(String(998), default="")
    body_text: Mapped[str] = mapped_column(Text, default="")
    new_text: Mapped[str] = mapped_column(Text, default="")  # quotes and signature stripped
    body_html: Mapped[str | None] = mapped_column(Text)  # sanitized before it is stored
    message_id: Mapped[str | None] = mapped_column(String(998), index=True)
    in_reply_to: Mapped[str | None] = mapped_column(Text)
    references: Mapped[str | None] = mapped_column(Text)
    # The Message-ID this one answers, indexed: an original read after its reply finds the reply.
    parent_message_id: Mapped[str | None] = mapped_column(String(998), index=True)
    is_machine: Mapped[bool] = mapped_column(Boolean, default=False)  # auto-reply, bounce, list
    inbound_mail_id: Mapped[int | None] = mapped_column(ForeignKey("inbound_mail.id"))
    created_at: Mapped[datetime]

    attachments: Mapped[list[Attachment]] = relationship(
        lazy="selectin", order_by="Attachment.id", back_populates="message"
    )


class Attachment(Base):
    """Metadata only; the bytes live on disk, addressed by their sha256."""

    __tablename__ = "attachments"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id"), index=True)
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))  # None when held back
    content_id: Mapped[str | None] = mapped_column(String(998))
    inline: Mapped[bool] = mapped_column(Boolean, default=False)
    held_back: Mapped[bool] = mapped_column(Boolean, default=False)  # over the size limit
    # Executable, script, macro document or infected (core.attachment_policy): kept on the desk,
    # never uploaded to Discord nor attached to mail we send.
    dangerous: Mapped[bool] = mapped_column(Boolean, default=False)
    dangerous_reason: Mapped[str | None] = mapped_column(String(255))

    message: Mapped[Message] = relationship(back_populates="attachments")


class Event(Base):
    """Append-only log of every state change; consumers read it from their own cursor."""

    __tablename__ = "events"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    type: Mapped[str] = mapped_column(String(50), index=True)
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"), index=True)
    message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id"))
    actor_staff_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))
    actor_contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id"))
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(index=True)


class ConsumerCursor(Base):
    __tablename__ = "consumer_cursors"
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    position: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime]


class OutboxMail(Base):
    """Mail waiting to be sent; its Message-ID is fixed before the first attempt so retries match."""

    __tablename__ = "outbox"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"), index=True)
    message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id"))
    kind: Mapped[str] = mapped_column(String(40))  # ack, reply, status, reminder, report
    rfc822_message_id: Mapped[str] = mapped_column(String(998), unique=True)
    mail_from: Mapped[str] = mapped_column(String(320))
    recipients: Mapped[list[str]] = mapped_column(JSON)
    content: Mapped[bytes] = mapped_column(LargeBinary)  # the rendered mail, ready for SMTP
    automatic: Mapped[bool] = mapped_column(Boolean, default=True)
    status: Mapped[OutboxStatus] = mapped_column(enum_column(OutboxStatus), default=OutboxStatus.QUEUED)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]

    __table_args__ = (Index("ix_outbox_status_next_attempt_at", "status", "next_attempt_at"),)


class CannedResponse(Base):
    __tablename__ = "canned_responses"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    body: Mapped[str] = mapped_column(Text)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))
    updated_at: Mapped[datetime]


class AuditEntry(Base):
    """Who on the staff did what: kept apart from events so it also covers non-ticket actions."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    staff_id: Mapped[int] = mapped_column(ForeignKey("staff.id"), index=True)
    action: Mapped[str] = mapped_column(String(50))
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"), index=True)
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime]


__all__ = [
    "Attachment",
    "AuditEntry",
    "Base",
    "CannedResponse",
    "ConsumerCursor",
    "Contact",
    "Counter",
    "Event",
    "InboundMail",
    "Message",
    "OutboxMail",
    "Participant",
    "Staff",
    "Ticket",
    "TicketTag",
]
import core.discord_models  # noqa: E402,F401  (registers the Discord projection tables)
import core.imap_models  # noqa: E402,F401  (registers the table; plain import survives either import order)
import core.inbound_models  # noqa: E402,F401  (registers an index; plain import survives either import order)
import core.report_models  # noqa: E402,F401  (registers the report_runs table)
import core.sla_models  # noqa: E402,F401  (registers the SLA clock and timer tables)
from core.outbox_models import OutboxRecipient  # noqa: E402,F401  (registers the table)
