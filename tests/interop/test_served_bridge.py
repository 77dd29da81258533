"""The bridge as a client meets it: gunicorn, real sockets, the sample data."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from cryptography.hazmat.primitives import serialization

from fhir_bridge.exchange.smart import SmartBackendClient
from tests.support.jwks import ClientKey

pytestmark = pytest.mark.interop


@pytest.fixture(scope="module")
def auth(bridge_url, bridge_database_url, tmp_path_factory) -> dict[str, str]:
    """Register an admin client with the CLI, then log in as the bridge's partners do."""
    key = ClientKey.rs384(kid="interop-1")
    jwks = tmp_path_factory.mktemp("interop-keys") / "jwks.json"
    jwks.write_text(key.jwks_text())
    env = {**os.environ, "FHIR_BRIDGE_DATABASE_URL": bridge_database_url}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "fhir_bridge",
            "clients",
            "add",
            "interop-admin",
            "--name",
            "Interop admin",
            "--role",
            "admin",
            "--jwks-file",
            str(jwks),
        ],
        env=env,
        check=True,
        capture_output=True,
    )
    pem = key.private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    smart = SmartBackendClient(
        client_id="interop-admin",
        token_url=f"{bridge_url}/auth/token",
        private_key=pem,
        alg="RS384",
        kid="interop-1",
        scopes=["system/*.rs"],
    )
    return smart.headers()


def test_without_a_token_the_data_is_closed(bridge_url):
    resp = requests.get(f"{bridge_url}/fhir/Patient/pat-rivera-ana", timeout=5)
    assert resp.status_code == 401
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")


def test_metadata_over_http(bridge_url):
    resp = requests.get(f"{bridge_url}/fhir/metadata", timeout=5)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("application/fhir+json")
    assert resp.json()["fhirVersion"] == "4.0.1"
    assert resp.json()["implementation"]["url"] == f"{bridge_url}/fhir"


def test_read_then_conditional_read(bridge_url, auth):
    first = requests.get(f"{bridge_url}/fhir/Patient/pat-rivera-ana", headers=auth, timeout=5)
    assert first.status_code == 200
    again = requests.get(
        f"{bridge_url}/fhir/Patient/pat-rivera-ana",
        headers={**auth, "If-None-Match": first.headers["ETag"]},
        timeout=5,
    )
    assert again.status_code == 304
    assert again.content == b""


def test_paging_links_are_absolute_and_followable(bridge_url, auth):
    url = f"{bridge_url}/fhir/Observation?_count=3&_sort=date"
    seen: list[str] = []
    while url:
        body = requests.get(url, headers=auth, timeout=5).json()
        seen += [e["resource"]["id"] for e in body.get("entry", [])]
        url = next((link["url"] for link in body["link"] if link["relation"] == "next"), None)
    assert len(seen) == len(set(seen)) == 8


def test_oversized_body_is_413_outcome(bridge_url, auth):
    resp = requests.post(
        f"{bridge_url}/fhir/Observation/_search",
        data=b"a=" + b"x" * (6 * 1024 * 1024),
        headers={**auth, "Content-Type": "application/x-www-form-urlencoded"},
        timeout=10,
    )
    assert resp.status_code == 413
    assert resp.json()["issue"][0]["code"] == "too-long"


def test_concurrent_clients_get_no_server_errors(bridge_url, auth):
    urls = [
        f"{bridge_url}/fhir/Observation?patient=Patient/pat-rivera-ana&code=http://loinc.org|72514-3",
        f"{bridge_url}/fhir/Procedure?patient=Patient/pat-rivera-ana&_revinclude=Observation:part-of",
        f"{bridge_url}/fhir/Patient/pat-rivera-ana",
        f"{bridge_url}/fhir/Patient?name=zz&_summary=count",
    ] * 25

    with requests.Session() as session, ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(
            pool.map(lambda u: session.get(u, headers=auth, timeout=10).status_code, urls)
        )
    assert statuses.count(200) == len(urls)
