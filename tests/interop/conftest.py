"""Interop fixtures: a real bridge (gunicorn with two workers, on a migrated database loaded with
the samples) and a real, independent partner FHIR server (Medplum's FHIR logic: ``peer.py``)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import BACKENDS, provision_database
from tests.interop.peer import MedplumPeer, medplum_peer
from tests.support.served import bridge_env, served_bridge

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session", params=BACKENDS)
def bridge_database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A database of the served bridge's own, apart from the one other tests empty and fill."""
    with provision_database(request.param, tmp_path_factory) as url:
        yield url


@pytest.fixture(scope="session")
def bridge_url(bridge_database_url: str) -> Iterator[str]:
    """Base URL of a gunicorn-served bridge with the sample data (both backends)."""
    subprocess.run(
        [sys.executable, "-m", "fhir_bridge", "load", str(ROOT / "sample_bundles")],
        env=bridge_env(bridge_database_url),
        check=True,
        capture_output=True,
    )
    with served_bridge(bridge_database_url) as base:
        yield base


@pytest.fixture(scope="session")
def medplum_server() -> Iterator[MedplumPeer]:
    """One Medplum peer process for the session (``medplum`` empties it for each test)."""
    with medplum_peer() as peer:
        yield peer


@pytest.fixture
def medplum(medplum_server: MedplumPeer) -> MedplumPeer:
    """The Medplum peer, with no resources, no outage and fresh statistics."""
    if medplum_server.process.poll() is not None:
        pytest.fail(f"the Medplum peer exited (status {medplum_server.process.returncode})")
    medplum_server.reset()
    return medplum_server


def pytest_configure(config: pytest.Config) -> None:
    """``slow``: long-running interop tests (still part of ``make test``)."""
    config.addinivalue_line("markers", "slow: long-running; still run by `make test`")
