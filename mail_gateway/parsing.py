"""Turn the raw bytes of an inbound mail into a ParsedMail, in bounded time and without raising.

The stdlib parser recurses once per MIME level and re-checks every enclosing boundary on every
line, so a hostile mail with thousands of nested multiparts costs it quadratic time and then a
RecursionError. Here the MIME tree is split by hand (linear byte searches, a depth limit, a part
budget); the stdlib only parses the Content-* parameters of one part at a time.
"""

from __future__ import annotations

import binascii
import codecs
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from email.message import Message
from email.utils import getaddresses, parsedate_to_datetime
from types import MappingProxyType

from mail_gateway.html import html_to_text, sanitize_html
from mail_gateway.quotes import strip_reply


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

    def __reduce__(self) -> tuple[object, tuple[dict[str, object]]]:
        # To and from the parsing process: `headers` is a read-only view, which pickle cannot carry.
        state = {f.name: getattr(self, f.name) for f in fields(self)}
        state["headers"] = dict(self.headers)
        return _rebuild_parsed_mail, (state,)

    def header(self, name: str) -> str | None:
        """The first value of header `name`, or None."""
        values = self.headers.get(name.lower())
        return values[0] if values else None


# --- limits that are not worth a parameter -------------------------------------------------------

_MAX_HEADERS = 1000  # per part; real mails carry fewer than 100
_MAX_HEADER_SECTION = 1_048_576  # bytes of header lines read per part; real ones are < 64 KiB
_MAX_HEADER_CHARS = 65_536  # per header value; a long References stays well below
# compat32 parameter parsing is quadratic in the number of ";" inside quotes, so the
# Content-* headers it sees are kept short. Real ones are under 1 KiB.
_MAX_MIME_HEADER_CHARS = 4096
_MIME_HEADERS = frozenset(
    {"content-type", "content-disposition", "content-transfer-encoding", "content-id"}
)
_MAX_DELIMITER_TAIL = 200  # transport padding allowed after a boundary on its line
_MAX_DSN_BLOCKS = 200
_MAX_DSN_BYTES = 65_536  # a real delivery-status part is a few KiB; each block re-reads the rest
_DEPTH_CEILING = 50  # whatever the caller asks, Python's own recursion limit stays far away

# --- charsets ----------------------------------------------------------------------------------

_FALLBACK_CHARSETS = ("utf-8", "windows-1252", "iso-8859-1")  # the last one never fails
_NOT_A_CHARSET = frozenset({"unknown", "unknown-8bit", "x-unknown", "x-user-defined", "default"})
# Labels senders use for text that is really in a superset; decoding with the superset is
# what every mail client and browser does (WHATWG Encoding).
_SUPERSETS = {
    "iso8859-1": "windows-1252",
    "iso8859-9": "windows-1254",
    "iso8859-11": "cp874",
    "tis-620": "cp874",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "shift_jis": "cp932",
    "euc_kr": "cp949",
}
# Codecs that would interpret escapes in the sender's bytes rather than decode a charset.
_REFUSED_CODECS = frozenset({"unicode-escape", "raw-unicode-escape", "idna", "punycode"})
_WINDOWS_LABEL = re.compile(r"(?:cp|win|windows)[-_]?(\d{3,4})")
_ISO_LABEL = re.compile(r"iso[-_]?8859[-_]?(\d{1,2})(?:-[ie])?")


def _codec(label: str | None) -> str | None:
    """The Python codec for a charset label as senders really write them, or None."""
    if not label:
        return None
    label = "".join(label.split()).strip("\"'").lower()
    if not label or label in _NOT_A_CHARSET:
        return None
    candidates = [label]
    for pattern, template in ((_WINDOWS_LABEL, "cp{}"), (_ISO_LABEL, "iso8859-{}")):
        if match := pattern.fullmatch(label):
            candidates.append(template.format(match.group(1)))
    for candidate in candidates:
        try:
            name = codecs.lookup(candidate).name
        except LookupError:
            continue
        return None if name in _REFUSED_CODECS else _SUPERSETS.get(name, name)
    return None


def _decode_bytes(data: bytes, label: str | None, defects: list[str]) -> str:
    """Decode with the declared charset, else the first fallback that fits."""
    codec = _codec(label)
    if codec is not None:
        try:
            return data.decode(codec)
        except (UnicodeError, LookupError):  # LookupError: a bytes-to-bytes codec like "base64"
            pass
    for fallback in _FALLBACK_CHARSETS:
        try:
            text = data.decode(fallback)
        except UnicodeError:
            continue
        if label and codec != fallback:
            defects.append(f"charset {label!r} did not decode the text; read it as {fallback}")
        return text
    raise AssertionError("iso-8859-1 decodes every byte string")


# C0 controls other than tab and newline, and DEL: binary junk in text, and PostgreSQL text
# columns refuse NUL.
_TEXT_JUNK = dict.fromkeys([*range(0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F])


def _clean_text(text: str) -> str:
    """One newline convention and no control characters."""
    return text.replace("\r\n", "\n").replace("\r", "\n").translate(_TEXT_JUNK)


# --- headers -----------------------------------------------------------------------------------

_HEADER_NAME = re.compile(rb"([\x21-\x39\x3b-\x7e]{1,200})[ \t]*:")
_BLANK_LINE = re.compile(rb"\n\r?\n")
_ENCODED_WORD = re.compile(r"=\?([^?\s*]+)(?:\*[^?\s]*)?\?([bBqQ])\?([^?\s]*)\?=")
_BASE64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_NOT_BASE64 = bytes(sorted(set(range(256)) - set(_BASE64_ALPHABET)))
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]+")


def _split_head(raw: bytes, defects: list[str]) -> tuple[list[tuple[str, str]], bytes]:
    """Split a part into its header fields (name, unfolded value) and its body."""
    if raw.startswith((b"\n", b"\r\n")):
        return [], raw[raw.index(b"\n") + 1 :]
    blank = _BLANK_LINE.search(raw)
    head_end, body_start = (blank.start() + 1, blank.end()) if blank else (len(raw), len(raw))
    if head_end > _MAX_HEADER_SECTION:
        defects.append(f"header section over {_MAX_HEADER_SECTION} bytes; the rest was ignored")
    fields: list[tuple[str, bytearray]] = []
    offset = 0
    for line in raw[: min(head_end, _MAX_HEADER_SECTION)].split(b"\n"):
        line_length = len(line) + 1
        line = line.rstrip(b"\r")
        if not line:
            pass  # the empty piece after the last newline
        elif line[:1] in (b" ", b"\t") and fields:
            if len(fields[-1][1]) <= _MAX_HEADER_CHARS:  # past it means "cut" further down
                fields[-1][1].extend(line)  # unfolding keeps the whitespace, drops the CRLF
        elif match := _HEADER_NAME.match(line):
            if len(fields) >= _MAX_HEADERS:
                defects.append(f"more than {_MAX_HEADERS} header fields; the rest were ignored")
                break
            fields.append((match.group(1).decode("ascii"), bytearray(line[match.end() :])))
        elif offset == 0 and line.startswith((b"From ", b">From ")):
            pass  # an mbox separator line
        else:
            if fields:
                defects.append("a header line is not a header; the rest was read as body")
            return _header_texts(fields, defects), raw[offset:]
        offset += line_length
    return _header_texts(fields, defects), raw[body_start:]


def _header_texts(
    fields: list[tuple[str, bytearray]], defects: list[str]
) -> list[tuple[str, str]]:
    # Raw 8-bit header bytes are UTF-8 by RFC 6532, and legacy charsets in practice.
    for name, value in fields:
        if len(value) > _MAX_HEADER_CHARS:
            defects.append(f"header {name[:40]} is longer than {_MAX_HEADER_CHARS} bytes; cut")
    return [
        (name, _decode_bytes(bytes(value[:_MAX_HEADER_CHARS]), None, defects).strip())
        for name, value in fields
    ]


def _base64(data: bytes) -> bytes:
    """Lenient base64: ignores line breaks, junk and missing padding."""
    clean = data.translate(None, _NOT_BASE64)
    if len(clean) % 4 == 1:
        clean = clean[:-1]  # a lone sextet carries no whole byte
    return binascii.a2b_base64(clean + b"=" * (-len(clean) % 4))


def _encoded_word_bytes(encoding: str, text: str) -> bytes:
    data = text.encode("utf-8", "replace")
    return _base64(data) if encoding in "bB" else binascii.a2b_qp(data, header=True)


def _decode_words(value: str, defects: list[str]) -> str:
    """Decode RFC 2047 encoded words, leniently (also inside quotes and next to text)."""
    if "=?" not in value:
        return value
    out: list[str] = []
    run, run_charset = b"", ""
    pos = 0
    for match in _ENCODED_WORD.finditer(value):
        gap = value[pos : match.start()]
        pos = match.end()
        charset = match.group(1).lower()
        # Whitespace between two encoded words is folding, not text (RFC 2047 section 6.2).
        if run and not gap.strip():
            gap = ""
        # Adjacent words in one charset are decoded together: senders split multibyte
        # characters across words.
        if run and (gap or charset != run_charset):
            out.append(_decode_bytes(run, run_charset, defects))
            run = b""
        out.append(gap)
        run += _encoded_word_bytes(match.group(2), match.group(3))
        run_charset = charset
    if run:
        out.append(_decode_bytes(run, run_charset, defects))
    out.append(value[pos:])
    return "".join(out)


def _one_line(text: str) -> str:
    """Control characters (CR and LF above all) out, whitespace runs to one space."""
    return " ".join(_CONTROL_CHARS.sub(" ", text).split())


_MESSAGE_ID = re.compile(r"<([^<>\s]{1,500})>")
_COMMENT = re.compile(r"\([^()]*\)")


def _message_ids(value: str | None) -> list[str]:
    """Message ids from a Message-ID, In-Reply-To or References value, without duplicates."""
    if not value:
        return []
    value = _COMMENT.sub(" ", value)
    ids = _MESSAGE_ID.findall(value)
    if not ids:
        # Some mailers leave off the brackets; without them only an "@" marks an id.
        ids = [token.strip("<>,;\"'") for token in value.split() if "@" in token]
    return list(dict.fromkeys(i for i in ids if i and len(i) <= 500))


def _addresses(values: list[str], defects: list[str]) -> list[Address]:
    result = []
    for name, email in getaddresses(values):
        email = _one_line(email).strip("<>").lower()
        if "@" in email:  # "undisclosed-recipients:;" and other garbage give none
            result.append(Address(_one_line(_decode_words(name, defects)), email))
    return result


def _date(value: str | None, defects: list[str]) -> datetime | None:
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        defects.append(f"unreadable Date header {value[:100]!r}")
        return None
    # "-0000" means the zone is unknown; UTC is the least surprising reading.
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


# --- MIME structure ----------------------------------------------------------------------------


@dataclass
class _Part:
    """One MIME entity: its header fields, its raw body and its Content-* headers parsed."""

    fields: list[tuple[str, str]]
    body: bytes
    mime: Message

    @classmethod
    def parse(cls, raw: bytes, defects: list[str], default_type: str = "text/plain") -> _Part:
        fields, body = _split_head(raw, defects)
        mime = Message()
        mime.set_default_type(default_type)
        for name, value in fields:
            if name.lower() in _MIME_HEADERS:
                mime[name] = value[:_MAX_MIME_HEADER_CHARS]
        return cls(fields, body, mime)

    def param(self, name: str, header: str = "content-type") -> str:
        value = self.mime.get_param(name, "", header)
        if isinstance(value, tuple):  # RFC 2231: (charset, language, value)
            value = value[2]
        return str(value).strip()

    def filename(self, defects: list[str]) -> str | None:
        name = self.mime.get_filename()  # Content-Disposition filename, else Content-Type name
        return _decode_words(name, defects) if name else None


def _split_multipart(body: bytes, boundary: str, limit: int, defects: list[str]) -> list[bytes]:
    """The raw child entities of a multipart body; at most `limit` of them."""
    delimiter = b"--" + boundary.encode("utf-8", "replace")
    parts: list[bytes] = []
    start: int | None = None  # where the current child begins
    pos = body.find(delimiter)
    while pos >= 0:
        after = pos + len(delimiter)
        # Only a whole line is a delimiter: "--boundary", maybe "--", maybe padding.
        line_end = body.find(b"\n", after, after + _MAX_DELIMITER_TAIL)
        if line_end < 0 and len(body) - after < _MAX_DELIMITER_TAIL:
            line_end = len(body)
        at_line_start = pos == 0 or body[pos - 1 : pos] in (b"\n", b"\r")
        tail = body[after:line_end].rstrip(b"\r") if line_end >= 0 else b"?"
        closing = tail.startswith(b"--")
        if at_line_start and not (tail[2:] if closing else tail).strip(b" \t"):
            if start is not None:
                # The line break before a delimiter belongs to the delimiter (RFC 2046).
                end = pos - (2 if body[pos - 2 : pos] == b"\r\n" else 1)
                parts.append(body[start:max(start, end)])
                if len(parts) >= limit:
                    return parts
            if closing:
                return parts
            start = line_end + 1
        pos = body.find(delimiter, after)
    if start is not None:
        defects.append("a multipart has no closing boundary; the mail may be truncated")
        parts.append(body[start:])
    return parts


def _transfer_decode(part: _Part, defects: list[str]) -> bytes:
    encoding = str(part.mime.get("content-transfer-encoding", "")).strip().lower()
    if encoding == "base64":
        return _base64(part.body)
    if encoding == "quoted-printable":
        return binascii.a2b_qp(part.body)
    if encoding not in ("", "7bit", "8bit", "binary"):
        defects.append(f"unknown Content-Transfer-Encoding {encoding[:40]!r}; kept the raw bytes")
    return part.body


def _unflow(text: str, delsp: bool) -> str:
    """Join the soft-broken lines of format=flowed text (RFC 3676)."""
    out: list[str] = []
    previous_depth, joining = 0, False
    for line in text.split("\n"):
        depth = len(line) - len(line.lstrip(">"))
        content = line[depth:]
        content = content.removeprefix(" ")  # space-stuffing
        flowed = content.endswith(" ") and content != "-- "
        if flowed and delsp:
            content = content[:-1]
        if joining and depth == previous_depth:
            out[-1] += content
        else:
            quote = ">" * depth
            out.append(content if not depth else f"{quote} {content}" if content else quote)
        previous_depth, joining = depth, flowed
    return "\n".join(out)


_EXTENSIONS = {
    "application/pdf": ".pdf", "application/zip": ".zip", "image/gif": ".gif",
    "image/jpeg": ".jpg", "image/png": ".png", "image/webp": ".webp", "message/global": ".eml",
    "message/rfc822": ".eml", "text/calendar": ".ics", "text/csv": ".csv", "text/html": ".html",
    "text/plain": ".txt",
}


def _safe_filename(name: str | None, content_type: str, index: int) -> str:
    """A name that is safe to show and to store: no path, no control or bidi characters."""
    if name:
        name = name.replace("\\", "/").rsplit("/", 1)[-1]
        # Category C: controls, format characters (bidi overrides disguise "gpj.exe"), unassigned.
        name = "".join(c for c in name if unicodedata.category(c)[0] != "C")
        name = name.strip().lstrip(".").strip()  # no hidden files, no ".."
        if len(name) > 200:
            stem, dot, extension = name.rpartition(".")
            name = stem[:180] + dot + extension[:19] if dot and len(extension) < 20 else name[:200]
    return name or f"attachment-{index}{_EXTENSIONS.get(content_type, '.bin')}"


def _content_id(value: object) -> str | None:
    content_id = _one_line(str(value or "")).strip("<> ")
    return content_id[:500] or None


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


def _has_words(piece: str | _Html) -> bool:
    """A plain-text body with something in it (some clients send an empty one beside HTML)."""
    return isinstance(piece, str) and bool(piece.strip())


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

    def walk(self, part: _Part, depth: int) -> None:
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

    def _multipart(self, part: _Part, content_type: str, depth: int) -> None:
        boundary = part.param("boundary")
        raw_children = (
            _split_multipart(part.body, boundary[:200], self.budget.parts_left + 1, self.defects)
            if boundary
            else []
        )
        if not raw_children:
            self.note(f"{content_type} without parts; its body was read as text")
            self._body(part.body, "text/plain", part)
            return
        default_type = "message/rfc822" if content_type == "multipart/digest" else "text/plain"
        children = [_Part.parse(raw, self.defects, default_type) for raw in raw_children]
        if content_type == "multipart/alternative":
            self._alternative(children, depth + 1)
        elif content_type == "multipart/report" and self.report_type is None:
            self._report(part, children, depth + 1)
        else:
            for child in children:
                self.walk(child, depth + 1)

    def _alternative(self, children: list[_Part], depth: int) -> None:
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

    def _report(self, part: _Part, children: list[_Part], depth: int) -> None:
        self.report_type = part.param("report-type").lower() or "unknown"
        if self.report_type == "delivery-status":
            self.report = _Report(forwarded_before=len(self.forwarded))
        for child in children:
            self.walk(child, depth)
        if self.report is not None:
            self.delivery_report = self._delivery_report(self.report)
            self.report = None

    def _leaf(self, part: _Part, content_type: str, depth: int) -> None:
        data = _transfer_decode(part, self.defects)
        filename = part.filename(self.defects)
        disposition = part.mime.get_content_disposition()
        if content_type in _MESSAGE_TYPES:
            self._forwarded(data, filename, depth)
        elif self.report is not None and content_type in _DSN_STATUS_TYPES:
            self.report.status_blocks = _status_blocks(data)
        elif self.report is not None and content_type in _DSN_HEADERS_TYPES:
            fields, _ = _split_head(data, [])
            self.report.returned_headers = {name.lower(): value for name, value in reversed(fields)}
        elif content_type in _BODY_TYPES and disposition != "attachment" and not filename:
            self._body(data, content_type, part)
        else:
            content_id = _content_id(part.mime.get("content-id"))
            # No Content-Disposition but a Content-ID: an image the HTML shows (multipart/related).
            inline = disposition == "inline" or (disposition is None and content_id is not None)
            self._attach(data, content_type, filename, content_id, inline)

    def _body(self, data: bytes, content_type: str, part: _Part) -> None:
        text = _clean_text(_decode_bytes(data, part.param("charset") or None, self.defects))
        if content_type == "text/plain":
            if part.param("format").lower() == "flowed":
                text = _unflow(text, delsp=part.param("delsp").lower() == "yes")
            self.texts.append(text)
            return
        if len(text) > self.budget.html_chars_left:
            self.note(f"HTML beyond {self.budget.max_html_chars} characters was not read")
            text = text[: self.budget.html_chars_left]
        self.budget.html_chars_left -= len(text)
        if text:
            self.htmls.append(text)
            self.texts.append(_Html(text))

    def _attach(
        self,
        data: bytes,
        content_type: str,
        filename: str | None,
        content_id: str | None,
        inline: bool,
    ) -> None:
        held_back = len(data) > self.budget.max_attachment_bytes
        name = _safe_filename(filename, content_type, len(self.attachments) + 1)
        if held_back:
            self.note(f"attachment {name!r} ({len(data)} bytes) is over the limit of "
                      f"{self.budget.max_attachment_bytes} bytes and was held back")
        self.attachments.append(ParsedAttachment(
            filename=name, content_type=content_type, data=b"" if held_back else data,
            size=len(data), content_id=content_id, inline=inline, held_back=held_back,
        ))

    def _forwarded(self, data: bytes, filename: str | None, depth: int) -> None:
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
            ids = _message_ids(report.returned_headers.get("message-id"))
            original_id = ids[0] if ids else None
        return DeliveryReport(
            original_message_id=original_id,
            original_envelope_id=per_message.get("original-envelope-id") or None,
            reporting_mta=_typed_value(per_message.get("reporting-mta", "")),
            recipients=[_recipient_status(block) for block in blocks if "action" in block],
        )


def _typed_value(value: str) -> str:
    """ "rfc822; bob@example.org" -> "bob@example.org" (RFC 3464 typed fields)."""
    return _one_line(value.split(";", 1)[-1])


def _recipient_status(block: dict[str, str]) -> RecipientStatus:
    recipient = block.get("final-recipient") or block.get("original-recipient") or ""
    return RecipientStatus(
        recipient=_typed_value(recipient).strip("<>").lower(),
        action=_one_line(block.get("action", "")).lower(),
        status=_one_line(block.get("status", "")).split(" ")[0],
        diagnostic=_typed_value(block.get("diagnostic-code", "")),
    )


def _status_blocks(data: bytes) -> list[dict[str, str]]:
    """The field blocks of a message/delivery-status body: per message, then per recipient."""
    blocks: list[dict[str, str]] = []
    rest = data[:_MAX_DSN_BYTES]
    while len(blocks) < _MAX_DSN_BLOCKS:
        rest = rest.lstrip(b"\r\n \t")
        fields, remaining = _split_head(rest, [])
        if not fields:
            break
        blocks.append({name.lower(): value for name, value in reversed(fields)})
        rest = remaining
    return blocks


# --- putting a ParsedMail together -------------------------------------------------------------


def _parse(raw: bytes, depth: int, budget: _Budget) -> ParsedMail:
    defects: list[str] = []
    top = _Part.parse(raw, defects)
    if not top.fields:
        defects.append("no header fields: this is not a mail")
    walker = _Walker(budget, defects)
    walker.walk(top, depth)

    headers: dict[str, list[str]] = {}
    for name, value in top.fields:
        headers.setdefault(name.lower(), []).append(_one_line(_decode_words(value, defects)))

    def raw_values(name: str) -> list[str]:
        return [value for field_name, value in top.fields if field_name.lower() == name]

    def first(name: str) -> str | None:
        values = raw_values(name)
        return values[0] if values else None

    message_ids = _message_ids(first("message-id"))
    senders = _addresses(raw_values("from")[:1], defects)
    delivered_to = [
        address.email
        for name in ("delivered-to", "x-original-to", "envelope-to")
        for address in _addresses(raw_values(name), defects)
    ]
    pieces = [
        _clean_text(html_to_text(piece.html, budget.max_html_chars))
        if isinstance(piece, _Html)
        else piece
        for piece in walker.texts
    ]
    text = "\n\n".join(piece.strip("\n") for piece in pieces if piece.strip())
    html = "\n".join(sanitize_html(body).strip() for body in walker.htmls) if walker.htmls else None
    return ParsedMail(
        message_id=message_ids[0] if message_ids else None,
        in_reply_to=_message_ids(first("in-reply-to")),
        references=_message_ids(" ".join(raw_values("references"))),
        subject=_one_line(_decode_words(first("subject") or "", defects)),
        from_=senders[0] if senders else None,
        reply_to=_addresses(raw_values("reply-to"), defects),
        to=_addresses(raw_values("to"), defects),
        cc=_addresses(raw_values("cc"), defects),
        delivered_to=list(dict.fromkeys(delivered_to)),
        date=_date(first("date"), defects),
        text=text,
        new_text=strip_reply(text),
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


def _rebuild_parsed_mail(state: dict[str, object]) -> ParsedMail:
    state["headers"] = MappingProxyType(state["headers"])  # type: ignore[arg-type]
    return ParsedMail(**state)  # type: ignore[arg-type]
