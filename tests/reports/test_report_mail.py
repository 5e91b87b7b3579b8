"""The daily report mail: queued on schedule, delivered to a real aiosmtpd sink, chart inline by Content-ID."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import func, select

from core.models import OutboxMail
from core.report_view import CHART_CID
from mail_gateway.outbound.sender import OutboxSender
from supportbot.config import Config
from supportbot.reporting import ReportScheduler, report_part
from tests.kit import eventually
from tests.outbound.conftest import relay_to
from tests.reports.conftest import at
from tests.reports.test_report_figures import build_monday


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only: the mail does not depend on the engine, and every report draws a chart.

    The figures and the schedule's claims run on both engines in the other report tests.
    """
    return f"sqlite+aiosqlite:///{tmp_path / 'desk.db'}"


MANAGERS = ["boss@example.test", "lead@example.test"]


def report_config(tmp_path: Path, **reports: object) -> Config:
    return Config.model_validate({
        "desk": {"name": "Acme Support", "data_dir": str(tmp_path / "data")},
        "mail": {"support_addresses": ["support@example.test"]},
        "reports": {"managers": MANAGERS, "send_at": "08:00", "timezone": "UTC", **reports},
    })


async def deliver(desk, sink) -> int:
    return await OutboxSender(desk, relay_to(sink)).deliver_due()


async def test_scheduled_report_arrives_with_text_html_and_inline_chart(desk, clock, sink, tmp_path):
    await build_monday(desk, clock)
    at(clock, 2026, 3, 3, 8, 5)
    assert await ReportScheduler(desk, report_config(tmp_path)).send_due() == [date(2026, 3, 2)]
    assert await deliver(desk, sink) == 1

    [received] = sink.received
    assert sorted(received.rcpt_tos) == MANAGERS
    msg = received.message
    assert msg["Subject"] == "Acme Support: daily report for Mon 2 Mar 2026"
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["Message-ID"] == "<report.daily.2026-03-02@example.test>"
    assert msg.get_content_type() == "multipart/alternative"
    text_part, related = msg.get_payload()
    assert text_part.get_content_type() == "text/plain"
    assert related.get_content_type() == "multipart/related"
    html_part, image = related.get_payload()
    assert html_part.get_content_type() == "text/html"
    assert image.get_content_type() == "image/png"
    assert image["Content-ID"] == f"<{CHART_CID}>"
    assert image.get_payload(decode=True).startswith(b"\x89PNG\r\n\x1a\n")
    html = html_part.get_content()
    assert f'src="cid:{CHART_CID}"' in html
    assert "http://" not in html and "https://" not in html  # nothing to load from outside
    text = text_part.get_content()
    assert "Opened                  2         1    +1        0.1   +1.9" in text
    assert "First response            2      1 h 05 min      1 h 49 min" in text
    assert "SLA not configured" in text
    assert "Monday 2 March 2026" in html and ">2<" in html


async def test_a_restarted_scheduler_does_not_send_the_day_again(desk, clock, sink, tmp_path):
    at(clock, 2026, 3, 3, 8, 5)
    config = report_config(tmp_path)
    assert await ReportScheduler(desk, config).send_due() == [date(2026, 3, 2)]
    clock.advance(hours=3)
    assert await ReportScheduler(desk, config).send_due() == []  # a new process, the same database
    assert await deliver(desk, sink) == 1
    assert len(sink.received) == 1
    # One event for the Discord projector to post the same report in the reports channel.
    from sqlalchemy import select

    from core.models import Event

    async with desk.db.read() as session:
        ready = [e.data for e in await session.scalars(select(Event).where(Event.type == "DailyReportReady"))]
    assert ready == [{"day": "2026-03-02"}]


@pytest.mark.slow
async def test_days_missed_while_down_are_each_mailed_on_return(desk, clock, sink, tmp_path):
    config = report_config(tmp_path)
    at(clock, 2026, 3, 3, 8, 5)
    await ReportScheduler(desk, config).send_due()
    at(clock, 2026, 3, 6, 12)
    assert await ReportScheduler(desk, config).send_due() == [date(2026, 3, 3), date(2026, 3, 4),
                                                               date(2026, 3, 5)]
    assert await deliver(desk, sink) == 4
    subjects = [r.message["Subject"] for r in sink.received]
    assert subjects[-1] == "Acme Support: daily report for Thu 5 Mar 2026"


async def test_a_quiet_day_still_gets_a_short_report_that_says_so(desk, clock, sink, tmp_path):
    at(clock, 2026, 3, 3, 8, 5)
    await ReportScheduler(desk, report_config(tmp_path)).send_due()
    await deliver(desk, sink)
    msg = sink.received[0].message
    text = msg.get_payload()[0].get_content()
    html = msg.get_payload()[1].get_payload()[0].get_content()
    assert "A quiet day: no tickets were opened, reopened, resolved or closed" in text
    assert "A quiet day" in html
    assert "OPEN NOW: 0" in text and "STAFF" not in text and "RESPONSE TIMES" not in text  # short


async def test_a_report_that_fails_to_render_is_retried_on_the_next_pass(desk, clock, sink, tmp_path):
    broken = tmp_path / "templates" / "reports"
    broken.mkdir(parents=True)
    (broken / "daily.txt.j2").write_text("{{ no_such_variable }}")
    config = Config.model_validate({**report_config(tmp_path).model_dump(exclude={"source"}),
                                    "mail": {"support_addresses": ["support@example.test"],
                                             "outbound": {"templates_dir": str(tmp_path / "templates")}}})
    at(clock, 2026, 3, 3, 8, 5)
    assert await ReportScheduler(desk, config).send_due() == []
    async with desk.db.read() as s:
        assert await s.scalar(select(func.count()).select_from(OutboxMail)) == 0
    (broken / "daily.txt.j2").unlink()
    clock.advance(minutes=5)
    assert await ReportScheduler(desk, config).send_due() == [date(2026, 3, 2)]


async def test_run_starts_no_scheduler_without_managers(desk, tmp_path):
    assert report_part(report_config(tmp_path, managers=[]), desk) is None
    assert report_part(report_config(tmp_path, enabled=False), desk) is None
    assert isinstance(report_part(report_config(tmp_path), desk), ReportScheduler)


async def test_the_running_part_queues_the_due_report_at_start_and_stops_promptly(desk, clock, tmp_path):
    import asyncio

    at(clock, 2026, 3, 3, 8, 5)
    part = report_part(report_config(tmp_path), desk)
    assert part is not None
    async def kinds() -> list[str]:
        async with desk.db.read() as s:
            return list(await s.scalars(select(OutboxMail.kind)))

    await part.start()
    try:
        await eventually(kinds)
    finally:
        await asyncio.wait_for(part.stop(), timeout=5)  # asleep until tomorrow 08:00, yet stops at once
    assert await kinds() == ["report"]


async def test_a_discord_only_report_queues_no_mail_but_is_announced_once(desk, clock, tmp_path):
    from sqlalchemy import func, select

    from core.models import Event, OutboxMail
    from supportbot.reporting import report_part

    at(clock, 2026, 3, 3, 8, 5)
    config = report_config(tmp_path, managers=[]).model_copy(
        update={"discord": Config().discord.model_copy(update={"reports_channel_id": 42})})
    scheduler = report_part(config, desk)
    assert scheduler is not None
    assert await scheduler.send_due() == [date(2026, 3, 2)]
    assert await scheduler.send_due() == []
    async with desk.db.read() as session:
        assert await session.scalar(select(func.count()).select_from(OutboxMail)) == 0
        ready = list(await session.scalars(select(Event.data).where(Event.type == "DailyReportReady")))
    assert ready == [{"day": "2026-03-02"}]
    nowhere = report_config(tmp_path, managers=[])
    assert report_part(nowhere, desk) is None
