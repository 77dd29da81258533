"""Migrations: they build exactly the schema the models describe, and readiness sees them."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from fhir_bridge.store.migrate import current_revision, head_revision, is_current
from fhir_bridge.store.models import Base


def test_migrated_schema_matches_models(runtime):
    with runtime.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(ctx, Base.metadata)
    assert diff == []


def test_database_is_at_head(runtime):
    assert current_revision(runtime.engine) == head_revision()
    assert is_current(runtime.engine)
