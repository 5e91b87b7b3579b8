"""The one-hop aiosqlite cursor: what SQLAlchemy asks of a cursor, from one trip to SQLite's thread."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select, text, update
from sqlalchemy.exc import IntegrityError

from core.db import Database

metadata = MetaData()
things = Table("things", metadata, Column("id", Integer, primary_key=True), Column("name", String, unique=True))


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'driver.db'}")
    async with database.engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    yield database
    await database.dispose()


@pytest.fixture
def hops(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every function sent to an aiosqlite connection's thread, by name."""
    sent: list[str] = []
    real = aiosqlite.Connection._execute

    async def counting(self: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(getattr(fn, "__name__", repr(fn)))
        return await real(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counting)
    return sent


async def test_a_select_is_one_trip_to_the_sqlite_thread(db: Database, hops: list[str]) -> None:
    async with db.transaction() as session:
        await session.execute(insert(things), [{"name": "a"}, {"name": "b"}])
    async with db.read() as session:  # the pooled connection is made (and set up) here
        await session.execute(text("SELECT 1"))
    hops.clear()
    async with db.read() as session:
        names = list(await session.scalars(select(things.c.name).order_by(things.c.id)))
    assert names == ["a", "b"]
    # BEGIN, then the SELECT with its rows, then rollbacks as the read ends. SQLAlchemy's own
    # adapter took four trips for the SELECT alone (cursor, execute, fetchall, close).
    assert [h for h in hops if h != "rollback"] == ["_run", "_run"]


async def test_rowcount_lastrowid_and_returning_come_back(db: Database) -> None:
    async with db.transaction() as session:
        inserted = await session.execute(insert(things).values(name="x"))
        assert inserted.lastrowid == 1
        many = await session.execute(insert(things), [{"name": f"n{i}"} for i in range(5)])
        assert many.rowcount == 5
        changed = await session.execute(update(things).where(things.c.name.like("n%")).values(name=things.c.name + "!"))
        assert changed.rowcount == 5
        returned = (await session.execute(insert(things).values(name="y").returning(things.c.id))).scalar_one()
        assert returned == 7
        assert (await session.execute(text("SELECT count(*) FROM things WHERE name LIKE '%!'"))).scalar_one() == 5


async def test_errors_arrive_as_sqlalchemy_errors_and_the_transaction_rolls_back(db: Database) -> None:
    with pytest.raises(IntegrityError):
        async with db.transaction() as session:
            await session.execute(insert(things).values(name="dup"))
            await session.execute(insert(things).values(name="dup"))
    async with db.read() as session:
        assert (await session.execute(text("SELECT count(*) FROM things"))).scalar_one() == 0
    async with db.transaction() as session:  # the pooled connection is fine afterwards
        await session.execute(insert(things).values(name="dup"))
