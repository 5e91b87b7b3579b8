"""The one way a received mail enters the desk: its raw bytes stored and committed, with its Message-ID."""

from __future__ import annotations

import re
from collections.abc import Sequence

from core.desk import Desk
from core.imap_models import ReadUpTo
from core.inbound import RawMail, StoredMail, store_raw, store_raw_many

_HEADER_END = re.compile(rb"\r?\n\r?\n")
_MESSAGE_ID = re.compile(rb"^message-id:[ \t]*(?:\r?\n[ \t]+)*<([^<>\s]{1,900})>", re.IGNORECASE | re.MULTILINE)
MAX_HEADER_BYTES = 256 * 1024


def message_id_of(raw: bytes) -> str | None:
    """The Message-ID from the header block, found cheaply (the full parse happens later)."""
    end = _HEADER_END.search(raw, 0, MAX_HEADER_BYTES)
    head = raw[: end.start() if end else MAX_HEADER_BYTES]
    found = _MESSAGE_ID.search(head)
    return found.group(1).decode("ascii", "replace") if found else None


async def store_received(desk: Desk, raw: bytes, *, source: str, mailbox: str = "",
                         envelope_from: str | None = None, envelope_to: Sequence[str] = ()) -> StoredMail:
    return await store_raw(desk, raw, source=source, mailbox=mailbox, envelope_from=envelope_from,
                           envelope_to=envelope_to, message_id=message_id_of(raw))


async def store_received_many(desk: Desk, raws: Sequence[bytes], *, source: str, mailbox: str = "",
                              read_up_to: ReadUpTo | None = None) -> list[StoredMail]:
    """A batch in one transaction, with the IMAP position after it (core.inbound.store_raw_many)."""
    mails = [RawMail(raw, message_id=message_id_of(raw)) for raw in raws]
    return await store_raw_many(desk, mails, source=source, mailbox=mailbox, read_up_to=read_up_to)
