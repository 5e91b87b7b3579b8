"""SLA policies per priority (first response, next response, resolution) and the auto-close steps."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum

from core.enums import Priority
from core.errors import UserError
from core.sla.business_time import BusinessCalendar, CalendarTime, TimeMeasure

_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([wdhms])", re.IGNORECASE)
_UNIT_SECONDS = {"w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}


class ClockKind(StrEnum):
    FIRST_RESPONSE = "first_response"
    NEXT_RESPONSE = "next_response"  # after each customer mail that follows a staff reply
    RESOLUTION = "resolution"


def parse_duration(text: str) -> timedelta | None:
    """'4h', '1d 2h', '30m', '90s', '1w' -> timedelta; '' -> None (off).

    A day is always 24 hours, also in business time: 'one working day' of 09:00-17:00 is '8h'.
    """
    cleaned = text.strip().lower()
    if not cleaned:
        return None
    if _PART.sub("", cleaned).strip():
        raise UserError(f"a duration looks like '4h', '1d 2h' or '30m', not {text!r}")
    seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _PART.findall(cleaned))
    if seconds <= 0:
        raise UserError(f"a duration must be longer than zero: {text!r}")
    return timedelta(seconds=seconds)


@dataclass(frozen=True)
class SlaPolicy:
    """Targets for one priority; None means that clock is not kept for this priority."""

    first_response: timedelta | None = None
    next_response: timedelta | None = None
    resolution: timedelta | None = None
    business_hours: bool = True  # False: calendar time (24/7)

    def target(self, kind: ClockKind) -> timedelta | None:
        return {ClockKind.FIRST_RESPONSE: self.first_response, ClockKind.NEXT_RESPONSE: self.next_response,
                ClockKind.RESOLUTION: self.resolution}[kind]


@dataclass(frozen=True)
class AutoClose:
    """Calendar-time steps for tickets nobody moves; None switches a step off."""

    pending_reminder_after: timedelta | None = None
    pending_resolve_after: timedelta | None = None  # after the reminder (or after pending, if no reminder)
    resolved_close_after: timedelta | None = None

    @property
    def enabled(self) -> bool:
        return any((self.pending_reminder_after, self.pending_resolve_after, self.resolved_close_after))


@dataclass(frozen=True)
class SlaSettings:
    """Everything the SLA consumer and scheduler act on (built from the [sla] config section)."""

    policies: Mapping[Priority, SlaPolicy] = field(default_factory=dict)
    calendar: BusinessCalendar | None = None  # required when a policy counts business hours
    at_risk_share: float = 0.8
    raise_priority_on_breach: bool = False
    on_call_role_id: int | None = None
    auto_close: AutoClose = AutoClose()

    def __post_init__(self) -> None:
        if not 0 < self.at_risk_share < 1:
            raise UserError(f"at_risk_share must be between 0 and 1 (exclusive), not {self.at_risk_share}")
        if self.calendar is None and any(p.business_hours for p in self.policies.values()):
            raise UserError("a policy counts business hours but no business calendar is configured")

    @property
    def enabled(self) -> bool:
        return bool(self.policies) or self.auto_close.enabled

    def target(self, priority: Priority, kind: ClockKind) -> timedelta | None:
        policy = self.policies.get(priority)
        return policy.target(kind) if policy else None

    def measure(self, business_hours: bool) -> TimeMeasure:
        if business_hours and self.calendar is not None:
            return self.calendar
        return CalendarTime()

    def uses_business_hours(self, priority: Priority) -> bool:
        policy = self.policies.get(priority)
        return bool(policy and policy.business_hours)
