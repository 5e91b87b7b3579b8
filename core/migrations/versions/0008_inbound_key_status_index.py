"""inbound mail: one index on (dedupe_key, status) instead of dedupe_key alone

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Claiming asks "is another copy of this mail (same key) received and in someone's hands?".
    # With only single-column indexes SQLite answered it through the status index, reading every
    # received row per candidate: 108 ms per claim with a backlog of 2,000. Both columns in one
    # index make it a point lookup.
    op.create_index("ix_inbound_mail_dedupe_key_status", "inbound_mail", ["dedupe_key", "status"], unique=False)
    op.drop_index("ix_inbound_mail_dedupe_key", table_name="inbound_mail")


def downgrade() -> None:
    op.create_index("ix_inbound_mail_dedupe_key", "inbound_mail", ["dedupe_key"], unique=False)
    op.drop_index("ix_inbound_mail_dedupe_key_status", table_name="inbound_mail")
