"""results: µm per pixel each record was classified at, and the station's calibration profile

Revision ID: 0006_acquisition
Revises: 0005_fleet
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_acquisition"
down_revision = "0005_fleet"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("results") as batch:
        batch.add_column(sa.Column("um_per_px", sa.Float, nullable=True))
        batch.add_column(sa.Column("profile", sa.String(200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("results") as batch:
        batch.drop_column("profile")
        batch.drop_column("um_per_px")
