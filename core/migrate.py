"""Schema migrations (Alembic) run from the app: upgrade to the newest schema, or compare."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from core.db import Database
from core.migrations.filters import include_name
from core.models import Base

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(url: str = "") -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


async def upgrade(db: Database, revision: str = "head") -> None:
    cfg = alembic_config()

    def run(connection: Any) -> None:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)

    async with db.engine.begin() as connection:
        await connection.run_sync(run)


async def current_revision(db: Database) -> str | None:
    async with db.read_engine.connect() as connection:
        return await connection.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


async def schema_differences(db: Database) -> list[Any]:
    """What autogenerate would still change: empty when models and migrations agree."""

    def compare(connection: Any) -> list[Any]:
        context = MigrationContext.configure(
            connection, opts={"include_name": include_name, "compare_type": True})
        return list(compare_metadata(context, Base.metadata))

    async with db.read_engine.connect() as connection:
        return await connection.run_sync(compare)
