"""The daily report as template context: every figure formatted once, for the text and HTML mail alike."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from core.enums import Priority
from core.report_sql import DurationStats
from core.reports import (
    Backlog,
    DailyReport,
    DayAverages,
    DayCounts,
    HourCount,
    MailCounts,
    OpenTicket,
    StaffLoad,
    TrendDay,
)

CHART_CID = "daily-chart@supportbot"  # Content-ID of the inline chart, without the angle brackets
ACTIVITY = (("opened", "Opened"), ("reopened", "Reopened"), ("resolved", "Resolved"), ("closed", "Closed"))
STATUS_LABELS = {"open": "Open", "in_progress": "In progress", "pending": "Waiting on customer"}
PRIORITY_ORDER = tuple(p.value for p in reversed(Priority))  # urgent first


@dataclass(frozen=True)
class ViewOptions:
    desk_name: str = "Support"
    ticket_prefix: str = "#"
    chart_cid: str = CHART_CID


def report_context(report: DailyReport, options: ViewOptions = ViewOptions()) -> dict[str, Any]:
    """Everything the templates show, as strings; `report` holds the view, `chart_cid` the image."""
    day = f"{report.day:%A} {report.day.day} {report.day:%B %Y}"
    view = {
        "day": day,
        "timezone": report.timezone,
        "quiet": report.quiet,
        "activity": [_activity_row(label, getattr(report.today, key), getattr(report.previous, key),
                                   getattr(report.week_average, key)) for key, label in ACTIVITY],
        "staff_replies": str(report.staff_replies),
        "times": [_times_row("First response", report.first_response),
                  _times_row("Resolution", report.resolution)],
        "backlog_total": str(report.backlog.total),
        "backlog": _backlog_groups(report.backlog),
        "oldest": [_old_ticket(t, options.ticket_prefix) for t in report.oldest],
        "staff": [_staff_row(s) for s in report.staff],
        "busiest_hours": [{"label": h.label, "count": str(h.count)} for h in report.busiest_hours()],
        "mail": _mail_rows(report.mail),
        "sla": None if report.sla is None else {"breached": str(report.sla.breached),
                                                  "at_risk": str(report.sla.at_risk)},
        "sla_note": report.sla_note,
        "chart_alt": _chart_alt(report.trend),
        "generated_at": report.generated_at.strftime("%Y-%m-%d %H:%M UTC"),
    }
    subject = f"{options.desk_name}: daily report for {report.day:%a} {report.day.day} {report.day:%b %Y}"
    return {"desk_name": options.desk_name, "subject": subject, "report": view, "chart_cid": options.chart_cid}


def duration(seconds: float | None) -> str:
    """Short and human: 45 s, 12 min, 3 h 05 min, 2 d 4 h."""
    if seconds is None:
        return "–"
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def signed(value: float, decimals: int = 0) -> str:
    if abs(value) < 0.5 * 10 ** -decimals:
        return "±0"
    return f"{'+' if value > 0 else '−'}{abs(value):.{decimals}f}"


def _activity_row(label: str, today: int, previous: int, average: float) -> dict[str, str]:
    return {"label": label, "today": str(today), "previous": str(previous), "vs_previous": signed(today - previous),
            "average": f"{average:.1f}", "vs_average": signed(today - average, 1)}


def _times_row(label: str, stats: DurationStats) -> dict[str, str]:
    return {"label": label, "count": str(stats.count), "median": duration(stats.median_seconds),
            "p90": duration(stats.p90_seconds)}


def _backlog_groups(backlog: Backlog) -> list[dict[str, Any]]:
    def rows(counts: dict[str, int], names: dict[str, str] | None = None,
             order: tuple[str, ...] = ()) -> list[dict[str, str]]:
        rank = {k: i for i, k in enumerate(order)}  # a natural order (status, priority) beats size
        ordered = sorted(counts.items(), key=lambda kv: (rank.get(kv[0], len(rank)), -kv[1], kv[0]))
        return [{"label": (names or {}).get(k, k or "none").replace("_", " "), "count": str(v)} for k, v in ordered]

    return [{"title": "By status", "rows": rows(backlog.by_status, STATUS_LABELS, tuple(STATUS_LABELS))},
            {"title": "By priority", "rows": rows(backlog.by_priority, order=PRIORITY_ORDER)},
            {"title": "By category", "rows": rows(backlog.by_category, {"": "(none)"})}]


def _old_ticket(t: OpenTicket, prefix: str) -> dict[str, str]:
    return {"ref": f"{prefix}{t.number}", "subject": t.subject[:70], "status": STATUS_LABELS.get(t.status, t.status),
            "priority": t.priority, "assignee": t.assignee or "unassigned", "age": duration(t.age_seconds)}


def _staff_row(s: StaffLoad) -> dict[str, str]:
    return {"name": s.name[:40], "assigned": str(s.assigned), "replied": str(s.replied),
            "resolved": str(s.resolved), "open_now": str(s.open_now)}


def _mail_rows(mail: MailCounts) -> list[dict[str, str]]:
    return [{"label": "Machine mail (auto-replies, bounces)", "value": str(mail.machine)},
            {"label": "Quarantined (could not be processed)", "value": str(mail.quarantined)},
            {"label": "Held (rate limit, blocked senders)", "value": str(mail.held)},
            {"label": "Quarantined, still waiting (all days)", "value": str(mail.quarantined_waiting)}]


def _chart_alt(trend: list[TrendDay]) -> str:
    if not trend:
        return "No trend data"
    first, last = trend[0], trend[-1]
    return (f"Tickets opened and resolved per day, {first.day.day} {first.day:%b} to {last.day.day} {last.day:%b}; "
            f"open tickets went from {first.backlog} to {last.backlog}")


def sample_report(day: date = date(2026, 3, 2)) -> DailyReport:
    """A plausible report with every section filled, for `supportbot check` and the look test."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    trend = [TrendDay(day - timedelta(days=13 - i), DayCounts(opened=8 + (i * 7) % 13, resolved=6 + (i * 5) % 11,
                                                              reopened=i % 3, closed=4 + i % 4), 40 + i * 2)
             for i in range(14)]
    return DailyReport(
        day=day, timezone="Europe/Paris", start=start, end=start + timedelta(days=1),
        generated_at=start + timedelta(days=1, hours=7), today=trend[-1].counts, previous=trend[-2].counts,
        week_average=DayAverages(11.3, 1.0, 9.6, 5.4), staff_replies=37,
        backlog=Backlog(66, {"open": 30, "pending": 25, "in_progress": 11}, {"medium": 40, "high": 20, "urgent": 6},
                        {"technical": 31, "billing": 20, "": 15}),
        oldest=[OpenTicket(1001 + i, s, st, p, a, start - timedelta(days=9 - i), (9 - i) * 86400.0 + 25200)
                for i, (s, st, p, a) in enumerate([
                    ("Printer on fire", "in_progress", "urgent", "Sam Agent"),
                    ("Invoice shows the wrong VAT number for March", "pending", "medium", None),
                    ("Cannot log in after password reset", "open", "high", "Kim Lead")])],
        first_response=DurationStats(18, 2520.0, 13800.0), resolution=DurationStats(12, 97200.0, 302400.0),
        staff=[StaffLoad("Sam Agent", 4, 21, 7, 12), StaffLoad("Kim Lead", 3, 16, 5, 9)],
        hours=[HourCount(f"{h:02d}:00", start + timedelta(hours=h), c)
               for h, c in enumerate([0] * 8 + [9, 14, 6, 4, 3, 7, 5, 3, 2, 1] + [0] * 6)],
        mail=MailCounts(machine=5, quarantined=1, held=2, quarantined_waiting=3), trend=trend,
    )


def sample_report_context() -> dict[str, Any]:
    return report_context(sample_report(), ViewOptions(desk_name="Example Support"))


__all__ = ["CHART_CID", "ViewOptions", "duration", "report_context", "sample_report", "sample_report_context", "signed"]
