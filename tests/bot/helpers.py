"""Small helpers for the bot tests: open tickets through the core like mail would."""

from __future__ import annotations

from core import services
from core.desk import Desk
from core.services import ContactRef, MailContent, NewAttachment


async def customer_mail(desk: Desk, subject: str = "Printer on fire", text: str = "It is on fire. Help!",
                        *, email: str = "carol@example.com", name: str = "Carol Customer",
                        attachments: tuple[NewAttachment, ...] = ()) -> int:
    change = await services.open_ticket(desk, ContactRef(email, name),
                                        MailContent(text=text, subject=subject, attachments=attachments))
    return change.ticket.number


async def customer_answer(desk: Desk, number: int, text: str, *, email: str = "carol@example.com") -> None:
    await services.add_customer_message(desk, number, ContactRef(email), MailContent(text=text, subject="Re"))


def said(result) -> str:
    """The text the bot answered an interaction with (response, or the last follow-up after a defer)."""
    if result.followups:
        return result.followups[-1].content
    assert result.response is not None, "the bot did not answer"
    return result.response.content
