"""Fixtures: the same store and API tests run on SQLite (WAL) and on PostgreSQL.

PostgreSQL tests use FHIR_BRIDGE_TEST_DATABASE_URL, each run in a schema of its own. Without
that variable they are skipped, except under CI=true, where a run without them fails.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote

import pytest
from flask import Flask
from sqlalchemy import text

from fhir_bridge.app import create_app
from fhir_bridge.services.runtime import Runtime, build_runtime
from fhir_bridge.settings import Settings
from fhir_bridge.store.db import make_engine
from fhir_bridge.store.migrate import upgrade
from fhir_bridge.store.models import Base
from tests.support.tokens import AdminClient

PG_ENV = "FHIR_BRIDGE_TEST_DATABASE_URL"
# Every endpoint needs a token: test clients act as the clinic's admin unless a test says otherwise.
Flask.test_client_class = AdminClient
_postgres_passed = 0


def _postgres_url(schema: str) -> str:
    base = os.environ[PG_ENV]
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options={quote(f'-csearch_path={schema}')}"


@contextmanager
def provision_database(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A new, migrated database (SQLite file, or a PostgreSQL schema of its own); yields its URL."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'bridge.db'}"
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        yield url
        return
    if not os.environ.get(PG_ENV):
        pytest.skip(f"{PG_ENV} is not set: PostgreSQL tests not run")
    schema = f"test_{uuid.uuid4().hex[:12]}"
    admin = make_engine(os.environ[PG_ENV])
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        url = _postgres_url(schema)
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        yield url
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(scope="session", params=BACKENDS)
def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A migrated database per backend, shared by the session (tables emptied per test)."""
    with provision_database(request.param, tmp_path_factory) as url:
        yield url


def _empty_tables(rt: Runtime) -> None:
    tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
    with rt.engine.begin() as conn:
        if rt.engine.dialect.name == "postgresql":
            conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        else:
            for name in tables:
                conn.execute(text(f"DELETE FROM {name}"))
            conn.execute(text("DELETE FROM sqlite_sequence"))


@pytest.fixture
def settings(database_url: str) -> Settings:
    """Test settings on the current backend."""
    return Settings(
        database_url=database_url,
        public_base_url="http://bridge.test",
        testing=True,
        log_json=False,
        rate_limit_per_minute=0,  # tests make thousands of requests as one client
    )


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    """A runtime on an empty, migrated database."""
    rt = build_runtime(settings)
    _empty_tables(rt)
    yield rt
    rt.dispose()


@pytest.fixture
def app(runtime: Runtime):
    """The Flask app bound to the test runtime."""
    return create_app(runtime=runtime)


@pytest.fixture
def client(app):
    """Flask test client."""
    return app.test_client()


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--update-goldens`` rewrites the session golden files (the tests then fail for review)."""
    parser.addoption(
        "--update-goldens",
        action="store_true",
        default=False,
        help="Rewrite sample_bundles/sessions/expected/*.json from the current mapping.",
    )


@pytest.fixture
def update_goldens(request: pytest.FixtureRequest) -> bool:
    """True when the run should rewrite golden files instead of comparing with them."""
    return bool(request.config.getoption("update_goldens", default=False))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Count PostgreSQL tests that really ran and passed."""
    global _postgres_passed
    if report.when == "call" and report.passed and "[postgresql" in report.nodeid:
        _postgres_passed += 1


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Under CI=true, a run in which no PostgreSQL test passed is a failure."""
    if os.environ.get("CI", "").lower() == "true" and _postgres_passed == 0 and exitstatus == 0:
        print("\nCI=true but no PostgreSQL test ran: set " + PG_ENV)
        session.exitstatus = 1
