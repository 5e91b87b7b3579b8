"""The desk: everything a core service needs (database, settings, clock, file store) in one object."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from core.attachment_policy import AttachmentPolicy
from core.attachments import AttachmentStore
from core.db import Database
from core.enums import Priority, Status
from core.timeutil import Clock, utcnow
from core.uow import UnitOfWork, unit_of_work


@dataclass(frozen=True)
class CoreSettings:
    """The part of the configuration the core acts on (loaded and validated by supportbot.config)."""

    ticket_prefix: str = "#"
    first_ticket_number: int = 1000
    categories: tuple[str, ...] = ("general", "billing", "technical")
    default_priority: Priority = Priority.MEDIUM
    # A customer mail to a ticket closed longer ago than this opens a new, linked ticket.
    reopen_closed_within: timedelta = timedelta(days=14)
    # Where a ticket goes after a staff reply that names no status (waiting on the customer).
    status_after_reply: Status = Status.PENDING
    max_tag_length: int = 50
    # What makes an attachment dangerous: kept on the desk, never passed on (core.attachment_policy).
    attachments: AttachmentPolicy = AttachmentPolicy()


@dataclass
class Desk:
    db: Database
    settings: CoreSettings
    files: AttachmentStore
    clock: Clock = field(default=utcnow)

    @classmethod
    def open(cls, url: str, data_dir: Path, settings: CoreSettings | None = None,
             clock: Clock = utcnow) -> Desk:
        return cls(Database(url), settings or CoreSettings(), AttachmentStore(data_dir / "attachments"), clock)

    def unit_of_work(self) -> AbstractAsyncContextManager[UnitOfWork]:
        return unit_of_work(self.db)

    def format_number(self, number: int) -> str:
        return f"{self.settings.ticket_prefix}{number}"

    async def close(self) -> None:
        await self.db.dispose()
