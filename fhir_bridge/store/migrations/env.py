"""Alembic environment: runs on a connection handed in by fhir_bridge.store.migrate."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from fhir_bridge.store.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations() -> None:
    """Run on the caller's connection, or open one from sqlalchemy.url (alembic CLI)."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.begin() as conn:
        _run(conn)


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
