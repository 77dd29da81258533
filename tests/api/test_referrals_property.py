"""Mutated referrals in every shape: never a 5xx, every refusal an OperationOutcome with a path,
and nothing left behind by a refused request."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from tests.api.test_referrals import referral, task_for
from tests.api.test_sessions_property import JSON, _paths
from tests.factories import patient, practitioner, store_all

SAMPLES = Path(__file__).resolve().parents[2] / "sample_bundles" / "referrals"
PAT = "urn:uuid:7d0c5a52-1c3e-4b8e-9d4e-0a6c2f1e9b01"
SR = "urn:uuid:7d0c5a52-1c3e-4b8e-9d4e-0a6c2f1e9b02"
TABLES = ("resource", "resource_version", "inbound_payload", "referral", "outbox_event")


def _transaction() -> dict[str, Any]:
    sr = referral("SR-PROP-TX")
    sr["subject"] = {"reference": PAT}
    task = task_for(SR)
    task["for"] = {"reference": PAT}
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": PAT,
                "resource": {
                    "resourceType": "Patient",
                    "identifier": [{"system": "urn:oid:2.16.840.1.113883.19.5.2", "value": "E-1"}],
                    "name": [{"family": "Testperson", "given": ["Pat"]}],
                },
                "request": {"method": "POST", "url": "Patient"},
            },
            {"fullUrl": SR, "resource": sr, "request": {"method": "POST", "url": "ServiceRequest"}},
            {"resource": task, "request": {"method": "POST", "url": "Task"}},
        ],
    }


def _seeds() -> list[dict[str, Any]]:
    seeds = [referral("SR-PROP"), _transaction(), task_for("ServiceRequest/sr-on-file")]
    for path in sorted(SAMPLES.glob("**/*.json")):
        if "expected" in path.parts:
            continue
        try:
            seeds.append(json.loads(path.read_text()))
        except ValueError:
            continue
    return seeds


SEEDS = _seeds()
REFERENCES = st.sampled_from(
    [
        "Patient/nope",
        "urn:uuid:00000000-0000-0000-0000-000000000000",
        "#missing",
        "Patient?x=y",
        "http://unregistered.example.org/fhir/ServiceRequest/1",
        "",
        "ServiceRequest/sr-on-file",
    ]
)


def _endpoint(body: Any) -> str:
    kind = body.get("resourceType") if isinstance(body, dict) else None
    return {"ServiceRequest": "/fhir/ServiceRequest", "Task": "/fhir/Task"}.get(str(kind), "/fhir")


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, Any]:
    """(endpoint, body): a seed with up to four drops, duplicates, retypes, corruptions or
    broken references."""
    body = copy.deepcopy(draw(st.sampled_from(SEEDS)))
    endpoint = _endpoint(body)
    for _ in range(draw(st.integers(0, 4))):
        paths = _paths(body)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = body
        for step in path[:-1]:
            parent = parent[step]
        key, value = path[-1], parent[path[-1]]
        action = draw(st.sampled_from(["drop", "duplicate", "retype", "corrupt", "reference"]))
        if action == "drop":
            del parent[key]
        elif action == "duplicate" and isinstance(parent, list):
            parent.append(copy.deepcopy(value))
        elif action == "duplicate":
            parent[key] = [copy.deepcopy(value), copy.deepcopy(value)]
        elif action == "corrupt" and isinstance(value, str):
            parent[key] = draw(
                st.sampled_from([value[: len(value) // 2], value + "\x00", "", value * 40])
            )
        elif action == "reference" or key == "reference":
            parent[key] = (
                {"reference": draw(REFERENCES)} if key != "reference" else draw(REFERENCES)
            )
        else:
            parent[key] = draw(JSON)
    return endpoint, body


def counts(runtime) -> dict[str, int]:
    with runtime.engine.connect() as conn:
        return {t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one() for t in TABLES}


@st.composite
def requests_(draw: st.DrawFn) -> tuple[str, bytes, str]:
    endpoint, body = draw(mutated())
    data = json.dumps(body).encode()
    shape = draw(
        st.sampled_from(
            ["json"] * 8 + ["oversize", "truncated", "content-type", "huge-number", "deep"]
        )
    )
    content_type = "application/fhir+json"
    if shape == "oversize":
        data = data[:-1] + b',"note":[{"text":"' + b"x" * (6 * 1024 * 1024) + b'"}]}'
    elif shape == "huge-number":  # past Python's 4,300-digit int limit, or past 64 bits
        digits = draw(st.sampled_from([20, 4300, 4301, 9000]))
        data = data[:-1] + b',"priority":' + b"9" * digits + b"}"
    elif shape == "deep":  # past the parser's 100 levels, and past the recursion limit
        levels = draw(st.sampled_from([101, 400, 1500]))
        data = data[:-1] + b',"note":' + b"[" * levels + b"]" * levels + b"}"
    elif shape == "truncated":
        data = data[: draw(st.integers(0, max(len(data) - 1, 0)))]
    elif shape == "content-type":
        content_type = draw(
            st.sampled_from(["text/plain", "application/xml", "application/x-www-form-urlencoded"])
        )
    return endpoint, data, content_type


@settings(
    max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(request=requests_())
def test_no_5xx_every_refusal_is_an_outcome_with_a_path_and_leaves_nothing(
    client, runtime, request
):
    endpoint, data, content_type = request
    if not counts(runtime)["resource"]:
        store_all(
            runtime,
            [
                patient("pat-rivera", "P-1001", "Rivera", "Ana"),
                practitioner("dr-natarajan", "1407071236", "Natarajan", "Priya"),
            ],
        )
    before = counts(runtime)
    resp = client.post(endpoint, data=data, content_type=content_type)
    assert resp.status_code < 500, resp.get_data(as_text=True)[:2000]
    event(f"HTTP {resp.status_code}")
    if resp.status_code < 400:
        return
    outcome = resp.get_json()
    assert outcome["resourceType"] == "OperationOutcome"
    for issue in outcome["issue"]:
        assert issue.get("expression"), (resp.status_code, issue)
    assert counts(runtime) == before, "a refused referral left something behind"
