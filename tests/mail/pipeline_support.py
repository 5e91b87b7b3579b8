"""Helpers shared by the inbound pipeline tests: the test context, delivering a fixture, reading back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text

from core.desk import Desk
from core.enums import Priority
from core.intake import Intake, IntakeSettings, KeywordRule, Outcome
from core.models import Event, InboundMail, Message, Ticket
from core.tokens import Signer
from mail_gateway.handoff import Handoff
from mail_gateway.store import store_received

FIXTURES = Path(__file__).resolve().parent / "fixtures"
# The tokens inside tests/mail/fixtures/pipeline_*.eml are signed with this key for ticket 1000
# (the first number the test desk hands out): e.g. Signer(SECRET, DOMAIN).ticket_token(1000).
SECRET = b"pipeline-test-secret"
DOMAIN = "example.test"


def make_context(**overrides: object) -> IntakeSettings:
    settings: dict[str, object] = {
        "signer": Signer(SECRET, DOMAIN),
        "support_addresses": ("support@example.test", "billing@example.test"),
        "category_by_address": {"billing@example.test": "billing"},
        "keyword_rules": (KeywordRule(("refund", "invoice"), "billing", Priority.MEDIUM),
                          KeywordRule(("outage", "down"), "technical", Priority.HIGH)),
    }
    settings.update(overrides)
    return IntakeSettings(**settings)  # type: ignore[arg-type]


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


async def deliver(desk: Desk, ctx: IntakeSettings, raw: bytes, *, envelope_from: str | None = None,
                  envelope_to: tuple[str, ...] = ("support@example.test",)) -> Outcome:
    stored = await store_received(desk, raw, source="test", envelope_from=envelope_from, envelope_to=envelope_to)
    return await take_stored(desk, ctx, stored.id)


async def take_batch(desk: Desk, ctx: IntakeSettings, mail_ids: list[int]) -> list[Outcome]:
    """Stored mails through intake in one batch, as the worker of `supportbot run` takes a backlog."""
    return await Handoff(Intake(desk, ctx)).take(mail_ids)


async def take_stored(desk: Desk, ctx: IntakeSettings, mail_id: int) -> Outcome:
    """One stored mail through intake, as `supportbot ingest` takes it: a batch of one."""
    [outcome] = await Handoff(Intake(desk, ctx)).take([mail_id])
    return outcome


def break_ticket_creation(monkeypatch: pytest.MonkeyPatch, word: str) -> None:
    """Ticket creation raises for mail whose subject has `word` (intake opens every new ticket
    through open_tickets, a batch of them at once)."""
    from core.intake import take

    real_open_many = take.open_tickets

    async def open_many(desk: Desk, requests: Any, **kwargs: Any) -> Any:
        if any(word in r.content.subject for r in requests):
            raise RuntimeError("simulated bug in ticket creation")
        return await real_open_many(desk, requests, **kwargs)

    monkeypatch.setattr(take, "open_tickets", open_many)


async def count(desk: Desk, model: type, *where: object) -> int:
    async with desk.db.read() as session:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


async def messages_of(desk: Desk, number: int) -> list[Message]:
    async with desk.db.read() as session:
        ticket_id = await session.scalar(select(Ticket.id).where(Ticket.number == number))
        return list(await session.scalars(select(Message).where(Message.ticket_id == ticket_id).order_by(Message.id)))


async def stored_row(desk: Desk, mail_id: int) -> InboundMail:
    async with desk.db.read() as session:
        row = await session.get(InboundMail, mail_id)
        assert row is not None
        return row


async def events_of_type(desk: Desk, type_: str) -> list[Event]:
    async with desk.db.read() as session:
        return list(await session.scalars(select(Event).where(Event.type == type_).order_by(Event.id)))


async def make_inserts_fail(desk: Desk) -> None:
    """A real database failure inside the storing transaction (not a mock): a trigger that aborts."""
    await refuse_inserts(desk, "inbound_mail")


async def refuse_inserts(desk: Desk, table: str) -> None:
    """Every INSERT into `table` fails from now on, as a full disk would make it (a trigger that aborts)."""
    async with desk.db.transaction() as session:
        if desk.db.is_postgres:
            await session.execute(text(
                "CREATE OR REPLACE FUNCTION refuse() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'disk full'; END $$ "
                "LANGUAGE plpgsql"))
            await session.execute(text(
                f"CREATE TRIGGER refuse AFTER INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION refuse()"))
        else:
            await session.execute(text(
                f"CREATE TRIGGER refuse AFTER INSERT ON {table} BEGIN SELECT RAISE(ABORT, 'disk full'); END"))


async def allow_inserts(desk: Desk, table: str) -> None:
    async with desk.db.transaction() as session:
        await session.execute(text(f"DROP TRIGGER refuse ON {table}" if desk.db.is_postgres else "DROP TRIGGER refuse"))
