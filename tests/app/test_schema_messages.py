"""`supportbot migrate` and `supportbot run` say what they did to the schema: created it, upgraded it
from one revision to another, or found it up to date — not "up to date" for a brand-new database."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from core.migrate import head_revision, upgrade
from supportbot.app import build_app, open_desk
from supportbot.cli import main
from supportbot.config import load_config

OLDER = "0007"


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    path = tmp_path / "supportbot.toml"
    path.write_text("[http]\nenabled = false\n[mail.smtp_listener]\nenabled = false\n")
    return path


def upgrade_to(config_path: Path, revision: str) -> None:
    async def go() -> None:
        desk = open_desk(load_config(config_path, environ={}))
        try:
            await upgrade(desk.db, revision)
        finally:
            await desk.close()

    asyncio.run(go())


def test_migrate_says_created_then_up_to_date(config_path, capsys):
    head = head_revision()
    assert main(["--config", str(config_path), "migrate"]) == 0
    assert capsys.readouterr().out == f"created the database schema (revision {head})\n"
    assert main(["--config", str(config_path), "migrate"]) == 0
    assert capsys.readouterr().out == f"database schema is up to date (revision {head})\n"


def test_migrate_says_from_which_revision_it_upgraded(config_path, capsys):
    upgrade_to(config_path, OLDER)
    assert main(["--config", str(config_path), "migrate"]) == 0
    assert capsys.readouterr().out == f"upgraded the database schema from {OLDER} to {head_revision()}\n"


def schema_lines_of_build_app(config_path: Path, caplog: pytest.LogCaptureFixture) -> list[str]:
    async def go() -> None:
        app = await build_app(load_config(config_path, environ={}))
        await app.stop()

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="supportbot.app"):
        asyncio.run(go())
    return [r.getMessage() for r in caplog.records if "database schema" in r.getMessage()]


def test_run_logs_what_it_did_to_the_schema(config_path, caplog, monkeypatch):
    monkeypatch.delenv("SUPPORTBOT_DISCORD_TOKEN", raising=False)
    head = head_revision()
    where = f"SQLite at {config_path.parent / 'supportbot-data' / 'desk.db'}"
    assert schema_lines_of_build_app(config_path, caplog) == [
        f"created the database schema (revision {head}); {where}"]
    assert schema_lines_of_build_app(config_path, caplog) == [
        f"database schema is up to date (revision {head}); {where}"]


def test_run_logs_an_upgrade(config_path, caplog, monkeypatch):
    monkeypatch.delenv("SUPPORTBOT_DISCORD_TOKEN", raising=False)
    upgrade_to(config_path, OLDER)
    [line] = schema_lines_of_build_app(config_path, caplog)
    assert line.startswith(f"upgraded the database schema from {OLDER} to {head_revision()}; SQLite at ")
