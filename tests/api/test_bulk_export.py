"""Bulk Data Access IG 2.0.0 ``$export``: kick-off, status, manifest, files, access, audit.

The worker's export runner is run in the test (``ExportRunner.run_once``) or, for the crash
test, in a subprocess that is killed mid-export.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from fhir_bridge.services.authorization import utcnow
from fhir_bridge.services.bulk_runner import ExportRunner
from fhir_bridge.services.runtime import build_runtime
from fhir_bridge.settings import Settings
from fhir_bridge.store.db import write_session
from fhir_bridge.store.repository import ResourceStore
from tests.api.test_access_matrix import (
    EHRS,
    PATIENTS,
    PAYERS,
    TODAY,
    dataset,
    entitled,
    headers_for,
    patient_of,
)
from tests.support.tokens import bearer

BASE = "http://bridge.test"
ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """Test settings with an export folder of this test's own."""
    return Settings(
        database_url=database_url,
        public_base_url=BASE,
        testing=True,
        log_json=False,
        rate_limit_per_minute=0,
        export_dir=str(tmp_path / "exports"),
        export_page_size=7,  # many pages even for the small data set
    )


@pytest.fixture
def loaded(runtime, app):
    with write_session(runtime.sessions) as session:
        ResourceStore(session).bulk_create(dataset())
    return app


def run_runner(runtime) -> bool:
    """Run one export job as the worker does; False when none was due."""
    runner = ExportRunner(runtime)
    try:
        return runner.run_once()
    finally:
        runner.close()


def kick(client, url: str, headers: dict[str, str], status: int = 202) -> str:
    resp = client.get(url, headers={**ASYNC, **headers})
    assert resp.status_code == status, resp.get_json()
    if status != 202:
        return ""
    return resp.headers["Content-Location"].removeprefix(BASE)


def finish(runtime, client, status_url: str, headers: dict[str, str]) -> dict:
    assert run_runner(runtime)
    resp = client.get(status_url, headers=headers)
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()


def download(client, url: str, headers: dict[str, str]) -> list[dict]:
    resp = client.get(
        url.removeprefix(BASE), headers={**headers, "Accept": "application/fhir+ndjson"}
    )
    assert resp.status_code == 200, resp.data[:200]
    assert resp.mimetype == "application/fhir+ndjson"
    return [json.loads(line) for line in resp.data.decode().splitlines()]


def exported(client, manifest: dict, headers: dict[str, str]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for entry in manifest["output"]:
        lines = download(client, entry["url"], headers)
        assert len(lines) == entry["count"]
        assert all(r["resourceType"] == entry["type"] for r in lines)
        out.setdefault(entry["type"], []).extend(lines)
    return out


def test_kick_off_poll_manifest_and_download(loaded, runtime):
    client, admin = loaded.test_client(), bearer(loaded)
    resp = client.get("/fhir/$export", headers={**ASYNC, **admin})
    assert resp.status_code == 202
    status_url = resp.headers["Content-Location"]
    assert status_url.startswith(f"{BASE}/fhir/$export-status/")
    waiting = client.get(status_url.removeprefix(BASE), headers=admin)
    assert waiting.status_code == 202
    assert waiting.headers["X-Progress"]
    assert int(waiting.headers["Retry-After"]) > 0
    manifest = finish(runtime, client, status_url.removeprefix(BASE), admin)
    assert manifest["requiresAccessToken"] is True
    assert manifest["request"].endswith("/fhir/$export")
    assert manifest["transactionTime"].endswith("Z")
    assert manifest["error"] == []
    files = exported(client, manifest, admin)
    expected: dict[str, set[str]] = {}
    for r in dataset():
        expected.setdefault(r["resourceType"], set()).add(r["id"])
    assert {t: {r["id"] for r in rs} for t, rs in files.items()} == expected
    assert sum(len(v) for v in files.values()) == len(dataset())  # no line twice


def test_post_kick_off_with_parameters(loaded, runtime):
    client, admin = loaded.test_client(), bearer(loaded)
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "_type", "valueString": "Patient"},
            {"name": "_outputFormat", "valueString": "ndjson"},
        ],
    }
    resp = client.post("/fhir/Patient/$export", json=body, headers={**ASYNC, **admin})
    assert resp.status_code == 202
    manifest = finish(runtime, client, resp.headers["Content-Location"].removeprefix(BASE), admin)
    assert [o["type"] for o in manifest["output"]] == ["Patient"]
    assert manifest["output"][0]["count"] == len(PATIENTS)


@pytest.mark.parametrize("payer", PAYERS)
def test_a_payer_group_export_is_exactly_its_entitled_members(loaded, runtime, payer):
    client, headers, mine = loaded.test_client(), headers_for(loaded, payer), entitled(payer)
    group = client.get(f"/fhir/Group/{payer}", headers=headers)
    assert group.status_code == 200
    members = {m["entity"]["reference"].split("/")[1] for m in group.get_json()["member"]}
    active = {
        m["entity"]["reference"].split("/")[1]
        for m in group.get_json()["member"]
        if not m["inactive"]
    }
    assert mine <= members
    assert active == mine
    manifest = finish(
        runtime, client, kick(client, f"/fhir/Group/{payer}/$export", headers), headers
    )
    files = exported(client, manifest, headers)
    assert {p["id"] for p in files["Patient"]} == mine
    for rtype, per_patient in (("Observation", 2), ("Procedure", 1), ("Condition", 1), ("Goal", 1)):
        assert {patient_of(r) for r in files[rtype]} == mine, rtype
        assert len(files[rtype]) == per_patient * len(mine), rtype
    assert all(c["payor"][0]["reference"] == f"Organization/{payer}" for c in files["Coverage"])
    assert {patient_of(c) for c in files["Coverage"]} == mine


def test_another_payers_group_does_not_exist_for_a_payer(loaded):
    client, headers = loaded.test_client(), headers_for(loaded, PAYERS[0])
    assert client.get(f"/fhir/Group/{PAYERS[1]}", headers=headers).status_code == 404
    kick(client, f"/fhir/Group/{PAYERS[1]}/$export", headers, status=404)


@pytest.mark.parametrize("ehr", EHRS)
def test_a_patient_export_by_an_ehr_is_its_entitled_set(loaded, runtime, ehr):
    client, headers, mine = loaded.test_client(), headers_for(loaded, ehr), entitled(ehr)
    manifest = finish(runtime, client, kick(client, "/fhir/Patient/$export", headers), headers)
    files = exported(client, manifest, headers)
    assert {p["id"] for p in files["Patient"]} == mine
    assert {patient_of(o) for o in files["Observation"]} == mine
    assert "Organization" not in files  # not a patient-compartment type


def test_since_and_type_narrow_the_export(loaded, runtime):
    client, admin = loaded.test_client(), bearer(loaded)
    since = utcnow() + timedelta(seconds=1)
    later = lambda: since + timedelta(seconds=5)  # noqa: E731
    with write_session(runtime.sessions) as session:
        store = ResourceStore(session, now=later)
        obs = store.read("Observation", "obs-p01-0").resource
        store.update({**obs, "status": "amended"})
    stamp = since.isoformat(timespec="seconds") + "Z"
    url = f"/fhir/$export?_since={stamp}&_type=Observation,Patient"
    manifest = finish(runtime, client, kick(client, url, admin), admin)
    files = exported(client, manifest, admin)
    assert list(files) == ["Observation"]
    assert [o["id"] for o in files["Observation"]] == ["obs-p01-0"]
    only_type = finish(runtime, client, kick(client, "/fhir/$export?_type=Goal", admin), admin)
    assert [o["type"] for o in only_type["output"]] == ["Goal"]


def test_type_filter_applies_the_bridges_search(loaded, runtime):
    client, admin = loaded.test_client(), bearer(loaded)
    url = (
        f"/fhir/Patient/$export?_type=Observation,Patient&_typeFilter=Observation%3Fdate%3Dge{TODAY}"
        "&_typeFilter=Patient%3F_id%3Dp01,Patient%3F_id%3Dp02"
    )
    files = exported(client, finish(runtime, client, kick(client, url, admin), admin), admin)
    assert len(files["Observation"]) == len(PATIENTS)  # today's of each patient, not yesterday's
    assert all(o["effectiveDateTime"] == TODAY.isoformat() for o in files["Observation"])
    assert sorted(p["id"] for p in files["Patient"]) == ["p01", "p02"]


def test_a_narrow_scope_token_gets_only_its_types(loaded, runtime):
    client, payer = loaded.test_client(), PAYERS[0]
    headers = bearer(
        loaded, role="payer", organization=f"Organization/{payer}", scope="system/Observation.rs"
    )
    manifest = finish(runtime, client, kick(client, "/fhir/Patient/$export", headers), headers)
    assert [o["type"] for o in manifest["output"]] == ["Observation"]
    asked = finish(
        runtime,
        client,
        kick(client, "/fhir/Patient/$export?_type=Patient,Observation", headers),
        headers,
    )
    assert [o["type"] for o in asked["output"]] == ["Observation"]
    [problem] = download(client, asked["error"][0]["url"], headers)
    assert problem["resourceType"] == "OperationOutcome"
    assert problem["issue"][0]["code"] == "forbidden"
    assert "Patient" in problem["issue"][0]["diagnostics"]


def test_another_client_gets_404_for_status_files_and_cancel(loaded, runtime):
    client = loaded.test_client()
    owner = bearer(loaded, client_id="payer-one", role="payer", organization="Organization/payer-a")
    other = bearer(loaded, client_id="payer-two", role="payer", organization="Organization/payer-a")
    status_url = kick(client, "/fhir/Patient/$export", owner)
    assert client.get(status_url, headers=other).status_code == 404
    manifest = finish(runtime, client, status_url, owner)
    assert client.get(status_url, headers=other).status_code == 404
    for entry in manifest["output"]:
        resp = client.get(entry["url"].removeprefix(BASE), headers=other)
        assert resp.status_code == 404
        assert resp.get_json()["issue"][0]["code"] == "not-found"
    assert client.delete(status_url, headers=other).status_code == 404
    assert client.get(status_url, headers=owner).status_code == 200


def test_cancel_answers_202_then_404_and_removes_the_files(loaded, runtime, settings):
    client, admin = loaded.test_client(), bearer(loaded)
    queued = kick(client, "/fhir/$export", admin)
    assert client.delete(queued, headers=admin).status_code == 202
    assert client.get(queued, headers=admin).status_code == 404
    assert client.delete(queued, headers=admin).status_code == 404
    run_runner(runtime)  # nothing to run: the job was cancelled
    done = kick(client, "/fhir/$export?_type=Patient", admin)
    manifest = finish(runtime, client, done, admin)
    assert client.delete(done, headers=admin).status_code == 202
    assert (
        client.get(manifest["output"][0]["url"].removeprefix(BASE), headers=admin).status_code
        == 404
    )
    run_runner(runtime)
    assert not any(Path(settings.export_dir).glob("*/*.ndjson"))


def test_files_expire_after_the_configured_time(loaded, runtime, settings):
    client, admin = loaded.test_client(), bearer(loaded)
    status_url = kick(client, "/fhir/$export?_type=Patient", admin)
    short = build_runtime(replace(settings, export_expiry_seconds=1))
    try:
        assert run_runner(short)
        resp = client.get(status_url, headers=admin)
        assert resp.status_code == 200
        assert "Expires" in resp.headers
        url = resp.get_json()["output"][0]["url"].removeprefix(BASE)
        assert client.get(url, headers=admin).status_code == 200
        time.sleep(1.2)
        assert client.get(status_url, headers=admin).status_code == 404
        assert client.get(url, headers=admin).status_code == 404
        run_runner(short)
        assert not any(Path(settings.export_dir).iterdir())
    finally:
        short.dispose()


def test_downloads_are_audited_with_the_patients_they_disclose(loaded, runtime):
    client, payer = loaded.test_client(), PAYERS[1]
    headers = headers_for(loaded, payer)
    manifest = finish(
        runtime, client, kick(client, "/fhir/Patient/$export?_type=Observation", headers), headers
    )
    download(client, manifest["output"][0]["url"], headers)
    events = client.get("/fhir/AuditEvent?_count=100").get_json()["entry"]
    downloads = [
        e["resource"]
        for e in events
        if any(s.get("code") == "export" for s in e["resource"]["subtype"])
        and any(
            en.get("what", {}).get("reference", "").startswith("Patient/")
            for en in e["resource"].get("entity", [])
        )
    ]
    assert downloads
    named = {
        en["what"]["reference"].split("/")[1]
        for en in downloads[-1]["entity"]
        if en.get("what", {}).get("reference", "").startswith("Patient/")
    }
    assert named == entitled(payer)


@pytest.mark.parametrize(
    ("query", "expression"),
    [
        ("_type=Foo", "_type"),
        ("_type=Organization", "_type"),
        ("_outputFormat=text/csv", "_outputFormat"),
        ("_since=yesterday", "_since"),
        ("_typeFilter=Observation%3Fnosuch%3D1", "_typeFilter"),
        ("_typeFilter=Observation%3F_count%3D1", "_typeFilter"),
        ("_elements=id", "_elements"),
        ("patient=Patient/p01", "patient"),
    ],
)
def test_bad_parameters_are_400_with_an_expression(loaded, query, expression):
    client = loaded.test_client()
    resp = client.get(f"/fhir/Patient/$export?{query}", headers=ASYNC)
    assert resp.status_code == 400, query
    issue = resp.get_json()["issue"][0]
    assert resp.get_json()["resourceType"] == "OperationOutcome"
    assert issue["expression"] == [expression]


def test_lenient_handling_ignores_unsupported_parameters_and_prefer_is_required(loaded):
    client = loaded.test_client()
    lenient = {**ASYNC, "Prefer": "respond-async, handling=lenient"}
    assert client.get("/fhir/Patient/$export?_elements=id", headers=lenient).status_code == 202
    resp = client.get("/fhir/Patient/$export", headers={"Accept": "application/fhir+json"})
    assert resp.status_code == 400
    assert resp.get_json()["issue"][0]["expression"] == ["http.Prefer"]


def test_a_system_export_is_for_clinic_admins_only(loaded):
    client = loaded.test_client()
    kick(client, "/fhir/$export", headers_for(loaded, PAYERS[0]), status=403)
    kick(client, "/fhir/$export", bearer(loaded, role="clinic"), status=403)


def test_the_capability_statement_lists_the_export_operations(loaded):
    body = loaded.test_client().get("/fhir/metadata").get_json()
    assert "http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data" in body["instantiates"]
    server = body["rest"][0]
    assert any(op["name"] == "export" for op in server["operation"])
    types = {r["type"]: r for r in server["resource"]}
    assert any(op["name"] == "export" for op in types["Patient"]["operation"])
    assert any(op["name"] == "export" for op in types["Group"]["operation"])


def test_a_killed_worker_s_export_is_redone_with_no_partial_file_listed(loaded, runtime, settings):
    client, admin = loaded.test_client(), bearer(loaded)
    status_url = kick(client, "/fhir/$export", admin)
    env = {
        **os.environ,
        "FHIR_BRIDGE_DATABASE_URL": settings.database_url,
        "FHIR_BRIDGE_EXPORT_DIR": settings.export_dir,
        "FHIR_BRIDGE_EXPORT_PAGE_SIZE": "1",
        "FHIR_BRIDGE_EXPORT_LEASE_SECONDS": "1",
        "FHIR_BRIDGE_LOG_JSON": "false",
    }
    code = "from fhir_bridge.cli import main; main(['export', 'run-once'])"
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    folder = Path(settings.export_dir)
    deadline = time.monotonic() + 60
    try:
        while not any(folder.glob("*/*.part")):
            assert time.monotonic() < deadline, "no export started"
            assert proc.poll() is None, "the runner ended before it was killed"
            time.sleep(0.005)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    waiting = client.get(status_url, headers=admin)
    assert waiting.status_code == 202  # killed mid-export: nothing listed
    time.sleep(1.1)  # the dead worker's lease runs out
    manifest = finish(runtime, client, status_url, admin)
    files = exported(client, manifest, admin)
    ids = [(t, r["id"]) for t, rs in files.items() for r in rs]
    assert len(ids) == len(set(ids)) == len(dataset())
    assert not any(folder.glob("*/*.part"))
    assert all(not e["url"].endswith(".part") for e in manifest["output"])


def test_a_payer_without_members_exports_no_patients_records(loaded, runtime):
    client = loaded.test_client()
    headers = bearer(loaded, role="payer", organization="Organization/payer-z", scope="system/*.rs")
    manifest = finish(
        runtime, client, kick(client, "/fhir/Group/payer-z/$export", headers), headers
    )
    files = exported(client, manifest, headers)
    assert set(files) <= {"Organization", "Practitioner", "PractitionerRole"}
    assert all(entry["count"] > 0 for entry in manifest["output"])
