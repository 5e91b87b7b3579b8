"""IMAP in, wired from the config: one ImapSource per [[mail.imap]] block, waking the inbound worker."""

from __future__ import annotations

import logging
from collections.abc import Callable

from core.desk import Desk
from mail_gateway.imap import ImapSource, ImapSources
from supportbot.config import Config

log = logging.getLogger(__name__)


def imap_part(config: Config, desk: Desk, *, on_stored: Callable[[], None]) -> ImapSources | None:
    """Part factory for `supportbot run`; None (and says so) when no mailbox is configured."""
    mailboxes = config.mail.imap
    if not mailboxes:
        log.info("no [[mail.imap]] mailboxes configured: not reading mail over IMAP")
        return None
    names = [m.name for m in mailboxes]
    if len(set(names)) != len(names):
        raise ValueError(f"mail.imap: mailbox names must be unique, got {names}")
    return ImapSources([ImapSource(desk, m, on_stored=on_stored) for m in mailboxes])
