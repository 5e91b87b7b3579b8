"""How a batch of outbox mail is handed on, and what came of each: sent, retry later, or failed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from core.models import OutboxMail


@dataclass(frozen=True)
class Sent:
    note: str | None = None  # e.g. some recipients refused


@dataclass(frozen=True)
class Retry:
    error: str  # a temporary failure: relay down, timeout, 4xx


@dataclass(frozen=True)
class Failed:
    error: str  # permanent (5xx): sending again would fail the same way


Outcome = Sent | Retry | Failed


class Transport(Protocol):
    description: str

    async def deliver(self, batch: Sequence[OutboxMail]) -> list[Outcome]:
        """One outcome per mail, in order; never raises for delivery problems."""
        ...
