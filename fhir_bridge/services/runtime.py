"""The composition root's product: settings plus the database handles every use case needs."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from fhir_bridge.settings import Settings
from fhir_bridge.store.db import make_engine, session_factory


@dataclass(frozen=True)
class Runtime:
    """What a running bridge holds: its settings and its database."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    started_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def dispose(self) -> None:
        """Close every pooled database connection."""
        self.engine.dispose()


def build_runtime(settings: Settings) -> Runtime:
    """Open the configured database (lazily: no connection is made here)."""
    engine = make_engine(settings.database_url)
    return Runtime(settings=settings, engine=engine, sessions=session_factory(engine))
