"""Shared fixtures: a migrated desk on SQLite and on a real PostgreSQL server, and a fixed clock.

Every desk a test uses is built by `open_desk`; the real servers are started by the project's own
scripts in scripts/servers/ (PostgreSQL here, Dovecot and Postfix in tests/servers.py).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from core.attachments import AttachmentStore
from core.db import Database
from core.desk import CoreSettings, Desk
from core.migrate import upgrade
from supportbot import runloop

REPO = Path(__file__).resolve().parent.parent
SERVERS = REPO / "scripts" / "servers"  # start-/stop- scripts for PostgreSQL, Dovecot and Postfix
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
INSTALL_HINT = ("run scripts/test as root, which installs them (scripts/install-servers), or: "
                "apt-get install dovecot-imapd dovecot-lmtpd postfix postgresql")
SETTINGS = CoreSettings(categories=("general", "billing", "technical"))


def need_server(reason: str) -> None:
    """Skip locally when a real server is missing; in CI a missing server is a failure."""
    if IN_CI:
        pytest.fail(f"CI must not skip: {reason}")
    pytest.skip(reason)


def not_installed(server: str) -> str:
    """Why a test cannot run, and how to fix it."""
    return f"{server} is not installed; {INSTALL_HINT}"


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


def postgres_installed() -> bool:
    return shutil.which("initdb") is not None or any(Path("/usr/lib/postgresql").glob("*/bin/initdb"))


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A throwaway PostgreSQL on loopback for the whole session (scripts/servers/start-postgres.sh)."""
    if not postgres_installed():
        need_server(not_installed("PostgreSQL"))
    state = tempfile.mkdtemp(prefix="pg-", dir="/tmp")  # not under tmp_path: the server user must reach it
    result = subprocess.run([str(SERVERS / "start-postgres.sh"), state, "auto"], capture_output=True, text=True,
                            timeout=120)
    if result.returncode != 0 or "POSTGRES READY" not in result.stdout:
        shutil.rmtree(state, ignore_errors=True)
        need_server(f"PostgreSQL did not start: {result.stderr.strip()[-500:]}")
    url = re.search(r"url=(\S+)", result.stdout)
    assert url, result.stdout
    try:
        yield url.group(1)
    finally:
        subprocess.run([str(SERVERS / "stop-postgres.sh"), state, "--purge"], capture_output=True, timeout=60)


async def _fresh_postgres_database(server_url: str, template: str | None = None) -> str:
    """A new database per test (empty, or a copy of `template`): tests cannot see each other's tickets."""
    import asyncpg

    base = server_url.replace("postgresql+asyncpg://", "postgresql://")
    name = f"t_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(base)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    finally:
        await conn.close()
    return server_url.rsplit("/", 1)[0] + "/" + name


def _run_aside(work: Callable[[], Any]) -> None:
    """Run a coroutine function on a loop of its own in a thread: a session fixture may be set up
    the first time inside a test's running loop (an async fixture asking for it by name)."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(lambda: asyncio.run(work())).result()


def sqlite_url(directory: Path) -> str:
    return f"sqlite+aiosqlite:///{directory / 'desk.db'}"


@asynccontextmanager
async def open_desk(url: str, directory: Path, clock: Callable[[], datetime] | None = None, *,
                    migrate: bool = True) -> AsyncIterator[Desk]:
    """The desk every test uses, on the database at `url`, attachments under `directory`.

    `migrate=False` for a database already migrated (a copied template, or a second engine on the
    database of another desk, as another process would open it). Without a clock: real time.
    """
    db = Database(url)
    try:
        if migrate:
            await upgrade(db)
        files = AttachmentStore(directory / "attachments")
        yield Desk(db, SETTINGS, files) if clock is None else Desk(db, SETTINGS, files, clock)
    finally:
        await db.dispose()


def copy_of(template: Path, directory: Path) -> str:
    """A copy of a migrated SQLite file as `directory`'s desk database; returns its URL."""
    shutil.copyfile(template, directory / "desk.db")
    return sqlite_url(directory)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return sqlite_url(tmp_path)
    server = request.getfixturevalue("postgres_server")
    return await _fresh_postgres_database(server)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def desk(request: pytest.FixtureRequest, tmp_path: Path, clock: FixedClock) -> AsyncIterator[Desk]:
    """A migrated desk, on SQLite and on PostgreSQL: a copy of one migrated template per engine
    (migrating takes longer than most tests; tests/core/test_migrations.py migrates for real)."""
    if request.param == "sqlite":
        url = copy_of(request.getfixturevalue("migrated_sqlite"), tmp_path)
    else:
        url = await _fresh_postgres_database(request.getfixturevalue("postgres_server"),
                                             template=request.getfixturevalue("migrated_postgres"))
    async with open_desk(url, tmp_path, clock, migrate=False) as desk:
        yield desk


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated SQLite file, copied for each test."""
    directory = tmp_path_factory.mktemp("template")

    async def migrate() -> None:
        async with open_desk(sqlite_url(directory), directory):
            pass  # closing the last connection folds the WAL back into the file

    _run_aside(migrate)
    return directory / "desk.db"


@pytest.fixture(scope="session")
def migrated_postgres(postgres_server: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The name of one migrated PostgreSQL database, each test's template (CREATE DATABASE … TEMPLATE)."""
    url: list[str] = []

    async def migrate() -> None:
        url.append(await _fresh_postgres_database(postgres_server))
        async with open_desk(url[0], tmp_path_factory.mktemp("pg-template")):
            pass  # disposed: a template must have no open connections

    _run_aside(migrate)
    return url[0].rsplit("/", 1)[1]


@pytest.fixture
async def sqlite_desk(tmp_path: Path, clock: FixedClock, migrated_sqlite: Path) -> AsyncIterator[Desk]:
    """The desk on SQLite only, for tests that do not depend on the database engine."""
    async with open_desk(copy_of(migrated_sqlite, tmp_path), tmp_path, clock, migrate=False) as desk:
        yield desk
