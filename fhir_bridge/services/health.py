"""Readiness: the database answers and its schema is at the shipped migration head."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from fhir_bridge.services.runtime import Runtime
from fhir_bridge.store.migrate import current_revision, head_revision

log = logging.getLogger(__name__)
#: what a database failure raises (the API maps the unreachable kind to 503)
DatabaseError = SQLAlchemyError


@dataclass(frozen=True)
class Readiness:
    """Whether the service can take traffic, and what the database says."""

    reachable: bool
    migration: str | None = None
    expected: str | None = None

    @property
    def ready(self) -> bool:
        """Reachable and at the shipped head."""
        return self.reachable and self.migration == self.expected


def readiness(runtime: Runtime) -> Readiness:
    """Ask the database (one round trip and the Alembic version row)."""
    engine = runtime.engine
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        current = current_revision(engine)
    except SQLAlchemyError as exc:
        log.warning("readiness: database unreachable", extra={"error_type": type(exc).__name__})
        return Readiness(reachable=False)
    return Readiness(reachable=True, migration=current, expected=head_revision())


def database_unreachable(exc: BaseException) -> bool:
    """True for errors that say the database cannot be reached or used right now (down,
    restarting, connection lost, pool exhausted, SQLite busy), not that a statement is wrong."""
    if isinstance(exc, OperationalError | InterfaceError | PoolTimeout):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)
