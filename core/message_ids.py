"""Message-IDs as they stand in header values: found, and written with their angle brackets."""

from __future__ import annotations

import re

_MESSAGE_ID = re.compile(r"<[^<>\s]+>")


def message_ids(*values: str | None) -> list[str]:
    """Every `<id>` in the given header values, in order, without repeats."""
    seen: list[str] = []
    for value in values:
        found = _MESSAGE_ID.findall(value or "")
        if not found:  # stored without brackets
            found = [bracketed(v) for v in (value or "").split() if "@" in v]
        for message_id in found:
            if message_id not in seen:
                seen.append(message_id)
    return seen


def bracketed(message_id: str) -> str:
    message_id = message_id.strip()
    return message_id if message_id.startswith("<") else f"<{message_id}>"
