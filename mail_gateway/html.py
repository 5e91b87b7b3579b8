"""Inbound mail HTML: sanitize it for display (nh3) and turn it into plain text in bounded time."""

from __future__ import annotations

import html as html_entities
import re

import nh3

from mail_gateway.mime import line_blocks

# Conservative: enough for what mail clients produce (formatting, lists, tables, links,
# quotes), nothing that runs code, loads content or restyles the page around it.
ALLOWED_TAGS = frozenset({
    "a", "abbr", "address", "b", "blockquote", "br", "caption", "center", "cite", "code",
    "dd", "del", "div", "dl", "dt", "em", "font", "h1", "h2", "h3", "h4", "h5", "h6", "hr",
    "i", "img", "ins", "kbd", "li", "ol", "p", "pre", "q", "s", "small", "span", "strike",
    "strong", "sub", "sup", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "u", "ul",
})
ALLOWED_ATTRIBUTES: dict[str, set[str]] = {
    "a": {"href", "title"},
    "img": {"src", "alt", "title", "width", "height"},
    "ol": {"start"},
    "td": {"colspan", "rowspan", "align"},
    "th": {"colspan", "rowspan", "align"},
}
URL_SCHEMES = frozenset({"http", "https", "mailto", "cid", "data"})
# Removed together with their content: code, styling and document metadata.
_DROPPED_WITH_CONTENT = frozenset({"script", "style", "title", "noscript", "template"})

# Raster formats only: an SVG can carry script when opened on its own.
_INLINE_IMAGE_DATA = re.compile(r"data:image/(?:png|jpeg|gif|webp);base64,", re.IGNORECASE)


def _filter_attribute(tag: str, attribute: str, value: str) -> str | None:
    """Keep an attribute value, or drop it (None) when it would load or run something."""
    if attribute not in ("src", "href"):
        return value
    lowered = value[:40].strip().lower()  # called once per link: look at the scheme only
    if tag == "img" and attribute == "src":
        # Remote images are tracking pixels: loading one tells the sender that staff opened
        # the mail. Keep only the images the mail carries itself (cid: parts, data: rasters).
        if lowered.startswith("cid:") or _INLINE_IMAGE_DATA.match(lowered):
            return value
        return None
    if attribute == "href" and lowered.startswith("data:"):
        return None  # a data: link can open an HTML document of the sender's choosing
    return value


def sanitize_html(html: str) -> str:
    """Return `html` reduced to the allow-list; links get rel="noopener noreferrer"."""
    return nh3.clean(
        html,
        tags=set(ALLOWED_TAGS),
        clean_content_tags=set(_DROPPED_WITH_CONTENT),
        attributes={tag: set(names) for tag, names in ALLOWED_ATTRIBUTES.items()},
        attribute_filter=_filter_attribute,
        url_schemes=set(URL_SCHEMES),
        link_rel="noopener noreferrer",
        strip_comments=True,
    )


# Tags that shape plain text; everything else is dropped and only its text kept.
_BLOCK_TAGS = frozenset({
    "address", "article", "aside", "caption", "dd", "div", "dl", "dt", "footer", "form",
    "h1", "h2", "h3", "h4", "h5", "h6", "header", "ol", "p", "pre", "section", "table",
    "tbody", "tfoot", "thead", "tr", "ul",
})
_TEXT_TAGS = _BLOCK_TAGS | {"br", "hr", "li", "blockquote", "td", "th"}
_WHITESPACE = re.compile(r"\s+")
# Private sentinels, removed from the text first: a block boundary (start a new line unless
# at one), a paragraph boundary (leave a blank line) and blockquote start and end.
_SOFT, _PARAGRAPH, _QUOTE_OPEN, _QUOTE_CLOSE = "\x10", "\x11", "\x0e", "\x0f"
_SENTINELS = str.maketrans("", "", _SOFT + _PARAGRAPH + _QUOTE_OPEN + _QUOTE_CLOSE)
# Spaces are already single here, so this alternation cannot backtrack.
_BREAKS = re.compile(r"(?: ?[\x10\x11\n])+ ?")
# The line Outlook itself writes for the <hr> above a quoted reply, so strip_reply sees it.
_RULE = "_" * 32


def _tag_texts(name: str) -> tuple[str, str]:
    """What the opening and the closing tag `name` turn into in plain text."""
    if name == "br":
        return "\n", ""
    if name == "hr":
        return f"{_SOFT}{_RULE}{_SOFT}", ""
    if name == "blockquote":
        return f"{_SOFT}{_QUOTE_OPEN}{_SOFT}", f"{_SOFT}{_QUOTE_CLOSE}{_SOFT}"
    if name == "li":
        return f"{_SOFT}- ", _SOFT
    if name in ("td", "th"):
        return " ", " "
    if name == "p":
        return _PARAGRAPH, _PARAGRAPH
    return _SOFT, _SOFT


# With no attributes allowed, nh3 writes every tag exactly as "<name>" or "</name>", so plain
# str.replace passes (C speed, linear) do the rendering; no per-tag Python callback.
_TAG_REPLACEMENTS = tuple(
    (tag, text)
    for name in sorted(_TEXT_TAGS)
    for tag, text in zip((f"<{name}>", f"</{name}>"), _tag_texts(name), strict=True)
)


def _render_breaks(match: re.Match[str]) -> str:
    """Turn a run of <br> newlines and block boundaries into the newlines a reader expects."""
    run = match.group(0)
    newlines = 0  # newlines written so far: 0 = mid-line, 1 = at a line start, 2 = blank line
    for char in run:
        if char == "\n":
            newlines += 1  # <br> always ends a line, even an empty one (<div><br></div>)
        elif char == _SOFT:
            newlines = max(newlines, 1)
        elif char == _PARAGRAPH:
            newlines = 2
        if newlines >= 2:
            break  # one blank line is the most we keep, so the rest of the run cannot matter
    return "\n" * newlines


def _quote_and_tidy(text: str) -> str:
    """Prefix blockquote contents with "> ", trim lines and keep at most one blank line in a row.
    Lines are read a block at a time (mime.line_blocks), never all at once."""
    depth = 0
    last: str | None = None  # the last line written
    blocks: list[str] = []
    for raw_lines in line_blocks(text):
        out: list[str] = []
        for raw_line in raw_lines:
            line = " ".join(raw_line.split())  # also turns &nbsp; into plain spaces
            if line == _QUOTE_OPEN:
                depth += 1
                continue
            if line == _QUOTE_CLOSE:
                depth = max(0, depth - 1)
                continue
            if depth and line:
                line = "> " * depth + line
            if line or last:
                out.append(line)
                last = line
        if out:
            blocks.append("\n".join(out))
    return "\n".join(blocks).strip()


# html5ever walks its stack of open elements on many start tags (e.g. "close a p element in
# button scope" before every <div>), so nesting costs depth x tags: 20,000 nested <div> take
# 0.75 s per pass, 50,000 nearly 5 s. Real mail stays far below this much of that work.
MAX_NESTING_WORK = 20_000_000
# Its tree costs 250-400 bytes per element whatever the mail's size: 2,000,000 characters of
# "<p>a" took 200 MB per pass. 100,000 start tags is about 40 MB, and far more than a mail has
# (a large newsletter has a few thousand).
MAX_START_TAGS = 100_000
_START_OR_END_TAG = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9]{0,20})")
# Elements that never hold others, or that the parser closes when the next of their kind opens.
_NOT_NESTING = frozenset({
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source",
    "track", "wbr", "p", "li", "dt", "dd", "td", "th", "tr", "option",
})


def too_costly_to_parse(html: str) -> str | None:
    """Why parsing `html` would cost the parser too much (nesting work over MAX_NESTING_WORK, or
    more than MAX_START_TAGS elements), or None. A linear scan of the open and close tags."""
    depth = work = starts = 0
    for match in _START_OR_END_TAG.finditer(html):
        if match.group(1):
            if match.group(2).lower() not in _NOT_NESTING:
                depth = max(0, depth - 1)
            continue
        starts += 1
        if starts > MAX_START_TAGS:
            return f"HTML with more than {MAX_START_TAGS} elements; only its text was kept"
        if match.group(2).lower() in _NOT_NESTING:
            continue
        work += depth
        if work > MAX_NESTING_WORK:
            return "HTML nested too deeply to render; only its text was kept"
        depth += 1
    return None


# An unclosed block runs to the end (so each start is scanned past once: linear, not quadratic).
_DROPPED_BLOCKS = re.compile(r"<(script|style)\b.*?(?:</\1\s*>|\Z)", re.IGNORECASE | re.DOTALL)
_ANY_TAG = re.compile(r"<[^<>]*(?:>|$)")  # a tag cut off at the end counts too


def text_without_parsing(html: str) -> str:
    """The text of HTML too hostile to parse: tags removed by pattern, in linear time."""
    text = _ANY_TAG.sub(" ", _DROPPED_BLOCKS.sub(" ", html))
    return _quote_and_tidy(html_entities.unescape(text.translate(_SENTINELS)))


def html_to_text(html: str, max_chars: int) -> str:
    """Plain text of `html`, reading at most `max_chars` characters of it."""
    html = html[:max(0, max_chars)]
    # A real HTML parser (html5ever inside nh3) does the hard part: broken markup, comments,
    # script/style bodies. What comes back is well-formed and attribute-free.
    reduced = nh3.clean(
        html,
        tags=set(_TEXT_TAGS),
        clean_content_tags=set(_DROPPED_WITH_CONTENT),
        attributes={},
        link_rel=None,
        strip_comments=True,
    )
    # The serializer writes text characters raw (only &amp; &lt; &gt; &nbsp; stay entities), so
    # removing the sentinel characters here also removes any that came in as &#14; and so on.
    # Source whitespace is not significant in HTML.
    reduced = _WHITESPACE.sub(" ", reduced.translate(_SENTINELS))
    for tag, replacement in _TAG_REPLACEMENTS:
        reduced = reduced.replace(tag, replacement)
    text = _BREAKS.sub(_render_breaks, reduced)
    return _quote_and_tidy(html_entities.unescape(text))
