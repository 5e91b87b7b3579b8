"""Simple desk figures for /stats: ticket counts by status and priority, recent flow, first response."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, select

from core.desk import Desk
from core.enums import ACTIVE_STATUSES
from core.models import Ticket
from core.sla.queries import Compliance, sla_compliance


@dataclass(frozen=True)
class DeskStats:
    by_status: dict[str, int]
    active_by_priority: dict[str, int]
    active_unassigned: int
    opened_last_day: int
    opened_last_week: int
    closed_last_week: int
    # Mean time to first response over tickets opened in the last week that got one; None if none did.
    mean_first_response: timedelta | None
    # SLA clocks met and breached in the last week, and at risk now (all zero when no policy is set).
    sla_last_week: Compliance


async def desk_stats(desk: Desk) -> DeskStats:
    """Counts with SQL aggregates (no rows loaded), merged tickets left out."""
    now = desk.clock()
    day, week = now - timedelta(days=1), now - timedelta(days=7)
    live = Ticket.merged_into_id.is_(None)
    active = Ticket.status.in_(ACTIVE_STATUSES)
    async with desk.db.read() as session:
        by_status = {str(s): n for s, n in await session.execute(
            select(Ticket.status, func.count()).where(live).group_by(Ticket.status))}
        by_priority = {str(p): n for p, n in await session.execute(
            select(Ticket.priority, func.count()).where(live, active).group_by(Ticket.priority))}
        unassigned = await session.scalar(
            select(func.count()).where(live, active, Ticket.assignee_id.is_(None)))
        opened_day = await session.scalar(select(func.count()).where(live, Ticket.created_at >= day))
        opened_week = await session.scalar(select(func.count()).where(live, Ticket.created_at >= week))
        closed_week = await session.scalar(select(func.count()).where(Ticket.closed_at >= week))
        answered = list(await session.execute(
            select(Ticket.created_at, Ticket.first_response_at)
            .where(live, Ticket.created_at >= week, Ticket.first_response_at.is_not(None))))
    # Averaged in Python: date arithmetic differs between SQLite and PostgreSQL, and a week is small.
    waits = [first - created for created, first in answered if first is not None]
    mean = sum(waits, timedelta()) / len(waits) if waits else None
    sla = await sla_compliance(desk, week, now)
    return DeskStats(by_status=by_status, active_by_priority=by_priority, active_unassigned=int(unassigned or 0),
                     opened_last_day=int(opened_day or 0), opened_last_week=int(opened_week or 0),
                     closed_last_week=int(closed_week or 0), mean_first_response=mean,
                     sla_last_week=sla.total)
