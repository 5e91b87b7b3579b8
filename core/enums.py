"""Closed vocabularies of the domain: statuses, priorities, message directions, roles."""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    OPEN = "open"
    PENDING = "pending"  # waiting on the customer
    IN_PROGRESS = "in_progress"
    RESOLVED = "resolved"
    CLOSED = "closed"


# Statuses in which a ticket still needs work from staff or the customer.
ACTIVE_STATUSES = (Status.OPEN, Status.PENDING, Status.IN_PROGRESS)


class Priority(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    URGENT = "urgent"


class Direction(StrEnum):
    INBOUND = "inbound"  # from the customer
    OUTBOUND = "outbound"  # staff reply sent to the customer
    NOTE = "note"  # internal, never leaves the desk


class StaffRole(StrEnum):
    AGENT = "agent"
    MANAGER = "manager"


class ParticipantRole(StrEnum):
    REQUESTER = "requester"
    CC = "cc"


class InboundStatus(StrEnum):
    RECEIVED = "received"
    PROCESSED = "processed"
    QUARANTINED = "quarantined"
    HELD = "held"  # kept but deliberately not turned into a ticket (rate limit, blocked sender)


class OutboxStatus(StrEnum):
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
