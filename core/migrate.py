"""Schema migrations (Alembic) run from the app: upgrade to the newest schema, or compare."""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass(frozen=True)
class SchemaChange:
    """What `upgrade` did: the revision before (None: an empty database) and after."""

    before: str | None
    after: str | None

    @property
    def created(self) -> bool:
        return self.before is None and self.after is not None

    @property
    def changed(self) -> bool:
        return self.before != self.after

    def __str__(self) -> str:
        if self.created:
            return f"created the database schema (revision {self.after})"
        if self.changed:
            return f"upgraded the database schema from {self.before} to {self.after}"
        return f"database schema is up to date (revision {self.after})"


async def upgrade(db: Database, revision: str = "head") -> SchemaChange:
    """Upgrade to `revision`; the revisions before and after are read in the same transaction."""
    cfg = alembic_config()

    def run(connection: Any) -> SchemaChange:
        before = MigrationContext.configure(connection).get_current_revision()
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)
        return SchemaChange(before, MigrationContext.configure(connection).get_current_revision())

    async with db.engine.begin() as connection:
        return await connection.run_sync(run)


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
