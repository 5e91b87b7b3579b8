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
    # Messages stored before: an In-Reply-To of one id is that id (as the services now write it).
    op.execute("UPDATE messages SET parent_message_id = in_reply_to "
               "WHERE in_reply_to IS NOT NULL AND in_reply_to NOT LIKE '% %' AND length(in_reply_to) <= 998")


def downgrade() -> None:
    # Not batch mode: on SQLite it would copy the table, which foreign keys and the search
    # triggers forbid; ALTER TABLE ... DROP COLUMN (SQLite 3.35+) does it in place.
    op.drop_index(op.f("ix_messages_parent_message_id"), table_name="messages")
    op.drop_column("messages", "parent_message_id")
