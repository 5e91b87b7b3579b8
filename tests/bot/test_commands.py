"""Slash commands staff use on a ticket: inside its post the ticket is implied, elsewhere it is named."""

from __future__ import annotations

from sqlalchemy import select

from core import services
from core.enums import Direction
from core.models import AuditEntry, Message, Staff
from core.queries import ticket_detail
from tests.bot.helpers import customer_mail, said


async def opened(world, subject: str = "Printer on fire") -> int:
    number = await customer_mail(world.desk, subject=subject)
    await world.project()
    return number


async def messages(world, number: int, direction: Direction) -> list[str]:
    return [m.text for m in (await ticket_detail(world.desk, number)).messages if m.direction == direction]


async def test_reply_inside_the_post_goes_to_the_customer_and_shows_in_the_post(world):
    number = await opened(world)
    result = await world.alice.slash(world.post(number), "reply", text="Please unplug it.")

    assert result.ephemeral
    assert said(result) == f"Reply to #{number} queued for mail to carol@example.com."
    assert await messages(world, number, Direction.OUTBOUND) == ["Please unplug it."]
    await world.project()
    last = world.post(number).history()[-1 - 1]  # the reply, then the status line
    assert last.embeds[0].description == "Please unplug it."
    assert (await ticket_detail(world.desk, number)).status == "pending"


async def test_reply_without_text_opens_a_modal_and_sends_only_on_submit(world):
    number = await opened(world)
    shown = await world.alice.slash(world.post(number), "reply")
    assert shown.modal is not None
    assert await messages(world, number, Direction.OUTBOUND) == []

    long_text = "Line of a long answer.\n" * 150
    result = await world.alice.submit_modal(shown, {"text": long_text})
    assert said(result).startswith(f"Reply to #{number} queued")
    assert await messages(world, number, Direction.OUTBOUND) == [long_text.strip()]


async def test_reply_with_attachment_and_status_elsewhere_names_the_ticket(world):
    number = await opened(world)
    result = await world.alice.slash(world.lobby, "reply", text="Manual attached.", ticket=number,
                                     status="resolved", attachment=("manual.pdf", b"%PDF-1.4 tiny"))
    assert said(result).startswith(f"Reply to #{number} queued")
    detail = await ticket_detail(world.desk, number)
    reply = next(m for m in detail.messages if m.direction == "outbound")
    assert [a.filename for a in reply.attachments] == ["manual.pdf"]
    assert await world.desk.files.get(reply.attachments[0].sha256) == b"%PDF-1.4 tiny"
    assert detail.status == "resolved"


async def test_commands_outside_a_post_without_a_ticket_say_how_to_name_one(world):
    result = await world.alice.slash(world.lobby, "claim")
    assert result.ephemeral
    assert said(result) == "Run this inside a ticket's post, or name the ticket with the `ticket` option."


async def test_unknown_ticket_number_is_a_clear_message(world):
    result = await world.alice.slash(world.lobby, "close", ticket=99999)
    assert result.ephemeral and said(result) == "no ticket number 99999"


async def test_ticket_option_autocompletes_by_number_and_words(world):
    first = await opened(world, "Invoice missing")
    second = await opened(world, "Password reset")
    by_number = await world.alice.autocomplete(world.lobby, "show", "ticket", str(second))
    by_words = await world.alice.autocomplete(world.lobby, "show", "ticket", "invoice")
    assert [c["value"] for c in by_number] == [second]
    assert [c["name"] for c in by_words] == [f"#{first} Invoice missing"]
    assert await world.eve.autocomplete(world.lobby, "show", "ticket", "") == []


async def test_note_stays_internal(world):
    number = await opened(world)
    result = await world.alice.slash(world.post(number), "note", text="VIP customer")
    assert said(result) == f"Note added to #{number}."
    assert await messages(world, number, Direction.NOTE) == ["VIP customer"]
    assert await messages(world, number, Direction.OUTBOUND) == []


async def test_claim_assign_and_unassign(world):
    number = await opened(world)
    post = world.post(number)
    assert said(await world.alice.slash(post, "claim")) == f"You now own #{number}."
    assert (await ticket_detail(world.desk, number)).assignee == "alice"

    refused = await world.boss.slash(post, "claim")
    assert said(refused) == f"#{number} is already assigned to alice"
    assert said(await world.alice.slash(post, "assign", member=world.boss)) == f"#{number} is assigned to boss."
    assert (await ticket_detail(world.desk, number)).assignee == "boss"

    not_staff = await world.alice.slash(post, "assign", member=world.eve)
    assert said(not_staff) == "eve does not have the staff role, so cannot take tickets."
    assert said(await world.alice.slash(post, "unassign")) == f"#{number} is unassigned."
    assert (await ticket_detail(world.desk, number)).assignee is None


async def test_status_priority_category_and_tags(world):
    number = await opened(world)
    post = world.post(number)
    await world.alice.slash(post, "status", status="in_progress")
    await world.alice.slash(post, "priority", priority="high")
    await world.alice.slash(post, "category", category="billing")
    tagged = await world.alice.slash(post, "tag", add="vip, refund", remove="none")
    assert said(tagged) == f"#{number} tags: refund, vip."
    bad = await world.alice.slash(post, "category", category="astrology")
    assert "unknown category 'astrology'" in said(bad)

    detail = await ticket_detail(world.desk, number)
    assert (detail.status, detail.priority, detail.category, detail.tags) == (
        "in_progress", "high", "billing", ["refund", "vip"])
    choices = await world.alice.autocomplete(post, "category", "category", "bil")
    assert [c["value"] for c in choices] == ["billing"]


async def test_close_and_reopen(world):
    number = await opened(world)
    post = world.post(number)
    assert said(await world.alice.slash(post, "close")) == f"#{number} is closed."
    assert (await ticket_detail(world.desk, number)).status == "closed"
    await world.project()
    assert said(await world.alice.slash(world.lobby, "reopen", ticket=number)) == f"#{number} is open again."
    assert (await ticket_detail(world.desk, number)).status == "open"


async def test_merge_moves_the_conversation_into_the_other_ticket(world):
    keep = await opened(world, "Printer on fire")
    duplicate = await opened(world, "Printer STILL on fire")
    result = await world.alice.slash(world.post(duplicate), "merge", into=keep)
    assert said(result) == f"#{duplicate} is merged into #{keep}."
    assert len([m for m in (await ticket_detail(world.desk, keep)).messages]) == 2
    await world.project()
    assert f"#{duplicate} merged into **#{keep}** by alice" in [m.content for m in world.post(keep).history()]


async def test_show_list_and_search(world):
    numbers = [await opened(world, f"Problem number {i}") for i in range(5)]
    shown = await world.alice.slash(world.post(numbers[0]), "show")
    assert shown.ephemeral and shown.response.embeds[0].title == f"[#{numbers[0]}] Problem number 0"

    listed = await world.alice.slash(world.lobby, "list")
    first_page = listed.response.embeds[0].description
    assert first_page.count("**#") == 3 and f"<#{world.post(numbers[4]).id}>" in first_page
    page_two = await world.alice.click(listed.response.message, label="Next")
    second_page = page_two.response.embeds[0].description
    assert second_page.count("**#") == 2 and f"**#{numbers[0]}**" in second_page

    found = await world.alice.slash(world.lobby, "search", words="number 3")
    assert f"**#{numbers[3]}**" in found.response.embeds[0].description
    assert found.response.embeds[0].description.count("**#") == 1


async def test_list_filters_by_assignee(world):
    mine = await opened(world, "Mine")
    await opened(world, "Not mine")
    await world.alice.slash(world.post(mine), "claim")
    listed = await world.alice.slash(world.lobby, "list", assignee=world.alice)
    assert listed.response.embeds[0].description.count("**#") == 1
    assert f"**#{mine}**" in listed.response.embeds[0].description


async def test_snippets_are_managed_by_managers_and_used_through_the_reply_editor(world):
    number = await opened(world)
    added = await world.boss.slash(world.lobby, "snippet add", name="thanks",
                                   text="Hello {customer_name}, about {ticket}: fixed.")
    assert said(added) == "Snippet `thanks` created."
    editor = await world.boss.slash(world.lobby, "snippet edit", name="thanks")
    await world.boss.submit_modal(editor, {"body": "Hi {customer_name}, {ticket} is fixed."})
    assert (await services.get_snippet(world.desk, "thanks")).body == "Hi {customer_name}, {ticket} is fixed."

    shown = await world.alice.slash(world.post(number), "snippet use", name="thanks")
    text_input = shown.modal["components"][0]["components"][0]
    assert text_input["value"] == f"Hi Carol Customer, #{number} is fixed."
    assert await messages(world, number, Direction.OUTBOUND) == []
    await world.alice.submit_modal(shown, {"text": text_input["value"]})
    assert await messages(world, number, Direction.OUTBOUND) == [f"Hi Carol Customer, #{number} is fixed."]

    assert "`thanks`: Hi {customer_name}" in said(await world.alice.slash(world.lobby, "snippet list"))
    assert said(await world.boss.slash(world.lobby, "snippet remove", name="thanks")) == "Snippet `thanks` removed."
    assert await services.list_snippets(world.desk) == []


async def test_block_and_unblock_the_requester(world):
    number = await opened(world)
    assert said(await world.boss.slash(world.post(number), "block", reason="spam")) == "carol@example.com is blocked."
    assert await services.is_blocked(world.desk, "carol@example.com")
    assert said(await world.boss.slash(world.lobby, "unblock", email="carol@example.com")) == \
        "carol@example.com is no longer blocked."
    assert not await services.is_blocked(world.desk, "carol@example.com")


async def test_stats_counts_tickets(world):
    first = await opened(world)
    await opened(world, "Second")
    await world.alice.slash(world.post(first), "reply", text="Done.", status="closed")
    result = await world.boss.slash(world.lobby, "stats")
    fields = {f.name: f.value for f in result.response.embeds[0].fields}
    assert fields["Tickets by status"] == "closed 1, open 1"
    assert fields["Active and unassigned"] == "1"
    assert fields["Opened (24 h / 7 days)"] == "2 / 2"
    assert fields["Mean first response (7 days)"] == "0 min"
    assert fields["SLA (7 days)"] == "no SLA clocks in this period"


async def test_every_staff_action_is_audited_with_the_discord_member(world):
    number = await opened(world)
    post = world.post(number)
    await world.alice.slash(post, "claim")
    await world.alice.slash(post, "priority", priority="urgent")
    await world.alice.slash(post, "reply", text="On it")
    async with world.desk.db.read() as session:
        rows = (await session.execute(select(AuditEntry.action, Staff.discord_id)
                                      .join(Staff, Staff.id == AuditEntry.staff_id).order_by(AuditEntry.id))).all()
    assert [a for a, _ in rows] == ["Assigned", "PriorityChanged", "StaffReplied", "StatusChanged"]
    assert {d for _, d in rows} == {world.alice.id}


async def test_plain_chat_in_a_post_is_never_sent_to_the_customer(world):
    number = await opened(world)
    assert not world.bot.intents.message_content
    await world.alice.send(world.post(number), "customer seems angry, careful")
    await world.project()
    async with world.desk.db.read() as session:
        count = len(list(await session.scalars(select(Message.id))))
    assert count == 1  # only the customer's mail
    assert await messages(world, number, Direction.OUTBOUND) == []
    assert (await ticket_detail(world.desk, number)).status == "open"





async def test_reply_editor_with_an_attachment_sends_the_file_on_submit(world):
    number = await opened(world)
    shown = await world.alice.slash(world.post(number), "reply", attachment=("invoice.pdf", b"%PDF invoice"))
    assert shown.modal is not None
    result = await world.alice.submit_modal(shown, {"text": "Your invoice is attached."})
    assert said(result).startswith(f"Reply to #{number} queued")
    reply = next(m for m in (await ticket_detail(world.desk, number)).messages if m.direction == "outbound")
    assert (reply.text, [a.filename for a in reply.attachments]) == ("Your invoice is attached.", ["invoice.pdf"])


async def test_note_with_a_file_keeps_it_for_colleagues(world):
    number = await opened(world)
    result = await world.alice.slash(world.post(number), "note", text="Log attached", attachment=("log.txt", b"E42"))
    assert said(result) == f"Note added to #{number}."
    note = next(m for m in (await ticket_detail(world.desk, number)).messages if m.direction == "note")
    assert await world.desk.files.get(note.attachments[0].sha256) == b"E42"


async def test_mentioning_the_bot_in_a_post_is_still_only_chat(world):
    number = await opened(world)
    await world.alice.send(world.post(number), f"{world.bot.user.mention} reply please send it")
    await world.env.settle()
    assert await messages(world, number, Direction.OUTBOUND) == []
    assert len(world.post(number).history()) == 3  # starter, the mail, the chat line: no answer from the bot


async def test_a_ticket_worked_from_its_post_on_either_database(any_world):
    world = any_world
    number = await opened(world)
    post = world.post(number)
    assert said(await world.alice.click(post.history()[0], label="Claim")) == f"You now own #{number}."
    await world.alice.slash(post, "reply", text="Fixed it.")
    await world.alice.slash(post, "note", text="Done here.")
    assert said(await world.alice.slash(post, "close")) == f"#{number} is closed."
    await world.project()
    detail = await ticket_detail(world.desk, number)
    assert (detail.assignee, detail.status) == ("alice", "closed")
    texts = [m.embeds[0].description for m in world.post(number).history() if m.embeds and m.embeds[0].description]
    assert texts == ["It is on fire. Help!", "Fixed it.", "Done here."]
