"""Database access: async engines for SQLite (default) and PostgreSQL, and one way to run a transaction."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, cast

from sqlalchemy import event, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import CursorResult, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from core.sqlite_driver import OneHopDBAPI

SQLITE_BUSY_TIMEOUT_MS = 30_000


def dialect_of(session: AsyncSession) -> str:
    """"sqlite" or "postgresql" for a session of a Database."""
    return session.get_bind().dialect.name


async def insert_ignore(session: AsyncSession, model: Any, values: dict[str, Any] | Sequence[dict[str, Any]],
                        keys: Sequence[str]) -> Any:
    """INSERT … ON CONFLICT DO NOTHING for either engine (no race between a check and an insert);
    a list of rows is inserted with one executemany.

    The statement is built once per dialect, table and columns: building one costs more than
    running it, and this sits on the path of every inbound mail.
    """
    return await session.execute(_insert_ignore_statement(dialect_of(session), model, tuple(keys)), values)


@functools.lru_cache(maxsize=64)
def _insert_ignore_statement(dialect: str, model: Any, keys: tuple[str, ...]) -> Any:
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    return insert(model.__table__).on_conflict_do_nothing(index_elements=list(keys))  # Core: rowcount, no ORM bulk mode


def rows_affected(result: Any) -> int:
    """How many rows an INSERT/UPDATE/DELETE touched (the typed Result hides CursorResult.rowcount)."""
    return int(cast(CursorResult[Any], result).rowcount or 0)


class Database:
    """Owns the engines; `transaction()` for writes, `read()` for queries.

    On SQLite every write transaction starts with BEGIN IMMEDIATE: a deferred transaction that
    reads and then writes can fail with "database is locked" when another writer committed in
    between, and the busy timeout does not help there. Readers use a second engine with plain
    BEGIN, so WAL lets them run beside the writer.
    """

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = make_url(url)
        self.dialect = self.url.get_backend_name()  # "sqlite" or "postgresql"
        self.is_sqlite = self.dialect == "sqlite"
        self.is_postgres = self.dialect == "postgresql"
        if self.is_sqlite:
            self.engine = _sqlite_engine(url, echo=echo, immediate=True)
            self.read_engine = _sqlite_engine(url, echo=echo, immediate=False)
        else:
            self.engine = create_async_engine(url, echo=echo, pool_size=10, max_overflow=10,
                                              pool_pre_ping=True)
            self.read_engine = self.engine
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self._read_sessions = async_sessionmaker(self.read_engine, expire_on_commit=False)
        # Each consumer's flag is set after every commit that appended events, so in-process
        # consumers need not poll; other processes' commits are found by polling.
        self._event_listeners: set[asyncio.Event] = set()
        # In one process, queue SQLite writers here instead of spinning on the file lock.
        self._sqlite_write_lock = asyncio.Lock() if self.is_sqlite else None

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A write transaction: commits when the block ends, rolls back when it raises.

        A change that records events runs in a core.uow.unit_of_work instead, which wraps this.
        """
        if self._sqlite_write_lock is not None:
            async with self._sqlite_write_lock:
                async with self._transaction() as session:
                    yield session
        else:
            async with self._transaction() as session:
                yield session

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[AsyncSession]:
        async with self._sessions() as session:
            async with session.begin():
                yield session

    def events_committed(self) -> None:
        """Wake this process's consumers: a transaction just committed new events."""
        for flag in self._event_listeners:
            flag.set()

    def listen_for_events(self) -> asyncio.Event:
        """A flag set whenever a transaction of this process commits new events."""
        flag = asyncio.Event()
        self._event_listeners.add(flag)
        return flag

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A session for queries; closing it ends its transaction (and never commits)."""
        async with self._read_sessions() as session:
            yield session

    async def ping(self) -> None:
        async with self.read() as session:
            await session.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()
        if self.read_engine is not self.engine:
            await self.read_engine.dispose()


def _sqlite_engine(url: str, *, echo: bool, immediate: bool) -> AsyncEngine:
    engine = create_async_engine(url, echo=echo, module=OneHopDBAPI(),
                                 connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let us issue BEGIN ourselves (pysqlite's implicit BEGIN is DEFERRED).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL is durable against app crashes
        cursor.close()

    begin = "BEGIN IMMEDIATE" if immediate else "BEGIN"

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql(begin)

    return engine
