"""The events the desk records: one frozen dataclass per kind, and one registry to read them back.

A service records an event in its unit of work (`uow.record(TicketOpened(...), at=now)`); the row
keeps the type's name, the ids every event may carry, and the event's own fields as JSON. A
consumer turns a row back into its class with `typed(row)`. Adding a kind: a class here with
`@event_type(EventType.X)`, recorded where the change happens, handled where it matters.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

if TYPE_CHECKING:
    from core.models import Event


class EventType(StrEnum):
    TICKET_OPENED = "TicketOpened"
    CUSTOMER_REPLIED = "CustomerReplied"
    STAFF_REPLIED = "StaffReplied"
    NOTE_ADDED = "NoteAdded"
    ASSIGNED = "Assigned"
    UNASSIGNED = "Unassigned"
    STATUS_CHANGED = "StatusChanged"
    PRIORITY_CHANGED = "PriorityChanged"
    CATEGORY_CHANGED = "CategoryChanged"
    TAGS_CHANGED = "TagsChanged"
    PARTICIPANT_ADDED = "ParticipantAdded"
    PARTICIPANTS_HELD = "ParticipantsHeld"
    MERGED = "Merged"
    CONTACT_BLOCKED = "ContactBlocked"
    CONTACT_UNBLOCKED = "ContactUnblocked"
    MAIL_QUARANTINED = "MailQuarantined"
    MAIL_HELD = "MailHeld"
    MAIL_BOUNCED = "MailBounced"
    OUTBOUND_FAILED = "OutboundFailed"
    DAILY_REPORT_READY = "DailyReportReady"
    SLA_AT_RISK = "SlaAtRisk"
    SLA_BREACHED = "SlaBreached"
    PENDING_REMINDER_DUE = "PendingReminderDue"


class StatusReason(StrEnum):
    """Why a ticket's status changed; consumers decide on this, never on free text.

    The values are what rows recorded before this enum existed, so old events read the same.
    """

    CUSTOMER_REPLIED = "customer replied"
    STAFF_REPLIED = "staff replied"
    SET_BY_STAFF = "set by staff"
    MERGED = "merged"
    NO_ANSWER = "no answer from the customer"  # SLA auto-resolve of a pending ticket
    RESOLVED_QUIET = "resolved and no further message"  # SLA auto-close
    UNKNOWN = "unknown"  # a row whose reason this version does not know


@dataclass(frozen=True, kw_only=True)
class DomainEvent:
    """What every event may name: the ticket, the message, who did it (staff or a contact)."""

    type: ClassVar[EventType]
    ticket_id: int | None = None
    message_id: int | None = None
    actor_staff_id: int | None = None
    actor_contact_id: int | None = None

    def data(self) -> dict[str, Any]:
        """The event's own fields, as stored in the row's JSON (`from_` is stored as "from")."""
        return {f.name.rstrip("_"): getattr(self, f.name) for f in fields(self) if f.name not in _ENVELOPE}


_ENVELOPE = frozenset(f.name for f in fields(DomainEvent))
REGISTRY: dict[str, type[DomainEvent]] = {}
E = TypeVar("E", bound=type[DomainEvent])


def event_type(kind: EventType) -> Any:
    """Class decorator: the event's stored name, entered in REGISTRY."""

    def register(cls: E) -> E:
        cls.type = kind
        REGISTRY[str(kind)] = cls
        return cls

    return register


def typed(row: Event) -> DomainEvent:
    """The event class for a stored row; unknown keys (from a newer or older version) are left out."""
    cls = REGISTRY[row.type]
    data = row.data or {}
    own = {f.name for f in fields(cls)} - _ENVELOPE
    values = {name: data[name.rstrip("_")] for name in own if name.rstrip("_") in data}
    if cls is StatusChanged and "reason" in values:
        values["reason"] = _status_reason(values["reason"])
    return cls(ticket_id=row.ticket_id, message_id=row.message_id, actor_staff_id=row.actor_staff_id,
               actor_contact_id=row.actor_contact_id, **values)


def _status_reason(value: object) -> StatusReason:
    try:
        return StatusReason(str(value))
    except ValueError:
        return StatusReason.UNKNOWN


# --- tickets and messages -----------------------------------------------------------------------

@event_type(EventType.TICKET_OPENED)
@dataclass(frozen=True, kw_only=True)
class TicketOpened(DomainEvent):
    follow_up_of: int | None = None  # the number of the closed ticket this one follows up
    # the number of a ticket the mail named but whose conversation its sender may not join
    refers_to: int | None = None
    machine: bool = False
    arrived_at: str | None = None  # ISO time its mail reached us, when it came by mail


@event_type(EventType.CUSTOMER_REPLIED)
@dataclass(frozen=True, kw_only=True)
class CustomerReplied(DomainEvent):
    machine: bool = False


@event_type(EventType.STAFF_REPLIED)
@dataclass(frozen=True, kw_only=True)
class StaffReplied(DomainEvent):
    first_response: bool = False


@event_type(EventType.NOTE_ADDED)
@dataclass(frozen=True, kw_only=True)
class NoteAdded(DomainEvent):
    pass


@event_type(EventType.PARTICIPANT_ADDED)
@dataclass(frozen=True, kw_only=True)
class ParticipantAdded(DomainEvent):
    email: str = ""


@event_type(EventType.PARTICIPANTS_HELD)
@dataclass(frozen=True, kw_only=True)
class ParticipantsHeld(DomainEvent):
    """A customer's mail named more people than a ticket admits: these were not added (no staff reply
    goes to them) until staff add them."""

    emails: list[str] | None = None
    limit: str = ""  # which cap: "per mail" or "per ticket"


@event_type(EventType.MERGED)
@dataclass(frozen=True, kw_only=True)
class Merged(DomainEvent):
    into: int = 0  # ticket numbers
    from_: int = 0


# --- triage -------------------------------------------------------------------------------------

@event_type(EventType.STATUS_CHANGED)
@dataclass(frozen=True, kw_only=True)
class StatusChanged(DomainEvent):
    from_: str = ""
    to: str = ""
    reason: StatusReason = StatusReason.UNKNOWN


@event_type(EventType.PRIORITY_CHANGED)
@dataclass(frozen=True, kw_only=True)
class PriorityChanged(DomainEvent):
    from_: str = ""
    to: str = ""
    reason: str | None = None  # "SLA breached" when the SLA raised it

    def data(self) -> dict[str, Any]:
        data = super().data()
        if not self.reason:
            del data["reason"]
        return data


@event_type(EventType.CATEGORY_CHANGED)
@dataclass(frozen=True, kw_only=True)
class CategoryChanged(DomainEvent):
    from_: str | None = None
    to: str | None = None


@event_type(EventType.TAGS_CHANGED)
@dataclass(frozen=True, kw_only=True)
class TagsChanged(DomainEvent):
    added: list[str] | None = None
    removed: list[str] | None = None


@event_type(EventType.ASSIGNED)
@dataclass(frozen=True, kw_only=True)
class Assigned(DomainEvent):
    to_staff_id: int = 0
    to: str = ""
    to_discord_id: int | None = None


@event_type(EventType.UNASSIGNED)
@dataclass(frozen=True, kw_only=True)
class Unassigned(DomainEvent):
    from_: str | None = None


# --- contacts -----------------------------------------------------------------------------------

@event_type(EventType.CONTACT_BLOCKED)
@dataclass(frozen=True, kw_only=True)
class ContactBlocked(DomainEvent):
    email: str = ""
    reason: str | None = None


@event_type(EventType.CONTACT_UNBLOCKED)
@dataclass(frozen=True, kw_only=True)
class ContactUnblocked(DomainEvent):
    email: str = ""


# --- mail in and out ----------------------------------------------------------------------------

@event_type(EventType.MAIL_QUARANTINED)
@dataclass(frozen=True, kw_only=True)
class MailQuarantined(DomainEvent):
    mail_id: int = 0
    reason: str = ""


@event_type(EventType.MAIL_HELD)
@dataclass(frozen=True, kw_only=True)
class MailHeld(DomainEvent):
    mail_id: int = 0
    rule: str = ""
    reason: str = ""
    sender: str = ""  # the address the rules judged, for staff deciding on release or block
    subject: str = ""  # the decoded subject, bounded


@event_type(EventType.MAIL_BOUNCED)
@dataclass(frozen=True, kw_only=True)
class MailBounced(DomainEvent):
    mail_id: int = 0
    outbox_id: int | None = None
    failed: list[dict[str, str]] | None = None
    original_message_id: str = ""


@event_type(EventType.OUTBOUND_FAILED)
@dataclass(frozen=True, kw_only=True)
class OutboundFailed(DomainEvent):
    kind: str = "mail"
    error: str = ""
    attempts: int = 0
    outbox_id: int | None = None
    recipients: int | None = None

    def data(self) -> dict[str, Any]:
        return {key: value for key, value in super().data().items()
                if value is not None or key not in ("outbox_id", "recipients")}


# --- reports and SLA ----------------------------------------------------------------------------

@event_type(EventType.DAILY_REPORT_READY)
@dataclass(frozen=True, kw_only=True)
class DailyReportReady(DomainEvent):
    day: str = ""  # ISO date


@dataclass(frozen=True, kw_only=True)
class _AboutTicket(DomainEvent):
    """Events a consumer may act on without reading the ticket: its number, ref, subject, priority."""

    ticket: int = 0
    ref: str = ""
    subject: str = ""
    priority: str = ""


@dataclass(frozen=True, kw_only=True)
class _SlaAlert(_AboutTicket):
    """At risk or breached; described in core/sla/firing.py."""

    clock: str = ""
    due_at: str | None = None
    started_at: str | None = None
    budget_seconds: int | None = None
    business_hours: bool = False
    assignee_staff_id: int | None = None
    assignee_discord_id: int | None = None
    assignee_name: str | None = None
    on_call_role_id: int | None = None


@event_type(EventType.SLA_AT_RISK)
@dataclass(frozen=True, kw_only=True)
class SlaAtRisk(_SlaAlert):
    pass


@event_type(EventType.SLA_BREACHED)
@dataclass(frozen=True, kw_only=True)
class SlaBreached(_SlaAlert):
    priority_raised_to: str | None = None


@event_type(EventType.PENDING_REMINDER_DUE)
@dataclass(frozen=True, kw_only=True)
class PendingReminderDue(_AboutTicket):
    resolve_at: str | None = None
