"""API clients, assertion jti claims, the signing key; index every Coverage's period

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "api_client",
        sa.Column("pk", BigId, autoincrement=True, nullable=False),
        sa.Column("client_id", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("organization", sa.String(length=128), nullable=True),
        sa.Column("scopes", sa.Text(), nullable=False),
        sa.Column("jwks", sa.Text(), nullable=True),
        sa.Column("jwks_url", sa.String(length=1024), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_api_client")),
        sa.UniqueConstraint("client_id", name=op.f("uq_api_client_client_id")),
    )
    op.create_table(
        "assertion_jti",
        sa.Column("client_id", sa.String(length=128), nullable=False),
        sa.Column("jti", sa.String(length=256), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("client_id", "jti", name=op.f("pk_assertion_jti")),
    )
    op.create_index(op.f("ix_assertion_jti_expires_at"), "assertion_jti", ["expires_at"])
    op.create_table(
        "signing_key",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("secret", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_signing_key")),
    )
    _index_coverage_periods()


def _index_coverage_periods() -> None:
    """Add the internal ``~period`` date rows for Coverage versions stored before this revision."""
    from fhir_bridge.fhir.search_index import extract_index
    from fhir_bridge.fhir.search_params import COVERAGE_PERIOD

    conn = op.get_bind()
    rows = conn.execute(
        sa.text("SELECT pk, content FROM resource_version WHERE resource_type = 'Coverage'")
    )
    dates = []
    for pk, content in rows:
        body = json.loads(bytes(content))
        for d in extract_index(body).dates:
            if d.param == COVERAGE_PERIOD:
                dates.append({"v": pk, "t": "Coverage", "p": d.param, "lo": d.low, "hi": d.high})
    if dates:
        conn.execute(
            sa.text(
                "INSERT INTO search_date (version_pk, resource_type, param, low, high) "
                "VALUES (:v, :t, :p, :lo, :hi)"
            ),
            dates,
        )


def downgrade() -> None:
    op.execute(sa.text("DELETE FROM search_date WHERE param = '~period'"))
    op.drop_table("signing_key")
    op.drop_index(op.f("ix_assertion_jti_expires_at"), table_name="assertion_jti")
    op.drop_table("assertion_jti")
    op.drop_table("api_client")
