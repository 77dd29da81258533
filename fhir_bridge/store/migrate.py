"""Alembic, driven from code: upgrade the schema and tell whether it is current."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
#: namespaces the advisory lock key (hashed with the schema): no other lock of ours uses it
_LOCK_NAMESPACE = "fhir-bridge:migrate:"


def alembic_config(database_url: str) -> Config:
    """An Alembic config pointing at the packaged migrations and the given database."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply migrations up to ``revision`` on the engine's database, one node at a time.

    Every node of a scale-out may run ``fhir-bridge db upgrade`` as it starts (the Dockerfile
    does). On PostgreSQL the upgrade first takes a transaction-level advisory lock keyed on the
    schema, so concurrent upgrades queue: the first applies the migrations and commits (DDL is
    transactional there), the next then finds the schema at head and does nothing. SQLite is
    one node's file: its upgrade takes the write lock up front (BEGIN IMMEDIATE), so two
    processes on one file queue the same way.
    """
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.connect() as connection:
        if connection.dialect.name == "sqlite":
            connection = connection.execution_options(sqlite_immediate=True)
        with connection.begin():
            _serialise(connection)
            config.attributes["connection"] = connection
            command.upgrade(config, revision)


def _serialise(connection: Connection) -> None:
    """Wait for this schema's migration lock (PostgreSQL; released when the transaction ends)."""
    if connection.dialect.name != "postgresql":
        return
    connection.execute(
        text("SELECT pg_advisory_xact_lock(hashtext(:namespace || current_schema()))"),
        {"namespace": _LOCK_NAMESPACE},
    )


def head_revision() -> str | None:
    """The newest migration shipped with this code."""
    return ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (None for an empty database)."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def is_current(engine: Engine) -> bool:
    """True when the database schema is at the shipped head revision."""
    return current_revision(engine) == head_revision()
