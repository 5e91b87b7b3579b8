"""outbound mail: outbox recipients for the per-recipient cap on automatic mail

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "outbox_recipients",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("outbox_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("automatic", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["outbox_id"], ["outbox.id"], name=op.f("fk_outbox_recipients_outbox_id_outbox")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox_recipients")),
    )
    with op.batch_alter_table("outbox_recipients", schema=None) as batch_op:
        batch_op.create_index("ix_outbox_recipients_email_created_at", ["email", "created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_outbox_recipients_outbox_id"), ["outbox_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("outbox_recipients", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_outbox_recipients_outbox_id"))
        batch_op.drop_index("ix_outbox_recipients_email_created_at")
    op.drop_table("outbox_recipients")
