"""Per-partner delivery shape: the most entries a partner takes in one Bundle (NULL: any) and
whether it wants ``transaction`` or ``batch`` Bundles

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("partner", schema=None) as batch_op:
        batch_op.add_column(sa.Column("max_bundle_entries", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column(
                "bundle_type",
                sa.String(length=16),
                nullable=False,
                server_default="transaction",
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("partner", schema=None) as batch_op:
        batch_op.drop_column("bundle_type")
        batch_op.drop_column("max_bundle_entries")
