"""fleet models: published bundle files, signed bundles, bundle sets, station groups, trusted keys

Revision ID: 0005_fleet
Revises: 0004_users_admin
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_fleet"
down_revision = "0004_users_admin"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bundle_blobs",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "bundles",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("signature_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("files_json", sa.Text, nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "bundle_sets",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("group_name", sa.String(100), nullable=True),
        sa.Column("bundle_ids_json", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("bundle_sets_group", "bundle_sets", ["group_name", "id"])
    op.create_table(
        "device_fleet",
        sa.Column("device_id", sa.Integer, sa.ForeignKey("devices.id"), primary_key=True),
        sa.Column("group_name", sa.String(100), nullable=True),
        sa.Column("installed_json", sa.Text, nullable=True),
        sa.Column("update_state", sa.String(40), nullable=True),
        sa.Column("update_detail", sa.Text, nullable=True),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "trusted_keys",
        sa.Column("key_id", sa.String(32), primary_key=True),
        sa.Column("public_key", sa.String(100), nullable=False),
        sa.Column("comment", sa.String(200), nullable=False, server_default=""),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("trusted_keys")
    op.drop_table("device_fleet")
    op.drop_index("bundle_sets_group", table_name="bundle_sets")
    op.drop_table("bundle_sets")
    op.drop_table("bundles")
    op.drop_table("bundle_blobs")
