"""Shared fixtures: a migrated desk on SQLite and on a real PostgreSQL server, and a fixed clock."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from core.db import Database
from core.desk import CoreSettings, Desk
from core.attachments import AttachmentStore
from core.migrate import upgrade
from supportbot import runloop

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("SUPPORTBOT_SHARED", REPO.parent / "shared"))
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need_server(reason: str) -> None:
    """Skip locally when a real server is missing; in CI a missing server is a failure."""
    if IN_CI:
        pytest.fail(f"CI must not skip: {reason}")
    pytest.skip(reason)


class FixedClock:
    """A clock tests move by hand."""

    def __init__(self, start: datetime = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> datetime:
        self.now += timedelta(**kwargs)
        return self.now


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Any] | None:
    """Tests run on the loop `supportbot` runs on (supportbot.runloop): uvloop where installed.

    Except the bot's: SimCord (the offline Discord) runs its virtual clock on asyncio's own timer
    heap, which uvloop does not have. discord.py itself supports uvloop.
    """
    factory = runloop.loop_factory()
    if factory is None or "bot" in Path(str(item.path)).relative_to(Path(__file__).parent).parts[:1]:
        return {"asyncio": asyncio.new_event_loop}
    return {"uvloop": factory}


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A throwaway PostgreSQL on loopback (../shared/postgres), migrated once as a template."""
    start = SHARED / "postgres" / "start-postgres.sh"
    stop = SHARED / "postgres" / "stop-postgres.sh"
    if not start.exists():
        need_server(f"no PostgreSQL start script at {start}")
    if shutil.which("initdb") is None and not Path("/usr/lib/postgresql").exists():
        need_server("PostgreSQL is not installed (apt-get install postgresql)")
    state = tempfile.mkdtemp(prefix="pg-", dir="/tmp")  # not under tmp_path: the server user must reach it
    result = subprocess.run([str(start), state, "auto"], capture_output=True, text=True)
    if result.returncode != 0:
        shutil.rmtree(state, ignore_errors=True)
        need_server(f"PostgreSQL did not start: {result.stderr.strip()[-500:]}")
    url = re.search(r"url=(\S+)", result.stdout)
    assert url, result.stdout
    try:
        yield url.group(1)
    finally:
        subprocess.run([str(stop), state, "--purge"], capture_output=True)


async def _fresh_postgres_database(server_url: str) -> str:
    """A new empty database per test: tests cannot see each other's tickets."""
    import asyncpg

    base = server_url.replace("postgresql+asyncpg://", "postgresql://")
    name = f"t_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(base)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return server_url.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'desk.db'}"
    server = request.getfixturevalue("postgres_server")
    return await _fresh_postgres_database(server)


@pytest.fixture
async def desk(database_url: str, tmp_path: Path, clock: FixedClock) -> AsyncIterator[Desk]:
    db = Database(database_url)
    await upgrade(db)
    settings = CoreSettings(categories=("general", "billing", "technical"))
    desk = Desk(db, settings, AttachmentStore(tmp_path / "attachments"), clock)
    try:
        yield desk
    finally:
        await desk.close()
