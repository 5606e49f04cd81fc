"""initial hub schema: devices, users, images, results, settings

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "devices",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("last_seen_at", TS, nullable=True),
        sa.Column("last_address", sa.String(100), nullable=True),
        sa.Column("clock_skew_s", sa.Float, nullable=True),
        sa.Column("disabled", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("disabled", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    op.create_table(
        "images",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.Column("device_id", sa.Integer, sa.ForeignKey("devices.id"), nullable=True),
        sa.Column("received_at", TS, nullable=False),
    )
    op.create_table(
        "results",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("device_id", sa.Integer, sa.ForeignKey("devices.id"), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("sample_id", sa.String(36), nullable=True),
        sa.Column("captured_at", sa.String(40), nullable=False),
        sa.Column("received_at", TS, nullable=False),
        sa.Column("clock_skew_s", sa.Float, nullable=True),
        sa.Column("skew_flag", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("source", sa.String(20), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("review_of", sa.String(36), nullable=True),
        sa.Column("label", sa.String(100), nullable=False),
        sa.Column("confidence", sa.Float, nullable=False),
        sa.Column("abstained", sa.Boolean, nullable=False),
        sa.Column("image_sha256", sa.String(64), nullable=True),
        sa.Column("record_json", sa.Text, nullable=False),
    )
    op.create_index("results_device_seq", "results", ["device_id", "seq"])
    op.create_index("results_sample", "results", ["sample_id"])
    op.create_index("results_review_of", "results", ["review_of"])
    op.create_index("results_received", "results", ["received_at"])
    op.create_table(
        "settings",
        sa.Column("key", sa.String(100), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("settings")
    op.drop_index("results_received", "results")
    op.drop_index("results_review_of", "results")
    op.drop_index("results_sample", "results")
    op.drop_index("results_device_seq", "results")
    op.drop_table("results")
    op.drop_table("images")
    op.drop_table("users")
    op.drop_table("devices")
