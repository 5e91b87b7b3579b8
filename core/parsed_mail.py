"""The plain value the mail edge hands to intake: what one mail says, already parsed and sanitized.

mail_gateway.parsing builds it from raw bytes; nothing here knows MIME. It crosses a process
boundary (the parse process), so it pickles.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from types import MappingProxyType


@dataclass(frozen=True)
class Address:
    """A mailbox: display name (RFC 2047 decoded, "" when absent) and address (lowercased)."""

    name: str
    email: str


@dataclass(frozen=True)
class ParsedAttachment:
    """A non-body part. When `held_back`, `data` is b"" but name and size are kept for staff."""

    filename: str  # decoded and made safe; "attachment-N.ext" when the mail gave none
    content_type: str  # lowercased "type/subtype"
    data: bytes
    size: int  # of the decoded payload, also when held back
    content_id: str | None  # without <>, for cid: references in the HTML
    inline: bool
    held_back: bool  # size > max_attachment_bytes


@dataclass(frozen=True)
class RecipientStatus:
    """One per-recipient block of a delivery status notification (RFC 3464)."""

    recipient: str  # Final-Recipient (else Original-Recipient) address, lowercased
    action: str  # "failed", "delayed", "delivered", "relayed" or "expanded"
    status: str  # enhanced status code, e.g. "5.1.1"
    diagnostic: str  # Diagnostic-Code without its type, e.g. "550 5.1.1 User unknown"

    @property
    def failed(self) -> bool:
        return self.action == "failed" or self.status.startswith("5")


@dataclass(frozen=True)
class DeliveryReport:
    """What a bounce says about a mail we sent, and which mail that was."""

    original_message_id: str | None  # from the returned message or its headers
    original_envelope_id: str | None
    reporting_mta: str
    recipients: list[RecipientStatus]


@dataclass(frozen=True)
class ParsedMail:
    """Everything supportbot needs from one mail. `defects` says what was wrong with it."""

    message_id: str | None  # without <>; None when missing or garbage
    in_reply_to: list[str]
    references: list[str]  # in order, without duplicates
    subject: str  # decoded, one line
    from_: Address | None
    reply_to: list[Address]
    to: list[Address]
    cc: list[Address]
    delivered_to: list[str]  # Delivered-To, X-Original-To and Envelope-To addresses
    date: datetime | None  # aware; a date without a zone is taken as UTC
    text: str  # all plain-text bodies; derived from the HTML when there is no plain text
    new_text: str  # `text` without quoted history and signature
    html: str | None  # sanitized HTML body, or None
    attachments: list[ParsedAttachment]
    forwarded: list[ParsedMail]  # attached message/rfc822 mails, parsed
    headers: Mapping[str, list[str]]  # top-level headers: lowercased name -> decoded values
    is_delivery_report: bool  # multipart/report; report-type=delivery-status
    delivery_report: DeliveryReport | None
    report_type: str | None  # any multipart/report: "delivery-status", "disposition-notification"…
    defects: list[str] = field(default_factory=list)
    # Every address the From header names (RFC 5322 allows several; a customer's mail has one).
    from_addresses: list[Address] = field(default_factory=list)

    def __reduce__(self) -> tuple[object, tuple[dict[str, object]]]:
        # To and from the parsing process: `headers` is a read-only view, which pickle cannot carry.
        state = {f.name: getattr(self, f.name) for f in fields(self)}
        state["headers"] = dict(self.headers)
        return _rebuild_parsed_mail, (state,)

    def header(self, name: str) -> str | None:
        """The first value of header `name`, or None."""
        values = self.headers.get(name.lower())
        return values[0] if values else None


def _rebuild_parsed_mail(state: dict[str, object]) -> ParsedMail:
    state["headers"] = MappingProxyType(state["headers"])  # type: ignore[arg-type]
    return ParsedMail(**state)  # type: ignore[arg-type]
