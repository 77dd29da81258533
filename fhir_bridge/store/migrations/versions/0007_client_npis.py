"""api_client.npis: the NPIs an EHR client speaks for (write ownership of referrals);
referral.sender_organization: the Organization whose EHR sent the referral (it keeps seeing it);
referral.changes: what each re-send changed, and who sent it

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_client", schema=None) as batch_op:
        batch_op.add_column(sa.Column("npis", sa.Text(), nullable=True))
    with op.batch_alter_table("referral", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sender_organization", sa.String(128), nullable=True))
        batch_op.add_column(sa.Column("changes", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("referral", schema=None) as batch_op:
        batch_op.drop_column("changes")
        batch_op.drop_column("sender_organization")
    with op.batch_alter_table("api_client", schema=None) as batch_op:
        batch_op.drop_column("npis")
