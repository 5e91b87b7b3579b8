"""Tables of the SLA: per-ticket clocks (targets, pauses, outcomes) and the timers the scheduler fires."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from core.models import Base, BigId, enum_column


class ClockState(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"  # the ticket waits on the customer
    MET = "met"  # the response or resolution happened (breached_at says whether it was late)
    CANCELLED = "cancelled"  # no longer measured: merged, priority without target, resolved unanswered


class TimerAction(StrEnum):
    AT_RISK = "at_risk"
    BREACH = "breach"
    REMIND = "remind"  # pending ticket: remind the customer
    RESOLVE = "resolve"  # pending ticket: still no answer, resolve it
    CLOSE = "close"  # resolved ticket: close it


class SlaClock(Base):
    """One measured promise on one ticket; a new row per cycle (each next response, each reopen).

    Elapsed time is banked at every pause, so `due_at` (set only while running) can be recomputed
    from `running_since`, the budget and what was used before.
    """

    __tablename__ = "sla_clocks"
    __table_args__ = (Index("ix_sla_clocks_ticket_id_kind", "ticket_id", "kind"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"))
    kind: Mapped[str] = mapped_column(String(20))  # core.sla.policy.ClockKind
    state: Mapped[ClockState] = mapped_column(enum_column(ClockState))
    business_hours: Mapped[bool] = mapped_column(Boolean)
    budget_seconds: Mapped[int] = mapped_column(Integer)
    elapsed_seconds: Mapped[int] = mapped_column(Integer, default=0)  # used before running_since
    started_at: Mapped[datetime]
    running_since: Mapped[datetime | None]
    due_at: Mapped[datetime | None]
    at_risk_at: Mapped[datetime | None]  # when the at-risk alert went out
    breached_at: Mapped[datetime | None] = mapped_column(index=True)  # when the budget ran out
    stopped_at: Mapped[datetime | None] = mapped_column(index=True)


class SlaTimer(Base):
    """An armed timer; firing deletes the row in the transaction that records what it did."""

    __tablename__ = "sla_timers"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), index=True)
    clock_id: Mapped[int | None] = mapped_column(ForeignKey("sla_clocks.id"), index=True)
    action: Mapped[TimerAction] = mapped_column(enum_column(TimerAction))
    due_at: Mapped[datetime] = mapped_column(index=True)
    created_at: Mapped[datetime]


__all__ = ["ClockState", "SlaClock", "SlaTimer", "TimerAction"]
