"""Reading MIME at the byte level, in bounded time and without raising: charsets as senders
really label them, header fields and RFC 2047 encoded words, Message-IDs, address lists (as
email.headerregistry reads them), multipart bodies and transfer encodings. mail_gateway.parsing
walks a mail's tree with these.
"""

from __future__ import annotations

import binascii
import bisect
import codecs
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email import _encoded_words as email_encoded_words  # type: ignore[attr-defined]
from email.message import Message
from email.utils import parsedate_to_datetime
from enum import Enum

# A part's bytes: a view into the mail where possible, so that a body is not copied per MIME level.
Buffer = bytes | memoryview

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
_CHUNK = 1 << 20  # bytes of a view copied at a time where a copy cannot be avoided

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


def _decode(data: Buffer, codec: str) -> str:
    # str() decodes a view without copying it first; b"".decode() still looks the codec up.
    return str(data, codec) if len(data) else b"".decode(codec)


def decode_bytes(data: Buffer, label: str | None, defects: list[str]) -> str:
    """Decode with the declared charset, else the first fallback that fits."""
    codec = _codec(label)
    if codec is not None:
        try:
            return _decode(data, codec)
        except (UnicodeError, LookupError):  # LookupError: a bytes-to-bytes codec like "base64"
            pass
    for fallback in _FALLBACK_CHARSETS:
        try:
            text = _decode(data, fallback)
        except UnicodeError:
            continue
        if label and codec != fallback:
            defects.append(f"charset {label!r} did not decode the text; read it as {fallback}")
        return text
    raise AssertionError("iso-8859-1 decodes every byte string")


_LEADING_NEWLINES = re.compile(rb"[\r\n]*")


def newline_bytes_are_newlines(label: str | None) -> bool:
    """Whether bytes 0x0D and 0x0A can only be CR and LF in text of this charset: true of ASCII,
    UTF-8, the single-byte and the East Asian multi-byte charsets; not of UTF-16/32 or EBCDIC."""
    codec = _codec(label)
    if codec is None:
        return True  # read with the fallbacks, which are all ASCII supersets
    try:
        return "\r\n".encode(codec) == b"\r\n"
    except (LookupError, ValueError, TypeError):  # not a text codec ("base64"): leave it be
        return False


def strip_newline_bytes(data: Buffer) -> memoryview:
    """`data` without the CR and LF bytes at either end, as a view: free, where text.strip("\n")
    after decoding would copy the whole text. Only for a charset newline_bytes_are_newlines()."""
    view = memoryview(data)
    leading = _LEADING_NEWLINES.match(view)
    start = leading.end() if leading else 0
    tail = bytes(view[max(start, len(view) - 4096) :])
    end = len(view) - (len(tail) - len(tail.rstrip(b"\r\n")))
    return view[start:end]


# C0 controls other than tab and newline, and DEL: binary junk in text, and PostgreSQL text
# columns refuse NUL.
_TEXT_JUNK = dict.fromkeys([*range(0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F])


_TEXT_JUNK_FOUND = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def clean_text(text: str) -> str:
    """One newline convention and no control characters. Copies `text` only if it changes."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text.translate(_TEXT_JUNK) if _TEXT_JUNK_FOUND.search(text) else text


# --- headers -----------------------------------------------------------------------------------

_HEADER_NAME = re.compile(rb"([\x21-\x39\x3b-\x7e]{1,200})[ \t]*:")
_BLANK_LINE = re.compile(rb"\n\r?\n")
_ENCODED_WORD = re.compile(r"=\?([^?\s*]+)(?:\*[^?\s]*)?\?([bBqQ])\?([^?\s]*)\?=")
_BASE64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_NOT_BASE64 = bytes(sorted(set(range(256)) - set(_BASE64_ALPHABET)))
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]+")


def split_head(raw: Buffer, defects: list[str]) -> tuple[list[tuple[str, str]], memoryview]:
    """Split a part into its header fields (name, unfolded value) and its body, a view into `raw`."""
    raw = memoryview(raw)
    if raw[:1] == b"\n" or raw[:2] == b"\r\n":
        return [], raw[(1 if raw[:1] == b"\n" else 2) :]
    blank = _BLANK_LINE.search(raw)
    head_end, body_start = (blank.start() + 1, blank.end()) if blank else (len(raw), len(raw))
    if head_end > _MAX_HEADER_SECTION:
        defects.append(f"header section over {_MAX_HEADER_SECTION} bytes; the rest was ignored")
    fields: list[tuple[str, bytearray]] = []
    offset = 0
    for line in bytes(raw[: min(head_end, _MAX_HEADER_SECTION)]).split(b"\n"):
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


def _base64(data: Buffer) -> bytes:
    """Lenient base64: ignores line breaks, junk and missing padding."""
    if isinstance(data, bytes):
        clean: bytes | bytearray = data.translate(None, _NOT_BASE64)
    else:  # a view: translated a chunk at a time, never copied whole
        clean = bytearray()
        for start in range(0, len(data), _CHUNK):
            clean += bytes(data[start : start + _CHUNK]).translate(None, _NOT_BASE64)
    whole = len(clean) - len(clean) % 4
    decoded = binascii.a2b_base64(memoryview(clean)[:whole])  # a view: the clean text is not copied
    rest = bytes(clean[whole:])
    if len(rest) < 2:
        return decoded  # nothing left, or a lone sextet, which carries no whole byte
    return decoded + binascii.a2b_base64(rest + b"=" * (4 - len(rest)))


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
    body: Buffer  # a view into the mail until it is decoded; b"" once what it holds was taken
    mime: Message

    @classmethod
    def parse(cls, raw: Buffer, defects: list[str], default_type: str = "text/plain") -> Part:
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


_NEWLINE = re.compile(b"\n")


def split_multipart(body: Buffer, boundary: str, limit: int, defects: list[str]) -> list[memoryview]:
    """The raw child entities of a multipart body, as views into it; at most `limit` of them."""
    body = memoryview(body)
    delimiter = re.compile(re.escape(b"--" + boundary.encode("utf-8", "replace")))
    parts: list[memoryview] = []
    start: int | None = None  # where the current child begins
    found = delimiter.search(body)
    while found:
        pos, after = found.span()
        # Only a whole line is a delimiter: "--boundary", maybe "--", maybe padding.
        newline = _NEWLINE.search(body, after, after + _MAX_DELIMITER_TAIL)
        line_end = newline.start() if newline else -1
        if line_end < 0 and len(body) - after < _MAX_DELIMITER_TAIL:
            line_end = len(body)
        at_line_start = pos == 0 or body[pos - 1 : pos] in (b"\n", b"\r")
        tail = bytes(body[after:line_end]).rstrip(b"\r") if line_end >= 0 else b"?"
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
        found = delimiter.search(body, after)
    if start is not None:
        defects.append("a multipart has no closing boundary; the mail may be truncated")
        parts.append(body[start:])
    return parts


def transfer_decode(part: Part, defects: list[str]) -> Buffer:
    """The part's body without its transfer encoding (a view, when it had none)."""
    encoding = str(part.mime.get("content-transfer-encoding", "")).strip().lower()
    if encoding == "base64":
        return _base64(part.body)
    if encoding == "quoted-printable":
        return binascii.a2b_qp(part.body)
    if encoding not in ("", "7bit", "8bit", "binary"):
        defects.append(f"unknown Content-Transfer-Encoding {encoding[:40]!r}; kept the raw bytes")
    return part.body


_LINE_BLOCK = 1 << 16  # characters of text split into lines at a time
_FLOW_MARKS = re.compile(r" \n| \Z|^[> ]", re.MULTILINE)


def line_blocks(text: str) -> Iterator[list[str]]:
    """text.split("\n") 64 Ki characters at a time, so the lines of a huge text are never
    all in memory at once (a 30 MB text of 3-byte lines is 10 million str objects, 600 MB)."""
    start, n = 0, len(text)
    while n - start > _LINE_BLOCK:
        cut = text.rfind("\n", start, start + _LINE_BLOCK)
        if cut < 0:  # a line longer than a block
            cut = text.find("\n", start + _LINE_BLOCK)
            if cut < 0:
                break
        yield text[start:cut].split("\n")
        start = cut + 1
    yield text[start:].split("\n")


def unflow(text: str, delsp: bool) -> str:
    """Join the soft-broken lines of format=flowed text (RFC 3676). Linear time, and memory that
    of the text and the result: lines are read a block at a time."""
    if not _FLOW_MARKS.search(text):
        return text  # no flowed, quoted or space-stuffed line: nothing changes
    chunks: list[str] = []
    previous_depth, joining, first = 0, False, True
    for lines in line_blocks(text):
        pieces: list[str] = []
        for line in lines:
            depth = len(line) - len(line.lstrip(">"))
            content = line[depth:]
            content = content.removeprefix(" ")  # space-stuffing
            flowed = content.endswith(" ") and content != "-- "
            if flowed and delsp:
                content = content[:-1]
            if joining and depth == previous_depth:
                pieces.append(content)
            else:
                if not first:
                    pieces.append("\n")
                first = False
                quote = ">" * depth
                pieces.append(content if not depth else f"{quote} {content}" if content else quote)
            previous_depth, joining = depth, flowed
        chunks.append("".join(pieces))
    return "".join(chunks)


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


# --- addresses ---------------------------------------------------------------------------------
#
# Address headers are read with the grammar email.headerregistry (policy.default) reads them
# with: RFC 5322 with its obsolete forms, groups, comments, routes, and that parser's recovery
# from broken input. That parser copies the rest of the header at every token, so it is
# quadratic (64 KiB of '"' take it a minute), and it raises on some inputs. Below is the same
# grammar walked by position: linear, and it never raises. Two things differ on purpose:
#
# - an encoded word is never decoded inside an address (RFC 2047 section 5 allows none there;
#   the stdlib decodes "=?utf-8?q?alice?=@x" into alice@x): it is kept as written;
# - display names are decoded only once the structure is known, from the span the structure
#   says is the name, so what an encoded word decodes to never becomes an address or a comma.
#
# Each method mirrors the stdlib function of the same name in email._header_value_parser and
# raises _NotHere where that one raises HeaderParseError.

_WSP = " \t"
_CFWS_LEADER = " \t("
_SPECIALS = frozenset('()<>@,:;.\\"[]')
_ATOM_ENDS = _SPECIALS | frozenset(_WSP)
_DOT_ATOM_ENDS = _ATOM_ENDS - {"."}
_PHRASE_ENDS = _SPECIALS - frozenset('."(')
_ATEXT = re.compile(r"[^()<>@,:;.\\\"\[\] \t]+")
_EW_SPACE = re.compile(r"[ \t]\s*")
_HEX = frozenset("0123456789abcdefABCDEF")


class _NotHere(Exception):
    """The construct tried at this position is not there (the stdlib's HeaderParseError)."""


@dataclass
class _Word:
    """An atom or quoted string of a local part: its value, and whether CFWS is on either side."""

    value: str
    lead: bool = False
    trail: bool = False


class _Mark(Enum):
    """The other items of an obsolete local part."""

    DOT = "."
    CFWS = " "
    BACKSLASH = "\\"


@dataclass
class ReadAddress:
    """One entry of an address list as read: a mailbox, or something that is not one."""

    name: str  # the display name as written (quotes, comments, encoded words still in); "" if none
    addr_spec: str | None  # local@domain, quoted as headerregistry quotes it; None: no address
    problem: str | None = None  # what is malformed about the entry (its address may still be read)
    comment: str = ""  # the first comment of a mailbox written without a name: "a@b (Alice)"


class _AddressReader:
    def __init__(self, text: str) -> None:
        self.s = text
        self.n = len(text)
        self.invalid = 0  # the stdlib's InvalidHeaderDefects so far: they mark a mailbox invalid
        self._ends = [m.start() for m in re.finditer(r"\?=", text)]
        self._questions = [m.start() for m in re.finditer(r"\?", text)]
        self._comments: dict[int, int] = {}  # start -> end of every comment read
        self._comment_starts: list[int] = []  # the same starts, sorted
        self._phrases: dict[int, tuple[int, int]] = {}  # start -> (end, InvalidHeaderDefects)

    # -- lexical pieces ---------------------------------------------------------------------

    def fws(self, p: int) -> int:
        s, n = self.s, self.n
        while p < n and s[p].isspace():  # str.lstrip(): any whitespace once it starts
            p += 1
        return p

    def comment(self, p: int) -> int:
        s, n = self.s, self.n
        start, depth, p = p, 1, p + 1
        while p < n:
            c = s[p]
            if c == "\\":  # a quoted pair; a backslash before a space or the end escapes nothing
                p += 1 if p + 1 >= n or s[p + 1] in _WSP else 2
                continue
            if c == "(":
                depth += 1
            elif c == ")":
                depth -= 1
                if depth == 0:
                    p += 1
                    break
            p += 1
        else:
            self.invalid += 1  # end of header inside comment
        if start not in self._comments:
            self._comments[start] = p
            bisect.insort(self._comment_starts, start)
        return p

    def cfws(self, p: int) -> int:
        s, n = self.s, self.n
        while p < n and s[p] in _CFWS_LEADER:
            p = self.fws(p) if s[p] in _WSP else self.comment(p)
        return p

    def ptext(self, p: int, endchars: str) -> tuple[str, int]:
        """Up to an unescaped endchar or a space or tab; quoted pairs unquoted."""
        s, n = self.s, self.n
        out: list[str] = []
        start = p
        while p < n:
            c = s[p]
            if c in _WSP or c in endchars:
                break
            if c == "\\":
                out.append(s[start:p])
                if p + 1 >= n or s[p + 1] in _WSP:
                    p += 1  # dropped: it escapes nothing
                    start = p
                    break
                out.append(s[p + 1])
                p += 2
                start = p
                continue
            p += 1
        out.append(s[start:p])
        return "".join(out), p

    def _questions_between(self, start: int, end: int) -> int:
        return bisect.bisect_left(self._questions, end) - bisect.bisect_left(self._questions, start)

    def encoded_word(self, p: int) -> tuple[str, int]:
        """An encoded word where the stdlib sees one: its text as written, and its end."""
        s, n, ends = self.s, self.n, self._ends
        i = bisect.bisect_left(ends, p + 2)
        if i == len(ends):
            raise _NotHere
        end = after = ends[i]
        after = end + 2
        if (after + 1 < n and s[after] in _HEX and s[after + 1] in _HEX
                and self._questions_between(p + 2, end) < 2):
            # "=?cs?q?=41...": that "?=" was the "?" before the text and an =XX escape
            j = bisect.bisect_left(ends, after)
            end = ends[j] if j < len(ends) else n
            after = min(end + 2, n)
        # Exactly "=?" charset "?" encoding "?" text "?=", or the stdlib cannot split it. Counting
        # first keeps this linear: a long stretch is sliced and decoded at most once.
        if self._questions_between(p + 2, end) != 2:
            raise _NotHere
        word = "=?" + s[p + 2 : end] + "?="
        if word.split("?")[2].lower() not in ("q", "b"):
            raise _NotHere
        try:  # the stdlib's own test, so that addresses split exactly where its parser splits them
            email_encoded_words.decode(word)
        except Exception as error:  # noqa: BLE001 - ValueError and KeyError: not a word to the stdlib
            raise _NotHere from error  # (anything else makes the stdlib itself fail)
        if len(s[p + 2 : end].split()) > 1:
            self.invalid += 1  # whitespace inside encoded word
        if after < n and s[after] not in _WSP:
            self.invalid += 1  # missing trailing whitespace after encoded-word
        return word, after

    def atext(self, p: int) -> tuple[str, int]:
        match = _ATEXT.match(self.s, p)
        if not match:
            raise _NotHere
        return match.group(), match.end()

    def bare_quoted_string(self, p: int) -> tuple[str, int]:
        s, n = self.s, self.n
        if p >= n or s[p] != '"':
            raise _NotHere
        p += 1
        out: list[str] = []
        kinds: list[str] = []
        while p < n and s[p] != '"':
            if s[p] in _WSP:
                q = self.fws(p)
                out.append(s[p:q])
                kinds.append("fws")
                p = q
                continue
            if s.startswith("=?", p):
                invalid = self.invalid
                try:
                    word, p = self.encoded_word(p)
                except _NotHere:
                    self.invalid = invalid
                else:
                    self.invalid += 1  # encoded word inside quoted string
                    if len(kinds) > 1 and kinds[-1] == "fws" and kinds[-2] == "ew":
                        out[-1] = ""  # the space between two encoded words is not text
                    out.append(word)
                    kinds.append("ew")
                    continue
            text, p = self.ptext(p, '"')
            out.append(text)
            kinds.append("ptext")
        if p >= n:
            self.invalid += 1  # end of header inside quoted string
            return "".join(out), p
        return "".join(out), p + 1

    # -- words and phrases ------------------------------------------------------------------

    def _cfws_after(self, word: _Word, p: int) -> int:
        if p < self.n and self.s[p] in _CFWS_LEADER:
            word.trail = True
            return self.cfws(p)
        return p

    def quoted_string(self, p: int) -> tuple[_Word, int]:
        word = _Word("")
        if p < self.n and self.s[p] in _CFWS_LEADER:
            p = self.cfws(p)
            word.lead = True
        word.value, p = self.bare_quoted_string(p)
        return word, self._cfws_after(word, p)

    def atom(self, p: int) -> tuple[_Word, int]:
        s, n = self.s, self.n
        word = _Word("")
        if p < n and s[p] in _CFWS_LEADER:
            p = self.cfws(p)
            word.lead = True
        if p < n and s[p] in _ATOM_ENDS:
            raise _NotHere
        if s.startswith("=?", p):
            read = self._encoded_word_as(word, p)
            if read is not None:
                return read
        word.value, p = self.atext(p)
        return word, self._cfws_after(word, p)

    def _encoded_word_as(self, word: _Word, p: int) -> tuple[_Word, int] | None:
        """`word` read as the encoded word at `p`, as the stdlib reads one there; None (and the
        reader's state as it was) when it is none."""
        invalid = self.invalid
        try:
            ew, p = self.encoded_word(p)
        except _NotHere:
            self.invalid = invalid
            return None
        word.value = _EW_SPACE.sub(" ", ew)
        return word, self._cfws_after(word, p)

    def dot_atom_text(self, p: int) -> tuple[str, int]:
        s, n = self.s, self.n
        if p >= n or s[p] in _ATOM_ENDS:
            raise _NotHere
        start, last_dot = p, False
        while p < n and s[p] not in _ATOM_ENDS:
            _, p = self.atext(p)
            last_dot = p < n and s[p] == "."
            if last_dot:
                p += 1
        if last_dot:
            raise _NotHere
        return s[start:p], p

    def dot_atom(self, p: int) -> tuple[_Word, int]:
        s = self.s
        word = _Word("")
        if p >= self.n:
            raise _NotHere
        if s[p] in _CFWS_LEADER:
            p = self.cfws(p)
            word.lead = True
        if s.startswith("=?", p):
            read = self._encoded_word_as(word, p)
            if read is not None:
                return read
        word.value, p = self.dot_atom_text(p)
        return word, self._cfws_after(word, p)

    def word(self, p: int) -> tuple[_Word, int]:
        s, n = self.s, self.n
        lead = False
        if p >= n:
            raise _NotHere
        if s[p] in _CFWS_LEADER:
            p = self.cfws(p)
            lead = True
        if p >= n:
            raise _NotHere
        if s[p] == '"':
            word, p = self.quoted_string(p)
        elif s[p] in _SPECIALS:
            raise _NotHere
        else:
            word, p = self.atom(p)
        word.lead = word.lead or lead
        return word, p

    def attempt_word(self, p: int) -> tuple[_Word, int] | None:
        invalid = self.invalid
        try:
            return self.word(p)
        except _NotHere:
            self.invalid = invalid
            return None

    def phrase(self, p: int) -> int:
        """A phrase (a display name); where it ends. Its text is read from the span later."""
        # A group and then a mailbox are tried from the same place: read each phrase once.
        if p in self._phrases:
            end, invalid = self._phrases[p]
            self.invalid += invalid
            return end
        before = self.invalid
        end = self._phrase(p)
        self._phrases[p] = (end, self.invalid - before)
        return end

    def _phrase(self, p: int) -> int:
        s, n = self.s, self.n
        first = self.attempt_word(p)
        if first is None:
            self.invalid += 1  # phrase does not start with word
        else:
            p = first[1]
        while p < n and s[p] not in _PHRASE_ENDS:
            if s[p] == ".":
                p += 1
                continue
            word = self.attempt_word(p)
            if word is not None:
                p = word[1]
            elif s[p] in _CFWS_LEADER:
                p = self.cfws(p)
            else:
                raise _NotHere  # cannot happen: word() fails only after CFWS
        return p

    # -- addr-spec ----------------------------------------------------------------------------

    def local_part(self, p: int) -> tuple[str, int]:
        s, n = self.s, self.n
        start, before = p, self.invalid
        if p >= n:
            raise _NotHere
        if s[p] in _CFWS_LEADER:
            p = self.cfws(p)
        if p >= n:
            raise _NotHere
        invalid = self.invalid
        try:
            word, p = self.dot_atom(p)
        except _NotHere:
            self.invalid = invalid
            attempt = self.attempt_word(p)
            if attempt is None:
                if s[p] != "\\" and s[p] in _PHRASE_ENDS:
                    raise
                word = _Word("")
            else:
                word, p = attempt
        if p < n and (s[p] == "\\" or s[p] not in _PHRASE_ENDS):
            # The stdlib parses it again, from its start, as an obsolete local part.
            self.invalid = before
            return self.obs_local_part(start)
        return word.value, p

    def obs_local_part(self, p: int) -> tuple[str, int]:
        s, n = self.s, self.n
        items: list[_Word | _Mark] = []
        last_was_dot = invalid = False
        while p < n and (s[p] == "\\" or s[p] not in _PHRASE_ENDS):
            if s[p] == ".":
                invalid = invalid or last_was_dot  # repeated "."
                items.append(_Mark.DOT)
                last_was_dot = True
                p += 1
                continue
            if s[p] == "\\":
                items.append(_Mark.BACKSLASH)
                invalid = True  # "\" outside a quoted string or comment
                last_was_dot = False
                p += 1
                continue
            if items and items[-1] is not _Mark.DOT:
                invalid = True  # missing "." between words
            attempt = self.attempt_word(p)
            if attempt is None:
                p = self.cfws(p)
                items.append(_Mark.CFWS)
            else:
                word, p = attempt
                items.append(word)
                last_was_dot = False
        solid = [item for item in items if item is not _Mark.CFWS]
        if not solid or solid[0] is _Mark.DOT or solid[-1] is _Mark.DOT:
            invalid = True  # a leading or trailing "."
        if invalid:
            self.invalid += 1
        return _obs_local_part_value(items), p

    def domain_literal(self, p: int) -> tuple[str, int]:
        s, n = self.s, self.n
        if p < n and s[p] in _CFWS_LEADER:
            p = self.cfws(p)
        if p >= n or s[p] != "[":
            raise _NotHere
        p += 1
        text = ""
        if p < n and s[p] in _WSP:
            p = self.fws(p)
        if p < n:
            text, p = self.ptext(p, "[]")
        if p < n and s[p] in _WSP:
            p = self.fws(p)
        if p >= n:
            self.invalid += 1  # end of input inside domain-literal (the stdlib then fails)
            return "[" + text + "]", p
        if s[p] != "]":
            raise _NotHere
        p += 1
        if p < n and s[p] in _CFWS_LEADER:
            p = self.cfws(p)
        return "[" + text + "]", p

    def domain(self, p: int) -> tuple[str, int]:
        s, n = self.s, self.n
        if p < n and s[p] in _CFWS_LEADER:
            p = self.cfws(p)
        if p >= n:
            raise _NotHere
        if s[p] == "[":
            text, p = self.domain_literal(p)
            return "".join(text.split()), p
        invalid = self.invalid
        try:
            word, p = self.dot_atom(p)
        except _NotHere:
            self.invalid = invalid
            word, p = self.atom(p)
        if p < n and s[p] == "@":
            raise _NotHere
        parts = [word.value]
        while p < n and s[p] == ".":
            word, p = self.atom(p + 1)
            parts.append("." + word.value)
        return "".join("".join(parts).split()), p  # Domain.domain: no whitespace at all

    def addr_spec(self, p: int) -> tuple[tuple[str, str | None], int]:
        local, p = self.local_part(p)
        if p >= self.n or self.s[p] != "@":
            self.invalid += 1  # addr-spec local part with no domain
            return (local, None), p
        domain, p = self.domain(p + 1)
        return (local, domain), p

    def obs_route(self, p: int) -> int:
        s, n = self.s, self.n
        while p < n and (s[p] == "," or s[p] in _CFWS_LEADER):
            p = p + 1 if s[p] == "," else self.cfws(p)
        if p >= n or s[p] != "@":
            raise _NotHere
        _, p = self.domain(p + 1)
        while p < n and s[p] == ",":
            p += 1
            if p >= n:
                break
            if s[p] in _CFWS_LEADER:
                p = self.cfws(p)
            if p < n and s[p] == "@":
                _, p = self.domain(p + 1)
        if p >= n or s[p] != ":":
            raise _NotHere
        return p + 1

    def angle_addr(self, p: int) -> tuple[tuple[str, str | None] | None, int]:
        s, n = self.s, self.n
        if p < n and s[p] in _CFWS_LEADER:
            p = self.cfws(p)
        if p >= n or s[p] != "<":
            raise _NotHere
        p += 1
        if p >= n:
            raise _NotHere  # the stdlib fails with an IndexError
        if s[p] == ">":
            self.invalid += 1  # null addr-spec in angle-addr
            return None, p + 1
        invalid = self.invalid
        try:
            spec, p = self.addr_spec(p)
        except _NotHere:
            self.invalid = invalid
            p = self.obs_route(p)
            spec, p = self.addr_spec(p)
        if p < n and s[p] == ">":
            p += 1
        else:
            self.invalid += 1  # missing trailing ">" on angle-addr
        if p < n and s[p] in _CFWS_LEADER:
            p = self.cfws(p)
        return spec, p

    # -- mailboxes, groups, lists -------------------------------------------------------------

    def name_addr(self, p: int) -> tuple[ReadAddress, int]:
        s, n = self.s, self.n
        if p >= n:
            raise _NotHere
        leader = p
        if s[p] in _CFWS_LEADER:
            p = self.cfws(p)
            if p >= n:
                raise _NotHere
        name = ""
        if s[p] != "<":
            if s[p] in _PHRASE_ENDS:
                raise _NotHere
            # From where the CFWS began: the same end (its first word takes the CFWS), and the
            # phrase the group before this tried.
            end = self.phrase(leader)
            if end >= n:
                raise _NotHere
            name, p = s[p:end], end
        spec, p = self.angle_addr(p)
        return _read(name, spec), p

    def mailbox(self, p: int) -> tuple[ReadAddress, int]:
        start, invalid = p, self.invalid
        try:
            address, p = self.name_addr(p)
        except _NotHere:
            self.invalid = invalid
            try:
                spec, p = self.addr_spec(p)
            except _NotHere:
                self.invalid = invalid
                raise
            address = _read("", spec)
            address.comment = self.first_comment(start, p)
        if self.invalid > invalid and address.problem is None:
            address.problem = "a malformed address"
        return address, p

    def invalid_mailbox(self, p: int, endchars: str) -> int:
        s, n = self.s, self.n
        while p < n and s[p] not in endchars:
            p = p + 1 if s[p] in _PHRASE_ENDS else self.phrase(p)
        return p

    def _failed_entry(self, p: int, endchars: str, out: list[ReadAddress]) -> int:
        """After no mailbox (or address) could be read at p: what the stdlib then skips."""
        s, n = self.s, self.n
        if s[p] in _CFWS_LEADER:
            p = self.cfws(p)
            if p >= n or s[p] in endchars:
                return p  # an empty entry
        elif s[p] == ",":
            return p
        start, p = p, self.invalid_mailbox(p, endchars)
        out.append(ReadAddress("", None, f"not an address: {s[start:p][:80]!r}"))
        return p

    def _trailing_junk(self, p: int, endchars: str) -> tuple[str, int]:
        """What follows an entry before the next separator (the stdlib adds it to the entry)."""
        end = self.invalid_mailbox(p, endchars)
        return self.s[p:end][:80], end

    def mailbox_list(self, p: int, out: list[ReadAddress]) -> int:
        s, n = self.s, self.n
        while p < n and s[p] != ";":
            if s[p] == ",":  # an empty entry
                p += 1
                continue
            invalid = self.invalid
            try:
                address, p = self.mailbox(p)
                out.append(address)
            except _NotHere:
                self.invalid = invalid
                p = self._failed_entry(p, ",;", out)
            if p < n and s[p] not in ",;":
                junk, p = self._trailing_junk(p, ",;")
                out[-1].problem = out[-1].problem or f"text after the address: {junk!r}"
            if p < n and s[p] == ",":
                p += 1
        return p

    def group(self, p: int) -> tuple[list[ReadAddress], int]:
        s, n = self.s, self.n
        p = self.phrase(p)
        if p >= n or s[p] != ":":
            raise _NotHere
        p += 1
        members: list[ReadAddress] = []
        if p < n and s[p] == ";":
            return members, p + 1
        if p >= n:
            self.invalid += 1  # end of header before group-list
        else:
            if s[p] in _CFWS_LEADER:
                p = self.cfws(p)
            if p < n and s[p] != ";":
                p = self.mailbox_list(p, members)
        if p >= n:
            self.invalid += 1  # end of header in group
        p = min(p + 1, n)  # the ";"
        if p < n and s[p] in _CFWS_LEADER:
            p = self.cfws(p)
        return members, p

    def address_list(self) -> list[ReadAddress]:
        s, n = self.s, self.n
        out: list[ReadAddress] = []
        p = 0
        while p < n:
            if s[p] == ",":  # an empty entry: no group or mailbox starts with ","
                p += 1
                continue
            invalid = self.invalid
            entry: list[ReadAddress] = []
            is_group = False
            try:
                entry, p = self.group(p)
                is_group = True
            except _NotHere:
                self.invalid = invalid
                try:
                    address, p = self.mailbox(p)
                    entry = [address]
                except _NotHere:
                    self.invalid = invalid
                    p = self._failed_entry(p, ",", entry)
            if p < n and s[p] != ",":
                junk, p = self._trailing_junk(p, ",")
                if is_group:  # the stdlib fails on this; no address of such a group counts
                    entry = [ReadAddress("", None, f"text after a group: {junk!r}")]
                elif entry:
                    entry[-1].problem = entry[-1].problem or f"text after the address: {junk!r}"
            out.extend(entry)
            p += 1  # the ","
        return out

    def first_comment(self, start: int, end: int) -> str:
        i = bisect.bisect_left(self._comment_starts, start)
        if i < len(self._comment_starts) and self._comment_starts[i] < end:
            at = self._comment_starts[i]
            return self.s[at + 1 : self._comments[at]].removesuffix(")")
        return ""


def _obs_local_part_value(items: list[_Word | _Mark]) -> str:
    """The stdlib's LocalPart.local_part: words' CFWS next to a dot or at either end dropped."""
    values: list[str] = []
    last: _Word | _Mark = _Mark.DOT
    for item in [*items, _Mark.DOT]:
        if item is _Mark.CFWS:
            continue
        if item is _Mark.DOT and isinstance(last, _Word) and last.trail:
            values[-1] = values[-1][:-1]
        if isinstance(item, _Word):
            lead = " " if item.lead and last is not _Mark.DOT else ""
            values.append(lead + item.value + (" " if item.trail else ""))
        else:
            values.append(item.value)
        last = item
    return "".join(values[:-1])


def _read(name: str, spec: tuple[str, str | None] | None) -> ReadAddress:
    if spec is None:
        return ReadAddress(name, None, "an empty address (<>)")
    local, domain = spec
    if not local or not domain:
        return ReadAddress(name, None, f"not local@domain: {(local + '@' + (domain or ''))[:80]!r}")
    if not _DOT_ATOM_ENDS.isdisjoint(local):
        local = '"' + local.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return ReadAddress(name, local + "@" + domain)


def read_address_list(value: str) -> list[ReadAddress]:
    """Every entry of an address header (From, To, Cc, …) as email.headerregistry reads it, in
    linear time. CR and LF are taken out first, as policy.default does."""
    try:
        return _AddressReader(value.replace("\r", "").replace("\n", "")).address_list()
    except Exception as error:  # noqa: BLE001 - a bug here must not cost the whole mail
        return [ReadAddress("", None, f"unreadable ({type(error).__name__})")]


def display_name(raw: str, defects: list[str]) -> str:
    """A display name's text from its phrase as written: quotes and comments taken off, then
    encoded words decoded (leniently, as in the rest of the header)."""
    out: list[str] = []
    i, n = 0, len(raw)
    while i < n:
        c = raw[i]
        if c == '"':
            i += 1
            while i < n and raw[i] != '"':
                if raw[i] == "\\" and i + 1 < n:
                    i += 1
                out.append(raw[i])
                i += 1
            i += 1
        elif c == "(":
            depth = 0
            while i < n:
                if raw[i] == "\\":
                    i += 2
                    continue
                depth += {"(": 1, ")": -1}.get(raw[i], 0)
                i += 1
                if depth == 0:
                    break
            out.append(" ")
        else:
            out.append(c)
            i += 1
    return one_line(decode_words("".join(out), defects))
