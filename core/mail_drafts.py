"""What the desk wants to send, before it is a mail: the value the notifier hands the mail edge's composer.

The core decides who gets what and why (core.notifier); the mail edge turns a Draft into RFC 5322
bytes (mail_gateway.outbound.compose) and sends them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol


@dataclass(frozen=True)
class Recipient:
    email: str
    name: str = ""


@dataclass(frozen=True)
class FileAttachment:
    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class Draft:
    """Everything one mail needs; `template` names templates/email/<template>.{txt,html}.j2."""

    template: str
    ticket_number: int
    ticket_ref: str
    ticket_subject: str
    message_key: str  # makes the Message-ID: t{ticket}.{key}.{signature}@domain
    to: Sequence[Recipient]
    date: datetime
    automatic: bool
    cc: Sequence[Recipient] = ()
    context: Mapping[str, Any] = field(default_factory=dict)
    in_reply_to: str | None = None
    references: Sequence[str] = ()
    attachments: Sequence[FileAttachment] = ()
    kind: str = ""  # ack, reply, resolved, closed: recorded in the outbox
    # Who the mail is from: the support address the ticket's first mail reached, its display name
    # and signature. Empty: the composer's own (the first support address, the desk-wide from_name).
    from_address: str = ""
    from_name: str = ""
    signature: str = ""


@dataclass(frozen=True)
class AddressIdentity:
    """How the desk signs the mail it sends from one support address ([mail.addresses."…"])."""

    name: str = ""  # display name; empty: the desk-wide from_name
    signature: str = ""  # plain text closing the mail; empty: the desk's name as always


@dataclass(frozen=True)
class Composed:
    message_id: str  # with angle brackets
    content: bytes  # CRLF line ends, ready for SMTP DATA
    recipients: list[str]


class MailComposer(Protocol):
    """Builds the mail for a draft; raises ValueError when it cannot (no deliverable recipient, a
    template that does not render)."""

    support_address: str

    def compose(self, draft: Draft) -> Composed: ...
