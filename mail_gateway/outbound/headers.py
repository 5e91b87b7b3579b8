"""Header values we build from customer and staff input: clean text, reply subjects, threading chains."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from email.errors import HeaderParseError
from email.header import decode_header, make_header

MAX_SUBJECT_CHARS = 250
MAX_NAME_CHARS = 100
MAX_REFERENCES = 10  # enough to thread in every client; long chains get mail rejected or truncated

# Reply and forward prefixes of common clients and languages (Re, AW, SV, Antw, Fwd, WG, TR, …),
# optionally numbered ("Re[2]:", "Re(3):"), possibly stacked and mixed with our own [#1234] tag.
_PREFIX = re.compile(
    r"^\s*(?:(?:re|aw|sv|vs|antw|odp|ynt|rif|r|fw|fwd|wg|tr|rv|enc|doorst)\s*(?:\[\d+\]|\(\d+\))?\s*[:：]"
    r"|\[#?[A-Za-z]*#?\d+\])\s*",
    re.IGNORECASE,
)
_ENCODED_WORD = re.compile(r"=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=")


def clean_text(value: str, limit: int = MAX_SUBJECT_CHARS) -> str:
    """One line of plain text that cannot smuggle a header: no CR/LF, no control characters.

    Encoded words (=?utf-8?q?…?=) are decoded first, to a fixed point, because the email package
    decodes them when a header is set: `=?utf-8?q?x=0D=0ABcc:…?=` would otherwise turn into a
    real line break. Anything still shaped like an encoded word afterwards is broken up.
    """
    for _ in range(3):
        decoded = _decode_words(value)
        if decoded == value:
            break
        value = decoded
    value = "".join(" " if _is_control(ch) else ch for ch in value)
    value = value.replace("=?", "= ?")
    return " ".join(value.split())[:limit].strip()


def clean_display_name(value: str) -> str:
    """A display name for From/To: clean text, without characters that end or fake an address."""
    value = clean_text(value, MAX_NAME_CHARS)
    value = re.sub(r"[<>@\"\\,;:]", " ", value)
    return " ".join(value.split())


def reply_subject(original: str, ticket_ref: str) -> str:
    """`Re: [#1234] original` however many Re:/AW:/Fwd: and tags the original already carries."""
    subject = clean_text(original)
    own_tag = re.compile(r"^\s*\[" + re.escape(ticket_ref) + r"\]\s*", re.IGNORECASE)
    while True:
        stripped = own_tag.sub("", _PREFIX.sub("", subject, count=1), count=1)
        if stripped == subject:
            break
        subject = stripped
    return clean_text(f"Re: [{ticket_ref}] {subject or '(no subject)'}")


def trim_references(chain: Sequence[str], limit: int = MAX_REFERENCES) -> list[str]:
    """Keep the first (the thread's root) and the newest ones, as RFC 5322 suggests."""
    chain = list(dict.fromkeys(chain))
    if len(chain) <= limit:
        return chain
    return [chain[0], *chain[len(chain) - (limit - 1):]]


def _decode_words(value: str) -> str:
    if not _ENCODED_WORD.search(value):
        return value
    try:
        return str(make_header(decode_header(value)))
    except (HeaderParseError, LookupError, UnicodeDecodeError, ValueError):
        return _ENCODED_WORD.sub(" ", value)


def _is_control(ch: str) -> bool:
    return unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") and ch not in "\u200d"


def unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))
