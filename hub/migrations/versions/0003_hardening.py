"""hardening: per-device image ownership, a reason for doubtful record times, server-side sessions

Revision ID: 0003_hardening
Revises: 0002
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_hardening"
down_revision = "0002"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "image_devices",
        sa.Column("sha256", sa.String(64), sa.ForeignKey("images.sha256"), primary_key=True),
        sa.Column("device_id", sa.Integer, sa.ForeignKey("devices.id"), primary_key=True),
        sa.Column("received_at", TS, nullable=False),
    )
    # Until now only the first uploader was recorded: it keeps its images; another device that sends
    # the same bytes again becomes an owner too.
    op.execute(
        "INSERT INTO image_devices (sha256, device_id, received_at) "
        "SELECT sha256, device_id, received_at FROM images WHERE device_id IS NOT NULL"
    )
    with op.batch_alter_table("results") as batch:
        batch.add_column(sa.Column("time_flag", sa.String(200), nullable=True))
    op.create_table(
        "user_sessions",
        sa.Column("id_hash", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("user_sessions_user", "user_sessions", ["user_id"])


def downgrade() -> None:
    op.drop_index("user_sessions_user", "user_sessions")
    op.drop_table("user_sessions")
    with op.batch_alter_table("results") as batch:
        batch.drop_column("time_flag")
    op.drop_table("image_devices")
