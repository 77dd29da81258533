"""A database outage under a served bridge (PostgreSQL behind a proxy that cuts the line):
clients get 503 with Retry-After, the bridge recovers by itself, and its logs (gunicorn's and
the app's, as captured from the process) hold none of the sample patients' identifiers."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from sqlalchemy.engine import make_url

from tests.conftest import provision_database
from tests.support.served import bridge_env, served_bridge
from tests.support.tcp_proxy import TcpProxy, tcp_proxy

ROOT = Path(__file__).resolve().parents[2]
SESSIONS = sorted((ROOT / "sample_bundles" / "sessions").glob("*.json"))

pytestmark = [pytest.mark.interop, pytest.mark.postgres]


def _phi() -> set[str]:
    """What the sample visits say about their patients and therapists."""
    found: set[str] = set()
    for path in SESSIONS:
        record = json.loads(path.read_text())
        patient, therapist = record["patient"], record["therapist"]
        found |= {patient["mrn"], patient["family_name"], *patient["given_names"]}
        found |= {therapist["npi"], therapist["name"].split(",")[0]}
    return found


@pytest.fixture
def database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with provision_database("postgresql", tmp_path_factory) as url:
        subprocess.run(
            [sys.executable, "-m", "fhir_bridge", "load", str(ROOT / "sample_bundles")],
            env=bridge_env(url),
            check=True,
            capture_output=True,
        )
        yield url


def _post(base: str, path: Path) -> requests.Response:
    return requests.post(
        f"{base}/api/v1/sessions",
        data=path.read_bytes(),
        headers={"Content-Type": "application/json"},
        timeout=30,
    )


def _post_for(base: str, path: Path, seconds: float) -> list[int]:
    """Post (replay) one visit again and again for ``seconds``; the statuses."""
    statuses = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        statuses.append(_post(base, path).status_code)
    return statuses


def _transient(resp: requests.Response) -> bool:
    return (
        resp.status_code == 503
        and resp.headers.get("Retry-After") == "5"
        and resp.json()["issue"][0]["code"] == "transient"
    )


def test_an_outage_is_503_then_recovers_and_no_identifier_is_logged(database, tmp_path):
    log = tmp_path / "bridge.log"
    target = make_url(database)
    with tcp_proxy(target.port or 5432) as proxy:
        proxied = target.set(port=proxy.port).render_as_string(hide_password=False)
        with served_bridge(
            proxied, log=log, FHIR_BRIDGE_LOG_LEVEL="INFO", FHIR_BRIDGE_DEV_OPEN_ACCESS="true"
        ) as base:
            first, *rest = SESSIONS
            assert _post(base, first).status_code == 201

            # cut the line while visits are being written: statements fail mid-transaction
            with ThreadPoolExecutor(max_workers=2) as pool:
                busy = [pool.submit(_post_for, base, first, 3.0) for _ in range(2)]
                time.sleep(1.0)
                proxy.cut()
                cut_in_flight = [status for f in busy for status in f.result()]
            assert set(cut_in_flight) <= {200, 503}, cut_in_flight
            assert 503 in cut_in_flight
            during = [_post(base, path) for path in SESSIONS]
            during.append(
                requests.get(
                    f"{base}/fhir/Patient",
                    params={"identifier": "https://clinic.example.org/fhir/mrn|P-1001"},
                    timeout=30,
                )
            )
            during.append(
                requests.post(
                    f"{base}/auth/token",
                    data={"grant_type": "client_credentials", "client_assertion": "a.b.c"},
                    timeout=30,
                )
            )
            assert [r.status_code for r in during if not _transient(r)] == []

            _restore_and_wait(proxy, base)
            assert [_post(base, path).status_code for path in rest] == [201] * len(rest)
    text = log.read_text()
    assert "database unavailable" in text
    leaks = [line[:400] for line in text.splitlines() if any(p in line for p in _phi())]
    assert leaks == []


def _restore_and_wait(proxy: TcpProxy, base: str) -> None:
    """Listen again; the bridge answers readyz within seconds (no restart)."""
    proxy.restore()
    deadline = time.monotonic() + 30
    while requests.get(f"{base}/readyz", timeout=10).status_code != 200:
        assert time.monotonic() < deadline, "the bridge did not recover"
        time.sleep(0.2)
