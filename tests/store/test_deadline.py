"""Expensive reads are cancelled at their deadline, on both databases, and the API says so."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import text

from fhir_bridge.store.db import StatementTimeout, deadline, read_session


def slow_sql(dialect: str) -> str:
    if dialect == "postgresql":
        return "SELECT pg_sleep(5)"
    return (
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000000) "
        "SELECT count(*) FROM n"
    )


def test_a_statement_past_its_deadline_is_cancelled(runtime):
    with read_session(runtime.sessions) as session:
        started = time.monotonic()
        with pytest.raises(StatementTimeout), deadline(session, 0.3):
            session.execute(text(slow_sql(runtime.engine.dialect.name))).all()
        assert time.monotonic() - started < 3
    # the connection is usable again, without a deadline
    with read_session(runtime.sessions) as session:
        assert session.execute(text("SELECT 1")).scalar_one() == 1


def test_a_search_that_times_out_is_a_503_too_costly(client, monkeypatch):
    from fhir_bridge.services import resources

    def too_slow(*_args, **_kwargs):
        raise StatementTimeout

    monkeypatch.setattr(resources, "run_search", too_slow)
    resp = client.get("/fhir/Observation?code=http://loinc.org|72514-3")
    assert resp.status_code == 503
    issue = resp.get_json()["issue"][0]
    assert issue["code"] == "too-costly"
    assert issue["expression"] == ["url"]
