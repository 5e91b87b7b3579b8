"""Full-text search over subjects and message text, with filters."""

from __future__ import annotations

import pytest

from core import services
from core.enums import Status
from core.errors import UserError
from core.queries import TicketFilters, search_tickets
from core.services import ContactRef, MailContent, StaffRef

SAM = StaffRef("Sam", discord_id=1)


async def opened(desk, subject, text, who="alice@example.org") -> int:
    change = await services.open_ticket(desk, ContactRef(who), MailContent(text=text, subject=subject))
    return change.ticket.number


async def test_search_finds_words_in_subjects_and_in_any_message(desk):
    printer = await opened(desk, "Printer jammed", "Paper stuck in tray two")
    invoice = await opened(desk, "Question", "Where is my invoice for March?")
    await services.reply(desk, printer, SAM, "Try the Reset button")
    assert [t.number for t in await search_tickets(desk, "printer")] == [printer]
    assert [t.number for t in await search_tickets(desk, "INVOICE march")] == [invoice]
    assert [t.number for t in await search_tickets(desk, "reset")] == [printer]  # staff reply text
    assert [t.number for t in await search_tickets(desk, "invoice printer")] == []  # all words must match
    assert [t.number for t in await search_tickets(desk, "inv")] == [invoice]  # prefixes match


async def test_search_combines_with_filters(desk):
    a = await opened(desk, "Refund please", "refund", who="a@example.org")
    b = await opened(desk, "Refund again", "refund", who="b@example.org")
    await services.set_status(desk, a, Status.RESOLVED, SAM)
    found = await search_tickets(desk, "refund", TicketFilters(status=(Status.OPEN,)))
    assert [t.number for t in found] == [b]
    found = await search_tickets(desk, "refund", TicketFilters(requester="A@example.org"))
    assert [t.number for t in found] == [a]


@pytest.mark.parametrize("query", ['" OR 1=1 --', "NEAR(a b)", "subject:x*", "'; DROP TABLE tickets; --"])
async def test_query_syntax_in_search_text_is_treated_as_plain_words(desk, query):
    await opened(desk, "Hello", "plain words only")
    assert await search_tickets(desk, query) == []


async def test_search_without_words_is_a_clear_error(desk):
    with pytest.raises(UserError, match="at least one word"):
        await search_tickets(desk, "  ?! ")


async def test_search_finds_words_with_accents_and_in_other_scripts(desk):
    number = await opened(desk, "Facture", "Le prélèvement a échoué")
    russian = await opened(desk, "Счёт", "Не могу оплатить заказ")
    assert [t.number for t in await search_tickets(desk, "échoué")] == [number]
    assert [t.number for t in await search_tickets(desk, "оплатить")] == [russian]
    if desk.db.is_sqlite:  # FTS5's remove_diacritics; PostgreSQL's 'simple' config keeps accents
        assert [t.number for t in await search_tickets(desk, "echoue")] == [number]
