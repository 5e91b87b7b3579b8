"""Helpers shared by the inbound pipeline tests: the test context, delivering a fixture, reading back."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import func, select, text

from core.attachments import AttachmentStore
from core.db import Database
from core.desk import CoreSettings, Desk
from core.enums import Priority
from core.intake import Intake, IntakeSettings, KeywordRule, Outcome
from core.migrate import upgrade
from core.models import Event, InboundMail, Message, Ticket
from core.tokens import Signer
from mail_gateway.handoff import Handoff
from mail_gateway.store import store_received
from tests.conftest import FixedClock

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


# --- fast desks: migrate once per run, copy per test ------------------------------------------------
# Migrating a fresh database costs 0.5-2 s on this shared machine; the pipeline tests need well over
# a hundred desks. The desks below are copies of one migrated template, on both engines.

def _run_aside(build: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run on a loop of its own in a thread: these fixtures may be set up while a test's loop runs."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(lambda: asyncio.run(build())).result()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "desk.db"

    async def build() -> None:
        db = Database(f"sqlite+aiosqlite:///{path}")
        await upgrade(db)
        await db.dispose()

    _run_aside(build)
    return path


@pytest.fixture(scope="session")
def postgres_template(postgres_server: str) -> str:
    base = postgres_server.replace("postgresql+asyncpg://", "postgresql://")
    name = f"tmpl_{uuid.uuid4().hex[:10]}"

    async def build() -> None:
        conn = await asyncpg.connect(base)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        db = Database(postgres_server.rsplit("/", 1)[0] + "/" + name)
        await upgrade(db)
        await db.dispose()

    _run_aside(build)
    return name


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def desk(request: pytest.FixtureRequest, tmp_path: Path, clock: FixedClock) -> AsyncIterator[Desk]:
    """Like tests/conftest.py's `desk`, from a migrated template instead of migrating each time."""
    if request.param == "sqlite":
        target = tmp_path / "desk.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), target)
        url = f"sqlite+aiosqlite:///{target}"
    else:
        server = request.getfixturevalue("postgres_server")
        template = request.getfixturevalue("postgres_template")
        name = f"t_{uuid.uuid4().hex[:12]}"
        conn = await asyncpg.connect(server.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        finally:
            await conn.close()
        url = server.rsplit("/", 1)[0] + "/" + name
    made = Desk(Database(url), CoreSettings(categories=("general", "billing", "technical")),
                AttachmentStore(tmp_path / "attachments"), clock)
    try:
        yield made
    finally:
        await made.close()


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
