"""Cut a reply down to what the sender wrote now: no quoted history, no signature."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

# Written at the top of every mail we send; everything from this line on is our own text.
REPLY_MARKER = "##- Please type your reply above this line -##"

# "On <date>, <name> wrote:" and its translations. Mail clients wrap long ones (Gmail puts
# "wrote:" on the next line when the address is long), so up to three lines are joined.
_ATTRIBUTION = re.compile(
    r"(?:On\s.{1,300}?\swrote"  # English: Gmail, Apple Mail, Thunderbird
    r"|Le\s.{1,300}?\sa\s+écrit"  # French
    r"|Am\s.{1,300}?\sschrieb(?:\s.{1,200}?)?"  # German: "Am … schrieb Name:"
    r"|El\s.{1,300}?\sescribió"  # Spanish
    r"|Op\s.{1,300}?\sschreef(?:\s.{1,200}?)?"  # Dutch
    r"|Il\s.{1,300}?\sha\s+scritto"  # Italian
    r"|Em\s.{1,300}?\sescreveu"  # Portuguese
    r")\s*:\s*"
)
_ATTRIBUTION_LEADS = ("On ", "Le ", "Am ", "El ", "Op ", "Il ", "Em ")
_ATTRIBUTION_MAX_LINES = 3
# No separator, attribution or signature line is longer; longer lines are prose, and the
# limit bounds the regex work on hostile input.
_SEPARATOR_MAX_CHARS = 500

_ORIGINAL_MESSAGE = re.compile(
    r"\s*-{2,}\s*(?:Original Message|Ursprüngliche Nachricht|Message d'origine"
    r"|Mensaje original|Messaggio originale|Oorspronkelijk bericht|Forwarded message"
    r"|Message transféré|Weitergeleitete Nachricht|Mensaje reenviado)\s*-{2,}\s*",
    re.IGNORECASE,
)
_BEGIN_FORWARDED = re.compile(
    r"\s*(?:Begin forwarded message|Début du message réexpédié"
    r"|Anfang der weitergeleiteten Nachricht|Comienzo del mensaje reenviado)\s*:\s*",
    re.IGNORECASE,
)
# Outlook's quoted header block, optionally bold in text converted from HTML ("*From:*").
_HEADER_FROM = re.compile(r"\s*\*?(?:From|De|Von|Van|Da|Från|Fra|Od)\s*:", re.IGNORECASE)
_HEADER_OTHER = re.compile(
    r"\s*\*?(?:Sent|Date|To|Cc|Subject|Envoyé|À|Objet|Gesendet|Datum|An|Betreff"
    r"|Enviado(?: el)?|Fecha|Para|Asunto|Inviato|Data|Oggetto|Verzonden|Aan|Onderwerp)\s*:",
    re.IGNORECASE,
)
_HEADER_BLOCK_WINDOW = 4  # lines after "From:" that must hold at least two more header fields
_SIGNATURE_DELIMITER = re.compile(r"-- ?")
_MOBILE_SIGNATURE = re.compile(
    r"\s*(?:Sent from my \S.{0,40}|Sent from (?:Mail|Outlook) for \S.{0,30}"
    r"|Get Outlook for (?:iOS|Android)|Envoyé de mon \S.{0,40}|Von meinem \S.{0,40} gesendet"
    r"|Enviado desde mi \S.{0,40})\s*",
    re.IGNORECASE,
)
# Drawn above a quoted header block (Outlook on the web writes a line of underscores).
_DECORATION = re.compile(r"\s*(?:_{8,}|-{8,}|={8,})\s*")
# What someone writes above the history fits in far fewer lines; the history below can be
# endless, and looking further would only cost time on hostile input.
_SCAN_LINES = 5000


def _is_attribution(lines: Sequence[str], i: int) -> bool:
    if not lines[i].lstrip().startswith(_ATTRIBUTION_LEADS):
        return False
    candidate = ""
    for line in lines[i : i + _ATTRIBUTION_MAX_LINES]:
        candidate = f"{candidate} {line.strip()}".strip()
        if len(candidate) > _SEPARATOR_MAX_CHARS:
            return False
        # A date is always in there; requiring a digit keeps prose like "On reflection,
        # the installer wrote:" from counting.
        if _ATTRIBUTION.fullmatch(candidate) and any(c.isdigit() for c in candidate):
            return True
    return False


def _is_header_block(lines: Sequence[str], i: int) -> bool:
    if not _HEADER_FROM.match(lines[i]):
        return False
    window = lines[i + 1 : i + 1 + _HEADER_BLOCK_WINDOW]
    return sum(1 for line in window if _HEADER_OTHER.match(line)) >= 2


def _line_matches(pattern: re.Pattern[str]) -> Callable[[Sequence[str], int], bool]:
    return lambda lines, i: pattern.fullmatch(lines[i]) is not None


@dataclass(frozen=True)
class _Cut:
    """A named rule: the history or the signature starts at line `i`."""

    name: str
    starts_at: Callable[[Sequence[str], int], bool]


# Checked in this order on every line; the earliest line that any rule matches is the cut.
_CUTS: tuple[_Cut, ...] = (
    _Cut("attribution", _is_attribution),
    _Cut("original-message", _line_matches(_ORIGINAL_MESSAGE)),
    _Cut("forwarded-message", _line_matches(_BEGIN_FORWARDED)),
    _Cut("outlook-header-block", _is_header_block),
    _Cut("signature-delimiter", _line_matches(_SIGNATURE_DELIMITER)),
    _Cut("mobile-signature", _line_matches(_MOBILE_SIGNATURE)),
)


def _first_lines(text: str, count: int, end: int) -> list[str]:
    """The first `count` lines of text[:end] (all of them when it has fewer), without splitting the rest."""
    stop = -1
    for _ in range(count):
        stop = text.find("\n", stop + 1, end)
        if stop < 0:
            return text[:end].split("\n")
    return text[:stop].split("\n")


def _first_cut(lines: Sequence[str]) -> int | None:
    for i in range(min(len(lines), _SCAN_LINES)):
        if len(lines[i]) <= _SEPARATOR_MAX_CHARS and any(cut.starts_at(lines, i) for cut in _CUTS):
            return i
    return None


_BLANK = re.compile(r"\s*")
_QUOTED = re.compile(r"\s*>")
_TAIL = 4096


def _droppable(text: str, start: int, end: int) -> bool:
    """Whether text[start:end], a line, is blank, decoration or "> " quoted: lines a reply does not
    end with. Looked at in place, so a line of many megabytes is not copied."""
    return (
        _BLANK.fullmatch(text, start, end) is not None
        or _QUOTED.match(text, start, end) is not None
        or (end - start <= _SEPARATOR_MAX_CHARS and _DECORATION.fullmatch(text[start:end]) is not None)
    )


def _end_without_trailing(text: str, end: int) -> int:
    """Where text[:end] ends without the droppable lines at its end (-1: none is left). It walks
    back a line at a time; no list of lines."""
    while True:
        start = text.rfind("\n", 0, end) + 1
        if not _droppable(text, start, end):
            return end
        if start == 0:
            return -1
        end = start - 1


def _stripped(text: str, end: int) -> str:
    """text[:end].strip(), copying text at most once (not at all when nothing is cut off)."""
    blank = _BLANK.match(text, 0, end)
    start = blank.end() if blank else 0
    while end > start:  # back over trailing whitespace, a bounded piece at a time
        piece = text[max(start, end - _TAIL) : end]
        kept = len(piece.rstrip())
        end -= len(piece) - kept
        if kept:
            break
    return text[start:end]


def strip_reply(text: str) -> str:
    """Return the new part of a reply; the whole text, stripped, when all of it is quoted.

    Linear in time, and the text is copied at most once whatever the number of lines: only the
    first _SCAN_LINES (plus the few the rules look ahead) are ever split into a list. A text with
    nothing to cut comes back as the same object.
    """
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    end = len(text)
    marker = text.find(REPLY_MARKER)
    if marker >= 0:  # everything from the marker's line on is our own text
        end = max(0, text.rfind("\n", 0, marker))
    # The rules look at most 4 lines past the line they test.
    lines = _first_lines(text, _SCAN_LINES + _HEADER_BLOCK_WINDOW + 1, end)
    cut = _first_cut(lines)
    body = text if cut is None else "\n".join(lines[:cut])
    end = _end_without_trailing(body, end if cut is None else len(body))
    new = _stripped(body, end) if end > 0 else ""
    # A forward without a comment, or a reply written below the quote, has nothing above the
    # cut; the whole text is then a better answer than nothing.
    return new or text.strip()
