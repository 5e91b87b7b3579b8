"""Read side of the SLA: a ticket's due times (CLI, Discord embed) and compliance over a period (/stats, report)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.desk import Desk
from core.errors import NotFound
from core.models import Ticket
from core.sla.policy import ClockKind
from core.sla_models import ClockState, SlaClock, SlaTimer, TimerAction

LABELS = {"first_response": "first response", "next_response": "next response", "resolution": "resolution"}
AUTO_CLOSE_LABELS = {TimerAction.REMIND: "reminder to customer", TimerAction.RESOLVE: "auto-resolve",
                     TimerAction.CLOSE: "auto-close"}


@dataclass(frozen=True)
class ClockView:
    kind: str  # first_response | next_response | resolution
    state: str  # running | paused | met | cancelled
    due_at: datetime | None  # while running
    remaining_seconds: int | None  # while paused: what is left of the budget (may be negative)
    at_risk: bool
    breached: bool
    started_at: datetime
    stopped_at: datetime | None

    @property
    def label(self) -> str:
        return LABELS.get(self.kind, self.kind)


@dataclass(frozen=True)
class TicketSla:
    clocks: list[ClockView]  # the latest clock of each kind
    auto_close: list[tuple[str, datetime]]  # (what, when), e.g. ("auto-close", …)

    def lines(self) -> list[str]:
        """Short human lines for `tickets show` and the Discord starter embed."""
        out = []
        for c in self.clocks:
            flag = " · BREACHED" if c.breached else " · at risk" if c.at_risk else ""
            if c.state == ClockState.RUNNING and c.due_at:
                out.append(f"{c.label} due {c.due_at:%Y-%m-%d %H:%M} UTC{flag}")
            elif c.state == ClockState.PAUSED:
                out.append(f"{c.label} paused (waiting on customer), {_span(c.remaining_seconds or 0)} left{flag}")
            elif c.state == ClockState.MET:
                out.append(f"{c.label} {'met late' if c.breached else 'met'}")
        out.extend(f"{what} {when:%Y-%m-%d %H:%M} UTC" for what, when in self.auto_close)
        return out

    def as_json(self) -> dict[str, Any]:
        """Plain data for `tickets show --json` (times as ISO 8601 UTC)."""
        return {
            "clocks": [{**asdict(c), "due_at": _iso(c.due_at), "started_at": _iso(c.started_at),
                        "stopped_at": _iso(c.stopped_at)} for c in self.clocks],
            "auto_close": [{"what": what, "at": _iso(when)} for what, when in self.auto_close],
        }


@dataclass(frozen=True)
class Compliance:
    met: int = 0  # stopped in the period, in time
    breached: int = 0  # ran out of time in the period (answered late or not yet)
    at_risk: int = 0  # running now, past the at-risk share, not yet breached

    @property
    def met_percent(self) -> float | None:
        """Share of the decided clocks (met + breached) that were met; None when there were none."""
        decided = self.met + self.breached
        return round(100 * self.met / decided, 1) if decided else None


@dataclass(frozen=True)
class SlaCompliance:
    start: datetime
    end: datetime
    total: Compliance
    by_kind: dict[str, Compliance] = field(default_factory=dict)


async def ticket_sla(desk: Desk, number: int) -> TicketSla:
    async with desk.db.read() as session:
        ticket_id = await session.scalar(select(Ticket.id).where(Ticket.number == number))
        if ticket_id is None:
            raise NotFound(f"no ticket {desk.format_number(number)}")
        return await ticket_sla_in(session, ticket_id)


async def ticket_sla_in(session: AsyncSession, ticket_id: int) -> TicketSla:
    """The same, inside a caller's session (the Discord projector renders embeds in its own)."""
    rows = await session.scalars(select(SlaClock).where(SlaClock.ticket_id == ticket_id).order_by(SlaClock.id))
    latest: dict[str, SlaClock] = {}
    for clock in rows:
        latest[clock.kind] = clock
    order = [str(k) for k in ClockKind]
    clocks = [_view(latest[k]) for k in order if k in latest and latest[k].state != ClockState.CANCELLED]
    timers = await session.execute(
        select(SlaTimer.action, SlaTimer.due_at)
        .where(SlaTimer.ticket_id == ticket_id, SlaTimer.clock_id.is_(None)).order_by(SlaTimer.due_at))
    return TicketSla(clocks, [(AUTO_CLOSE_LABELS[TimerAction(a)], due) for a, due in timers])


async def sla_compliance(desk: Desk, start: datetime, end: datetime) -> SlaCompliance:
    """Met and breached clocks in [start, end), and the clocks at risk now, per kind and in total."""
    met = and_(SlaClock.state == ClockState.MET, SlaClock.breached_at.is_(None),
               SlaClock.stopped_at >= start, SlaClock.stopped_at < end)
    breached = and_(SlaClock.breached_at >= start, SlaClock.breached_at < end)
    at_risk = and_(SlaClock.state.in_([ClockState.RUNNING, ClockState.PAUSED]),
                   SlaClock.at_risk_at.is_not(None), SlaClock.breached_at.is_(None))
    query = (select(SlaClock.kind, *(func.sum(case((cond, 1), else_=0)) for cond in (met, breached, at_risk)))
             .where(or_(met, breached, at_risk)).group_by(SlaClock.kind))
    async with desk.db.read() as session:
        rows = (await session.execute(query)).all()
    by_kind = {kind: Compliance(int(m), int(b), int(r)) for kind, m, b, r in rows}
    total = Compliance(*(sum(getattr(c, f) for c in by_kind.values()) for f in ("met", "breached", "at_risk")))
    return SlaCompliance(start, end, total, by_kind)


def _view(clock: SlaClock) -> ClockView:
    remaining = clock.budget_seconds - clock.elapsed_seconds if clock.state == ClockState.PAUSED else None
    return ClockView(kind=clock.kind, state=str(clock.state), due_at=clock.due_at, remaining_seconds=remaining,
                     at_risk=clock.at_risk_at is not None, breached=clock.breached_at is not None,
                     started_at=clock.started_at, stopped_at=clock.stopped_at)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _span(seconds: int) -> str:
    sign, seconds = ("-" if seconds < 0 else ""), abs(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{sign}{hours}h{rest // 60:02d}m"
