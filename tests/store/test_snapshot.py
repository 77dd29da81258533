"""Snapshot sequence numbers, and the member check that rides along on PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.pool import NullPool

from fhir_bridge.store.db import make_engine, read_session, write_session
from fhir_bridge.store.repository import ResourceStore
from fhir_bridge.store.snapshot import (
    WRITE_SEQUENCE_LOCK,
    current_sequence,
    current_sequence_probing,
)
from tests.factories import patient


def _lock_is_free(runtime) -> bool:
    """True when a connection outside the pool (another session: advisory locks are
    re-entrant within one) can take the snapshot lock at once."""
    url = runtime.engine.url.render_as_string(hide_password=False)
    engine = make_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as other:
            got = other.execute(
                text("SELECT pg_try_advisory_lock(:k)"), {"k": WRITE_SEQUENCE_LOCK}
            ).scalar_one()
            if got:
                other.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": WRITE_SEQUENCE_LOCK})
            return bool(got)
    finally:
        engine.dispose()


@pytest.fixture
def pg_runtime(runtime):
    if runtime.engine.dialect.name != "postgresql":
        pytest.skip("the probing snapshot read is PostgreSQL's")
    return runtime


def test_the_probe_answers_with_the_same_snapshot_and_releases_the_lock(pg_runtime):
    with write_session(pg_runtime.sessions) as session:
        ResourceStore(session).create(patient("snap1", "SNAP-1", "Rivera", "Ana"))
    for probe, expected in (("1 = 1", True), ("%(x)s::text = 'y'", False)):
        with read_session(pg_runtime.sessions) as session:
            plain = current_sequence(session)
            snapshot, answer = current_sequence_probing(session, probe, {"x": "z"})
        assert (snapshot, answer) == (plain, expected)
        assert plain > 0
        assert _lock_is_free(pg_runtime)


def test_a_failing_probe_never_leaves_the_lock_held(pg_runtime):
    # evaluated at run time, after the lock (a constant expression would fail at planning)
    probe = "(SELECT 1 / (count(*) * 0 + %(zero)s::int) FROM resource_version) = 1"
    with pytest.raises(Exception, match="division by zero"), read_session(pg_runtime.sessions) as s:
        current_sequence_probing(s, probe, {"zero": 0})
    assert _lock_is_free(pg_runtime)
