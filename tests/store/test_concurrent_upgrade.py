"""Several nodes may start at once: concurrent ``fhir-bridge db upgrade`` runs take turns."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from sqlalchemy import text

from fhir_bridge.store.db import make_engine
from fhir_bridge.store.migrate import current_revision, head_revision
from tests.conftest import PG_ENV, _postgres_url

ROOT = Path(__file__).resolve().parents[2]
NODES = 4

pytestmark = pytest.mark.postgres


@pytest.fixture
def empty_schema() -> str:
    """The URL of a new, empty PostgreSQL schema (dropped afterwards)."""
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


def test_nodes_upgrading_an_empty_database_at_once_all_succeed(empty_schema):
    env = {**os.environ, "FHIR_BRIDGE_DATABASE_URL": empty_schema}
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "fhir_bridge", "db", "upgrade"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(NODES)
    ]
    results = []
    for run in runs:
        _, err = run.communicate(timeout=120)
        results.append((run.returncode, err.decode()[-400:]))
    assert [code for code, _ in results] == [0] * NODES, results
    engine = make_engine(empty_schema)
    try:
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()
