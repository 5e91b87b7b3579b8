"""discord projection: forum post per ticket and the Discord messages already sent

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "discord_ticket_posts",
        sa.Column("ticket_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("thread_id", sa.BigInteger(), nullable=False),
        sa.Column("starter_message_id", sa.BigInteger(), nullable=False),
        sa.Column("shown_state", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["ticket_id"], ["tickets.id"],
                                name=op.f("fk_discord_ticket_posts_ticket_id_tickets")),
        sa.PrimaryKeyConstraint("ticket_id", name=op.f("pk_discord_ticket_posts")),
        sa.UniqueConstraint("thread_id", name=op.f("uq_discord_ticket_posts_thread_id")),
    )
    op.create_table(
        "discord_posts",
        sa.Column("key", sa.String(length=100), nullable=False),
        sa.Column("channel_id", sa.BigInteger(), nullable=False),
        sa.Column("discord_message_id", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_discord_posts")),
    )


def downgrade() -> None:
    op.drop_table("discord_posts")
    op.drop_table("discord_ticket_posts")
