"""Embedded default without a relay: mail is written to a local maildir so operators can see it."""

from __future__ import annotations

import asyncio
import logging
import mailbox
from collections.abc import Sequence
from pathlib import Path

from core.models import OutboxMail
from mail_gateway.outbound.transport import Report, Sent

log = logging.getLogger(__name__)


class MaildirTransport:
    """Every mail 'sent' lands in `path` (new/), readable by any mail client or `mutt -f`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.description = f"maildir {path}"
        # Said once, at start: every mail would repeat it otherwise.
        log.warning("no SMTP relay configured (mail.outbound.host is empty): outgoing mail is written "
                    "to the maildir %s instead of being sent", path)

    async def deliver(self, batch: Sequence[OutboxMail], report: Report) -> None:
        box = await asyncio.to_thread(mailbox.Maildir, self.path, create=True)
        for mail in batch:
            # Maildir writes to tmp/ and renames into new/: a mail is there whole or not at all.
            await asyncio.to_thread(box.add, mail.content)
            if not await report(mail, Sent()):
                return
