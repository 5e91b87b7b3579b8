"""Helpers for report tests: build ticket history through the real core services at fixed times."""

from __future__ import annotations

from datetime import UTC, datetime

from core import services
from core.desk import Desk
from core.enums import Priority, Status
from core.services import ContactRef, MailContent, StaffRef
from tests.conftest import FixedClock
from tests.outbound.conftest import sink  # noqa: F401  (the real aiosmtpd sink, for the mail tests)

SAM = StaffRef("Sam Agent", discord_id=111)
KIM = StaffRef("Kim Lead", discord_id=222)


def at(clock: FixedClock, y: int, mo: int, d: int, h: int, mi: int = 0) -> None:
    clock.now = datetime(y, mo, d, h, mi, tzinfo=UTC)


async def open_ticket(desk: Desk, who: str, subject: str, *, priority: Priority | None = None,
                      category: str | None = None, machine: bool = False) -> int:
    change = await services.open_ticket(desk, ContactRef(f"{who}@example.org", who.title()),
                                        MailContent(text="help", subject=subject, is_machine=machine),
                                        priority=priority, category=category)
    return change.ticket.number


async def customer_writes(desk: Desk, number: int, who: str, *, machine: bool = False) -> None:
    await services.add_customer_message(desk, number, ContactRef(f"{who}@example.org"),
                                        MailContent(text="more", is_machine=machine))


async def staff_replies(desk: Desk, number: int, staff: StaffRef = SAM) -> None:
    await services.reply(desk, number, staff, "on it")


async def set_status(desk: Desk, number: int, status: Status, staff: StaffRef = SAM) -> None:
    await services.set_status(desk, number, status, staff)
