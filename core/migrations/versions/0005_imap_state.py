"""imap state: UIDVALIDITY and last stored UID per mailbox and folder

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "imap_state",
        sa.Column("mailbox", sa.String(length=100), nullable=False),
        sa.Column("folder", sa.String(length=500), nullable=False),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=False),
        sa.Column("last_uid", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("mailbox", "folder", name=op.f("pk_imap_state")),
    )


def downgrade() -> None:
    op.drop_table("imap_state")
