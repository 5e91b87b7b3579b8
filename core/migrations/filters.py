"""What Alembic's comparison must ignore: full-text search objects that only exist as raw DDL."""

from __future__ import annotations

from typing import Any

# FTS5 virtual tables create shadow tables (messages_fts_data, …_idx, …_config, …_docsize).
_FTS_PREFIXES = ("messages_fts", "tickets_fts")


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    if name is None:
        return True
    if type_ == "table":
        return not name.startswith(_FTS_PREFIXES) and name != "alembic_version"
    if type_ == "index":
        return not name.startswith("fts_")
    return True
