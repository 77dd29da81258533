"""delivery.first_failed_at (the give-up clock starts at a delivery's first failed attempt);
claim indexes: each partner's due rows in order, and the head check with status in its key
(so the planner never probes the first index for it, whatever its statistics say)

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("delivery", schema=None) as batch_op:
        batch_op.add_column(sa.Column("first_failed_at", sa.DateTime(), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_delivery_partner_pk_status_next_attempt_at_pk"),
            ["partner_pk", "status", "next_attempt_at", "pk"],
            unique=False,
        )
        batch_op.drop_index(batch_op.f("ix_delivery_partner_pk_patient_id_pk"))
        batch_op.create_index(
            batch_op.f("ix_delivery_partner_pk_patient_id_status_pk"),
            ["partner_pk", "patient_id", "status", "pk"],
            unique=False,
        )
    # rows already failing: their oldest known failure is the last one (attempts are not logged)
    op.execute(
        "UPDATE delivery SET first_failed_at = last_attempt_at "
        "WHERE status <> 'delivered' AND last_error IS NOT NULL"
    )


def downgrade() -> None:
    with op.batch_alter_table("delivery", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_delivery_partner_pk_patient_id_status_pk"))
        batch_op.create_index(
            batch_op.f("ix_delivery_partner_pk_patient_id_pk"),
            ["partner_pk", "patient_id", "pk"],
            unique=False,
        )
        batch_op.drop_index(batch_op.f("ix_delivery_partner_pk_status_next_attempt_at_pk"))
        batch_op.drop_column("first_failed_at")
