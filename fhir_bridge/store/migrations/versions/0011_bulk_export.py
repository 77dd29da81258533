"""Bulk Data ``$export`` jobs and their NDJSON files

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "export_job",
        sa.Column("pk", _ID, autoincrement=True, nullable=False),
        sa.Column("job_id", sa.String(64), nullable=False),
        sa.Column("client_id", sa.String(128), nullable=False),
        sa.Column("principal", sa.Text(), nullable=False),
        sa.Column("request_url", sa.String(4096), nullable=False),
        sa.Column("params", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("progress", sa.String(128), nullable=True),
        sa.Column("snapshot", _ID, nullable=True),
        sa.Column("transaction_time", sa.DateTime(), nullable=True),
        sa.Column("lease_until", sa.DateTime(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("completed_at", sa.DateTime(), nullable=True),
        sa.Column("expires_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_export_job")),
        sa.UniqueConstraint("job_id", name=op.f("uq_export_job_job_id")),
    )
    op.create_index(
        op.f("ix_export_job_status_lease_until"), "export_job", ["status", "lease_until"]
    )
    op.create_index(op.f("ix_export_job_expires_at"), "export_job", ["expires_at"])
    op.create_table(
        "export_file",
        sa.Column("pk", _ID, autoincrement=True, nullable=False),
        sa.Column("job_pk", _ID, nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("resource_type", sa.String(64), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("patients", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_pk"],
            ["export_job.pk"],
            name=op.f("fk_export_file_job_pk_export_job"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_export_file")),
        sa.UniqueConstraint("job_pk", "name", name=op.f("uq_export_file_job_pk_name")),
    )


def downgrade() -> None:
    op.drop_table("export_file")
    op.drop_index(op.f("ix_export_job_expires_at"), table_name="export_job")
    op.drop_index(op.f("ix_export_job_status_lease_until"), table_name="export_job")
    op.drop_table("export_job")
