"""When a daily report is due (local time, DST included) and which days' reports are still unsent."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.desk import Desk
from core.report_models import ReportRun
from core.services._common import insert_ignore

SENDING, SENT, FAILED = "sending", "sent", "failed"
# A claim older than this belongs to a process that died mid-send: another may take over.
CLAIM_LEASE = timedelta(minutes=10)


@dataclass(frozen=True)
class ReportSchedule:
    """The report about local day D is due on D+1 at `send_at`, local wall time."""

    send_at: time
    timezone: str
    catch_up_days: int = 7  # at most this many missed days are sent after a long outage
    kind: str = "daily"

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def due_at(self, day: date) -> datetime:
        """The UTC moment the report about `day` is due.

        A send time the clocks skip (02:30 on a spring-forward night) is read with the offset
        before the change, so it lands an hour later on the wall clock (03:30); a send time that
        happens twice (autumn) is the first of the two. Either way: once that day.
        """
        local = datetime.combine(day + timedelta(days=1), self.send_at, tzinfo=self.tz)
        return local.astimezone(UTC)

    def latest_due_day(self, now: datetime) -> date:
        """The most recent day whose report is due at `now`."""
        day = now.astimezone(self.tz).date() - timedelta(days=1)
        while self.due_at(day) > now:
            day -= timedelta(days=1)
        return day

    def next_due(self, now: datetime) -> datetime:
        """When the next report after those due now becomes due."""
        return self.due_at(self.latest_due_day(now) + timedelta(days=1))


async def unsent_days(desk: Desk, schedule: ReportSchedule) -> list[date]:
    """Due days whose report still has to go out, oldest first.

    Every due day after the last one sent (at most `catch_up_days` back), and days in that window
    whose sending failed. A desk that never sent one starts with the latest day only: a new
    install does not mail a week of empty reports.
    """
    now = desk.clock()
    latest = schedule.latest_due_day(now)
    window = latest - timedelta(days=schedule.catch_up_days - 1)
    async with desk.db.read() as session:
        last_sent = await session.scalar(select(func.max(ReportRun.day)).where(
            ReportRun.kind == schedule.kind, ReportRun.status == SENT))
        retry = set(await session.scalars(select(ReportRun.day).where(
            ReportRun.kind == schedule.kind, ReportRun.status != SENT, ReportRun.day >= window)))
    first = latest if last_sent is None else max(window, last_sent + timedelta(days=1))
    days = {first + timedelta(days=n) for n in range((latest - first).days + 1)} | retry
    return sorted(d for d in days if d <= latest)


async def claim(desk: Desk, kind: str, day: date) -> bool:
    """Take the job of sending this day's report; False when sent already or another process has it."""
    now = desk.clock()
    async with desk.db.transaction() as session:
        await insert_ignore(session, ReportRun, {
            "kind": kind, "day": day, "status": FAILED, "attempts": 0, "claimed_at": now}, ["kind", "day"])
        run = await session.scalar(select(ReportRun).where(ReportRun.kind == kind, ReportRun.day == day)
                                   .with_for_update())
        assert run is not None
        if run.status == SENT or (run.status == SENDING and now - run.claimed_at < CLAIM_LEASE):
            return False
        run.status, run.claimed_at, run.attempts = SENDING, now, run.attempts + 1
        return True


async def mark_sent(desk: Desk, kind: str, day: date) -> None:
    async with desk.db.transaction() as session:
        await record_sent(session, kind, day, desk.clock())


async def record_sent(session: AsyncSession, kind: str, day: date, now: datetime) -> None:
    """In the caller's transaction, so queueing the mail and marking the day sent are one commit."""
    await insert_ignore(session, ReportRun, {
        "kind": kind, "day": day, "status": SENT, "attempts": 1, "claimed_at": now}, ["kind", "day"])
    run = await session.get(ReportRun, (kind, day), with_for_update=True)
    assert run is not None
    run.status, run.sent_at, run.last_error = SENT, now, None


async def mark_failed(desk: Desk, kind: str, day: date, error: str) -> None:
    """Leave the day unsent (it is tried again on the next pass) and keep why."""
    async with desk.db.transaction() as session:
        run = await session.get(ReportRun, (kind, day), with_for_update=True)
        assert run is not None
        run.status, run.last_error = FAILED, error[:2000]


__all__ = ["ReportSchedule", "claim", "mark_failed", "mark_sent", "record_sent", "unsent_days"]
