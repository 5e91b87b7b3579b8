"""Claim, Reply and Close on every post, surviving restarts; and who may do what."""

from __future__ import annotations

import pytest

from core.enums import Direction
from core.queries import ticket_detail
from tests.bot.helpers import customer_mail, said


async def opened(world) -> int:
    number = await customer_mail(world.desk)
    await world.project()
    return number


def starter(world, number: int):
    return world.post(number).history()[0]


async def test_claim_button_assigns_the_ticket_to_whoever_clicks(world):
    number = await opened(world)
    result = await world.alice.click(starter(world, number), label="Claim")
    assert result.ephemeral and said(result) == f"You now own #{number}."
    assert (await ticket_detail(world.desk, number)).assignee == "alice"
    await world.project()
    fields = {f.name: f.value for f in starter(world, number).embeds[0].fields}
    assert fields["Assignee"] == "alice"


async def test_reply_button_opens_the_reply_editor(world):
    number = await opened(world)
    shown = await world.alice.click(starter(world, number), label="Reply")
    assert shown.modal is not None
    await world.alice.submit_modal(shown, {"text": "We are on it."})
    detail = await ticket_detail(world.desk, number)
    assert [m.text for m in detail.messages if m.direction == Direction.OUTBOUND] == ["We are on it."]


async def test_close_button_closes_and_the_post_then_offers_reopen(world):
    number = await opened(world)
    assert said(await world.alice.click(starter(world, number), label="Close")) == f"#{number} is closed."
    await world.project()
    assert (await ticket_detail(world.desk, number)).status == "closed"
    # A locked post still lets staff with Manage Threads press its buttons.
    result = await world.alice.click(starter(world, number), label="Reopen")
    assert said(result) == f"#{number} is open again."
    assert (await ticket_detail(world.desk, number)).status == "open"


async def test_buttons_keep_working_after_a_bot_restart(world):
    number = await opened(world)
    old_bot = world.bot
    await world.restart()
    assert world.bot is not old_bot
    result = await world.alice.click(starter(world, number), label="Claim")
    assert said(result) == f"You now own #{number}."
    assert (await ticket_detail(world.desk, number)).assignee == "alice"


@pytest.mark.parametrize("command, options", [
    ("reply", {"text": "hi"}), ("note", {"text": "hi"}), ("claim", {}), ("close", {}), ("show", {}),
    ("status", {"status": "open"}), ("list", {}),
])
async def test_member_without_the_staff_role_is_refused_ticket_work(world, command, options):
    number = await opened(world)
    where = world.lobby if command == "list" else world.post(number)
    result = await world.eve.slash(where, command, **options)
    assert result.ephemeral
    assert said(result) == "This needs the support staff role. Ask a manager to give it to you."
    detail = await ticket_detail(world.desk, number)
    assert (len(detail.messages), detail.status, detail.assignee) == (1, "open", None)


async def test_member_without_the_staff_role_cannot_press_the_buttons(world):
    number = await opened(world)
    result = await world.eve.click(starter(world, number), label="Claim")
    assert result.ephemeral
    assert said(result) == "This needs the support staff role. Ask a manager to give it to you."
    assert (await ticket_detail(world.desk, number)).assignee is None


@pytest.mark.parametrize("command, options", [
    ("snippet add", {"name": "x", "text": "y"}), ("snippet remove", {"name": "x"}),
    ("block", {"email": "spam@example.com"}), ("unblock", {"email": "spam@example.com"}), ("stats", {}),
])
async def test_staff_without_the_manager_role_are_refused_manager_commands(world, command, options):
    result = await world.alice.slash(world.lobby, command, **options)
    assert result.ephemeral and said(result) == "This needs the support manager role."


async def test_a_manager_can_also_do_staff_work(world):
    number = await opened(world)
    assert said(await world.boss.slash(world.post(number), "claim")) == f"You now own #{number}."
