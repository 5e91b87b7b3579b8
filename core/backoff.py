"""Exponential backoff: how long to wait after the n-th failure in a row. The one rule every retry
loop of the desk uses (outbox mail, IMAP reconnects, the Discord gateway and projector)."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    first: float  # seconds after the first failure
    cap: float  # never longer than this
    # ±this share, so many waiters that failed together (mail queued in one outage, mailboxes on one
    # server) do not all try again in the same second.
    jitter: float = 0.2

    def delay(self, failures: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after `failures` failures in a row (1 for the first); 0 for none."""
        if failures <= 0:
            return 0.0
        base = min(self.cap, self.first * 2 ** min(failures - 1, 64))
        return base * (rng or random).uniform(1 - self.jitter, 1 + self.jitter) if self.jitter else base
