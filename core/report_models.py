"""Table of report runs: which day's report was sent, so it goes out once even across restarts."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Date, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from core.models import Base


class ReportRun(Base):
    """One row per report kind and local day: claimed while sending, then sent (or failed, to retry)."""

    __tablename__ = "report_runs"
    kind: Mapped[str] = mapped_column(String(40), primary_key=True)  # "daily"
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    status: Mapped[str] = mapped_column(String(20))  # sending | sent | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claimed_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)


__all__ = ["ReportDay", "ReportRun"]


class ReportDay(Base):
    """Per-day figures of a finished local day, kept so a report reads 14 days without rescanning them.

    Events are only ever appended with the time they happen, so once a day is over its counts
    cannot change; the trend then only scans the days not stored yet.
    """

    __tablename__ = "report_days"
    timezone: Mapped[str] = mapped_column(String(64), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    opened: Mapped[int] = mapped_column(Integer)
    reopened: Mapped[int] = mapped_column(Integer)
    resolved: Mapped[int] = mapped_column(Integer)
    closed: Mapped[int] = mapped_column(Integer)
    backlog_delta: Mapped[int] = mapped_column(Integer)  # openings and reopenings minus resolutions
    computed_at: Mapped[datetime]
