"""Hand-written MIME splitter and quote stripper against the stdlib and maintained libraries.

    .venv/bin/python -m bench.parsing_choices                  # everything (~6 min on 2 busy cores)
    .venv/bin/python -m bench.parsing_choices --only mime      # or: --only quotes
    .venv/bin/python -m bench.parsing_choices --talon-python /tmp/talon-venv/bin/python

MIME. Ours (`mail_gateway.parsing.parse_mail`) against `parse_stdlib`: `email.parser.BytesParser`
behind `prescan`, a linear byte scan that finds every header section and every delimiter line of
the boundaries in force, and flattens what would be pathological for the stdlib (nesting deeper
than max_depth is skipped, the parts past max_parts are cut, header sections over 1 MiB, fields
over 64 KiB (Content-* over 4 KiB) and over 1000 fields are trimmed, leaf bodies of more than
100,000 lines or 1 MiB are handed to the stdlib as one placeholder line and put back after parsing). The
tree the stdlib returns is walked by the same rules ours applies (alternatives, reports, forwarded
mails, budgets), and the charset, HTML and quote helpers of mail_gateway are reused, so what is
compared is the splitting and header parsing, not the rest. Two stdlib variants:

- std-compat32: `policy=compat32`, raw header values decoded by our RFC 2047/charset code (the
  smallest switch: only the splitter goes);
- std-default: `policy=email.policy.default`, header values and addresses from the stdlib's header
  objects, text bodies from `get_content()` (the largest switch: mime.py goes too).

Compared on every fixture in tests/mail/fixtures, on the small mails tests/mail/test_parsing.py
builds, on truncated and corrupted fixtures (the fuzzing the tests do), then timed; the hostile
mails the tests build (copied here, not imported) run each in a fresh process, for time and peak
memory, with a time limit; "std-raw" is the stdlib without the pre-scan on the same mails.

Quotes. `strip_reply` against the reply-parsing libraries on PyPI, each run in a process of its
own (talon in another interpreter when --talon-python is given: it pulls in numpy, scipy and
scikit-learn), scored on the cases tests/mail/test_quotes.py encodes and on the fixtures whose
`new_text` tests/mail/test_parsing.py asserts.

This file is also its own worker (`--hostile-one`, `--quote-worker`); the worker modes import only
what they run, so the quote worker runs under an interpreter without supportbot installed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "mail" / "fixtures"

# --- limits, the same numbers parse_mail uses ----------------------------------------------------

MAX_DEPTH = 10
MAX_PARTS = 500
MAX_HTML_CHARS = 2_000_000
MAX_ATTACHMENT_BYTES = 25 * 1024 * 1024
MAX_HEADER_SECTION = 1_048_576
MAX_HEADERS = 1000
MAX_FIELD = 65_536
MAX_MIME_FIELD = 4096
MIME_FIELDS = (b"content-type", b"content-disposition", b"content-transfer-encoding", b"content-id")
PLACEHOLDER_LINES = 100_000  # the stdlib reads ~1.5-2 M lines/s and keeps each one as an object
PLACEHOLDER_BYTES = 1_048_576  # and copies a leaf several times (a delivery-status part is even parsed)


def _ensure_project_path() -> None:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


# =================================================================================================
# The pre-scan
# =================================================================================================

_HEADER_NAME = re.compile(rb"[\x21-\x39\x3b-\x7e]{1,200}[ \t]*:")
_BLANK_LINE = re.compile(rb"\n\r?\n")
_BOUNDARY = re.compile(rb'boundary\s*=\s*(?:"([^"]*)"|([^\s;"]+))', re.IGNORECASE)
_CONTENT_TYPE = re.compile(rb"\s*([!#$%&'*+.^_`|~0-9A-Za-z-]+/[!#$%&'*+.^_`|~0-9A-Za-z-]+)")


@dataclass
class Prescan:
    raw: bytes
    defects: list[str]
    placeholders: dict[str, bytes]
    entities: int = 0
    max_depth_seen: int = 0


@dataclass
class _Head:
    kept: bytes  # the header section as handed to the stdlib, line break before the body included
    body_start: int
    content_type: str  # lowercased type/subtype, "" when absent
    boundary: bytes | None


def _scan_head(raw: bytes, start: int, end: int, defects: list[str]) -> _Head:
    """One header section from `start` (the entity ends by `end`): where the body starts, and the
    fields trimmed. The blank line is looked for before `end` only: searching on to the end of the
    mail for every part made the scan quadratic (500 parts without a blank line before 25 MB of
    text took 10 s)."""
    if raw.startswith((b"\n", b"\r\n"), start):
        eol = raw.index(b"\n", start) + 1
        return _Head(raw[start:eol], eol, "", None)
    blank = _BLANK_LINE.search(raw, start, end)
    head_end, body_start = (blank.start() + 1, blank.end()) if blank else (end, end)
    if head_end - start > MAX_HEADER_SECTION:
        defects.append("pre-scan: header section over 1 MiB trimmed")
    fields: list[list[bytes]] = []
    pos = start
    limit = min(head_end, start + MAX_HEADER_SECTION)
    while pos < limit:
        eol = raw.find(b"\n", pos, limit)
        line_end = limit if eol < 0 else eol + 1
        line = raw[pos:line_end]
        bare = line.rstrip(b"\r\n")
        if not bare:
            pass  # a blank line inside the header block says nothing
        elif bare[:1] in (b" ", b"\t") and fields:
            fields[-1].append(line)
        elif _HEADER_NAME.match(bare):
            if len(fields) >= MAX_HEADERS:
                defects.append("pre-scan: over 1000 header fields trimmed")
                break
            fields.append([line])
        elif pos == start and bare.startswith((b"From ", b">From ")):
            fields.append([line])  # an mbox separator line: the stdlib knows it too
        else:
            # Not a header line: the header section ends here and this line is body.
            body_start = pos
            break
        pos = line_end
    kept: list[bytes] = []
    content_type, boundary = "", None
    for lines in fields:
        name = lines[0].split(b":", 1)[0].strip().lower()
        cap = MAX_MIME_FIELD if name in MIME_FIELDS else MAX_FIELD
        size = -(lines[0].find(b":") + 1)  # the cap is on the value, as in mime.split_head
        for i, line in enumerate(lines):
            if size + len(line) > cap:
                cut = line[: max(0, cap - size)].rstrip(b"\r\n")
                if i == 0 or cut.strip():
                    kept.append(cut + b"\n")
                defects.append(f"pre-scan: header {name[:40].decode('ascii', 'replace')} trimmed")
                break
            kept.append(line)
            size += len(line)
        if name == b"content-type":
            value = b"".join(lines)[:MAX_MIME_FIELD].split(b":", 1)[1]
            if match := _CONTENT_TYPE.match(value):
                content_type = match.group(1).decode("ascii").lower()
            if content_type.startswith("multipart/") and (b := _BOUNDARY.search(value)):
                boundary = (b.group(1) if b.group(1) is not None else b.group(2))[:200] or None
    if kept and not kept[-1].endswith(b"\n"):
        kept[-1] += b"\n"
    separator = raw[head_end:body_start] if body_start > head_end else b"\n"
    return _Head(b"".join(kept) + separator, body_start, content_type, boundary)


def prescan(raw: bytes, *, max_depth: int = MAX_DEPTH, max_parts: int = MAX_PARTS) -> Prescan:
    """Rewrite a mail so the stdlib parser meets only what it handles in linear time.

    Work: one regex search per delimiter line of a boundary in force (each search in C, over at
    most max_depth+1 literal boundaries), one Python step per header line of each entity, and
    a C `count` of each leaf's lines. The output is the input with the hostile spans removed.
    """
    defects: list[str] = []
    placeholders: dict[str, bytes] = {}
    out: list[bytes] = []
    stack: list[tuple[bytes, int, bool]] = []  # (boundary, depth of its children, digest)
    entities = 0
    deepest = 0

    def delimiter_pattern() -> re.Pattern[bytes] | None:
        if not stack:
            return None
        names = b"|".join(re.escape(b) for b, _, _ in reversed(stack))
        return re.compile(rb"^--(" + names + rb")(--)?[ \t]*\r?$", re.MULTILINE)

    def leaf_body(start: int, end: int) -> None:
        if end - start > PLACEHOLDER_BYTES or raw.count(b"\n", start, end) > PLACEHOLDER_LINES:
            token = f"supportbot-placeholder-{len(placeholders)}"
            placeholders[token] = raw[start:end]
            out.append(token.encode("ascii") + b"\n")
        else:
            out.append(raw[start:end])

    # An entity: its header section at `pos`, at `depth`. Returns where its body begins and what
    # it is; the body runs to the next delimiter of a boundary in force (or the end).
    def entity(pos: int, depth: int, default_type: str) -> tuple[int, str]:
        nonlocal entities, deepest
        entities += 1
        deepest = max(deepest, depth)
        # The entity ends at the next delimiter of a boundary in force: its header cannot go further.
        pattern = delimiter_pattern()
        match = pattern.search(raw, pos) if pattern else None
        head = _scan_head(raw, pos, match.start() if match else len(raw), defects)
        out.append(head.kept)
        kind = head.content_type or default_type
        if kind.startswith("multipart/") and head.boundary:
            stack.append((head.boundary, depth + 1, kind == "multipart/digest"))
            return head.body_start, "multipart"
        if kind in ("message/rfc822", "message/global"):
            return head.body_start, "message"
        return head.body_start, "leaf"

    pos, kind = entity(0, 0, "text/plain")
    depth_of_message = 0
    while True:
        # A message/rfc822 body is another mail: its header section starts right away.
        if kind == "message":
            depth_of_message += 1
            inner_depth = (stack[-1][1] if stack else 0) + depth_of_message
            if inner_depth > max_depth:
                defects.append(f"pre-scan: nesting deeper than {max_depth} skipped")
                kind = "skip"
            elif entities >= max_parts:
                kind = "skip"
            else:
                pos, kind = entity(pos, inner_depth, "text/plain")
                continue
        pattern = delimiter_pattern()
        match = pattern.search(raw, pos) if pattern else None
        end = match.start() if match else len(raw)
        if kind == "leaf":
            leaf_body(pos, end)
        elif kind == "multipart":
            out.append(raw[pos:end])  # the preamble
        # kind "skip": the span is dropped
        if match is None:
            break
        boundary, closing = match.group(1), match.group(2) is not None
        while stack and stack[-1][0] != boundary:
            stack.pop()  # an inner multipart that never closed ends with its parent's part
        line_end = raw.find(b"\n", match.end())
        line_end = len(raw) if line_end < 0 else line_end + 1
        depth_of_message = 0
        if closing:
            out.append(raw[match.start():line_end])
            stack.pop()
            pos, kind = line_end, "multipart"  # the epilogue, up to a delimiter of the parent
            continue
        _, child_depth, digest = stack[-1]
        if entities >= max_parts:
            defects.append(f"pre-scan: more than {max_parts} parts; the rest were cut")
            out.extend(b"\n--" + b + b"--\n" for b, _, _ in reversed(stack))
            break
        out.append(raw[match.start():line_end])
        if child_depth > max_depth:
            defects.append(f"pre-scan: nesting deeper than {max_depth} skipped")
            entities += 1  # a skipped part still counts, so the loop ends after max_parts of them
            pos, kind = line_end, "skip"
            continue
        pos, kind = entity(line_end, child_depth, "message/rfc822" if digest else "text/plain")
    return Prescan(b"".join(out), defects, placeholders, entities, deepest)


# =================================================================================================
# The stdlib parse, walked by the same rules as ours
# =================================================================================================


@dataclass(frozen=True)
class Fields:
    """What the comparison looks at: the fields the issue names."""

    subject: str
    addresses: tuple[tuple[tuple[str, str], ...], ...]  # from, to, cc, reply-to
    text: str
    new_text: str
    has_html: bool
    attachments: tuple[tuple[str, int], ...]
    forwarded: tuple[str, ...]  # subjects of the forwarded mails
    failed: str = ""  # the parser raised (ours never should)


def fields_of(parsed: object) -> Fields:
    """Our ParsedMail (wherever its dataclass lives now) as Fields."""
    def addrs(values: object) -> tuple[tuple[str, str], ...]:
        return tuple((a.name, a.email) for a in (values or []))  # type: ignore[attr-defined]

    from_ = getattr(parsed, "from_", None)
    failed = next((d for d in getattr(parsed, "defects", []) if d.startswith("the parser failed")), "")
    return Fields(
        subject=parsed.subject,  # type: ignore[attr-defined]
        addresses=(addrs([from_] if from_ else []), addrs(parsed.to), addrs(parsed.cc),  # type: ignore[attr-defined]
                   addrs(parsed.reply_to)),  # type: ignore[attr-defined]
        text=parsed.text,  # type: ignore[attr-defined]
        new_text=parsed.new_text,  # type: ignore[attr-defined]
        has_html=parsed.html is not None,  # type: ignore[attr-defined]
        attachments=tuple((a.filename, a.size) for a in parsed.attachments),  # type: ignore[attr-defined]
        forwarded=tuple(f.subject for f in parsed.forwarded),  # type: ignore[attr-defined]
        failed=failed,
    )


_MESSAGE_TYPES = frozenset({"message/rfc822", "message/global"})
_DSN_TYPES = frozenset({"message/delivery-status", "message/global-delivery-status",
                        "text/rfc822-headers", "message/global-headers"})
_BODY_TYPES = frozenset({"text/plain", "text/html"})
_FOLD = re.compile(r"\r?\n(?=[ \t])")


@dataclass
class _Budget:
    parts_left: int = MAX_PARTS
    html_chars_left: int = MAX_HTML_CHARS


@dataclass
class _Html:
    html: str
    parse: bool = True


class StdWalker:
    """mail_gateway.parsing._Walker's rules, over a tree from email.parser."""

    def __init__(self, variant: str, budget: _Budget, placeholders: dict[str, bytes]) -> None:
        _ensure_project_path()
        from mail_gateway import html as mhtml
        from mail_gateway import mime

        self.mime, self.mhtml = mime, mhtml
        self.variant = variant
        self.budget = budget
        self.placeholders = placeholders
        self.defects: list[str] = []
        self.texts: list[str | _Html] = []
        self.htmls: list[str] = []
        self.attachments: list[tuple[str, int]] = []
        self.forwarded: list[Fields] = []
        self.report_type: str | None = None
        self.in_dsn = False
        self.forward_count = 0

    # --- reading one part through the variant -------------------------------------------------

    def payload_bytes(self, part: object) -> bytes:
        raw = part.get_payload()  # type: ignore[attr-defined]
        if isinstance(raw, str) and raw.rstrip("\r\n") in self.placeholders:
            part.set_payload(self.placeholders[raw.rstrip("\r\n")].decode("ascii", "surrogateescape"))  # type: ignore[attr-defined]
        if part.is_multipart():  # type: ignore[attr-defined]
            return _entity_body(part)
        data = part.get_payload(decode=True)  # type: ignore[attr-defined]
        return data if isinstance(data, bytes) else b""

    def text_of(self, part: object, data: bytes) -> str:
        if self.variant == "std-default":
            try:
                return self.mime.clean_text(part.get_content())  # type: ignore[attr-defined]
            except Exception:  # noqa: BLE001 - an unknown charset, a broken body
                self.note("get_content failed; decoded by hand")
        charset = part.get_param("charset")  # type: ignore[attr-defined]
        if isinstance(charset, tuple):
            charset = charset[2]
        return self.mime.clean_text(self.mime.decode_bytes(data, str(charset) if charset else None,
                                                           self.defects))

    def filename_of(self, part: object) -> str | None:
        try:
            name = part.get_filename()  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001
            return None
        if not name:
            return None
        return self.mime.decode_words(name, self.defects) if self.variant == "std-compat32" else name

    # --- the walk ------------------------------------------------------------------------------

    def note(self, defect: str) -> None:
        if defect not in self.defects:
            self.defects.append(defect)

    def walk(self, part: object, depth: int) -> None:
        if depth > MAX_DEPTH:
            self.note("nesting too deep")
            return
        if self.budget.parts_left <= 0:
            self.note("too many parts")
            return
        self.budget.parts_left -= 1
        content_type = part.get_content_type()  # type: ignore[attr-defined]
        if content_type.startswith("multipart/"):
            children = part.get_payload() if part.is_multipart() else None  # type: ignore[attr-defined]
            if not children:
                self.body(self.payload_bytes(part), "text/plain", part)
            elif content_type == "multipart/alternative":
                self.alternative(children, depth + 1)
            elif content_type == "multipart/report" and self.report_type is None:
                self.report_type = str(part.get_param("report-type") or "unknown").lower()  # type: ignore[attr-defined]
                self.in_dsn = self.report_type == "delivery-status"
                for child in children:
                    self.walk(child, depth + 1)
                self.in_dsn = False
            else:
                for child in children:
                    self.walk(child, depth + 1)
        else:
            self.leaf(part, content_type, depth)

    def alternative(self, children: list[object], depth: int) -> None:
        first_text, first_html = len(self.texts), len(self.htmls)
        versions = []
        for child in children:
            texts_before, htmls_before = len(self.texts), len(self.htmls)
            self.walk(child, depth)
            versions.append((self.texts[texts_before:], self.htmls[htmls_before:]))
        plain = [t for t, _ in versions if any(isinstance(p, str) and p.strip() for p in t)]
        derived = [t for t, _ in versions if t]
        html = [h for _, h in versions if h]
        self.texts[first_text:] = (plain or derived or [[]])[-1]
        self.htmls[first_html:] = (html or [[]])[-1]

    def leaf(self, part: object, content_type: str, depth: int) -> None:
        filename = self.filename_of(part)
        if content_type in _MESSAGE_TYPES:
            self.forward(part, filename, depth)
            return
        data = self.payload_bytes(part)
        disposition = part.get_content_disposition()  # type: ignore[attr-defined]
        if self.in_dsn and content_type in _DSN_TYPES:
            return
        if content_type in _BODY_TYPES and disposition != "attachment" and not filename:
            self.body(data, content_type, part)
        else:
            self.attach(data, content_type, filename)

    def body(self, data: bytes, content_type: str, part: object) -> None:
        text = self.text_of(part, data)
        if content_type == "text/plain":
            if str(part.get_param("format") or "").lower() == "flowed":  # type: ignore[attr-defined]
                text = self.mime.unflow(text, delsp=str(part.get_param("delsp") or "").lower() == "yes")  # type: ignore[attr-defined]
            self.texts.append(text)
            return
        if len(text) > self.budget.html_chars_left:
            text = text[: self.budget.html_chars_left]
        self.budget.html_chars_left -= len(text)
        if text and self.mhtml.too_costly_to_parse(text):
            self.texts.append(_Html(text, parse=False))
        elif text:
            self.htmls.append(text)
            self.texts.append(_Html(text))

    def attach(self, data: bytes, content_type: str, filename: str | None) -> None:
        name = self.mime.safe_filename(filename, content_type, len(self.attachments) + 1)
        self.attachments.append((name, len(data)))

    def forward(self, part: object, filename: str | None, depth: int) -> None:
        inner = part.get_payload(0) if part.is_multipart() else None  # type: ignore[attr-defined]
        data = _entity_bytes(inner) if inner is not None else self.payload_bytes(part)
        if depth + 1 > MAX_DEPTH:
            self.note("nesting too deep")
        elif inner is not None:
            self.forwarded.append(walk_tree(inner, self.variant, depth + 1, self.budget, self.placeholders))
        count, self.forward_count = self.forward_count, self.forward_count + 1
        default = "forwarded.eml" if count == 0 else f"forwarded-{count + 1}.eml"
        self.attach(data, "message/rfc822", filename or default)


def _generator_bytes(msg: object) -> bytes:
    import io
    from email.generator import BytesGenerator

    buffer = io.BytesIO()
    BytesGenerator(buffer, mangle_from_=False, maxheaderlen=0).flatten(msg)  # type: ignore[arg-type]
    return buffer.getvalue()


def _entity_bytes(msg: object) -> bytes:
    try:
        return _generator_bytes(msg)
    except Exception:  # noqa: BLE001
        return b""


def _entity_body(msg: object) -> bytes:
    data = _entity_bytes(msg)
    blank = _BLANK_LINE.search(data)
    return data[blank.end():] if blank else b""


def _header_values(msg: object, name: str, variant: str, defects: list[str]) -> list[str]:
    _ensure_project_path()
    from mail_gateway import mime

    if variant == "std-default":
        out = []
        for value in msg.get_all(name) or []:  # type: ignore[attr-defined]
            try:
                out.append(str(value))
            except Exception:  # noqa: BLE001
                defects.append(f"header {name} unreadable")
        return out
    out = []
    for field_name, value in msg.raw_items():  # type: ignore[attr-defined]
        if field_name.lower() == name:
            value = _FOLD.sub("", str(value))
            out.append(mime.decode_bytes(value.encode("ascii", "surrogateescape"), None, defects).strip())
    return out


def _addresses(msg: object, name: str, variant: str, defects: list[str]) -> tuple[tuple[str, str], ...]:
    _ensure_project_path()
    from email.utils import getaddresses

    from mail_gateway import mime

    result = []
    if variant == "std-default":
        for value in msg.get_all(name) or []:  # type: ignore[attr-defined]
            try:
                for address in value.addresses:
                    email = mime.one_line(address.addr_spec).strip("<>").lower()
                    if "@" in email:
                        result.append((mime.one_line(address.display_name), email))
            except Exception:  # noqa: BLE001
                defects.append(f"header {name} unreadable")
        return tuple(result)
    for display, email in getaddresses(_header_values(msg, name, variant, defects)):
        email = mime.one_line(email).strip("<>").lower()
        if "@" in email:
            result.append((mime.one_line(mime.decode_words(display, defects)), email))
    return tuple(result)


def walk_tree(msg: object, variant: str, depth: int, budget: _Budget,
              placeholders: dict[str, bytes]) -> Fields:
    _ensure_project_path()
    from mail_gateway import mime
    from mail_gateway.html import html_to_text, sanitize_html, text_without_parsing
    from mail_gateway.quotes import strip_reply

    walker = StdWalker(variant, budget, placeholders)
    walker.walk(msg, depth)
    defects = walker.defects
    pieces = [
        mime.clean_text(html_to_text(p.html, MAX_HTML_CHARS) if p.parse else text_without_parsing(p.html))
        if isinstance(p, _Html) else p
        for p in walker.texts
    ]
    text = "\n\n".join(p.strip("\n") for p in pieces if p.strip())
    html = "\n".join(sanitize_html(body).strip() for body in walker.htmls) if walker.htmls else None
    subjects = _header_values(msg, "subject", variant, defects)[:1]
    subject = subjects[0] if subjects else ""
    subject = mime.one_line(subject if variant == "std-default" else mime.decode_words(subject, defects))
    return Fields(
        subject=subject,
        addresses=(_addresses(msg, "from", variant, defects)[:1], _addresses(msg, "to", variant, defects),
                   _addresses(msg, "cc", variant, defects), _addresses(msg, "reply-to", variant, defects)),
        text=text,
        new_text=strip_reply(text),
        has_html=html is not None,
        attachments=tuple(walker.attachments),
        forwarded=tuple(f.subject for f in walker.forwarded),
    )


def parse_stdlib(raw: bytes, variant: str = "std-compat32", *, use_prescan: bool = True) -> Fields:
    """The alternative parse: pre-scan, email.parser, the walk. Never raises."""
    import email.policy
    from email.parser import BytesParser

    policy = email.policy.default if variant == "std-default" else email.policy.compat32
    try:
        scanned = prescan(raw) if use_prescan else Prescan(raw, [], {})
        msg = BytesParser(policy=policy).parsebytes(scanned.raw)
        return walk_tree(msg, variant, 0, _Budget(), scanned.placeholders)
    except Exception as error:  # noqa: BLE001
        return Fields("", ((), (), (), ()), "", "", False, (), (), f"{type(error).__name__}: {str(error)[:80]}")


def parse_ours(raw: bytes) -> Fields:
    _ensure_project_path()
    from mail_gateway.parsing import parse_mail

    return fields_of(parse_mail(raw))


def split_ours(raw: bytes) -> int:
    """Only the tree: our splitter (mime.Part.parse, split_multipart, transfer_decode), no bodies read."""
    _ensure_project_path()
    from mail_gateway import mime

    defects: list[str] = []
    parts_left = MAX_PARTS

    def walk(entity: bytes, depth: int, default_type: str) -> None:
        nonlocal parts_left
        if depth > MAX_DEPTH or parts_left <= 0:
            return
        parts_left -= 1
        part = mime.Part.parse(entity, defects, default_type)
        content_type = part.mime.get_content_type()
        if content_type.startswith("multipart/") and (boundary := part.param("boundary")):
            child_type = "message/rfc822" if content_type == "multipart/digest" else "text/plain"
            for child in mime.split_multipart(part.body, boundary[:200], parts_left + 1, defects):
                walk(child, depth + 1, child_type)
        elif content_type in _MESSAGE_TYPES:
            walk(mime.transfer_decode(part, defects), depth + 1, "text/plain")
        else:
            mime.transfer_decode(part, defects)

    walk(raw, 0, "text/plain")
    return MAX_PARTS - parts_left


def split_stdlib(raw: bytes, variant: str = "std-compat32") -> int:
    """Only the tree: pre-scan, email.parser, each leaf's payload decoded."""
    import email.policy
    from email.parser import BytesParser

    scanned = prescan(raw)
    policy = email.policy.default if variant == "std-default" else email.policy.compat32
    msg = BytesParser(policy=policy).parsebytes(scanned.raw)
    count = 0
    for part in msg.walk():
        count += 1
        if not part.is_multipart():
            payload = part.get_payload()
            if isinstance(payload, str) and payload.rstrip("\r\n") in scanned.placeholders:
                part.set_payload(scanned.placeholders[payload.rstrip("\r\n")].decode("ascii", "surrogateescape"))
            part.get_payload(decode=True)
    return count


IMPLEMENTATIONS: dict[str, Callable[[bytes], Fields]] = {
    "ours": parse_ours,
    "std-compat32": lambda raw: parse_stdlib(raw, "std-compat32"),
    "std-default": lambda raw: parse_stdlib(raw, "std-default"),
    "std-raw": lambda raw: parse_stdlib(raw, "std-compat32", use_prescan=False),
}


# =================================================================================================
# Mails: fixtures, the small mails test_parsing.py builds, and its hostile ones (copied)
# =================================================================================================


def _mail(headers: str, body: str = "", *, crlf: bool = False) -> bytes:
    raw = f"{headers.strip()}\n\n{body}"
    return (raw.replace("\n", "\r\n") if crlf else raw).encode("utf-8")


def test_built_mails() -> dict[str, bytes]:
    """The small mails tests/mail/test_parsing.py builds in code (copied, not imported)."""
    mails: dict[str, bytes] = {}
    for label, body in [("cp-1252", b"caf\xe9 \x80"), ("iso8859_1", b"caf\xe9 \x93q\x94"),
                        ("utf8 ", "café".encode()), ('"UTF-8"', "café".encode()),
                        ("x-user-defined", "café".encode()), ("us-ascii", "café".encode()),
                        ("koi8-r", "привет".encode("koi8-r")), ("base64", b"plain"),
                        ("unicode-escape", b"\\u0041"), ("utf-8", b"caf\xe9")]:
        mails[f"charset {label.strip()}"] = (
            f"From: a@example.org\nContent-Type: text/plain; charset={label}\n\n".encode() + body)
    mails["broken encoded words"] = _mail(
        "From: =?x-unknown?q?Caf=E9?= <cafe@example.org>\nSubject: =?utf-8?b?!!!?= and "
        "=?utf-8?q?unterminated and =?bogus-charset?Q?d=E9j=E0?=")
    mails["subject with line breaks"] = _mail(
        "From: a@example.org\nSubject: =?utf-8?q?one=0D=0Atwo?=\n\tthree\x0b four")
    mails["several text parts, NUL"] = _mail(
        "From: a@example.org\nContent-Type: multipart/mixed; boundary=b",
        "--b\nContent-Type: text/plain\n\nfirst\x00 part\n--b\nContent-Type: image/gif\n\nGIF89a\n"
        "--b\nContent-Type: text/plain\n\nsecond part\n--b--\n", crlf=True)
    mails["flowed delsp"] = _mail(
        "From: a@example.org\nContent-Type: text/plain; format=flowed; delsp=yes",
        "Hello wor \nld and\n> quoted fl \n> owed\n>\n>> deeper \n>> line\n-- \nsig\n")
    mails["empty plain alternative"] = _mail(
        "From: a@example.org\nContent-Type: multipart/alternative; boundary=x",
        "--x\nContent-Type: text/plain\n\n \n--x\nContent-Type: text/html\n\n<p>Rich&nbsp;only</p>\n--x--\n")
    mails["multipart without boundary"] = _mail("From: a@example.org\nContent-Type: multipart/mixed",
                                                "just text\n")
    mails["digest"] = _mail(
        "From: list@example.org\nContent-Type: multipart/digest; boundary=d",
        "--d\n\nFrom: one@example.org\nSubject: first\n\nbody one\n"
        "--d\n\nFrom: two@example.org\nSubject: second\n\nbody two\n--d--\n")
    mails["sloppy base64"] = _mail(
        "From: a@example.org\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: base64",
        "SGVs bG8g\r\n*d29y!bGQ\n")
    for i, raw in enumerate([b"", b"\n", b"\r\n\r\n", b"From:", b"\x00" * 100, b"--"]):
        mails[f"tiny input {i}"] = raw
    for disposition in ['attachment; filename="../../etc/passwd"',
                        'attachment; filename="C:\\\\Users\\\\x\\\\report.pdf"',
                        "attachment; filename*=utf-8''%E2%80%AEfdp.exe",
                        "attachment; filename*=iso-8859-1''r%E9sum%E9.pdf",
                        'attachment; filename="=?utf-8?q?Rechnung_M=C3=A4rz.pdf?="',
                        'attachment; filename=".."', "attachment"]:
        mails[f"filename {disposition[12:40]}"] = _mail(
            f"From: a@example.org\nContent-Type: application/pdf\nContent-Disposition: {disposition}", "%PDF")
    mails["read receipt"] = _mail(
        "From: a@example.org\nContent-Type: multipart/report; report-type=disposition-notification; boundary=r",
        "--r\nContent-Type: text/plain\n\nYour message was read.\n"
        "--r\nContent-Type: message/disposition-notification\n\n"
        "Final-Recipient: rfc822; a@example.org\nDisposition: manual-action/MDN-sent-manually; displayed\n--r--\n")
    forwarded = (FIXTURES / "forwarded.eml").read_bytes()
    mails["truncated multipart"] = forwarded[: forwarded.index(b"--inner-alt\nContent-Type: text/html")]
    return mails


def fuzzed(raw: bytes, rng: random.Random) -> list[bytes]:
    """Truncations and byte flips of one mail (as test_truncated_and_corrupted_fixtures_never_raise)."""
    variants = [raw[: rng.randrange(len(raw) + 1)] for _ in range(15)]
    for _ in range(15):
        mutated = bytearray(raw)
        for _ in range(rng.randrange(1, 20)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        variants.append(bytes(mutated))
    return variants


def _nested_multiparts() -> bytes:
    depth = 10_000
    opening = "".join(f'Content-Type: multipart/mixed; boundary="b{i}"\n\n--b{i}\n' for i in range(depth))
    closing = "".join(f"\n--b{i}--\n" for i in reversed(range(depth)))
    return f"From: a@example.org\n{opening}Content-Type: text/plain\n\ndeep\n{closing}".encode()


def _nested_forwards() -> bytes:
    raw = "From: a@example.org\n\ninnermost\n"
    for level in range(10_000):
        raw = f"From: f{level}@example.org\nContent-Type: message/rfc822\n\n{raw}"
    return raw.encode()


def _html_links() -> bytes:
    links = "".join(f'<a href="https://example.com/{i}" onclick="x()">link {i}</a> ' for i in range(100_000))
    html = f"<html><body><p>{links}</p></body></html>"
    html = html * (5_000_000 // len(html) + 1)
    return b"From: a@example.org\nContent-Type: text/html; charset=utf-8\n\n" + html.encode()


def _html_deep() -> bytes:
    html = "<div>" * 50_000 + "Printer &amp; scanner<script>steal()</script> broke" + "</div>" * 50_000
    return b"From: a@example.org\nContent-Type: text/html; charset=utf-8\n\n" + html.encode()


def _style_flood() -> bytes:
    return b"From: a@example.org\nContent-Type: text/html\n\n" + ("Hello " + "<style>" * 40_000 + " tail").encode()


def _many_parts() -> bytes:
    parts = "".join(f"--x\nContent-Type: text/plain\n\npart {i}\n" for i in range(100_000))
    return f"From: a@example.org\nContent-Type: multipart/mixed; boundary=x\n\n{parts}--x--\n".encode()


def _huge_headers() -> bytes:
    recipients = ", ".join(f"user{i} <user{i}@example.org>" for i in range(5_000))
    quoted_semicolons = '"' + ";" * 300_000 + '"'
    return (f"From: a@example.org\nTo: {recipients}\nSubject: {'x' * 200_000}\n"
            f"Content-Type: text/plain; x-pad={quoted_semicolons}; charset=utf-8\n"
            + "X-Filler: y\n" * 2_000 + "\nbody\n").encode()


def _endless_header() -> bytes:
    return b"From: a@example.org\nX-Long: start\n" + b" more\n" * 3_000_000 + b"\nbody\n"


def _huge_dsn() -> bytes:
    recipients = b"".join(b"Final-Recipient: rfc822; u%d@example.org\nAction: failed\nStatus: 5.1.1\n\n" % i
                          for i in range(300))
    return (b"From: a@example.org\nContent-Type: multipart/report; report-type=delivery-status; boundary=r\n\n"
            b"--r\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx\n\n"
            + recipients + b"X" * 20_000_000 + b"\n--r--\n")


def _short_lines_30mb() -> bytes:
    # Not in the tests: 30 MB of two-byte lines (15 M lines), the stdlib's worst case per byte.
    return b"From: a@example.org\nContent-Type: text/plain\n\n" + b"a\n" * 15_000_000


def _headers_only_parts() -> bytes:
    # Not in the tests: found while writing the pre-scan (a first version took 10 s on it). 400 parts
    # with a header and no blank line, the last one followed by 28 MB of text on one line.
    return (b"From: a@example.org\nContent-Type: multipart/mixed; boundary=x\n\n" + b"--x\nX-A: y\n" * 399
            + b"--x\nX-B: z\n" + b"filler " * 4_000_000 + b"\n--x--\n")


def _attachment_30mb() -> bytes:
    # Not in the tests: a real big mail, a 22 MiB attachment base64-encoded in 76-character lines.
    import base64

    data = base64.encodebytes(random.Random(7).randbytes(22 * 1024 * 1024))
    return (b"From: a@example.org\nContent-Type: multipart/mixed; boundary=x\n\n--x\n"
            b"Content-Type: text/plain\n\nSee the attachment.\n--x\nContent-Type: application/octet-stream\n"
            b"Content-Transfer-Encoding: base64\nContent-Disposition: attachment; filename=dump.bin\n\n"
            + data + b"--x--\n")


HOSTILE: dict[str, Callable[[], bytes]] = {
    "10,000 nested multiparts": _nested_multiparts,
    "10,000 nested forwarded mails": _nested_forwards,
    "5 MB HTML, 100,000 links": _html_links,
    "HTML nested 50,000 deep": _html_deep,
    "40,000 unclosed <style>": _style_flood,
    "100,000 parts": _many_parts,
    "huge headers and parameters": _huge_headers,
    "18 MB header section": _endless_header,
    "20 MB delivery-status part": _huge_dsn,
    "30 MB of 2-byte lines": _short_lines_30mb,
    "400 header-only parts, then 28 MB": _headers_only_parts,
    "30 MB mail, 22 MiB base64 attachment": _attachment_30mb,
}


# =================================================================================================
# Running the MIME comparison
# =================================================================================================


def differences(a: Fields, b: Fields) -> list[str]:
    out = []
    for name in ("failed", "subject", "addresses", "text", "has_html", "attachments", "forwarded"):
        if getattr(a, name) != getattr(b, name):
            out.append(name)
    return out


def _short(value: object, width: int = 70) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def compare_all(mails: dict[str, bytes], impls: list[str], *, show: bool = True) -> dict[str, tuple[int, int, int]]:
    """Agreements with ours; prints each disagreement. Returns impl -> (agree, disagree, failures)."""
    reference = {name: parse_ours(raw) for name, raw in mails.items()}
    counts: dict[str, tuple[int, int, int]] = {}
    for impl in impls:
        agree = disagree = failures = 0
        by_field: Counter[str] = Counter()
        raised: Counter[str] = Counter()
        for name, raw in mails.items():
            got = IMPLEMENTATIONS[impl](raw)
            failures += bool(got.failed)
            if got.failed:
                raised[got.failed] += 1
            diff = differences(reference[name], got)
            by_field.update(diff)
            if not diff:
                agree += 1
                continue
            disagree += 1
            if show:
                print(f"  {impl:13} {name}: differs in {', '.join(diff)}")
                for field_name in diff[:3]:
                    print(f"      ours  {_short(getattr(reference[name], field_name))}")
                    print(f"      {impl[4:]:5} {_short(getattr(got, field_name))}")
        counts[impl] = (agree, disagree, failures)
        if not show and disagree:
            print(f"  {impl:13} differs in: " + ", ".join(f"{k} {v}" for k, v in by_field.most_common()))
            for message, n in raised.most_common(5):
                print(f"  {impl:13} raised {n}x: {message}")
    return counts


def time_fixtures(mails: dict[str, bytes], impls: dict[str, Callable[[bytes], object]],
                  reps: int) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {name: [] for name in impls}
    for run in impls.values():  # warm-up: imports, regex compilation
        for raw in mails.values():
            run(raw)
    for _ in range(reps):
        for raw in mails.values():
            for name, run in impls.items():  # interleaved, so load changes hit every one alike
                started = time.perf_counter()
                run(raw)
                samples[name].append(time.perf_counter() - started)
    return samples


def hostile_one(case: str, impl: str) -> None:
    """Worker: one hostile mail, one implementation, in a fresh process; prints one JSON line."""
    _ensure_project_path()
    from bench._util import peak_rss_mib, reset_peak_rss, rss_mib

    raw = HOSTILE[case]()
    parse = IMPLEMENTATIONS[impl]
    parse(b"From: a@example.org\n\nwarm up\n")
    before = rss_mib()
    reset_peak_rss()
    started = time.perf_counter()
    result = parse(raw)
    seconds = time.perf_counter() - started
    peak = peak_rss_mib() - before
    reference = parse_ours(raw) if impl != "ours" else result
    print(json.dumps({
        "seconds": seconds, "peak_mib": peak, "mib": len(raw) / 2**20,
        "differs": differences(reference, result), "failed": result.failed,
        "text_chars": len(result.text), "attachments": len(result.attachments),
    }))


def run_hostile(impls: list[str], timeout: float) -> list[dict[str, object]]:
    rows = []
    for case in HOSTILE:
        for impl in impls:
            started = time.perf_counter()
            try:
                done = subprocess.run(
                    [sys.executable, str(Path(__file__).resolve()), "--hostile-one", case, impl],
                    capture_output=True, text=True, timeout=timeout, cwd=ROOT)
                line = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
                result = json.loads(line) if line.startswith("{") else {
                    "error": (done.stderr.strip().splitlines() or ["?"])[-1][:90]}
            except subprocess.TimeoutExpired:
                result = {"error": f"killed after {timeout:g} s"}
            result.update(case=case, impl=impl, wall=time.perf_counter() - started)
            rows.append(result)
            print(f"  {case:38} {impl:13} " + (
                f"{result['seconds']:7.2f} s {result['peak_mib']:8.1f} MiB  differs: "
                f"{', '.join(result['differs']) or '-'}{'  FAILED ' + result['failed'] if result['failed'] else ''}"
                if "seconds" in result else str(result["error"])), flush=True)
    return rows


def run_mime(args: argparse.Namespace) -> None:
    _ensure_project_path()
    from bench._util import percentile, print_table

    fixtures = {p.name: p.read_bytes() for p in sorted(FIXTURES.glob("*.eml"))}
    built = test_built_mails()
    impls = ["std-compat32", "std-default"]
    print(f"\n== MIME: agreement with ours ({len(fixtures)} fixtures) ==")
    on_fixtures = compare_all(fixtures, impls)
    print(f"\n== MIME: agreement with ours ({len(built)} mails test_parsing.py builds) ==")
    on_built = compare_all(built, impls)
    rng = random.Random(1234)
    fuzz = {f"{name} #{i}": raw for name, original in fixtures.items()
            for i, raw in enumerate(fuzzed(original, rng))}
    print(f"\n== MIME: agreement with ours ({len(fuzz)} truncated/corrupted fixtures; not listed) ==")
    on_fuzz = compare_all(fuzz, impls, show=False)
    print_table(
        ["implementation", "fixtures agree", "differ", "test-built agree", "differ", "fuzzed agree", "differ",
         "raised (all sets)"],
        [[impl, *on_fixtures[impl][:2], *on_built[impl][:2], *on_fuzz[impl][:2],
          on_fixtures[impl][2] + on_built[impl][2] + on_fuzz[impl][2]] for impl in impls],
        title="Agreement with ours (text, html presence, attachments by name and size, addresses, "
              "subject, forwarded mails)")

    runs: dict[str, Callable[[bytes], object]] = {
        "ours": parse_ours, "std-compat32": IMPLEMENTATIONS["std-compat32"],
        "std-default": IMPLEMENTATIONS["std-default"],
        "ours, tree only": split_ours, "std-compat32, tree only": split_stdlib,
        "std-default, tree only": lambda raw: split_stdlib(raw, "std-default"),
        "pre-scan alone": prescan,
    }
    samples = time_fixtures(fixtures, runs, args.reps)
    rows = []
    for impl, values in samples.items():
        ms = [v * 1000 for v in values]
        rows.append([impl, len(ms), f"{statistics.median(ms):.3f}", f"{percentile(ms, 95):.3f}",
                     f"{percentile(ms, 99):.3f}", f"{sum(ms) / args.reps:.1f}"])
    print_table(["implementation", "parses", "median ms", "p95 ms", "p99 ms", "all fixtures once, ms"], rows,
                title=f"Time per fixture mail ({len(fixtures)} fixtures x {args.reps} repetitions, interleaved; "
                      "'tree only' = splitting and transfer decoding, no bodies, HTML or quotes)")

    if args.skip_hostile:
        return
    print(f"\n== MIME: hostile mails, one fresh process each, killed after {args.hostile_timeout:g} s ==")
    results = run_hostile(["ours", *impls, "std-raw"], args.hostile_timeout)
    table = []
    for case in HOSTILE:
        row: list[object] = [case]
        for impl in ["ours", *impls, "std-raw"]:
            r = next(x for x in results if x["case"] == case and x["impl"] == impl)
            if "seconds" in r:
                flag = "" if impl == "ours" else (" =" if not r["differs"] else " ≠")
                row.append(f"{r['seconds']:.2f} s / {r['peak_mib']:.0f} MiB{flag}")
            else:
                row.append(str(r["error"])[:40])
        table.append(row)
    print_table(["hostile mail", "ours", "std-compat32", "std-default", "std-raw (no pre-scan)"], table,
                title="Hostile mails: time / peak RSS growth (= same fields as ours, ≠ differs)")


# =================================================================================================
# Quotes
# =================================================================================================

REPLY_MARKER = "##- Please type your reply above this line -##"
NEW = "Thanks, that worked.\n\nBest,\nMaria"

# The expected `new_text` of each fixture reply, as tests/mail/test_parsing.py asserts it.
FIXTURE_NEW_TEXT = {
    "gmail_reply.eml": (
        "Thanks, that fixed it! The invoice now shows the right VAT number.\n\n"
        "One more question: can I get the PDF re-sent to accounting@example.org?\n\nBest,\nMaria"),
    "outlook_desktop_reply.eml": (
        "Hi,\n\nThat’s great – thank you! I’ll forward it to our café’s accountant.\n\n"
        "Kind regards,\nJérôme Dupont\nHead of Operations | Café Lumière"),
    "outlook_web_reply.eml": "Hello,\nThe export works again, thanks a lot!\n\nSven",
    "apple_mail_reply.eml": "Yes, please cancel order 55817. We ordered the wrong size.\n\nThanks,\nAnna",
    "iphone_reply.eml": "Great, thank you!",
    "thunderbird_reply.eml": (
        "Hello,\n\nI tried the steps from your mail but the sync still fails with error "
        "E-4012 after about five minutes. Log attached.\n\nRegards,\nTom"),
    "french_reply.eml": (
        "Bonjour,\n\nMerci beaucoup, le problème est résolu : je reçois de nouveau les "
        "factures.\n\nCordialement,\nÉlodie Martin"),
    "german_reply.eml": (
        "Vielen Dank für die schnelle Hilfe! Die Rechnung ist jetzt korrekt.\n\n"
        "Mit freundlichen Grüßen\nJürgen Weiß"),
    "spanish_reply.eml": "Hola:\n\nYa puedo entrar en la aplicación, ¡muchas gracias!\n\nUn saludo,\nJosé Núñez",
    "forwarded.eml": "Please take over this complaint, the customer wrote to me directly.\n\nPetra",
}

ATTRIBUTIONS = [
    "On Mon, Jan 5, 2026 at 10:15 AM Acme Support <support@help.acme.test> wrote:",
    "On Mon, Jan 5, 2026 at 10:15\u202fAM Acme Support <support+t1.abc@help.acme.test>\nwrote:",
    "On Mon, Jan 5, 2026 at 10:15 AM Acme Support\n<support@help.acme.test> wrote:",
    "On 3 Jan 2026, at 10:00, Acme Support <support@help.acme.test> wrote:",
    "On 1/3/26 10:00, Acme Support wrote:",
    "Le lun. 5 janv. 2026 à 10:15, Acme Support <support@help.acme.test> a écrit :",
    "Le lun. 5 janv. 2026 à 10:15, Acme Support <support@help.acme.test> a\nécrit\u00a0:",
    "Am Mo., 5. Jan. 2026 um 10:15 Uhr schrieb Acme Support <support@help.acme.test>:",
    "Am 05.01.2026 um 10:15 schrieb Acme Support:",
    "El lun, 5 ene 2026 a las 10:15, Acme Support (<support@help.acme.test>) escribió:",
    "Op ma 5 jan. 2026 om 10:15 schreef Acme Support <support@help.acme.test>:",
    "Il giorno lun 5 gen 2026 alle ore 10:15 Acme Support ha scritto:",
    "Em seg., 5 de jan. de 2026 às 10:15, Acme Support escreveu:",
]
MOBILE = ["Sent from my iPhone", "Sent from my Galaxy", "Envoyé de mon iPhone", "Von meinem iPhone gesendet",
          "Enviado desde mi iPhone", "Get Outlook for iOS", "Get Outlook for Android"]


def quote_cases() -> list[dict[str, str]]:
    """(category, name, text, expected) from tests/mail/test_quotes.py, copied, plus the fixtures."""
    cases: list[tuple[str, str, str, str]] = [
        ("our marker", "text above the marker", f"{NEW}\n\n{REPLY_MARKER}\nHello Maria,\nwe fixed it.\n", NEW),
        ("our marker", "quoted marker under an attribution",
         f"{NEW}\n\nOn Mon, Jan 5, 2026 at 10:15 AM Support <s@x.test> wrote:\n> {REPLY_MARKER}\n> Hi\n", NEW),
    ]
    for i, attribution in enumerate(ATTRIBUTIONS):
        cases.append(("attribution", f"attribution {i}: {attribution[:28]}",
                      f"{NEW}\n\n{attribution}\n\n> old text\n> more old text\n", NEW))
    cases += [
        ("header block", "-----Original Message-----",
         f"{NEW}\n\n-----Original Message-----\nFrom: Support\nSent: today\n\nold text\n", NEW),
        ("header block", "Outlook header block",
         f"{NEW}\n\nFrom: Acme Support <support@help.acme.test>\nSent: Monday, January 5, 2026 10:15 AM\n"
         "To: Maria <maria@example.org>\nSubject: Re: [#1234] VAT\n\nold text\n", NEW),
        ("header block", "Outlook web underscores",
         f"{NEW}\n\n________________________________\nFrom: Acme Support <support@help.acme.test>\n"
         "Sent: Tuesday, January 6, 2026 09:12\nTo: Maria\nSubject: Re: [#1234] VAT\n\nold text\n", NEW),
        ("header block", "French header block",
         f"{NEW}\n\nDe : Acme Support\nEnvoyé : lundi 5 janvier 2026 10:15\nÀ : Maria\nObjet : RE: VAT\n\nold", NEW),
        ("header block", "bold header block",
         f"{NEW}\n\n*From:* Acme Support\n*Sent:* Monday, January 5, 2026\n*To:* Maria\n\nold", NEW),
        ("keep", "a From: line in prose", "The error comes\nFrom: the billing page\nwhen I click save.\n",
         "The error comes\nFrom: the billing page\nwhen I click save."),
        ("keep", "prose starting with On", "On reflection, the installer wrote:\nC:\\temp is full\n",
         "On reflection, the installer wrote:\nC:\\temp is full"),
        ("other", "trailing quote block", f"{NEW}\n\n> old text\n>\n> more\n\n", NEW),
        ("keep", "inline quotes with answers", "> Which browser?\nFirefox 134.\n> Which OS?\nDebian.",
         "> Which browser?\nFirefox 134.\n> Which OS?\nDebian."),
        ("signature", "-- delimiter", f"{NEW}\n\n-- \nMaria Lopez\nACME Corp\n+1 555 0100\n", NEW),
    ]
    cases += [("signature", f"mobile: {s}", f"{NEW}\n\n{s}\n", NEW) for s in MOBILE]
    forward = ("---------- Forwarded message ---------\nFrom: Karl <k@example.at>\nDate: Sun\n\n"
               "The parcel is late.\n")
    below = "On Mon, Jan 5, 2026 at 10:15 AM Support wrote:\n> Does it work now?\n\nYes, it does.\n"
    cases += [
        ("forward", "forward without comment", forward, forward.strip()),
        ("forward", "forward with comment",
         "Please handle this.\n\nBegin forwarded message:\n\nFrom: Karl\n\nThe parcel is late.\n",
         "Please handle this."),
        ("keep", "reply written below the quote", below, below.strip()),
        ("other", "CRLF line endings", f"{NEW}\r\n\r\n> old\r\n".replace("\n\n", "\r\n\r\n"), NEW),
        ("other", "old Mac CR line endings", "Yes.\r\rOn 1/3/26 10:00, X wrote:\r> q\r", "Yes."),
        ("keep", "empty text", "", ""),
        ("keep", "blank text", " \n\n ", ""),
    ]
    _ensure_project_path()
    try:
        from mail_gateway.parsing import parse_mail

        for name, expected in FIXTURE_NEW_TEXT.items():
            cases.append(("fixture mail", name, parse_mail((FIXTURES / name).read_bytes()).text, expected))
    except Exception as error:  # noqa: BLE001 - the parser moved: the test cases still count
        print(f"(fixture quote cases skipped: {error})")
    return [{"category": c, "name": n, "text": t, "expected": e} for c, n, t, e in cases]


def hostile_quote_text() -> str:
    # test_hostile_text_is_bounded's input (12 MB).
    return "On a line of text 1\n" * 500_000 + "-" * 2_000_000 + "\n" + "Am 1 " + " schrieb" * 60


# Each library's entry point for "the new text": name -> (import, call). Run in the worker.
def _library(name: str) -> Callable[[str], str]:
    if name == "ours (strip_reply)":
        _ensure_project_path()
        from mail_gateway.quotes import strip_reply

        return strip_reply
    if name == "email-reply-parser":
        from email_reply_parser import EmailReplyParser

        return lambda text: EmailReplyParser.parse_reply(text) or ""
    if name.startswith("mail-parser-reply"):
        from mailparser_reply import EmailReplyParser as MPR

        parser = MPR(languages=["en", "de", "fr", "es", "nl", "it"])
        if name.endswith("latest_reply"):
            return lambda text: parser.parse_reply(text) or ""

        def body(text: str) -> str:
            replies = parser.read(text).replies
            return replies[0].body if replies else ""
        return body
    if name == "quotequail":
        import quotequail

        def unquoted(text: str) -> str:
            parts = quotequail.quote(text, quote_intro_line=True)
            return parts[0][1] if parts and parts[0][0] else ""
        return unquoted
    if name == "email-reply-extractor":
        from email_reply_extractor import extract_new_text

        return lambda text: extract_new_text(text).text
    if name.startswith("talon"):
        import talon
        from talon import quotations
        from talon.signature.bruteforce import extract_signature

        talon.init()
        if name.endswith("+ signature"):
            return lambda text: extract_signature(quotations.extract_from_plain(text))[0]
        return quotations.extract_from_plain
    raise ValueError(name)


QUOTE_LIBRARIES = ["ours (strip_reply)", "email-reply-parser", "mail-parser-reply .body",
                   "mail-parser-reply latest_reply", "quotequail", "email-reply-extractor",
                   "talon", "talon + signature"]
PYPI_NAMES = {"email-reply-parser": "email_reply_parser", "mail-parser-reply": "mail_parser_reply",
              "quotequail": "quotequail", "email-reply-extractor": "email_reply_extractor", "talon": "talon"}


def quote_worker(name: str, mode: str, reps: int) -> None:
    """Worker: read cases (JSON) on stdin, print outputs and times (JSON)."""
    started = time.perf_counter()
    try:
        run = _library(name)
    except Exception as error:  # noqa: BLE001 - not installed here
        print(json.dumps({"error": f"{type(error).__name__}: {error}"[:120]}))
        return
    import_seconds = time.perf_counter() - started
    if not name.startswith("ours"):
        # Switching would keep the cut at our own marker line (it is ours, no library knows it).
        library = run

        def run(text: str) -> str:
            lines = text.splitlines(keepends=True)
            cut = next((i for i, line in enumerate(lines) if REPLY_MARKER in line), len(lines))
            return library("".join(lines[:cut]))
    if mode == "hostile":
        text = hostile_quote_text()
        started = time.perf_counter()
        run(text)
        print(json.dumps({"seconds": time.perf_counter() - started}))
        return
    cases = json.load(sys.stdin)
    outputs, times = [], []
    for case in cases:
        try:
            output = run(case["text"])
        except Exception as error:  # noqa: BLE001
            output = f"<raised {type(error).__name__}>"
        outputs.append(output if isinstance(output, str) else "")
        samples = []
        for _ in range(reps):
            t = time.perf_counter()
            try:
                run(case["text"])
            except Exception:  # noqa: BLE001
                pass
            samples.append(time.perf_counter() - t)
        times.append(statistics.median(samples))
    print(json.dumps({"outputs": outputs, "times": times, "import_seconds": import_seconds}))


def _loose(text: str) -> str:
    return " ".join(text.split())


def run_quotes(args: argparse.Namespace) -> None:
    _ensure_project_path()
    from bench._util import percentile, print_table

    cases = quote_cases()
    categories = list(dict.fromkeys(c["category"] for c in cases))
    results: dict[str, dict[str, object]] = {}
    for name in QUOTE_LIBRARIES:
        python = args.talon_python if name.startswith("talon") and args.talon_python else sys.executable
        command = [python, str(Path(__file__).resolve()), "--quote-worker", name]
        try:
            done = subprocess.run([*command, "--reps", str(args.quote_reps)], input=json.dumps(cases),
                                  capture_output=True, text=True, timeout=300, cwd=ROOT)
            result = json.loads(done.stdout.strip().splitlines()[-1])
        except (subprocess.TimeoutExpired, IndexError, json.JSONDecodeError) as error:
            result = {"error": f"{type(error).__name__}"}
        if "error" not in result and args.skip_hostile:
            result["hostile"] = "skipped"
        elif "error" not in result:
            try:
                hostile = subprocess.run([*command, "--quote-mode", "hostile"], capture_output=True, text=True,
                                         timeout=args.hostile_timeout, cwd=ROOT)
                result["hostile"] = json.loads(hostile.stdout.strip().splitlines()[-1])["seconds"]
            except subprocess.TimeoutExpired:
                result["hostile"] = None
            except (IndexError, json.JSONDecodeError):
                result["hostile"] = "error"
        results[name] = result
        print(f"  {name}: {result.get('error', 'ran')}", flush=True)

    ran = [n for n in QUOTE_LIBRARIES if "error" not in results[n]]
    print(f"\n== Quotes: cases got wrong ({len(cases)} cases) ==")
    for name in ran:
        outputs = results[name]["outputs"]  # type: ignore[index]
        wrong = [c for c, out in zip(cases, outputs, strict=True) if _loose(out) != _loose(c["expected"])]
        print(f"  {name}: {len(wrong)} wrong" + (":" if wrong else ""))
        for case in wrong:
            out = outputs[cases.index(case)]  # type: ignore[index]
            print(f"      [{case['category']}] {case['name']}: got {_short(out, 60)}")

    rows = []
    for name in ran:
        outputs = results[name]["outputs"]  # type: ignore[index]
        exact = sum(out.strip() == c["expected"].strip() for c, out in zip(cases, outputs, strict=True))
        loose = [_loose(out) == _loose(c["expected"]) for c, out in zip(cases, outputs, strict=True)]
        per_category = [
            f"{sum(ok for ok, c in zip(loose, cases, strict=True) if c['category'] == cat)}/"
            f"{sum(c['category'] == cat for c in cases)}" for cat in categories]
        times_us = [t * 1e6 for t in results[name]["times"]]  # type: ignore[index]
        hostile = results[name]["hostile"]
        rows.append([name, f"{exact}/{len(cases)}", f"{sum(loose)}/{len(cases)}", *per_category,
                     f"{statistics.median(times_us):.0f}", f"{percentile(times_us, 95):.0f}",
                     f"{hostile:.2f} s" if isinstance(hostile, float) else
                     (f"> {args.hostile_timeout:g} s" if hostile is None else str(hostile)),
                     f"{results[name]['import_seconds']:.2f}"])
    print_table(["library", "exact", "right*", *categories, "median µs", "p95 µs", "hostile 12 MB",
                 "import s"], rows,
                title="Quote stripping: cases right (exact; * = ignoring whitespace), per category (ignoring "
                      "whitespace), time per case")
    missing = [n for n in QUOTE_LIBRARIES if n not in ran]
    if missing:
        print("not run: " + "; ".join(f"{n} ({results[n]['error']})" for n in missing))
    print_versions(args)


def print_versions(args: argparse.Namespace) -> None:
    from bench._util import print_table

    rows = []
    for name in ["email-reply-parser", "mail-parser-reply", "quotequail", "email-reply-extractor", "talon"]:
        python = args.talon_python if name == "talon" and args.talon_python else sys.executable
        done = subprocess.run([python, "-c", f"import importlib.metadata as m; d = m.distribution({name!r}); "
                               "print(d.version, '|', ', '.join(d.requires or []) or '-')"],
                              capture_output=True, text=True)
        version, _, requires = done.stdout.strip().partition(" | ")
        rows.append([name, version or "not installed", requires[:90]])
    print_table(["package", "installed", "requires"], rows, title="Quote libraries installed for this run")


# =================================================================================================


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["mime", "quotes"])
    parser.add_argument("--reps", type=int, default=100, help="repetitions of the fixture timing")
    parser.add_argument("--quote-reps", type=int, default=50)
    parser.add_argument("--hostile-timeout", type=float, default=30.0,
                        help="seconds before a hostile run is killed (the parse process's budget is 30 s)")
    parser.add_argument("--skip-hostile", action="store_true")
    parser.add_argument("--talon-python", help="an interpreter with talon installed (it needs scipy, sklearn)")
    parser.add_argument("--hostile-one", nargs=2, metavar=("CASE", "IMPL"), help=argparse.SUPPRESS)
    parser.add_argument("--quote-worker", help=argparse.SUPPRESS)
    parser.add_argument("--quote-mode", default="cases", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.hostile_one:
        hostile_one(*args.hostile_one)
        return
    if args.quote_worker:
        quote_worker(args.quote_worker, args.quote_mode, args.quote_reps)
        return
    print(f"parsing_choices: {time.strftime('%Y-%m-%d %H:%M')}, Python {sys.version.split()[0]}, "
          f"load average {os.getloadavg()[0]:.1f}")
    if args.only in (None, "mime"):
        run_mime(args)
    if args.only in (None, "quotes"):
        run_quotes(args)
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
