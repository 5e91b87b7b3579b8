"""inbound mail processing

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The claim lease that keeps two processes on one SQLite file from processing the same mail.
    with op.batch_alter_table("inbound_mail", schema=None) as batch_op:
        batch_op.add_column(sa.Column("claimed_until", sa.DateTime(), nullable=True))
    # Lets processing find the message a stored mail already produced (crash replay, duplicates).
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.create_index("ix_messages_inbound_mail_id", ["inbound_mail_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index("ix_messages_inbound_mail_id")
    with op.batch_alter_table("inbound_mail", schema=None) as batch_op:
        batch_op.drop_column("claimed_until")
