"""messages: the Message-ID each one answers, indexed

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A reply can be read before its original (another mailbox, a delayed delivery). The original
    # then looks for a stored message answering it, which needs this column and its index.
    op.add_column("messages", sa.Column("parent_message_id", sa.String(length=998), nullable=True))
    op.create_index(op.f("ix_messages_parent_message_id"), "messages", ["parent_message_id"], unique=False)
    _backfill(op.get_bind())


def _replied_to(in_reply_to: str | None, references: str | None) -> str | None:
    """The rule core.services.tickets writes by, frozen here as of this revision."""
    ids = (in_reply_to or "").split()[:1] or (references or "").split()[-1:]
    return ids[0] if ids and len(ids[0]) <= 998 else None


def _backfill(connection: sa.engine.Connection, chunk: int = 2000) -> None:
    """Messages stored before this revision, in chunks (a large desk has millions)."""
    after = 0
    while True:
        rows = connection.execute(sa.text(
            'SELECT id, in_reply_to, "references" FROM messages WHERE id > :after '
            'AND (in_reply_to IS NOT NULL OR "references" IS NOT NULL) ORDER BY id LIMIT :chunk'),
            {"after": after, "chunk": chunk}).all()
        if not rows:
            return
        updates = [{"id": row[0], "parent": parent} for row in rows
                   if (parent := _replied_to(row[1], row[2])) is not None]
        if updates:
            connection.execute(sa.text("UPDATE messages SET parent_message_id = :parent WHERE id = :id"), updates)
        after = rows[-1][0]


def downgrade() -> None:
    # Not batch mode: on SQLite it would copy the table, which foreign keys and the search
    # triggers forbid; ALTER TABLE ... DROP COLUMN (SQLite 3.35+) does it in place.
    op.drop_index(op.f("ix_messages_parent_message_id"), table_name="messages")
    op.drop_column("messages", "parent_message_id")
