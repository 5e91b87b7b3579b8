"""Held mail shows in the alerts channel with Release and Block sender buttons; machine-mail is only counted."""

from __future__ import annotations

from sqlalchemy import select

from core import services
from core.enums import InboundStatus
from core.inbound import RELEASED, get, store_raw
from core.intake import Address, Intake, IntakeSettings, Kind, Parsed, ParsedMail, ledger
from core.models import Contact
from core.services import StaffRef
from core.tokens import Signer
from tests.bot.helpers import said

REFUSED = "This needs the support staff role. Ask a manager to give it to you."


def parsed(sender: str, subject: str) -> ParsedMail:
    return ParsedMail(message_id="m1@example.com", in_reply_to=[], references=[], subject=subject,
                      from_=Address("Mallory", sender), reply_to=[], to=[Address("", "support@localhost")], cc=[],
                      delivered_to=[], date=None, text="buy now", new_text="buy now", html=None, attachments=[],
                      forwarded=[], headers={}, is_delivery_report=False, delivery_report=None, report_type=None)


async def held_by_intake(world, sender: str = "mallory@example.net", subject: str = "Cheap @everyone deals") -> int:
    """A mail from a blocked sender, taken by intake as the worker would: held, with a MailHeld event."""
    await services.block_sender(world.desk, sender, StaffRef("boss", discord_id=1))
    stored = await store_raw(world.desk, b"Subject: x\r\n\r\nbuy now", source="smtp")
    intake = Intake(world.desk, IntakeSettings(Signer(b"k" * 32, "example.test")))
    [outcome] = await intake.take([Parsed(stored.id, parsed(sender, subject))])
    assert outcome.kind == Kind.HELD
    return stored.id


async def held_directly(world, rule: str, sender: str = "spam@example.net") -> int:
    stored = await store_raw(world.desk, b"Subject: x\r\n\r\nhi", source="smtp")
    async with world.desk.unit_of_work() as uow:
        await ledger.hold(uow, stored.id, f"{rule}: why", rule=rule, at=world.desk.clock(), sender=sender,
                          subject="Hello")
    return stored.id


async def test_a_held_mail_posts_one_alert_with_release_and_block_buttons(world):
    mail_id = await held_by_intake(world)
    await world.project()
    await world.project()  # a replay posts nothing twice
    [alert] = world.alerts.history()
    assert alert.content == (f"✋ Incoming mail {mail_id} was held (blocked-sender): blocked-sender: the sender is "
                             "blocked\nFrom: mallory@example.net · Subject: Cheap @everyone deals")
    assert not alert.mention_everyone
    assert [c.label for row in alert.components for c in row.children] == ["Release", "Block sender"]


async def test_release_by_staff_requeues_the_mail_and_a_second_click_says_it_is_no_longer_held(world):
    mail_id = await held_directly(world, "rate-limit")
    await world.project()
    [alert] = world.alerts.history()
    result = await world.alice.click(alert, label="Release")
    assert result.ephemeral and said(result).startswith(f"Mail {mail_id} released")
    row = await get(world.desk, mail_id)
    assert (row.status, row.reason) == (InboundStatus.RECEIVED, RELEASED)
    again = await world.alice.click(alert, label="Release")
    assert again.ephemeral and said(again) == f"Mail {mail_id} is no longer held (released or dealt with already)."
    assert (await get(world.desk, mail_id)).status == InboundStatus.RECEIVED


async def test_block_by_staff_blocks_the_sender(world):
    mail_id = await held_directly(world, "one-sender", sender="eve@example.net")
    await world.project()
    [alert] = world.alerts.history()
    result = await world.alice.click(alert, label="Block sender")
    assert result.ephemeral and said(result).startswith("eve@example.net is blocked")
    async with world.desk.db.read() as session:
        contact = await session.scalar(select(Contact).where(Contact.email == "eve@example.net"))
    assert contact is not None and contact.blocked
    assert (await get(world.desk, mail_id)).status == InboundStatus.HELD


async def test_a_member_without_the_staff_role_is_refused_both_buttons(world):
    mail_id = await held_directly(world, "rate-limit")
    await world.project()
    [alert] = world.alerts.history()
    for label in ("Release", "Block sender"):
        result = await world.eve.click(alert, label=label)
        assert result.ephemeral and said(result) == REFUSED
    assert (await get(world.desk, mail_id)).status == InboundStatus.HELD
    async with world.desk.db.read() as session:
        assert await session.scalar(select(Contact).where(Contact.email == "spam@example.net")) is None


async def test_buttons_keep_working_after_a_bot_restart(world):
    mail_id = await held_directly(world, "oversize")
    await world.project()
    await world.restart()
    result = await world.alice.click(world.alerts.history()[0], label="Release")
    assert said(result).startswith(f"Mail {mail_id} released")


async def test_machine_mail_is_not_alerted(world):
    await held_directly(world, "machine-mail")
    await world.project()
    assert world.alerts.history() == []
