"""What became of one stored mail, as intake reports it to the edge that handed it in."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum


class Kind(StrEnum):
    OPENED = "opened"  # a new ticket
    ADDED = "added"  # a message on an existing ticket
    DUPLICATE = "duplicate"
    BOUNCE = "bounce"
    HELD = "held"
    QUARANTINED = "quarantined"
    SKIPPED = "skipped"  # not waiting for processing (done already, or another worker has it)


@dataclass(frozen=True)
class Outcome:
    mail_id: int
    kind: Kind
    ticket_number: int | None = None
    machine: bool = False
    detail: str = ""

    def describe(self, format_number: Callable[[int], str]) -> str:
        """One line for `supportbot ingest` and the logs: what happened, and to which ticket."""
        ticket = format_number(self.ticket_number) if self.ticket_number is not None else None
        text = {
            Kind.OPENED: f"opened ticket {ticket}",
            Kind.ADDED: f"added to ticket {ticket}",
            Kind.DUPLICATE: "duplicate" + (f" (ticket {ticket})" if ticket else ""),
            Kind.BOUNCE: "bounce" + (f" for ticket {ticket}" if ticket else ""),
            Kind.HELD: "held",
            Kind.QUARANTINED: "quarantined",
            Kind.SKIPPED: "skipped",
        }[self.kind]
        machine = " as machine mail (no automatic answer)" if self.machine and self.kind != Kind.BOUNCE else ""
        return f"mail {self.mail_id}: {text}{machine}" + (f": {self.detail}" if self.detail else "")
