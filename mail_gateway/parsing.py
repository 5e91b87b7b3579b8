"""Turn the raw bytes of an inbound mail into a ParsedMail, in bounded time and without raising.

The stdlib parser recurses once per MIME level and re-checks every enclosing boundary on every
line, so a hostile mail with thousands of nested multiparts costs it quadratic time and then a
RecursionError. Here the MIME tree is split by hand (linear byte searches, a depth limit, a part
budget); the stdlib only parses the Content-* parameters of one part at a time. The byte-level
pieces (charsets, header fields, multipart splitting) are in mail_gateway.mime.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from types import MappingProxyType

from core.parsed_mail import Address, DeliveryReport, ParsedAttachment, ParsedMail, RecipientStatus
from mail_gateway import mime
from mail_gateway.html import html_to_text, sanitize_html, text_without_parsing, too_costly_to_parse
from mail_gateway.quotes import strip_reply

# --- limits of the walk --------------------------------------------------------------------

_MAX_DSN_BLOCKS = 200
_MAX_DSN_BYTES = 65_536  # a real delivery-status part is a few KiB; each block re-reads the rest
_DEPTH_CEILING = 50  # whatever the caller asks, Python's own recursion limit stays far away


_ADDRESS_CONTROLS = re.compile(r"[\x00-\x1f\x7f]")


def _addresses(values: list[str], defects: list[str], header: str | None = None) -> list[Address]:
    """Every address of every value of one header, read as email.headerregistry reads them
    (mail_gateway.mime.read_address_list). `header`: name entries that are malformed in defects.

    The address is the addr-spec the structure gives, lowercased; a control character in it (only
    obsolete syntax lets one in) becomes U+FFFD, so it stays a distinct address that can be stored.
    Entries that are no address at all ("undisclosed-recipients:;", garbage) give none.
    """
    result = []
    for value in values:
        for entry in mime.read_address_list(value):
            email = _ADDRESS_CONTROLS.sub("\ufffd", entry.addr_spec).lower() if entry.addr_spec else None
            if header is not None and entry.problem is not None:
                read = f"; read as {email[:100]}" if email else ""
                note = f"{header} header: {entry.problem[:120]}{read}"
                if note not in defects:
                    defects.append(note)
            if email is None:
                continue
            if entry.name:
                name = mime.display_name(entry.name, defects)
            else:  # "alice@example.org (Alice Example)": the comment names the mailbox
                name = mime.one_line(mime.decode_words(entry.comment, defects))
            result.append(Address(name, email))
    return result


# --- walking one mail --------------------------------------------------------------------------


@dataclass
class _Budget:
    """Limits shared by a mail and every mail forwarded inside it."""

    max_attachment_bytes: int
    max_depth: int
    max_parts: int
    max_html_chars: int
    parts_left: int
    html_chars_left: int


@dataclass
class _Html:
    """An HTML body; turned into text only if no plain-text version stands for it."""

    html: str
    parse: bool = True  # False: too hostile for the HTML parser, text taken by pattern


@dataclass
class _Report:
    """What the parts of a multipart/report; report-type=delivery-status said."""

    status_blocks: list[dict[str, str]] = field(default_factory=list)
    returned_headers: dict[str, str] = field(default_factory=dict)
    forwarded_before: int = 0


_DSN_STATUS_TYPES = frozenset({"message/delivery-status", "message/global-delivery-status"})
_DSN_HEADERS_TYPES = frozenset({"text/rfc822-headers", "message/global-headers"})
_MESSAGE_TYPES = frozenset({"message/rfc822", "message/global"})
_BODY_TYPES = frozenset({"text/plain", "text/html"})


def _has_text(text: str) -> bool:
    """Anything but whitespace in `text` (without the copy text.strip() makes)."""
    return bool(text) and not text.isspace()


def _has_words(piece: str | _Html) -> bool:
    """A plain-text body with something in it (some clients send an empty one beside HTML)."""
    return isinstance(piece, str) and _has_text(piece)


class _Walker:
    """Collects the bodies, attachments and forwarded mails of one mail's MIME tree."""

    def __init__(self, budget: _Budget, defects: list[str]) -> None:
        self.budget = budget
        self.defects = defects
        self.texts: list[str | _Html] = []
        self.htmls: list[str] = []
        self.attachments: list[ParsedAttachment] = []
        self.forwarded: list[ParsedMail] = []
        self.report_type: str | None = None
        self.report: _Report | None = None
        self.delivery_report: DeliveryReport | None = None

    def note(self, defect: str) -> None:
        if defect not in self.defects:
            self.defects.append(defect)

    def walk(self, part: mime.Part, depth: int) -> None:
        if depth > self.budget.max_depth:
            self.note(f"MIME nesting deeper than {self.budget.max_depth} levels; not read")
            return
        if self.budget.parts_left <= 0:
            self.note(f"more than {self.budget.max_parts} MIME parts; the rest were not read")
            return
        self.budget.parts_left -= 1
        content_type = part.mime.get_content_type()
        if content_type.startswith("multipart/"):
            self._multipart(part, content_type, depth)
        else:
            self._leaf(part, content_type, depth)

    def _multipart(self, part: mime.Part, content_type: str, depth: int) -> None:
        boundary = part.param("boundary")
        raw_children = (
            mime.split_multipart(part.body, boundary[:200], self.budget.parts_left + 1, self.defects)
            if boundary
            else []
        )
        if not raw_children:
            self.note(f"{content_type} without parts; its body was read as text")
            self._body(part, "text/plain")
            return
        # Memory: bodies are views into the mail, not copies, whatever the nesting; a body is let
        # go as soon as what it holds was taken out (a decoded body is the only copy).
        part.body = b""
        default_type = "message/rfc822" if content_type == "multipart/digest" else "text/plain"
        children = [mime.Part.parse(raw, self.defects, default_type) for raw in raw_children]
        if content_type == "multipart/alternative":
            self._alternative(children, depth + 1)
        elif content_type == "multipart/report" and self.report_type is None:
            self._report(part, children, depth + 1)
        else:
            for child in children:
                self.walk(child, depth + 1)

    def _alternative(self, children: list[mime.Part], depth: int) -> None:
        first_text, first_html = len(self.texts), len(self.htmls)
        versions: list[tuple[list[str | _Html], list[str]]] = []
        for child in children:
            texts_before, htmls_before = len(self.texts), len(self.htmls)
            self.walk(child, depth)
            versions.append((self.texts[texts_before:], self.htmls[htmls_before:]))
        # Every version says the same thing: keep one plain text (the sender's client wrote it
        # for text readers, so it beats text derived from HTML) and one HTML. The last version
        # is the preferred one (RFC 2046 section 5.1.4). Attachments of all versions stay.
        plain = [texts for texts, _ in versions if any(_has_words(t) for t in texts)]
        derived = [texts for texts, _ in versions if texts]
        html = [htmls for _, htmls in versions if htmls]
        self.texts[first_text:] = (plain or derived or [[]])[-1]
        self.htmls[first_html:] = (html or [[]])[-1]

    def _report(self, part: mime.Part, children: list[mime.Part], depth: int) -> None:
        self.report_type = part.param("report-type").lower() or "unknown"
        if self.report_type == "delivery-status":
            self.report = _Report(forwarded_before=len(self.forwarded))
        for child in children:
            self.walk(child, depth)
        if self.report is not None:
            self.delivery_report = self._delivery_report(self.report)
            self.report = None

    def _leaf(self, part: mime.Part, content_type: str, depth: int) -> None:
        part.body = mime.transfer_decode(part, self.defects)  # the encoded body goes
        filename = part.filename(self.defects)
        disposition = part.mime.get_content_disposition()
        if content_type in _MESSAGE_TYPES:
            data, part.body = part.body, b""
            self._forwarded(data, filename, depth)
        elif self.report is not None and content_type in _DSN_STATUS_TYPES:
            self.report.status_blocks = _status_blocks(part.body)
        elif self.report is not None and content_type in _DSN_HEADERS_TYPES:
            fields, _ = mime.split_head(part.body, [])
            self.report.returned_headers = {name.lower(): value for name, value in reversed(fields)}
        elif content_type in _BODY_TYPES and disposition != "attachment" and not filename:
            self._body(part, content_type)
        else:
            content_id = mime.content_id(part.mime.get("content-id"))
            # No Content-Disposition but a Content-ID: an image the HTML shows (multipart/related).
            inline = disposition == "inline" or (disposition is None and content_id is not None)
            data, part.body = part.body, b""
            self._attach(data, content_type, filename, content_id, inline)

    def _body(self, part: mime.Part, content_type: str) -> None:
        data, part.body = part.body, b""
        charset = part.param("charset") or None
        if content_type == "text/plain" and mime.newline_bytes_are_newlines(charset):
            # The blank lines at either end go anyway (piece.strip("\n") in _parse); taking them
            # off the bytes is free and leaves that strip nothing to copy.
            data = mime.strip_newline_bytes(data)
        decoded = mime.decode_bytes(data, charset, self.defects)
        del data  # the bytes go before the text is copied again
        text = mime.clean_text(decoded)
        del decoded
        if content_type == "text/plain":
            if part.param("format").lower() == "flowed":
                text = mime.unflow(text, delsp=part.param("delsp").lower() == "yes")
            self.texts.append(text)
            return
        if len(text) > self.budget.html_chars_left:
            self.note(f"HTML beyond {self.budget.max_html_chars} characters was not read")
            text = text[: self.budget.html_chars_left]
        self.budget.html_chars_left -= len(text)
        if text and (too_costly := too_costly_to_parse(text)):
            self.note(too_costly)
            self.texts.append(_Html(text, parse=False))
        elif text:
            self.htmls.append(text)
            self.texts.append(_Html(text))

    def _attach(
        self,
        data: mime.Buffer,
        content_type: str,
        filename: str | None,
        content_id: str | None,
        inline: bool,
    ) -> None:
        held_back = len(data) > self.budget.max_attachment_bytes
        name = mime.safe_filename(filename, content_type, len(self.attachments) + 1)
        if held_back:
            self.note(f"attachment {name!r} ({len(data)} bytes) is over the limit of "
                      f"{self.budget.max_attachment_bytes} bytes and was held back")
        self.attachments.append(ParsedAttachment(
            filename=name, content_type=content_type, data=b"" if held_back else bytes(data),
            size=len(data), content_id=content_id, inline=inline, held_back=held_back,
        ))

    def _forwarded(self, data: mime.Buffer, filename: str | None, depth: int) -> None:
        if depth + 1 > self.budget.max_depth:
            self.note(f"MIME nesting deeper than {self.budget.max_depth} levels; not read")
        else:
            inner = _parse(data, depth + 1, self.budget)
            self.forwarded.append(inner)
            for defect in inner.defects:
                prefix = "" if defect.startswith("forwarded mail: ") else "forwarded mail: "
                self.note(prefix + defect)
        count = sum(1 for a in self.attachments if a.content_type in _MESSAGE_TYPES)
        default = "forwarded.eml" if count == 0 else f"forwarded-{count + 1}.eml"
        self._attach(data, "message/rfc822", filename or default, None, False)

    def _delivery_report(self, report: _Report) -> DeliveryReport:
        blocks = report.status_blocks
        per_message = blocks[0] if blocks and "action" not in blocks[0] else {}
        returned = self.forwarded[report.forwarded_before :]
        original_id = returned[0].message_id if returned else None
        if original_id is None:
            ids = mime.message_ids(report.returned_headers.get("message-id"))
            original_id = ids[0] if ids else None
        return DeliveryReport(
            original_message_id=original_id,
            original_envelope_id=per_message.get("original-envelope-id") or None,
            reporting_mta=_typed_value(per_message.get("reporting-mta", "")),
            recipients=[_recipient_status(block) for block in blocks if "action" in block],
        )


def _typed_value(value: str) -> str:
    """ "rfc822; bob@example.org" -> "bob@example.org" (RFC 3464 typed fields)."""
    return mime.one_line(value.split(";", 1)[-1])


def _recipient_status(block: dict[str, str]) -> RecipientStatus:
    recipient = block.get("final-recipient") or block.get("original-recipient") or ""
    return RecipientStatus(
        recipient=_typed_value(recipient).strip("<>").lower(),
        action=mime.one_line(block.get("action", "")).lower(),
        status=mime.one_line(block.get("status", "")).split(" ")[0],
        diagnostic=_typed_value(block.get("diagnostic-code", "")),
    )


def _status_blocks(data: mime.Buffer) -> list[dict[str, str]]:
    """The field blocks of a message/delivery-status body: per message, then per recipient."""
    blocks: list[dict[str, str]] = []
    rest = bytes(data[:_MAX_DSN_BYTES])
    while len(blocks) < _MAX_DSN_BLOCKS:
        rest = rest.lstrip(b"\r\n \t")
        fields, remaining = mime.split_head(rest, [])
        if not fields:
            break
        blocks.append({name.lower(): value for name, value in reversed(fields)})
        rest = bytes(remaining)
    return blocks


# --- putting a ParsedMail together -------------------------------------------------------------


def _parse(raw: mime.Buffer, depth: int, budget: _Budget) -> ParsedMail:
    defects: list[str] = []
    top = mime.Part.parse(raw, defects)
    if not top.fields:
        defects.append("no header fields: this is not a mail")
    walker = _Walker(budget, defects)
    walker.walk(top, depth)

    headers: dict[str, list[str]] = {}
    for name, value in top.fields:
        headers.setdefault(name.lower(), []).append(mime.one_line(mime.decode_words(value, defects)))

    def raw_values(name: str) -> list[str]:
        return [value for field_name, value in top.fields if field_name.lower() == name]

    def first(name: str) -> str | None:
        values = raw_values(name)
        return values[0] if values else None

    message_ids = mime.message_ids(first("message-id"))
    # Every From field, not only the first: a mail naming more than one sender is the core's
    # to hold, and only if it sees them all.
    senders = _addresses(raw_values("from"), defects, "From")
    delivered_to = [
        address.email
        for name in ("delivered-to", "x-original-to", "envelope-to")
        for address in _addresses(raw_values(name), defects)
    ]
    pieces = [
        mime.clean_text(html_to_text(piece.html, budget.max_html_chars) if piece.parse
                        else text_without_parsing(piece.html))
        if isinstance(piece, _Html)
        else piece
        for piece in walker.texts
    ]
    text = "\n\n".join(piece.strip("\n") for piece in pieces if _has_text(piece))
    del pieces
    walker.texts.clear()
    html = "\n".join(sanitize_html(body).strip() for body in walker.htmls) if walker.htmls else None
    new_text = strip_reply(text)
    if new_text == text:
        new_text = text  # one string, not two: the result (and its pickle) holds the text once
    return ParsedMail(
        message_id=message_ids[0] if message_ids else None,
        in_reply_to=mime.message_ids(first("in-reply-to")),
        references=mime.message_ids(" ".join(raw_values("references"))),
        subject=mime.one_line(mime.decode_words(first("subject") or "", defects)),
        from_=senders[0] if senders else None, from_addresses=senders,
        reply_to=_addresses(raw_values("reply-to"), defects),
        to=_addresses(raw_values("to"), defects),
        cc=_addresses(raw_values("cc"), defects),
        delivered_to=list(dict.fromkeys(delivered_to)),
        date=mime.header_date(first("date"), defects),
        text=text,
        new_text=new_text,
        html=html,
        attachments=walker.attachments,
        forwarded=walker.forwarded,
        headers=MappingProxyType(headers),
        is_delivery_report=walker.delivery_report is not None,
        delivery_report=walker.delivery_report,
        report_type=walker.report_type,
        defects=defects,
    )


def parse_mail(
    raw: bytes,
    *,
    max_attachment_bytes: int = 25 * 1024 * 1024,
    max_depth: int = 10,
    max_parts: int = 500,
    max_html_chars: int = 2_000_000,
) -> ParsedMail:
    """Parse one mail. Never raises: what could not be read is listed in `defects`.

    The limits count for the mail and everything forwarded inside it together: `max_depth`
    levels of MIME nesting (at most 50), `max_parts` MIME parts, `max_html_chars` characters of
    HTML. Attachments over `max_attachment_bytes` keep their name and size but not their data.
    """
    budget = _Budget(
        max_attachment_bytes=max_attachment_bytes,
        max_depth=min(max_depth, _DEPTH_CEILING),
        max_parts=max_parts,
        max_html_chars=max_html_chars,
        parts_left=max(1, max_parts),
        html_chars_left=max(0, max_html_chars),
    )
    try:
        return _parse(bytes(raw), 0, budget)
    except Exception as error:  # noqa: BLE001
        # The last line of defence for the promise above: a mail we cannot read is still
        # stored and shown to staff, with the reason. Reaching this line is a bug to fix.
        return _unreadable(f"the parser failed: {type(error).__name__}: {error}")


def _unreadable(reason: str) -> ParsedMail:
    return ParsedMail(
        message_id=None, in_reply_to=[], references=[], subject="", from_=None, reply_to=[],
        to=[], cc=[], delivered_to=[], date=None, text="", new_text="", html=None,
        attachments=[], forwarded=[], headers=MappingProxyType({}), is_delivery_report=False,
        delivery_report=None, report_type=None, defects=[reason],
    )
