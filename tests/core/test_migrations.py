"""Migrations build the schema from nothing on both engines and agree with the models."""

from __future__ import annotations

from sqlalchemy import inspect

from core.db import Database
from core.migrate import current_revision, head_revision, schema_differences, upgrade


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
