"""Migrations build the schema from nothing on both engines and agree with the models."""

from __future__ import annotations

from typing import Any

from alembic import command
from sqlalchemy import inspect, select

from core.db import Database
from core.migrate import alembic_config, current_revision, head_revision, schema_differences, upgrade
from core.models import Message
from core.services import ContactRef, MailContent, add_customer_message, open_ticket


async def test_migrations_build_an_empty_database_and_match_the_models(database_url):
    db = Database(database_url)
    try:
        assert await current_revision(db) is None
        await upgrade(db)
        assert await current_revision(db) == head_revision()
        assert await schema_differences(db) == []
        async with db.read_engine.connect() as conn:
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
        assert {"tickets", "messages", "events", "outbox", "inbound_mail", "audit_log"} <= tables
        await upgrade(db)  # a second run is a no-op, not an error
        assert await current_revision(db) == head_revision()
    finally:
        await db.dispose()


async def test_messages_stored_before_0009_get_the_id_they_answer(desk):
    # Down to 0008 drops the column; up again must fill it for the messages already there.
    alice = ContactRef("alice@customer.test")
    opened = await open_ticket(desk, alice, MailContent("Help", message_id="<a1@customer.test>"))
    number = opened.ticket.number
    await add_customer_message(desk, number, alice, MailContent("More", in_reply_to="<a1@customer.test>"))
    await add_customer_message(desk, number, alice, MailContent(
        "Two ids", in_reply_to="<a1@customer.test> <x@customer.test>"))
    await add_customer_message(desk, number, alice, MailContent(
        "References only", references="<a0@customer.test> <a1@customer.test>"))

    async with desk.db.engine.begin() as connection:
        await connection.run_sync(_downgrade_to_0008)
    await upgrade(desk.db)

    async with desk.db.read() as session:
        parents = list(await session.scalars(select(Message.parent_message_id).order_by(Message.id)))
    assert parents == [None, "<a1@customer.test>", "<a1@customer.test>", "<a1@customer.test>"]  # as written live
    assert await schema_differences(desk.db) == []


def _downgrade_to_0008(connection: Any) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    command.downgrade(cfg, "0008")
