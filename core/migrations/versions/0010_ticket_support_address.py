"""tickets: the support address the first mail reached, to answer from it

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable and not backfilled: a ticket opened before this revision answers from the first
    # support address, as it always did.
    op.add_column("tickets", sa.Column("support_address", sa.String(length=320), nullable=True))


def downgrade() -> None:
    # Not batch mode: on SQLite it would copy the table, which foreign keys and the search
    # triggers forbid; ALTER TABLE ... DROP COLUMN (SQLite 3.35+) does it in place.
    op.drop_column("tickets", "support_address")
