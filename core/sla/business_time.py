"""Business time: opening hours per weekday, holidays and a time zone; adding and measuring open time."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

from core.errors import UserError

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# Far enough for any real target; stops a loop when a calendar is open for almost nothing.
MAX_DAYS = 3 * 366
_RANGE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")

Opening = tuple[time, time | None]  # None as the end means midnight at the end of the day


class TimeMeasure(Protocol):
    """What an SLA clock needs from a calendar: move forward by an amount, and measure a span."""

    def add(self, start: datetime, seconds: float) -> datetime: ...

    def between(self, start: datetime, end: datetime) -> float: ...


class CalendarTime:
    """Every second counts (24/7)."""

    def add(self, start: datetime, seconds: float) -> datetime:
        return start + timedelta(seconds=max(0.0, seconds))

    def between(self, start: datetime, end: datetime) -> float:
        return max(0.0, (end - start).total_seconds())


@dataclass(frozen=True)
class BusinessCalendar:
    """Open hours in a time zone; only open seconds count.

    Openings are local wall-clock times, turned into real instants day by day through zoneinfo,
    so a clock running across a DST change counts the hours that really passed.
    """

    tz: ZoneInfo
    hours: Mapping[int, tuple[Opening, ...]]  # weekday (0 = Monday) -> openings that day
    holidays: frozenset[date] = field(default_factory=frozenset)

    def add(self, start: datetime, seconds: float) -> datetime:
        """The instant at which `seconds` of open time have passed since `start`."""
        remaining = max(0.0, seconds)
        for opens, closes in self._openings_from(start):
            begin = max(opens, start)
            available = (closes - begin).total_seconds()
            if available >= remaining:
                return begin + timedelta(seconds=remaining)
            remaining -= available
        raise UserError(f"the business calendar has no {seconds:.0f} s of open time in {MAX_DAYS} days")

    def between(self, start: datetime, end: datetime) -> float:
        """Open seconds between two instants (0 when end is before start)."""
        total = 0.0
        if end <= start:
            return total
        for opens, closes in self._openings_from(start):
            if opens >= end:
                break
            total += (min(closes, end) - max(opens, start)).total_seconds()
        return total

    def is_open(self, at: datetime) -> bool:
        return any(opens <= at < closes for opens, closes in self._openings_on(at.astimezone(self.tz).date()))

    def _openings_from(self, start: datetime) -> Iterator[tuple[datetime, datetime]]:
        """Openings (as UTC instants) that end after `start`, in order."""
        day = start.astimezone(self.tz).date() - timedelta(days=1)  # an opening may end after midnight
        for offset in range(MAX_DAYS):
            for opens, closes in self._openings_on(day + timedelta(days=offset)):
                if closes > start:
                    yield opens, closes

    def _openings_on(self, day: date) -> Iterator[tuple[datetime, datetime]]:
        if day in self.holidays:
            return
        for opens, closes in self.hours.get(day.weekday(), ()):
            begin = _instant(day, opens, self.tz)
            end = _instant(day + timedelta(days=1), time(0), self.tz) if closes is None \
                else _instant(day, closes, self.tz)
            if end > begin:  # a local span swallowed by a DST gap is empty, not negative
                yield begin, end


def _instant(day: date, at: time, tz: ZoneInfo) -> datetime:
    # fold=0: an hour that happens twice (autumn) starts at its first occurrence; a time that
    # does not exist (spring) is read with the offset before the change, i.e. just after the gap.
    return datetime.combine(day, at, tzinfo=tz).astimezone(UTC)


def parse_openings(text: str) -> tuple[Opening, ...]:
    """'09:00-17:00' or '09:00-12:00, 13:00-17:00'; '' means closed, '00:00-24:00' all day."""
    openings: list[Opening] = []
    for part in (p for p in text.split(",") if p.strip()):
        match = _RANGE.match(part)
        if not match:
            raise UserError(f"opening hours look like '09:00-17:00', not {part.strip()!r}")
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        if h1 > 23 or m1 > 59 or m2 > 59 or h2 > 24 or (h2 == 24 and m2 != 0):
            raise UserError(f"not a time of day in {part.strip()!r}")
        opens, closes = time(h1, m1), None if h2 == 24 else time(h2, m2)
        if closes is not None and closes <= opens:
            raise UserError(f"opening hours must end after they start: {part.strip()!r}")
        previous_end = openings[-1][1] if openings else time(0)
        if previous_end is None or opens < previous_end:
            raise UserError(f"opening hours must be in order and not overlap: {text!r}")
        openings.append((opens, closes))
    return tuple(openings)


def business_calendar(timezone: str, hours: Mapping[str, str], holidays: Sequence[date] = ()) -> BusinessCalendar:
    """Build a calendar from config text: {'mon': '09:00-17:00', …}, missing days are closed."""
    unknown = set(hours) - set(WEEKDAYS)
    if unknown:
        raise UserError(f"unknown weekday(s) {sorted(unknown)}; use {', '.join(WEEKDAYS)}")
    parsed = {i: parse_openings(hours.get(name, "")) for i, name in enumerate(WEEKDAYS)}
    if not any(parsed.values()):
        raise UserError("business hours are closed every day; open at least one weekday")
    return BusinessCalendar(ZoneInfo(timezone), parsed, frozenset(holidays))
