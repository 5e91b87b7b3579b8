"""The daily report delivered: built, rendered to text and HTML, mailed with its chart inline, on schedule."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from zoneinfo import ZoneInfo

from core.background import Background, nap
from core.desk import Desk
from core.event_types import DailyReportReady
from core.outbox import OutgoingMail, enqueue
from core.report_schedule import ReportSchedule, claim, mark_failed, record_sent, unsent_days
from core.report_view import CHART_CID, ViewOptions, report_context
from core.reports import DailyReport, daily_report, previous_local_day
from supportbot.config import Config
from supportbot.templating import template_environment

log = logging.getLogger(__name__)

KIND = "daily"
MAX_SLEEP_SECONDS = 300.0  # re-check at least this often: clock jumps, other processes' sends


@dataclass(frozen=True)
class RenderedReport:
    report: DailyReport
    subject: str
    text: str
    html: str
    chart_png: bytes


def report_timezone(config: Config) -> str:
    return config.reports.timezone or config.desk.timezone


def report_schedule(config: Config) -> ReportSchedule:
    hours, minutes = (int(p) for p in config.reports.send_at.split(":"))
    return ReportSchedule(send_at=time(hours, minutes), timezone=report_timezone(config),
                          catch_up_days=config.reports.catch_up_days, kind=KIND)


async def report_with_chart(desk: Desk, config: Config, day: date | None = None) -> tuple[DailyReport, bytes]:
    """The figures and the trend chart (PNG bytes): what the Discord embed and /summary need.

    `day` defaults to the last complete day in the report time zone. The chart is b"" (and the
    log says why) when matplotlib, the `chart` extra, is not installed.
    """
    timezone = report_timezone(config)
    day = day or previous_local_day(desk.clock(), ZoneInfo(timezone))
    report = await daily_report(desk, day, timezone, trend_days=config.reports.trend_days,
                                oldest=config.reports.oldest_tickets,
                                sla_configured=config.sla.settings(config.desk.timezone).enabled)
    try:
        from supportbot.report_chart import trend_chart_png  # matplotlib: imported only when drawing
    except ModuleNotFoundError as e:
        if not (e.name or "").startswith("matplotlib"):
            raise
        log.warning("daily report for %s goes out without its chart: matplotlib is not installed "
                    "(pip install 'supportbot[chart]')", day)
        return report, b""
    title = f"Tickets per day, and open tickets at each day's end ({len(report.trend)} days)"
    chart = await asyncio.to_thread(trend_chart_png, report.trend, title)  # CPU-bound: off the loop
    return report, chart


async def build_daily(desk: Desk, config: Config, day: date | None = None) -> RenderedReport:
    report, chart = await report_with_chart(desk, config, day)
    context = report_context(report, ViewOptions(desk_name=config.desk.name, ticket_prefix=config.desk.ticket_prefix,
                                                 chart_cid=CHART_CID if chart else ""))
    env = template_environment(config.mail.outbound.templates_dir)
    return RenderedReport(report, context["subject"], env.get_template("reports/daily.txt.j2").render(context),
                          env.get_template("reports/daily.html.j2").render(context), chart)


def compose_report_mail(rendered: RenderedReport, *, sender: Address, to: Sequence[str], message_id: str,
                        sent_at: datetime) -> bytes:
    """multipart/alternative: text, then multipart/related (HTML + the chart it shows by Content-ID)."""
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    msg["Subject"] = rendered.subject
    msg["Date"] = format_datetime(sent_at)
    msg["Message-ID"] = message_id
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies back to the desk
    msg["X-Auto-Response-Suppress"] = "All"
    msg.set_content(rendered.text, subtype="plain", cte="quoted-printable")
    msg.add_alternative(rendered.html, subtype="html", cte="quoted-printable")
    if rendered.chart_png:  # b"": no chart drawn (matplotlib not installed)
        html_part = msg.get_body(preferencelist=("html",))
        assert isinstance(html_part, EmailMessage)
        html_part.add_related(rendered.chart_png, maintype="image", subtype="png", cid=f"<{CHART_CID}>",
                              filename="trend.png", disposition="inline")
    return msg.as_bytes(policy=policy.SMTP)


async def queue_report(desk: Desk, config: Config, rendered: RenderedReport, *, scheduled: bool) -> int | None:
    """Queue the mail in the outbox and record the day as sent, in one transaction; returns the outbox id
    (None when no manager gets it by mail and it goes to Discord only).

    A scheduled report gets a Message-ID fixed by its day, so the outbox's unique index refuses a
    second copy even if two processes got this far; a manual one gets a fresh id.
    """
    support = config.mail.support_addresses[0]
    domain = support.partition("@")[2] or "localhost"
    unique = "" if scheduled else f".{secrets.token_hex(6)}"
    message_id = f"<report.{KIND}.{rendered.report.day.isoformat()}{unique}@{domain}>"
    now = desk.clock()
    sender = Address(display_name=config.mail.from_name or config.desk.name, addr_spec=support)
    content = compose_report_mail(rendered, sender=sender, to=config.reports.managers, message_id=message_id,
                                  sent_at=now)
    async with desk.unit_of_work() as uow:
        row_id = None
        if config.reports.managers:  # a team may want the report in Discord only
            row = await enqueue(uow, OutgoingMail(kind="report", rfc822_message_id=message_id,
                                                      mail_from=support, recipients=list(config.reports.managers),
                                                      content=content, automatic=True), now)
            row_id = row.id
        await record_sent(uow.session, KIND, rendered.report.day, now)
        if scheduled:  # the Discord projector posts the same report in the reports channel
            uow.record(DailyReportReady(day=rendered.report.day.isoformat()), at=now)
        return row_id


class ReportScheduler:
    """`supportbot run` part: at the configured local time, queue yesterday's report (and any missed)."""

    name = "report-scheduler"

    def __init__(self, desk: Desk, config: Config) -> None:
        self.desk = desk
        self.config = config
        self.schedule = report_schedule(config)
        self._background = Background()
        self._stop = self._background.stopping

    async def send_due(self) -> list[date]:
        """One pass: every due, unsent day, oldest first. Returns the days queued."""
        queued = []
        for day in await unsent_days(self.desk, self.schedule):
            if not await claim(self.desk, KIND, day):
                continue  # sent meanwhile, or another process is on it
            try:
                rendered = await build_daily(self.desk, self.config, day)
                outbox_id = await queue_report(self.desk, self.config, rendered, scheduled=True)
            except Exception as e:
                log.exception("daily report for %s failed; trying again later", day)
                await mark_failed(self.desk, KIND, day, f"{type(e).__name__}: {e}")
                continue
            log.info("daily report for %s ready (outbox mail %s for %d manager(s); Discord reports channel: %s)",
                     day, outbox_id, len(self.config.reports.managers),
                     "yes" if self.config.discord.reports_channel_id else "not configured")
            queued.append(day)
        return queued

    async def start(self) -> None:
        log.info("daily report at %s %s to %d manager(s)", self.config.reports.send_at, self.schedule.timezone,
                 len(self.config.reports.managers))
        self._background.start(self._run(), self.name)

    async def stop(self) -> None:
        await self._background.stop()

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                await self.send_due()
            except Exception:
                log.exception("report scheduler pass failed; trying again in %.0fs", MAX_SLEEP_SECONDS)
            now = self.desk.clock()
            wait = (self.schedule.next_due(now) - now).total_seconds()
            await nap(min(max(wait, 1.0), MAX_SLEEP_SECONDS), self._stop)


def report_part(config: Config, desk: Desk) -> ReportScheduler | None:
    """Part factory for `supportbot run`: None (and why, once) when reports are off."""
    reports = config.reports
    if not reports.enabled:
        log.info("daily report disabled ([reports] enabled = false)")
        return None
    if not reports.managers and not config.discord.reports_channel_id:
        log.info("daily report not sent: neither [reports] managers nor [discord] reports_channel_id is set")
        return None
    return ReportScheduler(desk, config)


__all__ = ["RenderedReport", "ReportScheduler", "build_daily", "compose_report_mail", "queue_report",
           "report_part", "report_schedule", "report_timezone", "report_with_chart"]
