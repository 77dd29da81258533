"""Several nodes may start at once: concurrent ``fhir-bridge db upgrade`` runs take turns."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fhir_bridge.store.db import make_engine
from fhir_bridge.store.migrate import current_revision, head_revision
from tests.store.conftest import blank_postgres_schema

ROOT = Path(__file__).resolve().parents[2]
NODES = 4

pytestmark = pytest.mark.postgres


@pytest.fixture
def empty_schema() -> Iterator[str]:
    """An empty PostgreSQL schema: what N containers meet on their first start."""
    with blank_postgres_schema() as url:
        yield url


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
