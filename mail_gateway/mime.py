"""Reading MIME at the byte level, in bounded time and without raising: charsets as senders
really label them, header fields and RFC 2047 encoded words, Message-IDs, multipart bodies and
transfer encodings. mail_gateway.parsing walks a mail's tree with these.
"""

from __future__ import annotations

import binascii
import codecs
import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import Message
from email.utils import parsedate_to_datetime

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


def decode_bytes(data: bytes, label: str | None, defects: list[str]) -> str:
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


def clean_text(text: str) -> str:
    """One newline convention and no control characters."""
    return text.replace("\r\n", "\n").replace("\r", "\n").translate(_TEXT_JUNK)


# --- headers -----------------------------------------------------------------------------------

_HEADER_NAME = re.compile(rb"([\x21-\x39\x3b-\x7e]{1,200})[ \t]*:")
_BLANK_LINE = re.compile(rb"\n\r?\n")
_ENCODED_WORD = re.compile(r"=\?([^?\s*]+)(?:\*[^?\s]*)?\?([bBqQ])\?([^?\s]*)\?=")
_BASE64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_NOT_BASE64 = bytes(sorted(set(range(256)) - set(_BASE64_ALPHABET)))
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]+")


def split_head(raw: bytes, defects: list[str]) -> tuple[list[tuple[str, str]], bytes]:
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
        (name, decode_bytes(bytes(value[:_MAX_HEADER_CHARS]), None, defects).strip())
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


def decode_words(value: str, defects: list[str]) -> str:
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
            out.append(decode_bytes(run, run_charset, defects))
            run = b""
        out.append(gap)
        run += _encoded_word_bytes(match.group(2), match.group(3))
        run_charset = charset
    if run:
        out.append(decode_bytes(run, run_charset, defects))
    out.append(value[pos:])
    return "".join(out)


def one_line(text: str) -> str:
    """Control characters (CR and LF above all) out, whitespace runs to one space."""
    return " ".join(_CONTROL_CHARS.sub(" ", text).split())


_MESSAGE_ID = re.compile(r"<([^<>\s]{1,500})>")
_COMMENT = re.compile(r"\([^()]*\)")


def message_ids(value: str | None) -> list[str]:
    """Message ids from a Message-ID, In-Reply-To or References value, without duplicates."""
    if not value:
        return []
    value = _COMMENT.sub(" ", value)
    ids = _MESSAGE_ID.findall(value)
    if not ids:
        # Some mailers leave off the brackets; without them only an "@" marks an id.
        ids = [token.strip("<>,;\"'") for token in value.split() if "@" in token]
    return list(dict.fromkeys(i for i in ids if i and len(i) <= 500))


def header_date(value: str | None, defects: list[str]) -> datetime | None:
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
class Part:
    """One MIME entity: its header fields, its raw body and its Content-* headers parsed."""

    fields: list[tuple[str, str]]
    body: bytes
    mime: Message

    @classmethod
    def parse(cls, raw: bytes, defects: list[str], default_type: str = "text/plain") -> Part:
        fields, body = split_head(raw, defects)
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
        return decode_words(name, defects) if name else None


def split_multipart(body: bytes, boundary: str, limit: int, defects: list[str]) -> list[bytes]:
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


def transfer_decode(part: Part, defects: list[str]) -> bytes:
    encoding = str(part.mime.get("content-transfer-encoding", "")).strip().lower()
    if encoding == "base64":
        return _base64(part.body)
    if encoding == "quoted-printable":
        return binascii.a2b_qp(part.body)
    if encoding not in ("", "7bit", "8bit", "binary"):
        defects.append(f"unknown Content-Transfer-Encoding {encoding[:40]!r}; kept the raw bytes")
    return part.body


def unflow(text: str, delsp: bool) -> str:
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


def safe_filename(name: str | None, content_type: str, index: int) -> str:
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


def content_id(value: object) -> str | None:
    content_id = one_line(str(value or "")).strip("<> ")
    return content_id[:500] or None
