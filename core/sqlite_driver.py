"""aiosqlite for SQLAlchemy with one thread hop per statement instead of four.

SQLAlchemy's aiosqlite adapter awaits aiosqlite for each step of a statement: open a cursor,
execute, fetch the rows, close the cursor. Each await is a round trip to aiosqlite's thread
(a queue put, a thread wake-up, a self-pipe write, an event-loop turn), about 60 µs here, so
the hops cost several times what SQLite itself does for our small statements. This cursor does
all four steps in one function on aiosqlite's thread and keeps what SQLAlchemy asks of a cursor
afterwards (description, rowcount, lastrowid, the rows).

It relies on aiosqlite's `Connection._execute` (queue a function on the connection's thread),
which has kept its shape since aiosqlite 0.17; `tests/core/test_sqlite_driver.py` pins it down.
"""

from __future__ import annotations

import collections
import sqlite3
from collections.abc import Sequence
from typing import Any

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.util.concurrency import await_

_Result = tuple[Any, Sequence[Any], int, int | None]


def _run(connection: aiosqlite.Connection, operation: str, parameters: Any, many: bool) -> _Result:
    """On aiosqlite's thread: the whole statement, from cursor to closed cursor."""
    cursor = connection._conn.cursor()
    try:
        if many:
            cursor.executemany(operation, parameters)
        elif parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        description = cursor.description
        rows = cursor.fetchall() if description else ()
        return description, rows, cursor.rowcount, cursor.lastrowid
    finally:
        cursor.close()


class OneHopCursor(AsyncAdapt_aiosqlite_cursor):
    __slots__ = ("_description", "_rowcount", "_lastrowid", "_arraysize")

    def __init__(self, adapt_connection: Any) -> None:  # no aiosqlite cursor: no hop to make one
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor = None  # type: ignore[assignment]
        self._soft_closed_memoized = {}  # type: ignore[assignment]
        self._rows = collections.deque()
        self._description: Any = None
        self._rowcount = -1
        self._lastrowid: int | None = None
        self._arraysize = 1

    @property
    def description(self) -> Any:
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> int:
        return self._lastrowid  # type: ignore[return-value]

    @property
    def arraysize(self) -> int:
        return self._arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._arraysize = value

    async def _async_soft_close(self) -> None:
        return None  # nothing is open between statements

    def close(self) -> None:
        self._rows.clear()

    def setinputsizes(self, *inputsizes: Any) -> None:
        return None

    async def _execute_async(self, operation: Any, parameters: Any) -> Any:
        return await self._hop(operation, parameters, many=False)

    async def _executemany_async(self, operation: Any, seq_of_parameters: Any) -> Any:
        return await self._hop(operation, seq_of_parameters, many=True)

    async def _hop(self, operation: Any, parameters: Any, *, many: bool) -> None:
        async with self._adapt_connection._execute_mutex:
            result: _Result = await self._connection._execute(_run, self._connection, operation, parameters, many)
        self._description, rows, self._rowcount, self._lastrowid = result
        self._rows = collections.deque(rows)


class _Connection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ()
    _cursor_cls = OneHopCursor


class OneHopDBAPI(AsyncAdapt_aiosqlite_dbapi):
    """Pass as `module=` to create_async_engine for a sqlite+aiosqlite URL."""

    def __init__(self) -> None:
        super().__init__(aiosqlite, sqlite3)

    def connect(self, *arg: Any, **kw: Any) -> _Connection:
        connection = self.aiosqlite.connect(*arg, **kw)
        # As SQLAlchemy does: aiosqlite's thread never keeps the process alive (before aiosqlite
        # 0.22 the connection was itself the thread).
        getattr(connection, "_thread", connection).daemon = True
        return _Connection(self, await_(connection))
