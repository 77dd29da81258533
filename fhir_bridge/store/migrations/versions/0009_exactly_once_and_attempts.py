"""One outbox event per fact (unique resource, version and event type; earlier repeats are
marked ``duplicate_of``, not deleted), and every delivery attempt kept in ``delivery_attempt``
(seeded with each delivery's latest known attempt)

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_FACT = ("resource_type", "resource_id", "version_id", "event_type")
_SAME_FACT = " AND ".join(f"f.{c} = outbox_event.{c}" for c in _FACT)


def upgrade() -> None:
    with op.batch_alter_table("outbox_event", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "duplicate_of", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
            )
        )
    # Two nodes writing one change at once made two events (and two deliveries of the same
    # Bundle). Keep those rows and their deliveries, as history, but point each repeat at the
    # first event of its fact, so the unique index below covers one event per fact.
    op.execute(
        "UPDATE outbox_event SET duplicate_of = "
        f"(SELECT MIN(f.pk) FROM outbox_event f WHERE {_SAME_FACT}) "
        f"WHERE EXISTS (SELECT 1 FROM outbox_event f WHERE {_SAME_FACT} AND f.pk < outbox_event.pk)"
    )
    op.create_index(
        "uq_outbox_event_fact",
        "outbox_event",
        list(_FACT),
        unique=True,
        postgresql_where=sa.text("duplicate_of IS NULL"),
        sqlite_where=sa.text("duplicate_of IS NULL"),
    )

    op.create_table(
        "delivery_attempt",
        sa.Column(
            "pk",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "delivery_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("attempted_at", sa.DateTime(), nullable=False),
        sa.Column("duration_ms", sa.Float(), nullable=True),
        sa.Column("result", sa.String(length=16), nullable=False),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("outcome", sa.Text(), nullable=True),
        sa.Column("worker", sa.String(length=128), nullable=True),
        sa.ForeignKeyConstraint(
            ["delivery_pk"], ["delivery.pk"], name=op.f("fk_delivery_attempt_delivery_pk_delivery")
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_delivery_attempt")),
    )
    with op.batch_alter_table("delivery_attempt", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_delivery_attempt_delivery_pk_pk"), ["delivery_pk", "pk"], unique=False
        )
    # Before this revision only a delivery's latest attempt was known: keep that one.
    op.execute(
        "INSERT INTO delivery_attempt "
        "(delivery_pk, attempted_at, result, http_status, error, outcome) "
        "SELECT pk, last_attempt_at, "
        "CASE status WHEN 'delivered' THEN 'delivered' WHEN 'dead' THEN 'dead' ELSE 'retry' END, "
        "last_status, last_error, outcome FROM delivery WHERE last_attempt_at IS NOT NULL "
        "ORDER BY pk"
    )


def downgrade() -> None:
    with op.batch_alter_table("delivery_attempt", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_delivery_attempt_delivery_pk_pk"))
    op.drop_table("delivery_attempt")
    op.drop_index("uq_outbox_event_fact", table_name="outbox_event")
    # ALTER TABLE ... DROP COLUMN (SQLite >= 3.35), not a batch copy: with foreign keys on,
    # SQLite refuses to drop the table ``delivery`` points at
    op.drop_column("outbox_event", "duplicate_of")
