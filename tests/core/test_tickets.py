"""Ticket lifecycle: opening, customer replies, staff replies, notes and the reopen rules."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from core import services
from core.enums import Direction, Status
from core.errors import NotFound, UserError
from core.events import EventType
from core.models import Event, Ticket
from core.queries import ticket_detail
from core.services import ContactRef, MailContent, NewAttachment, StaffRef

ALICE = ContactRef("Alice@Example.org", "Alice Customer")
AGENT = StaffRef("Sam Agent", discord_id=111)


async def event_types(desk, ticket_id: int) -> list[str]:
    async with desk.db.read() as s:
        return list(await s.scalars(select(Event.type).where(Event.ticket_id == ticket_id).order_by(Event.id)))


async def open_one(desk, subject: str = "Printer on fire", text: str = "Help, it burns.") -> int:
    change = await services.open_ticket(desk, ALICE, MailContent(text=text, subject=subject,
                                                                  message_id="m1@example.org"))
    return change.ticket.number


async def test_open_ticket_gives_sequential_numbers_from_the_configured_start(desk):
    first = await open_one(desk)
    second = await open_one(desk, "Another")
    assert first == desk.settings.first_ticket_number
    assert second == first + 1
    assert desk.format_number(first) == f"#{first}"


async def test_open_ticket_records_requester_message_and_event(desk):
    number = await open_one(desk)
    detail = await ticket_detail(desk, number)
    assert detail.status == "open"
    assert detail.priority == "medium"
    assert detail.requester == "alice@example.org"
    assert detail.requester_name == "Alice Customer"
    assert detail.participants == ["alice@example.org"]
    assert [(m.direction, m.text, m.author) for m in detail.messages] == [
        ("inbound", "Help, it burns.", "alice@example.org")]
    async with desk.db.read() as s:
        ticket = await s.scalar(select(Ticket).where(Ticket.number == number))
    assert await event_types(desk, ticket.id) == [EventType.TICKET_OPENED]


async def test_open_tickets_opens_several_together_as_one_by_one_would(desk):
    await services.block_sender(desk, "bob@example.org", AGENT, reason="test")  # an existing contact, unnamed
    bob, carol = ContactRef("bob@example.org", "Bob B"), ContactRef("carol@example.org", "Carol")
    requests = [
        services.NewTicket(ALICE, MailContent(text="one", subject="First", message_id="<a1@example.org>"),
                           cc=[bob, carol, ContactRef("alice@example.org")], tags=["vip"]),
        services.NewTicket(bob, MailContent(text="two", subject="  Second\r\n  subject ",
                                            attachments=[NewAttachment("a.txt", "text/plain", b"hello")]),
                           cc=[ALICE], category="billing"),
        services.NewTicket(ContactRef("dave@example.org"), MailContent(text="auto", subject="", is_machine=True)),
    ]

    changes = await services.open_tickets(desk, requests)

    first = desk.settings.first_ticket_number
    assert [c.ticket.number for c in changes] == [first, first + 1, first + 2]
    assert all(c.created and c.message is not None and c.message.ticket_id == c.ticket.id for c in changes)
    one, two, three = [await ticket_detail(desk, c.ticket.number) for c in changes]
    assert (one.requester, one.participants, one.tags) == (
        "alice@example.org", ["alice@example.org", "bob@example.org", "carol@example.org"], ["vip"])
    assert (two.requester, two.requester_name, two.subject, two.category) == (
        "bob@example.org", "Bob B", "Second subject", "billing")
    assert two.participants == ["bob@example.org", "alice@example.org"]
    assert [a.filename for a in two.messages[0].attachments] == ["a.txt"]
    assert (three.subject, three.messages[0].text) == ("(no subject)", "auto")
    assert [await event_types(desk, c.ticket.id) for c in changes] == [
        [EventType.PARTICIPANT_ADDED, EventType.PARTICIPANT_ADDED, EventType.TICKET_OPENED],
        [EventType.PARTICIPANT_ADDED, EventType.TICKET_OPENED],
        [EventType.TICKET_OPENED]]
    assert (await services.open_ticket(desk, ALICE, MailContent(text="x", subject="y"))).ticket.number == first + 3
    assert await services.open_tickets(desk, []) == []


async def test_ticket_numbers_are_never_reused_after_a_failed_open(desk):
    first = await open_one(desk)
    with pytest.raises(UserError):
        await services.open_ticket(desk, ALICE, MailContent(text="x", subject="y"), category="nonsense")
    second = await open_one(desk)
    assert second == first + 1  # the rolled-back attempt took no number either
    third = await open_one(desk)
    assert third == second + 1


async def test_first_staff_reply_sets_first_response_but_a_note_does_not(desk, clock):
    number = await open_one(desk)
    clock.advance(minutes=5)
    await services.add_note(desk, number, AGENT, "Checking the logs")
    detail = await ticket_detail(desk, number)
    assert detail.first_response_at is None
    clock.advance(minutes=10)
    await services.reply(desk, number, AGENT, "Please unplug it.")
    detail = await ticket_detail(desk, number)
    assert detail.first_response_at == clock.now
    clock.advance(minutes=10)
    await services.reply(desk, number, AGENT, "Any news?")
    assert (await ticket_detail(desk, number)).first_response_at == clock.now.replace(minute=15)


async def test_staff_reply_moves_ticket_to_waiting_on_customer_by_default(desk):
    number = await open_one(desk)
    change = await services.reply(desk, number, AGENT, "Please unplug it.")
    assert change.ticket.status == Status.PENDING
    assert change.message.direction == Direction.OUTBOUND
    change = await services.reply(desk, number, AGENT, "Fixed it for you.", status=Status.RESOLVED)
    assert change.ticket.status == Status.RESOLVED


async def test_customer_reply_to_pending_ticket_makes_it_open_again(desk):
    number = await open_one(desk)
    await services.reply(desk, number, AGENT, "Please unplug it.")
    change = await services.add_customer_message(desk, number, ALICE, MailContent(text="Done, still burns"))
    assert change.ticket.status == Status.OPEN
    assert not change.reopened


async def test_customer_reply_to_resolved_ticket_reopens_it(desk):
    number = await open_one(desk)
    await services.set_status(desk, number, Status.RESOLVED, AGENT)
    change = await services.add_customer_message(desk, number, ALICE, MailContent(text="Not fixed!"))
    assert change.reopened and not change.created
    assert change.ticket.number == number
    detail = await ticket_detail(desk, number)
    assert detail.status == "open" and detail.resolved_at is None


async def test_customer_reply_to_recently_closed_ticket_reopens_it(desk, clock):
    number = await open_one(desk)
    await services.set_status(desk, number, Status.CLOSED, AGENT)
    clock.advance(days=13)
    change = await services.add_customer_message(desk, number, ALICE, MailContent(text="Again"))
    assert change.reopened and change.ticket.number == number


async def test_customer_reply_to_long_closed_ticket_opens_a_linked_follow_up(desk, clock):
    number = await open_one(desk)
    await services.set_status(desk, number, Status.CLOSED, AGENT)
    clock.advance(days=15)
    change = await services.add_customer_message(
        desk, number, ALICE, MailContent(text="It broke again", subject="Re: Printer on fire"))
    assert change.created
    assert change.ticket.number != number
    new = await ticket_detail(desk, change.ticket.number)
    assert new.follow_up_of == number
    assert new.status == "open"
    old = await ticket_detail(desk, number)
    assert old.status == "closed" and len(old.messages) == 1


async def test_auto_reply_is_stored_but_does_not_reopen(desk):
    number = await open_one(desk)
    await services.set_status(desk, number, Status.RESOLVED, AGENT)
    change = await services.add_customer_message(
        desk, number, ALICE, MailContent(text="I am out of office", is_machine=True))
    assert change.ticket.status == Status.RESOLVED
    detail = await ticket_detail(desk, number)
    assert [m.is_machine for m in detail.messages] == [False, True]


async def test_a_new_address_writing_to_a_ticket_becomes_a_participant(desk):
    number = await open_one(desk)
    await services.add_customer_message(desk, number, ContactRef("bob@example.org", "Bob"),
                                        MailContent(text="Colleague here"),
                                        cc=[ContactRef("carol@example.org")])
    detail = await ticket_detail(desk, number)
    assert set(detail.participants) == {"alice@example.org", "bob@example.org", "carol@example.org"}


async def test_attachments_are_stored_once_by_content(desk):
    data = b"%PDF-1.4 invoice"
    change = await services.open_ticket(desk, ALICE, MailContent(
        text="see attached", subject="Invoice",
        attachments=[NewAttachment("invoice.pdf", "application/pdf", data),
                     NewAttachment("copy.pdf", "application/pdf", data),
                     NewAttachment("huge.iso", "application/octet-stream", b"", held_back=True,
                                   size=900_000_000)]))
    detail = await ticket_detail(desk, change.ticket.number)
    files = detail.messages[0].attachments
    assert [(a.filename, a.size, a.held_back) for a in files] == [
        ("invoice.pdf", len(data), False), ("copy.pdf", len(data), False), ("huge.iso", 900_000_000, True)]
    assert files[0].sha256 == files[1].sha256
    assert files[2].sha256 is None
    assert await desk.files.get(files[0].sha256) == data
    stored = list((desk.files.root).rglob("*"))
    assert len([p for p in stored if p.is_file()]) == 1


async def test_reply_and_note_need_text_and_an_existing_ticket(desk):
    number = await open_one(desk)
    with pytest.raises(UserError, match="needs some text"):
        await services.reply(desk, number, AGENT, "   ")
    with pytest.raises(UserError, match="needs some text"):
        await services.add_note(desk, number, AGENT, "")
    with pytest.raises(NotFound):
        await services.reply(desk, 99999, AGENT, "hello")


async def test_every_change_appends_one_event_in_order(desk):
    number = await open_one(desk)
    await services.add_note(desk, number, AGENT, "note")
    await services.reply(desk, number, AGENT, "reply")
    await services.add_customer_message(desk, number, ALICE, MailContent(text="thanks"))
    async with desk.db.read() as s:
        ticket_id = await s.scalar(select(Ticket.id).where(Ticket.number == number))
        total = await s.scalar(select(func.count()).select_from(Event))
    assert await event_types(desk, ticket_id) == [
        "TicketOpened", "NoteAdded", "StaffReplied", "StatusChanged", "StatusChanged", "CustomerReplied"]
    assert total == 6
