"""The bridge as a client meets it: gunicorn, real sockets, the sample data."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

pytestmark = pytest.mark.interop


def test_metadata_over_http(bridge_url):
    resp = requests.get(f"{bridge_url}/fhir/metadata", timeout=5)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("application/fhir+json")
    assert resp.json()["fhirVersion"] == "4.0.1"
    assert resp.json()["implementation"]["url"] == f"{bridge_url}/fhir"


def test_read_then_conditional_read(bridge_url):
    first = requests.get(f"{bridge_url}/fhir/Patient/pat-rivera-ana", timeout=5)
    assert first.status_code == 200
    again = requests.get(
        f"{bridge_url}/fhir/Patient/pat-rivera-ana",
        headers={"If-None-Match": first.headers["ETag"]},
        timeout=5,
    )
    assert again.status_code == 304
    assert again.content == b""


def test_paging_links_are_absolute_and_followable(bridge_url):
    url = f"{bridge_url}/fhir/Observation?_count=3&_sort=date"
    seen: list[str] = []
    while url:
        body = requests.get(url, timeout=5).json()
        seen += [e["resource"]["id"] for e in body.get("entry", [])]
        url = next((link["url"] for link in body["link"] if link["relation"] == "next"), None)
    assert len(seen) == len(set(seen)) == 8


def test_oversized_body_is_413_outcome(bridge_url):
    resp = requests.post(
        f"{bridge_url}/fhir/Observation/_search",
        data=b"a=" + b"x" * (6 * 1024 * 1024),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        timeout=10,
    )
    assert resp.status_code == 413
    assert resp.json()["issue"][0]["code"] == "too-long"


def test_concurrent_clients_get_no_server_errors(bridge_url):
    urls = [
        f"{bridge_url}/fhir/Observation?patient=Patient/pat-rivera-ana&code=http://loinc.org|72514-3",
        f"{bridge_url}/fhir/Procedure?patient=Patient/pat-rivera-ana&_revinclude=Observation:part-of",
        f"{bridge_url}/fhir/Patient/pat-rivera-ana",
        f"{bridge_url}/fhir/Patient?name=zz&_summary=count",
    ] * 25

    with requests.Session() as session, ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(lambda u: session.get(u, timeout=10).status_code, urls))
    assert statuses.count(200) == len(urls)
