"""The sample referrals of ``sample_bundles/referrals/``, as EHRs send them, end to end.

Every valid sample is taken in (and a resend changes nothing); every broken one gets exactly the
OperationOutcome pinned in ``expected/<name>.outcome.json`` (rewrite with ``--update-goldens``).
The clock is fixed at 2026-11-28 so the 90-day rule reads the same on any day.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from fhir_bridge.api import fhir_write
from fhir_bridge.app import create_app
from fhir_bridge.services.loading import load_bundle
from fhir_bridge.services.runtime import build_runtime
from tests.support.partner_server import PartnerServer, partner_server

ROOT = Path(__file__).resolve().parents[2] / "sample_bundles"
REFERRALS = ROOT / "referrals"
EXPECTED = REFERRALS / "expected"
EHR_BASE = "http://ehr.example.org/fhir"
TODAY = datetime(2026, 11, 28, 12, 0, 0)
VALID = {
    "whiplash-transaction.json": 200,
    "lymphedema-servicerequest.json": 201,
    "task-with-servicerequest.json": 200,
    "task-remote-focus.json": 201,
    "vendor-extensions.json": 201,
}
BROKEN = sorted(p.name for p in (REFERRALS / "broken").iterdir())


@pytest.fixture
def ehr():
    with partner_server() as server:
        remote = json.loads((REFERRALS / "remote" / "ServiceRequest-sr-remote-1.json").read_text())
        server.put(remote)
        yield server


@pytest.fixture
def bridge(settings, runtime, ehr: PartnerServer, monkeypatch):
    """The bridge with the clinic's sample data, the EHR registered and the clock fixed."""
    rt = build_runtime(replace(settings, physician_servers=ehr.base))
    for path in sorted(ROOT.glob("*.json")):
        load_bundle(rt, json.loads(path.read_text()))
    app = create_app(runtime=rt)
    real = fhir_write.intake_policy
    monkeypatch.setattr(fhir_write, "intake_policy", lambda: replace(real(), now=TODAY))
    yield app.test_client(), rt
    rt.dispose()


def body_of(path: Path, ehr: PartnerServer) -> tuple[str, bytes]:
    """(endpoint, body) for a sample file; the EHR's base points at the test's server."""
    raw = path.read_bytes().replace(EHR_BASE.encode(), ehr.base.encode())
    try:
        kind = json.loads(raw).get("resourceType")
    except ValueError:
        kind = "ServiceRequest"  # the not-JSON sample is sent where a bare request would go
    endpoint = {"ServiceRequest": "/fhir/ServiceRequest", "Task": "/fhir/Task"}.get(kind, "/fhir")
    return endpoint, raw


def send(client, endpoint: str, raw: bytes):
    return client.post(
        endpoint,
        data=raw,
        content_type="application/fhir+json",
        headers={"Prefer": "return=OperationOutcome"},
    )


def _remarks(outcome: dict[str, Any] | None) -> list[dict[str, Any]]:
    """An outcome's issues without the informational "Created X/<new id>" lines."""
    return [i for i in (outcome or {}).get("issue", []) if i["severity"] != "information"]


def outcome_of(resp) -> Any:
    """What the response says besides success: the remarks (warnings), per entry for a Bundle."""
    body = resp.get_json()
    if body.get("resourceType") == "Bundle":
        return [_remarks(e["response"].get("outcome")) for e in body["entry"]]
    return _remarks(body)


def counts(rt) -> dict[str, int]:
    tables = ("resource", "resource_version", "referral", "outbox_event")
    with rt.engine.connect() as conn:
        return {t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one() for t in tables}


def check_golden(name: str, actual: Any, update: bool) -> None:
    path = EXPECTED / f"{Path(name).stem}.outcome.json"
    if update:
        EXPECTED.mkdir(exist_ok=True)
        path.write_text(json.dumps(actual, indent=2, ensure_ascii=False) + "\n")
        pytest.fail(f"rewrote {path.name}: review the diff, then rerun")
    assert path.exists(), f"no golden file {path.name}: run pytest with --update-goldens"
    assert actual == json.loads(path.read_text()), f"{name}: outcome differs from {path.name}"


@pytest.mark.parametrize("name", sorted(VALID))
def test_each_valid_sample_is_taken_in_once(bridge, ehr, name, update_goldens):
    client, rt = bridge
    endpoint, raw = body_of(REFERRALS / name, ehr)
    resp = send(client, endpoint, raw)
    assert resp.status_code == VALID[name], resp.get_json()
    check_golden(name, outcome_of(resp), update_goldens)
    [referral] = client.get("/api/v1/referrals").get_json()["referrals"]
    assert referral["status"] == "requested"
    assert client.get(f"/fhir/{referral['task']}").status_code == 200
    before = counts(rt)
    again = send(client, endpoint, raw)
    assert again.status_code == 200, again.get_json()
    assert counts(rt) == before, "a resent referral wrote something"


@pytest.mark.parametrize("name", BROKEN)
def test_each_broken_sample_gets_its_exact_outcome_and_leaves_nothing(
    bridge, ehr, name, update_goldens
):
    client, rt = bridge
    before = counts(rt)
    endpoint, raw = body_of(REFERRALS / "broken" / name, ehr)
    resp = send(client, endpoint, raw)
    assert resp.status_code in (400, 422)
    outcome = resp.get_json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert all(issue.get("expression") for issue in outcome["issue"])
    check_golden(name, {"status": resp.status_code, "outcome": outcome}, update_goldens)
    assert counts(rt) == before
