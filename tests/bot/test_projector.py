"""The projector mirrors tickets into the forum: one post per ticket, messages, tags, archive, alerts."""

from __future__ import annotations

import discord
from sqlalchemy import select, update

from bot.format import DESCRIPTION_MAX
from bot.projector import CONSUMER
from core import services
from core.enums import Priority, Status
from core.event_types import MailBounced, OutboundFailed, SlaBreached
from core.inbound import store_raw
from core.intake import quarantine
from core.models import ConsumerCursor, Ticket
from core.services import NewAttachment, StaffRef
from tests.bot.conftest import make_world
from tests.bot.helpers import customer_answer, customer_mail

AGENT = StaffRef("Alice", discord_id=111)


async def thread_of(world, number: int) -> discord.Thread:
    thread = await world.bot.fetch_channel(world.post(number).id)  # archived posts leave the cache
    assert isinstance(thread, discord.Thread)
    return thread


def posted(world) -> list:
    """Every message-creating request the bot made (forum posts and messages)."""
    return [r for r in world.env.http_requests
            if r.method == "POST" and (r.path.endswith("/messages") or r.path.endswith("/threads"))]


async def test_new_ticket_gets_one_forum_post_with_starter_embed_tags_and_buttons(world):
    number = await customer_mail(world.desk)
    await world.project()

    post = world.post(number)
    assert post.name == f"[#{number}] Printer on fire"
    starter, mail = post.history()
    fields = {f.name: f.value for f in starter.embeds[0].fields}
    assert starter.embeds[0].title == f"[#{number}] Printer on fire"
    assert fields["Requester"] == "Carol Customer <carol@example.com>"
    assert (fields["Status"], fields["Priority"], fields["Assignee"]) == ("open", "medium", "unassigned")
    buttons = [c.custom_id for row in starter.components for c in row.children]
    assert buttons == [f"ticket:claim:{number}", f"ticket:reply:{number}", f"ticket:close:{number}"]
    assert sorted(t.name for t in (await thread_of(world, number)).applied_tags) == ["medium", "open"]
    assert mail.embeds[0].description == "It is on fire. Help!"
    assert mail.embeds[0].author.name == "Customer wrote · carol@example.com"


async def test_conversation_appears_in_order_in_the_same_post(world):
    number = await customer_mail(world.desk)
    await services.reply(world.desk, number, AGENT, "Please unplug it.")
    await services.add_note(world.desk, number, AGENT, "Customer sounds calm.")
    await customer_answer(world.desk, number, "Unplugged, thanks.")
    await world.project()

    texts = [m.embeds[0].description for m in world.post(number).history() if m.embeds and m.embeds[0].description]
    authors = [m.embeds[0].author.name for m in world.post(number).history() if m.embeds and m.embeds[0].author]
    assert texts == ["It is on fire. Help!", "Please unplug it.", "Customer sounds calm.", "Unplugged, thanks."]
    assert authors[1:3] == ["Reply sent to the customer · Alice", "Internal note · Alice"]
    assert len(world.forum.threads) == 1


async def test_everyone_mention_in_a_customer_mail_pings_nobody(world):
    number = await customer_mail(world.desk, subject="@everyone look", text="@everyone @here <@&1> wake up")
    await world.project()

    for message in world.post(number).history():
        assert not message.mention_everyone
        assert message.role_mentions == [] and message.mentions == []
    sent = posted(world)
    assert sent and all(r.json.get("allowed_mentions") == {"parse": []} or
                        (r.json.get("message") or {}).get("allowed_mentions") == {"parse": []} for r in sent)


async def test_ten_thousand_character_mail_is_split_within_limits_and_attached_whole(world):
    paragraph = ("word " * 199 + "end.\n\n")  # 1002 characters
    text = (paragraph * 10)[:10_000]
    number = await customer_mail(world.desk, text=text)
    await world.project()

    parts = [m for m in world.post(number).history()[1:] if m.embeds]
    descriptions = [m.embeds[0].description for m in parts]
    assert len(parts) == 3
    assert all(len(d) <= DESCRIPTION_MAX for d in descriptions)
    assert all(len(m.embeds[0]) <= 6000 for m in parts)
    assert "".join(descriptions) == text.strip()
    assert [m.embeds[0].footer.text for m in parts] == [f"#{number} · part {i} of 3" for i in (1, 2, 3)]
    files = [a for m in parts for a in m.attachments]
    assert len(files) == 1 and files[0].filename.startswith("message-") and files[0].filename.endswith(".txt")
    assert (await files[0].read()).decode() == text


async def test_status_priority_and_category_show_as_forum_tags_created_once_never_renamed(world):
    number = await customer_mail(world.desk)
    await world.project()
    forum = world.bot.get_channel(world.forum.id)
    before = {t.name: t.id for t in forum.available_tags}

    await services.set_priority(world.desk, number, Priority.URGENT, AGENT)
    await services.set_category(world.desk, number, "billing", AGENT)
    await services.set_status(world.desk, number, Status.IN_PROGRESS, AGENT)
    await world.project()

    forum = world.bot.get_channel(world.forum.id)
    after = {t.name: t.id for t in forum.available_tags}
    assert {k: after[k] for k in before} == before  # existing tags kept their ids and names
    assert sorted(t.name for t in (await thread_of(world, number)).applied_tags) == ["billing", "in progress", "urgent"]
    lines = [m.content for m in world.post(number).history() if m.content]
    assert "Priority: medium → **urgent** by Alice" in lines
    fields = {f.name: f.value for f in world.post(number).history()[0].embeds[0].fields}
    assert (fields["Status"], fields["Priority"], fields["Category"]) == ("in progress", "urgent", "billing")


async def test_closed_ticket_post_is_archived_and_locked_and_reopened_when_the_customer_writes(world):
    number = await customer_mail(world.desk)
    await services.set_status(world.desk, number, Status.CLOSED, AGENT)
    await world.project()
    thread = (await thread_of(world, number))
    assert thread.archived and thread.locked
    starter = world.post(number).history()[0]
    assert [c.custom_id for row in starter.components for c in row.children][-1] == f"ticket:reopen:{number}"

    await customer_answer(world.desk, number, "It is burning again")
    await world.project()
    thread = (await thread_of(world, number))
    assert not thread.archived and not thread.locked
    assert world.post(number).history()[-1].embeds[0].description == "It is burning again"


async def test_failed_outbound_mail_bounces_and_quarantined_mail_are_alerts(world):
    number = await customer_mail(world.desk)
    async with world.desk.unit_of_work() as uow:
        tid = await uow.session.scalar(select(Ticket.id).where(Ticket.number == number))
        uow.record(OutboundFailed(ticket_id=tid, outbox_id=1, kind="reply", error="550 mailbox unavailable",
                                  attempts=5), at=world.desk.clock())
        uow.record(MailBounced(ticket_id=tid, failed=[{"status": "5.1.1", "diagnostic": "no such user"}]),
                   at=world.desk.clock())
    stored = await store_raw(world.desk, b"Subject: x\r\n\r\nbroken", source="smtp")
    await quarantine(world.desk, stored.id, "unparseable MIME")
    await world.project()

    alerts = [m.content for m in world.alerts.history()]
    assert alerts == [f"Outbound mail for #{number} failed after 5 attempt(s) (reply): 550 mailbox unavailable",
                      f"Mail for #{number} bounced: 5.1.1 no such user",
                      f"Incoming mail {stored.id} was quarantined: unparseable MIME (kept, and can be reprocessed)"]
    assert any("550 mailbox unavailable" in (m.content or "") for m in world.post(number).history())


async def test_attachments_are_uploaded_within_the_limit_and_listed_when_too_large(world):
    big = b"x" * (world.bot.get_guild(world.guild.id).filesize_limit + 1)
    number = await customer_mail(world.desk, attachments=(
        NewAttachment("photo.png", "image/png", b"\x89PNG small"),
        NewAttachment("huge.iso", "application/octet-stream", big),
        NewAttachment("video.mov", "video/quicktime", b"", held_back=True, size=90_000_000),
    ))
    await world.project()

    history = world.post(number).history()
    uploaded = [a.filename for m in history for a in m.attachments]
    assert uploaded == ["photo.png"]
    listing = history[-1].content
    assert "huge.iso" in listing and "upload limit" in listing
    assert "video.mov" in listing and "held back" in listing


async def test_tickets_opened_while_the_bot_was_offline_appear_once_after_start(bot_desk):
    first = await customer_mail(bot_desk, subject="First")
    second = await customer_mail(bot_desk, subject="Second")
    await customer_answer(bot_desk, first, "anyone there?")
    world = await make_world(bot_desk)
    try:
        await world.project()
        assert sorted(t.name for t in world.forum.threads) == [f"[#{first}] First", f"[#{second}] Second"]
        assert [m.embeds[0].description for m in world.post(first).history()[1:]] == [
            "It is on fire. Help!", "anyone there?"]
        await world.restart()
        assert await world.project() == 0
        assert len(world.forum.threads) == 2
    finally:
        await world.env.shutdown()


async def test_replay_from_the_start_after_a_crash_posts_nothing_twice(desk):
    number = await customer_mail(desk)
    await services.reply(desk, number, AGENT, "On it.")
    await services.set_status(desk, number, Status.CLOSED, AGENT)
    world = await make_world(desk)
    try:
        await world.project()
        sent_before = len(posted(world))
        history_before = [m.id for m in world.post(number).history()]
        async with desk.db.transaction() as session:  # as if the cursor had never been saved
            await session.execute(update(ConsumerCursor).where(ConsumerCursor.name == CONSUMER).values(position=0))
        await world.restart()
        assert await world.project() > 0
        assert len(posted(world)) == sent_before
        assert [m.id for m in world.post(number).history()] == history_before
        assert (await thread_of(world, number)).archived
    finally:
        await world.env.shutdown()


async def test_sla_breach_is_posted_and_pings_the_assignee_only(world):
    number = await customer_mail(world.desk, subject="@everyone urgent")
    async with world.desk.unit_of_work() as uow:
        tid = await uow.session.scalar(select(Ticket.id).where(Ticket.number == number))
        uow.record(SlaBreached(ticket_id=tid, ticket=number, ref=f"#{number}", subject="@everyone urgent",
                               clock="first_response", due_at="2026-03-02T10:00:00+00:00",
                               assignee_discord_id=world.alice.id, priority_raised_to="high"), at=world.desk.clock())
    await world.project()

    expected = f"🚨 #{number} first response target missed (due 2026-03-02 10:00 UTC); priority raised to high " \
               f"<@{world.alice.id}>"
    line = world.post(number).history()[-1]
    assert line.content == expected
    assert [m.id for m in line.mentions] == [world.alice.id] and not line.mention_everyone
    alert = world.alerts.history()[-1]
    assert alert.content == f"{expected} · @everyone urgent" and not alert.mention_everyone


async def test_starter_embed_shows_the_sla_due_times(world):
    from datetime import timedelta

    from core.sla_models import ClockState, SlaClock

    number = await customer_mail(world.desk)
    now = world.desk.clock()
    async with world.desk.db.transaction() as session:
        tid = await session.scalar(select(Ticket.id).where(Ticket.number == number))
        session.add(SlaClock(ticket_id=tid, kind="first_response", state=ClockState.RUNNING, business_hours=False,
                             budget_seconds=3600, elapsed_seconds=0, started_at=now, running_since=now,
                             due_at=now + timedelta(hours=1)))
    await world.project()
    fields = {f.name: f.value for f in world.post(number).history()[0].embeds[0].fields}
    assert fields["Due"] == "first response due 2026-03-02 10:00 UTC"


async def test_dangerous_attachments_are_listed_never_uploaded(world):
    mz = b"MZ\x90\x00" + bytes(12 * 1024)
    number = await customer_mail(world.desk, attachments=(
        NewAttachment("setup.exe", "application/octet-stream", mz),
        NewAttachment("holiday.jpg", "image/jpeg", mz),  # a renamed executable
        NewAttachment("budget.docm", "application/vnd.ms-word.document.macroEnabled.12", b"PK\x03\x04"),
        NewAttachment("manual.pdf", "application/pdf", b"%PDF-1.4 harmless"),
    ))
    await world.project()

    history = world.post(number).history()
    assert [a.filename for m in history for a in m.attachments] == ["manual.pdf"]
    listing = history[-1].content
    assert "• setup.exe (12.0 KiB): kept on the desk, not shown here: executable" in listing
    assert "• holiday.jpg (12.0 KiB): kept on the desk, not shown here: executable" in listing
    assert "• budget.docm (4 B): kept on the desk, not shown here: macro-enabled document" in listing
    assert "manual.pdf" not in listing


async def test_a_dangerous_file_too_large_to_upload_says_both(world):
    big = b"MZ" + b"x" * world.bot.get_guild(world.guild.id).filesize_limit
    number = await customer_mail(world.desk, attachments=(NewAttachment("tool.bin", "application/octet-stream", big),))
    await world.project()
    listing = world.post(number).history()[-1].content
    assert "tool.bin" in listing and "upload limit" in listing and listing.endswith("; dangerous: executable")
