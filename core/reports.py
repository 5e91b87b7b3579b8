"""The daily report's numbers: SQL aggregates over the event log and tickets for one local day."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, Select, case, func, literal, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.desk import Desk
from core.enums import ACTIVE_STATUSES, InboundStatus, Status
from core.events import EventType
from core.models import Event, InboundMail, Staff, Ticket
from core.report_models import ReportDay
from core.report_sql import DurationStats, bucket, duration_stats, seconds_between
from core.services._common import insert_ignore
from core.sla.queries import sla_compliance

ACTIVE = [s.value for s in ACTIVE_STATUSES]
DONE = [Status.RESOLVED.value, Status.CLOSED.value]
SLA_NOT_CONFIGURED = "SLA not configured"
MIN_TREND_DAYS = 8  # the day itself and the seven before it, for the comparisons
# A day's figures are stored once it ended this long ago: no transaction that began in it is still open.
SETTLED = timedelta(minutes=10)


@dataclass(frozen=True)
class DayCounts:
    """Distinct tickets per kind of change in one day (a ticket reopened twice counts once)."""

    opened: int = 0
    reopened: int = 0
    resolved: int = 0  # went from open/pending/in progress to resolved or closed
    closed: int = 0


@dataclass(frozen=True)
class DayAverages:
    opened: float = 0.0
    reopened: float = 0.0
    resolved: float = 0.0
    closed: float = 0.0


@dataclass(frozen=True)
class TrendDay:
    day: date
    counts: DayCounts
    backlog: int  # tickets open, pending or in progress at the end of the day


@dataclass(frozen=True)
class Backlog:
    """Open work as the report is built (open, pending, in progress; merged tickets left out)."""

    total: int
    by_status: dict[str, int]
    by_priority: dict[str, int]
    by_category: dict[str, int]  # "" for tickets without a category


@dataclass(frozen=True)
class OpenTicket:
    number: int
    subject: str
    status: str
    priority: str
    assignee: str | None
    created_at: datetime
    age_seconds: float


@dataclass(frozen=True)
class StaffLoad:
    name: str
    assigned: int  # tickets assigned to them that day
    replied: int  # replies they sent that day
    resolved: int  # tickets they resolved or closed that day
    open_now: int  # active tickets assigned to them as the report is built


@dataclass(frozen=True)
class HourCount:
    label: str  # local wall time; with the UTC offset on a day when the clocks change
    start: datetime  # UTC
    count: int  # customer mail received (new tickets and replies, no machine mail)


@dataclass(frozen=True)
class MailCounts:
    machine: int  # auto-replies, bounces and the like, stored on tickets that day
    quarantined: int  # mail that could not be processed that day
    held: int  # mail kept but deliberately not turned into tickets that day (rate limit, blocked)
    quarantined_waiting: int  # all quarantined mail still waiting for someone, any day


@dataclass(frozen=True)
class SlaFigures:
    """SLA clocks breached during the day, and clocks at risk when the report was built."""

    breached: int
    at_risk: int


@dataclass(frozen=True)
class DailyReport:
    day: date
    timezone: str
    start: datetime  # UTC bounds of the local day
    end: datetime
    generated_at: datetime
    today: DayCounts
    previous: DayCounts
    week_average: DayAverages  # the seven days before `day`
    staff_replies: int
    backlog: Backlog
    oldest: list[OpenTicket]
    first_response: DurationStats  # for tickets first answered that day
    resolution: DurationStats  # opened -> resolved, for tickets resolved that day
    staff: list[StaffLoad]
    hours: list[HourCount]
    mail: MailCounts
    trend: list[TrendDay]
    sla: SlaFigures | None = None
    sla_note: str = SLA_NOT_CONFIGURED
    notes: list[str] = field(default_factory=list)

    @property
    def quiet(self) -> bool:
        """Nothing happened that day (the backlog may still hold work)."""
        t = self.today
        return not (t.opened or t.reopened or t.resolved or t.closed or self.staff_replies)

    def busiest_hours(self, n: int = 3) -> list[HourCount]:
        return sorted((h for h in self.hours if h.count), key=lambda h: (-h.count, h.start))[:n]


def day_bounds(day: date, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """UTC start and end of a local calendar day (23 or 25 hours long when the clocks change)."""
    start = datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=tz).astimezone(UTC)
    return start, end


def previous_local_day(now: datetime, tz: ZoneInfo) -> date:
    """The last complete local day: what a report run now is about."""
    return now.astimezone(tz).date() - timedelta(days=1)


async def daily_report(desk: Desk, day: date, timezone: str, *, trend_days: int = 14,
                       oldest: int = 5, sla_configured: bool = False) -> DailyReport:
    tz = ZoneInfo(timezone)
    start, end = day_bounds(day, tz)
    trend_days = max(trend_days, MIN_TREND_DAYS)
    days = [day - timedelta(days=n) for n in range(trend_days - 1, -1, -1)]
    async with desk.db.read() as session:
        if desk.db.is_postgres:
            # One snapshot for all queries: the trend replays the backlog from the count taken first.
            await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        backlog, open_by_assignee = await _backlog(session)
        trend, finished = await _trend(session, days, tz, backlog.total, desk.clock())
        by_day = {t.day: t.counts for t in trend}
        week = [by_day[day - timedelta(days=n)] for n in range(1, 8)]
        dialect = session.get_bind().dialect.name
        report = DailyReport(
            day=day, timezone=timezone, start=start, end=end, generated_at=desk.clock(),
            today=by_day[day], previous=by_day[day - timedelta(days=1)], week_average=_average(week),
            staff_replies=await _count_events(session, start, end, _type() == EventType.STAFF_REPLIED),
            backlog=backlog, oldest=await _oldest(session, oldest, desk.clock()),
            first_response=await duration_stats(session, _first_response_seconds(dialect, start, end)),
            resolution=await duration_stats(session, _resolution_seconds(dialect, start, end)),
            staff=await _staff_load(session, start, end, open_by_assignee), hours=await _hours(session, start, end, tz),
            mail=await _mail(session, start, end), trend=trend,
        )
    if finished:
        await _store_days(desk, finished)
    if sla_configured:
        compliance = (await sla_compliance(desk, start, end)).total
        report = replace(report, sla=SlaFigures(breached=compliance.breached, at_risk=compliance.at_risk),
                         sla_note="")
    return report


# --- conditions on the event log --------------------------------------------------------------

def _type() -> ColumnElement[str]:
    """The event type, in a form no index can serve.

    Every query here also bounds created_at to a day or two weeks, a small slice of the log.
    Without statistics SQLite prefers the index on type, which matches a large share of all
    events ever (0.5 s at 100,000 tickets); this steers it to the created_at range instead.
    PostgreSQL plans with statistics and picks the created_at range either way.
    """
    return Event.type.concat("")


@dataclass(frozen=True)
class _Change:
    """The columns a status change is judged by: straight from events, or from a subquery of them."""

    type: ColumnElement[str]
    old: ColumnElement[str]
    new: ColumnElement[str]

    @classmethod
    def of_events(cls) -> _Change:
        return cls(_type(), Event.data["from"].as_string(), Event.data["to"].as_string())

    def status_changed(self) -> ColumnElement[bool]:
        return self.type == EventType.STATUS_CHANGED

    def reopen(self) -> ColumnElement[bool]:
        return self.status_changed() & self.old.in_(DONE) & self.new.in_(ACTIVE)

    def resolve(self) -> ColumnElement[bool]:
        return self.status_changed() & self.old.in_(ACTIVE) & self.new.in_(DONE)

    def close(self) -> ColumnElement[bool]:
        return self.status_changed() & (self.new == Status.CLOSED.value) & (self.old != Status.CLOSED.value)

    def opened(self) -> ColumnElement[bool]:
        return self.type == EventType.TICKET_OPENED


def _resolve() -> ColumnElement[bool]:
    return _Change.of_events().resolve()


def _customer_mail() -> ColumnElement[bool]:
    return _type().in_([EventType.TICKET_OPENED, EventType.CUSTOMER_REPLIED])


def _machine() -> ColumnElement[bool]:
    return func.coalesce(Event.data["machine"].as_boolean(), False).is_(True)


def _in(start: datetime, end: datetime) -> ColumnElement[bool]:
    return (Event.created_at >= start) & (Event.created_at < end)


# --- the figures ------------------------------------------------------------------------------

async def _trend(session: AsyncSession, days: list[date], tz: ZoneInfo, backlog_now: int,
                 now: datetime) -> tuple[list[TrendDay], list[ReportDay]]:
    """Per-day counts, and the backlog at each day's end replayed backwards from today's.

    Finished days come from report_days when stored; one pass over the events covers the rest
    (and everything after the last day). Each opening or reopening added one ticket to the
    backlog and each resolution took one away, so the backlog at the end of day i is today's
    minus what the events after day i added. Returns the trend and the newly finished days to store.
    """
    stored = {r.day: r for r in await session.scalars(
        select(ReportDay).where(ReportDay.timezone == tz.key, ReportDay.day.in_(days)))}
    first = next((i for i, d in enumerate(days) if d not in stored), len(days))
    counts = {i: DayCounts(r.opened, r.reopened, r.resolved, r.closed)
              for i, d in enumerate(days) if (r := stored.get(d)) is not None}
    deltas = {i: r.backlog_delta for i, d in enumerate(days) if (r := stored.get(d)) is not None}
    bounds = [day_bounds(d, tz)[0] for d in days[first:]] + [day_bounds(days[-1], tz)[1]]
    for i, *figures in await _scan_days(session, bounds):
        if first + i < len(days):
            counts[first + i] = DayCounts(*map(int, figures[:4]))
        deltas[first + i] = int(figures[4] or 0)
    finished = [ReportDay(timezone=tz.key, day=d, **asdict(counts.get(i, DayCounts())),
                          backlog_delta=deltas.get(i, 0), computed_at=now)
                for i, d in enumerate(days)
                if i >= first and d not in stored and day_bounds(d, tz)[1] <= now - SETTLED]
    return _replay(days, counts, deltas, backlog_now), finished


async def _scan_days(session: AsyncSession, bounds: list[datetime]) -> list[Any]:
    """Rows (bucket, opened, reopened, resolved, closed, backlog delta) from bounds[0] on; the last
    bucket is everything after bounds[-1]."""
    events = _Change.of_events()
    b = bucket(Event.created_at, bounds) if len(bounds) > 1 else literal(0)
    # The JSON is read once per event in the subquery, not once per condition below.
    rows_in = (select(b.label("b"), Event.ticket_id.label("ticket_id"),
                      events.type.label("type"), events.old.label("old"), events.new.label("new"))
               .where(Event.created_at >= bounds[0],
                      events.type.in_([EventType.TICKET_OPENED, EventType.STATUS_CHANGED]))
               .cte("day_events"))
    c = _Change(rows_in.c.type, rows_in.c.old, rows_in.c.new)

    def tickets(condition: ColumnElement[bool]) -> ColumnElement[int]:
        return func.count(func.distinct(case((condition, rows_in.c.ticket_id), else_=None)))

    delta = case((c.opened() | c.reopen(), 1), (c.resolve(), -1), else_=0)
    if len(bounds) == 1:  # every day stored: only what came after the last one
        return [(len(bounds) - 1 + i, 0, 0, 0, 0, d) for i, d in
                (await session.execute(select(literal(0), func.sum(delta)).select_from(rows_in))).all()]
    return list((await session.execute(
        select(rows_in.c.b, tickets(c.opened()), tickets(c.reopen()), tickets(c.resolve()), tickets(c.close()),
               func.sum(delta))
        .group_by(rows_in.c.b))).all())


async def _store_days(desk: Desk, days: list[ReportDay]) -> None:
    async with desk.db.transaction() as session:
        for day in days:
            values = {c: getattr(day, c) for c in ("timezone", "day", "opened", "reopened", "resolved", "closed",
                                                   "backlog_delta", "computed_at")}
            await insert_ignore(session, ReportDay, values, ["timezone", "day"])


def _replay(days: list[date], counts: dict[int, DayCounts], deltas: dict[int, int],
            backlog_now: int) -> list[TrendDay]:
    trend: list[TrendDay] = []
    backlog = backlog_now - deltas.get(len(days), 0)  # undo what happened after the last day
    for i in range(len(days) - 1, -1, -1):
        trend.append(TrendDay(days[i], counts.get(i, DayCounts()), backlog))
        backlog -= deltas.get(i, 0)
    return trend[::-1]


def _average(week: list[DayCounts]) -> DayAverages:
    n = len(week)
    return DayAverages(*(round(sum(getattr(c, f) for c in week) / n, 2)
                         for f in ("opened", "reopened", "resolved", "closed")))


async def _count_events(session: AsyncSession, start: datetime, end: datetime,
                        condition: ColumnElement[bool]) -> int:
    return int(await session.scalar(select(func.count()).select_from(Event)
                                    .where(_in(start, end), condition)) or 0)


async def _backlog(session: AsyncSession) -> tuple[Backlog, dict[int, int]]:
    """Open work by status, priority and category, and open tickets per assignee.

    One GROUP BY over all four columns (a few hundred groups at most) instead of four passes
    over the open tickets; the groups are then added up per column.
    """
    rows = await session.execute(
        select(Ticket.status, Ticket.priority, Ticket.category, Ticket.assignee_id, func.count())
        .where(Ticket.status.in_(ACTIVE_STATUSES), Ticket.merged_into_id.is_(None))
        .group_by(Ticket.status, Ticket.priority, Ticket.category, Ticket.assignee_id))
    by_status: Counter[str] = Counter()
    by_priority: Counter[str] = Counter()
    by_category: Counter[str] = Counter()
    by_assignee: Counter[int] = Counter()
    for status, priority, category, assignee_id, count in rows:
        by_status[str(status)] += count
        by_priority[str(priority)] += count
        by_category[category or ""] += count
        if assignee_id is not None:
            by_assignee[assignee_id] += count
    backlog = Backlog(total=sum(by_status.values()), by_status=dict(by_status), by_priority=dict(by_priority),
                      by_category=dict(by_category))
    return backlog, dict(by_assignee)


async def _oldest(session: AsyncSession, limit: int, now: datetime) -> list[OpenTicket]:
    rows = await session.execute(
        select(Ticket.number, Ticket.subject, Ticket.status, Ticket.priority, Staff.display_name,
               Ticket.created_at)
        .outerjoin(Staff, Staff.id == Ticket.assignee_id)
        .where(Ticket.status.in_(ACTIVE_STATUSES), Ticket.merged_into_id.is_(None))
        .order_by(Ticket.created_at, Ticket.id).limit(limit))
    return [OpenTicket(n, s, str(st), str(p), a, c, (now - c).total_seconds()) for n, s, st, p, a, c in rows]


def _first_response_seconds(dialect: str, start: datetime, end: datetime) -> Select[Any]:
    first = Event.data["first_response"].as_boolean().is_(True)
    return (select(seconds_between(dialect, Event.created_at, Ticket.created_at)).select_from(Event)
            .join(Ticket, Ticket.id == Event.ticket_id)
            .where(_in(start, end), _type() == EventType.STAFF_REPLIED, first))


def _resolution_seconds(dialect: str, start: datetime, end: datetime) -> Select[Any]:
    # A ticket resolved twice in the day counts once, with the time of its last resolution.
    last = (select(Event.ticket_id.label("ticket_id"), func.max(Event.created_at).label("at"))
            .where(_in(start, end), _resolve()).group_by(Event.ticket_id).subquery())
    return (select(seconds_between(dialect, last.c.at, Ticket.created_at)).select_from(last)
            .join(Ticket, Ticket.id == last.c.ticket_id))


async def _staff_load(session: AsyncSession, start: datetime, end: datetime,
                      open_now: dict[int, int]) -> list[StaffLoad]:
    day = _in(start, end)
    to_staff = Event.data["to_staff_id"].as_integer()
    assigned: dict[int | None, int] = dict((await session.execute(
        select(to_staff, func.count(func.distinct(Event.ticket_id)))
        .where(day, _type() == EventType.ASSIGNED).group_by(to_staff))).all())
    replied: dict[int | None, int] = dict((await session.execute(
        select(Event.actor_staff_id, func.count())
        .where(day, _type() == EventType.STAFF_REPLIED).group_by(Event.actor_staff_id))).all())
    resolved: dict[int | None, int] = dict((await session.execute(
        select(Event.actor_staff_id, func.count(func.distinct(Event.ticket_id)))
        .where(day, _resolve()).group_by(Event.actor_staff_id))).all())
    ids = {i for i in (*assigned, *replied, *resolved, *open_now) if i is not None}
    if not ids:
        return []
    names = dict((await session.execute(select(Staff.id, Staff.display_name).where(Staff.id.in_(ids)))).all())
    loads = [StaffLoad(names.get(i, f"staff {i}"), int(assigned.get(i, 0)), int(replied.get(i, 0)),
                       int(resolved.get(i, 0)), int(open_now.get(i, 0))) for i in ids]
    return sorted(loads, key=lambda s: (-(s.replied + s.resolved + s.assigned), -s.open_now, s.name))


async def _hours(session: AsyncSession, start: datetime, end: datetime, tz: ZoneInfo) -> list[HourCount]:
    starts: list[datetime] = []
    moment = start
    while moment < end:
        starts.append(moment)
        moment += timedelta(hours=1)
    b = bucket(Event.created_at, [*starts, end]).label("b")
    rows = dict((await session.execute(
        select(b, func.count()).where(_in(start, end), _customer_mail(), ~_machine()).group_by(b))).all())
    odd_day = len(starts) != 24  # clocks changed: "02:00" may happen twice, so show the offset
    return [HourCount(_hour_label(s, tz, odd_day), s, int(rows.get(i, 0))) for i, s in enumerate(starts)]


def _hour_label(start: datetime, tz: ZoneInfo, with_offset: bool) -> str:
    local = start.astimezone(tz)
    return local.strftime("%H:%M UTC%z")[:-2] if with_offset else local.strftime("%H:%M")


async def _mail(session: AsyncSession, start: datetime, end: datetime) -> MailCounts:
    waiting = await session.scalar(select(func.count()).select_from(InboundMail)
                                   .where(InboundMail.status == InboundStatus.QUARANTINED))
    return MailCounts(
        machine=await _count_events(session, start, end, _customer_mail() & _machine()),
        quarantined=await _count_events(session, start, end, _type() == EventType.MAIL_QUARANTINED),
        held=await _count_events(session, start, end, _type() == EventType.MAIL_HELD),
        quarantined_waiting=int(waiting or 0),
    )


__all__ = [
    "SLA_NOT_CONFIGURED",
    "Backlog",
    "DailyReport",
    "DayAverages",
    "DayCounts",
    "DurationStats",
    "HourCount",
    "MailCounts",
    "OpenTicket",
    "SlaFigures",
    "StaffLoad",
    "TrendDay",
    "daily_report",
    "day_bounds",
    "previous_local_day",
]
