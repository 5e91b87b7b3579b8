"""attachments: dangerous (executable, script, macro document, infected) and why

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Attachments stored before this revision were never judged: they stay unflagged.
    op.add_column("attachments", sa.Column("dangerous", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.add_column("attachments", sa.Column("dangerous_reason", sa.String(length=255), nullable=True))


def downgrade() -> None:
    # Not batch mode: on SQLite it would copy the table, which foreign keys forbid;
    # ALTER TABLE ... DROP COLUMN (SQLite 3.35+) does it in place.
    op.drop_column("attachments", "dangerous_reason")
    op.drop_column("attachments", "dangerous")
