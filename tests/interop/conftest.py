"""Interop fixtures: a real bridge (gunicorn with two workers, on a migrated database loaded with
the samples) and a real, independent partner FHIR server (Medplum's FHIR logic: ``peer.py``)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import BACKENDS, provision_database
from tests.interop.peer import MedplumPeer, medplum_peer

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
    database_url = bridge_database_url
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "FHIR_BRIDGE_DATABASE_URL": database_url,
        "FHIR_BRIDGE_PUBLIC_BASE_URL": base,
        "FHIR_BRIDGE_LOG_LEVEL": "WARNING",
    }
    cli = [sys.executable, "-m", "fhir_bridge"]
    subprocess.run(
        [*cli, "load", str(ROOT / "sample_bundles")], env=env, check=True, capture_output=True
    )
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "fhir_bridge.wsgi:app",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "2",
            "--no-control-socket",
        ],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{base}/readyz", timeout=5).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.2)
        else:
            raise RuntimeError("bridge did not become ready")
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)


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
