"""IMAP in, wired from the config: one ImapSource per [[mail.imap]] block, waking the inbound worker."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from mail_gateway.imap import ImapSource, ImapSources

if TYPE_CHECKING:
    from supportbot.app import App

log = logging.getLogger(__name__)


async def imap_part(app: App) -> ImapSources | None:
    """Part factory for `supportbot run`; None (and says so) when no mailbox is configured."""
    mailboxes = app.config.mail.imap
    if not mailboxes:
        log.info("no [[mail.imap]] mailboxes configured: not reading mail over IMAP")
        return None
    names = [m.name for m in mailboxes]
    if len(set(names)) != len(names):
        raise ValueError(f"mail.imap: mailbox names must be unique, got {names}")

    def wake_workers() -> None:
        # Looked up at call time: the worker may be built after this part.
        for part in app.parts:
            wake = getattr(part, "wake", None)
            if callable(wake):
                wake()

    return ImapSources([ImapSource(app.desk, m, on_stored=wake_workers) for m in mailboxes])
