"""How outbox mail is handed on, and what came of each: sent, retry later, or failed.

A transport reports each mail's outcome the moment it knows it, and waits for that report (which
records the outcome in the database) before it hands on the next mail: a crash can then resend at
most the one mail between the relay's 250 and the commit of "sent".
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from core.models import OutboxMail


@dataclass(frozen=True)
class Sent:
    note: str | None = None  # e.g. some recipients refused
    # time.monotonic() when the relay's 250 was read: made right then, so the sender can measure
    # how long the mail stays accepted but not yet recorded as sent.
    accepted_at: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class Retry:
    error: str  # a temporary failure: relay down, timeout, 4xx


@dataclass(frozen=True)
class Failed:
    error: str  # permanent (5xx): sending again would fail the same way


Outcome = Sent | Retry | Failed

# Records one mail's outcome; False asks the transport to stop and hand on nothing more of the batch.
Report = Callable[[OutboxMail, Outcome], Awaitable[bool]]


class Transport(Protocol):
    description: str

    async def deliver(self, batch: Sequence[OutboxMail], report: Report) -> None:
        """Hand the mails on in order, awaiting `report(mail, outcome)` after each before the next one;
        stop when it returns False. Never raises for delivery problems (they are outcomes)."""
        ...
