"""Triage services: status, priority, category, tags, assignment, merge, blocking and snippets."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from core import services
from core.enums import Priority, Status
from core.errors import Conflict, NotFound, UserError
from core.models import AuditEntry, Event, Staff
from core.queries import TicketFilters, list_tickets, ticket_detail
from core.services import ContactRef, MailContent, StaffRef

ALICE = ContactRef("alice@example.org", "Alice")
BOB = ContactRef("bob@example.org", "Bob")
SAM = StaffRef("Sam", discord_id=111)
KIM = StaffRef("Kim", discord_id=222)


async def new_ticket(desk, who=ALICE, subject="Cannot log in") -> int:
    return (await services.open_ticket(desk, who, MailContent(text="Help", subject=subject))).ticket.number


async def audit_actions(desk) -> list[tuple[str, str]]:
    async with desk.db.read() as s:
        rows = await s.execute(select(Staff.display_name, AuditEntry.action)
                               .join(Staff, Staff.id == AuditEntry.staff_id).order_by(AuditEntry.id))
        return [tuple(r) for r in rows]


async def test_status_changes_set_and_clear_resolution_timestamps(desk, clock):
    number = await new_ticket(desk)
    clock.advance(hours=1)
    await services.set_status(desk, number, Status.RESOLVED, SAM)
    detail = await ticket_detail(desk, number)
    assert detail.resolved_at == clock.now and detail.closed_at is None
    clock.advance(hours=1)
    await services.set_status(desk, number, Status.CLOSED, SAM)
    detail = await ticket_detail(desk, number)
    assert detail.closed_at == clock.now and detail.resolved_at == clock.now.replace(hour=10)
    await services.set_status(desk, number, Status.OPEN, SAM)
    detail = await ticket_detail(desk, number)
    assert (detail.status, detail.resolved_at, detail.closed_at) == ("open", None, None)


async def test_setting_the_same_status_records_nothing(desk):
    number = await new_ticket(desk)
    await services.set_status(desk, number, Status.OPEN, SAM)
    async with desk.db.read() as s:
        types = list(await s.scalars(select(Event.type)))
    assert types == ["TicketOpened"]


async def test_priority_and_category_changes_are_recorded_with_old_and_new_value(desk):
    number = await new_ticket(desk)
    await services.set_priority(desk, number, Priority.URGENT, SAM)
    await services.set_category(desk, number, "Billing", SAM)
    detail = await ticket_detail(desk, number)
    assert (detail.priority, detail.category) == ("urgent", "billing")
    async with desk.db.read() as s:
        data = [e.data for e in await s.scalars(select(Event).where(Event.type.in_(
            ["PriorityChanged", "CategoryChanged"])).order_by(Event.id))]
    assert data == [{"from": "medium", "to": "urgent"}, {"from": None, "to": "billing"}]
    assert await audit_actions(desk) == [("Sam", "PriorityChanged"), ("Sam", "CategoryChanged")]


async def test_unknown_category_is_refused_with_the_choices(desk):
    number = await new_ticket(desk)
    with pytest.raises(UserError, match="general, billing, technical"):
        await services.set_category(desk, number, "cooking", SAM)


async def test_tags_are_normalized_added_and_removed(desk):
    number = await new_ticket(desk)
    tags = await services.tag(desk, number, SAM, add=["VIP", "needs info", "vip", "  "])
    assert tags == ["needs-info", "vip"]
    tags = await services.tag(desk, number, SAM, remove=["vip"])
    assert tags == ["needs-info"]
    found = await list_tickets(desk, TicketFilters(tag="needs-info"))
    assert [t.number for t in found] == [number]


async def test_claim_assigns_to_self_and_refuses_to_take_from_a_colleague(desk):
    number = await new_ticket(desk)
    ticket = await services.claim(desk, number, SAM)
    assert ticket.assignee_id is not None
    with pytest.raises(Conflict, match="already assigned to Sam"):
        await services.claim(desk, number, KIM)
    await services.claim(desk, number, KIM, force=True)
    assert (await ticket_detail(desk, number)).assignee == "Kim"
    await services.unassign(desk, number, KIM)
    assert (await ticket_detail(desk, number)).assignee is None
    assert [a for _, a in await audit_actions(desk)] == ["Assigned", "Assigned", "Unassigned"]


async def test_assign_to_a_colleague_and_filter_by_assignee(desk):
    mine, other = await new_ticket(desk), await new_ticket(desk, subject="Other")
    await services.assign(desk, mine, KIM, SAM)
    by_name = await list_tickets(desk, TicketFilters(assignee="Kim"))
    by_discord_id = await list_tickets(desk, TicketFilters(assignee="222"))
    unassigned = await list_tickets(desk, TicketFilters(assignee="none"))
    assert [t.number for t in by_name] == [mine] == [t.number for t in by_discord_id]
    assert [t.number for t in unassigned] == [other]


async def test_merge_moves_messages_and_participants_and_redirects_the_old_number(desk):
    target = await new_ticket(desk, ALICE, "Login broken")
    source = await new_ticket(desk, BOB, "Login broken too")
    await services.tag(desk, source, SAM, add=["sso"])
    merged = await services.merge(desk, source, target, SAM)
    assert merged.number == target
    detail = await ticket_detail(desk, target)
    assert [m.author for m in detail.messages] == ["alice@example.org", "bob@example.org"]
    assert set(detail.participants) == {"alice@example.org", "bob@example.org"}
    assert detail.tags == ["sso"]
    old = await ticket_detail(desk, source)
    assert old.merged_into == target and old.status == "closed" and old.messages == []
    # Anything addressed to the old number now lands on the target.
    change = await services.add_customer_message(desk, source, BOB, MailContent(text="any news?"))
    assert change.ticket.number == target
    assert [t.number for t in await list_tickets(desk)] == [target]


async def test_merging_a_ticket_into_itself_is_refused(desk):
    number = await new_ticket(desk)
    with pytest.raises(UserError, match="already the same ticket"):
        await services.merge(desk, number, number, SAM)
    other = await new_ticket(desk)
    await services.merge(desk, other, number, SAM)
    with pytest.raises(UserError, match="already the same ticket"):
        await services.merge(desk, other, number, SAM)


async def test_blocking_and_unblocking_a_sender(desk):
    await services.block_sender(desk, "Spam@Example.org", SAM, reason="abuse")
    assert await services.is_blocked(desk, "spam@example.org")
    await services.unblock_sender(desk, "spam@example.org", SAM)
    assert not await services.is_blocked(desk, "spam@example.org")
    assert [a for _, a in await audit_actions(desk)] == ["ContactBlocked", "ContactUnblocked"]


async def test_snippets_can_be_added_edited_used_and_removed(desk):
    await services.save_snippet(desk, "thanks", "Hi {customer_name}, about {ticket}: done. {unknown}", SAM,
                                create=True)
    with pytest.raises(Conflict):
        await services.save_snippet(desk, "thanks", "x", SAM, create=True)
    await services.save_snippet(desk, "thanks", "Hello {customer_name}, {ticket} is fixed.", SAM, create=False)
    snippet = await services.get_snippet(desk, "THANKS")
    text = services.render_snippet(snippet.body, {"customer_name": "Alice", "ticket": "#1000"})
    assert text == "Hello Alice, #1000 is fixed."
    assert services.render_snippet("{a} {b}", {"a": "1"}) == "1 {b}"
    await services.remove_snippet(desk, "thanks", SAM)
    assert await services.list_snippets(desk) == []
    with pytest.raises(NotFound):
        await services.get_snippet(desk, "thanks")


@pytest.mark.parametrize("body", ["{customer_name.__class__}", "{0}", "{x!r}", "{unclosed"])
async def test_snippet_text_cannot_reach_into_python_objects(desk, body):
    with pytest.raises(UserError):
        await services.save_snippet(desk, "bad", body, SAM, create=True)


async def test_staff_are_recognized_by_discord_id_and_keep_one_row(desk):
    number = await new_ticket(desk)
    await services.add_note(desk, number, StaffRef("Sam", discord_id=111), "one")
    await services.add_note(desk, number, StaffRef("Sam Renamed", discord_id=111), "two")
    async with desk.db.read() as s:
        names = list(await s.scalars(select(Staff.display_name)))
    assert names == ["Sam Renamed"]
