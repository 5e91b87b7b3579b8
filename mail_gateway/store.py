"""The one way a received mail enters the desk: its raw bytes stored and committed, with its Message-ID."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from datetime import datetime

from core.desk import Desk
from core.imap_models import ReadUpTo
from core.inbound import RawMail, StoredMail, store_raw, store_raw_many

_HEADER_END = re.compile(rb"\r?\n\r?\n")
_MESSAGE_ID = re.compile(rb"^message-id:[ \t]*(?:\r?\n[ \t]+)*<([^<>\s]{1,900})>", re.IGNORECASE | re.MULTILINE)
MAX_HEADER_BYTES = 256 * 1024


_FOLD = re.compile(rb"\r?\n(?=[ \t])")
# What the author's program wrote and no relay changes: who, to whom, when, what, and in what form.
_IDENTITY_FIELD = re.compile(rb"^(from|to|cc|date|subject|content-type):[ \t]*(.*)$", re.IGNORECASE | re.MULTILINE)


def content_digest(raw: bytes) -> str:
    """What makes a mail itself, apart from how it travelled: its author's header fields (From, To, Cc,
    Date, Subject, Content-Type) and its body.

    The same mail delivered by two routes (other Received and Delivered-To lines, CRLF or LF)
    digests alike; a different mail that reuses a Message-ID does not (core.inbound keys copies by
    the Message-ID and this digest together).
    """
    end = _HEADER_END.search(raw, 0, MAX_HEADER_BYTES)
    head, body = (raw[:end.start()], raw[end.end():]) if end else (raw[:MAX_HEADER_BYTES], b"")
    fields = sorted((name.lower(), b" ".join(value.split())) for name, value in
                    _IDENTITY_FIELD.findall(_FOLD.sub(b"", head)))
    digest = hashlib.sha256()
    for name, value in fields:
        digest.update(name + b":" + value + b"\0")
    digest.update(body.replace(b"\r\n", b"\n").rstrip())
    return digest.hexdigest()


def message_id_of(raw: bytes) -> str | None:
    """The Message-ID from the header block, found cheaply (the full parse happens later)."""
    end = _HEADER_END.search(raw, 0, MAX_HEADER_BYTES)
    head = raw[: end.start() if end else MAX_HEADER_BYTES]
    found = _MESSAGE_ID.search(head)
    return found.group(1).decode("ascii", "replace") if found else None


async def store_received(desk: Desk, raw: bytes, *, source: str, mailbox: str = "",
                         envelope_from: str | None = None, envelope_to: Sequence[str] = ()) -> StoredMail:
    return await store_raw(desk, raw, source=source, mailbox=mailbox, envelope_from=envelope_from,
                           envelope_to=envelope_to, message_id=message_id_of(raw), content_digest=content_digest(raw))


async def store_received_many(desk: Desk, raws: Sequence[bytes], *, source: str, mailbox: str = "",
                              read_up_to: ReadUpTo | None = None,
                              received: Sequence[datetime | None] | None = None) -> list[StoredMail]:
    """A batch in one transaction, with the IMAP position after it (core.inbound.store_raw_many)."""
    arrivals = list(received) if received is not None else [None] * len(raws)
    mails = [RawMail(raw, message_id=message_id_of(raw), content_digest=content_digest(raw), received_at=at)
             for raw, at in zip(raws, arrivals, strict=True)]
    return await store_raw_many(desk, mails, source=source, mailbox=mailbox, read_up_to=read_up_to)
