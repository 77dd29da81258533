"""Store fixtures: a blank database (nothing migrated) on either backend."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import text

from fhir_bridge.store.db import make_engine
from tests.conftest import BACKENDS, PG_ENV, _postgres_url


@contextmanager
def blank_postgres_schema() -> Iterator[str]:
    """The URL of a new, empty PostgreSQL schema (dropped afterwards); skips without one."""
    if not os.environ.get(PG_ENV):
        pytest.skip(f"{PG_ENV} is not set: PostgreSQL tests not run")
    schema = f"test_{uuid.uuid4().hex[:12]}"
    admin = make_engine(os.environ[PG_ENV])
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield _postgres_url(schema)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=BACKENDS)
def blank_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database, not migrated: a SQLite file or a PostgreSQL schema of its own."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'blank.db'}"
        return
    with blank_postgres_schema() as url:
        yield url
