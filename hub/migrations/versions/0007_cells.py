"""cells: the counted cells of each record (box, classifier's decision, the station's cell review)

Revision ID: 0007_cells
Revises: 0006_acquisition
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_cells"
down_revision = "0006_acquisition"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cells",
        sa.Column("result_id", sa.String(36), sa.ForeignKey("results.id"), primary_key=True),
        sa.Column("cell_index", sa.Integer, primary_key=True),
        sa.Column("x0", sa.Integer, nullable=False),
        sa.Column("y0", sa.Integer, nullable=False),
        sa.Column("x1", sa.Integer, nullable=False),
        sa.Column("y1", sa.Integer, nullable=False),
        sa.Column("x", sa.Float, nullable=False),
        sa.Column("y", sa.Float, nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("label", sa.String(100), nullable=True),
        sa.Column("p_blast", sa.Float, nullable=False),
        sa.Column("probabilities_json", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("reviewed_label", sa.String(100), nullable=True),
        sa.Column("reviewer", sa.String(200), nullable=True),
        sa.Column("reviewed_at", sa.String(40), nullable=True),
    )
    op.create_index("cells_reviewed", "cells", ["reviewed_label"])


def downgrade() -> None:
    op.drop_index("cells_reviewed", table_name="cells")
    op.drop_table("cells")
