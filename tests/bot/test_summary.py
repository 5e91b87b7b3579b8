"""The daily report in Discord: /summary for managers, and the scheduled post in the reports channel."""

from __future__ import annotations

from bot.projector import Projector
from bot.settings import BotSettings
from core.event_types import DailyReportReady
from supportbot.config import Config
from supportbot.reporting import report_with_chart
from tests.bot.helpers import said


async def opened(world, subject: str = "Printer on fire") -> int:
    from core.services import ContactRef, MailContent, open_ticket

    change = await open_ticket(world.desk, ContactRef("carol@example.com"), MailContent(text="Help", subject=subject))
    return change.ticket.number


def with_reports(world) -> None:
    config = Config()
    world.bot.reports = lambda day=None: report_with_chart(world.desk, config, day)


async def test_summary_shows_the_days_figures_and_the_chart_to_a_manager(world):
    with_reports(world)
    await opened(world)
    await opened(world, "Second")
    day = world.desk.clock().date()
    world.desk.clock.advance(days=1)
    result = await world.boss.slash(world.lobby, "summary", day=day.isoformat())
    # After a "thinking…" defer, Discord shows the first follow-up in place of the original response.
    message = result.followups[0] if result.followups else result.response
    embed = message.embeds[0]
    fields = {f.name: f.value for f in embed.fields}
    assert embed.title.startswith("Daily summary")
    assert fields["Opened"].startswith("**2**")
    assert fields["Open backlog: 2"] == "open 2"
    assert fields["SLA"] == "SLA not configured"
    assert [a.filename for a in message.attachments] == ["chart.png"]
    assert embed.image.url == "attachment://chart.png"


async def test_without_a_chart_the_summary_sends_no_image_and_says_why(world):
    async def no_chart(day=None):
        report, _ = await report_with_chart(world.desk, Config(), day)
        return report, b""  # what the desk has without the chart extra (matplotlib)

    world.bot.reports = no_chart
    await opened(world)
    day = world.desk.clock().date()
    world.desk.clock.advance(days=1)
    result = await world.boss.slash(world.lobby, "summary", day=day.isoformat())
    message = result.followups[0] if result.followups else result.response
    assert message.attachments == [] and not message.embeds[0].image.url
    assert "install supportbot[chart]" in message.embeds[0].footer.text


async def test_summary_is_refused_to_staff_without_the_manager_role_and_for_a_bad_date(world):
    with_reports(world)
    assert "manager" in said(await world.alice.slash(world.lobby, "summary")).lower()
    assert "not a date" in said(await world.boss.slash(world.lobby, "summary", day="yesterday"))


async def test_the_scheduled_report_is_posted_once_in_the_reports_channel(world):
    reports = world.guild.create_text_channel("reports")
    settings = BotSettings(**{**world.settings.__dict__, "reports_channel_id": reports.id})
    world.bot.settings = settings
    with_reports(world)
    await opened(world)
    day = world.desk.clock().date()
    world.desk.clock.advance(days=1, hours=8)
    async with world.desk.unit_of_work() as uow:
        uow.record(DailyReportReady(day=day.isoformat()), at=world.desk.clock())
    await world.project()
    await Projector(world.bot, world.desk).catch_up()  # a replay posts nothing twice
    await world.env.settle()
    posted = reports.history()
    assert len(posted) == 1
    assert posted[0].embeds[0].title.startswith("Daily summary")
    assert [a.filename for a in posted[0].attachments] == ["chart.png"]
