"""Golden files of the sample session records: the mapping's whole output, pinned.

Each record in ``sample_bundles/sessions/`` is mapped with a fresh context (patient, therapist,
payer and referral all new) and compared with ``expected/<name>.json``. A change in the mapping
shows up here as a diff to review; rewrite the files with ``--update-goldens`` (see conftest.py).
Every resource must also validate (our validator and the R4B model) and carry the US Core
elements its profile requires.
"""

from __future__ import annotations

import copy
import dataclasses
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class

from fhir_bridge.fhir import jsonio
from fhir_bridge.fhir.validation import validate_resource
from fhir_bridge.mapping.context import ClinicIdentity, fresh_context
from fhir_bridge.mapping.session import map_session
from fhir_bridge.mapping.tables import MappingTables, load_tables
from fhir_bridge.records.model import SessionRecord
from fhir_bridge.records.schemas import load_session
from fhir_bridge.records.vocabulary import Vocabulary

SESSIONS = Path(__file__).resolve().parents[2] / "sample_bundles" / "sessions"
EXPECTED = SESSIONS / "expected"
NAMES = [
    "whiplash-neck-pain",
    "postmastectomy-lymphedema",
    "chronic-low-back-pain",
    "tension-headache",
]
CLINIC = ClinicIdentity("https://clinic.example.org/fhir", "https://payers.example.org/payer-id")
US_CORE = "http://hl7.org/fhir/us/core/StructureDefinition"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"


@cache
def tables() -> MappingTables:
    """The shipped mapping tables (loaded once)."""
    return load_tables()


def raw(name: str) -> Any:
    """The sample record as JSON-decoded data (decimals exact)."""
    return jsonio.loads((SESSIONS / f"{name}.json").read_bytes())


def record(name: str) -> SessionRecord:
    """The sample record, validated."""
    return load_session(raw(name), vocabulary=Vocabulary.from_tables(tables()))


def mapped_json(rec: SessionRecord) -> dict[str, Any]:
    """``map_session`` output as the golden files hold it: plain dicts, Decimals kept."""
    mapped = map_session(rec, tables(), fresh_context(rec, CLINIC))
    return {
        "resources": mapped.resources,
        "billing": [dataclasses.asdict(b) for b in mapped.billing],
        "flags": [dataclasses.asdict(f) for f in mapped.flags],
    }


def golden_bytes(output: dict[str, Any]) -> bytes:
    """The golden file content: indented JSON with a final newline."""
    return jsonio.dumps(output, pretty=True) + b"\n"


def test_every_sample_has_a_golden_test() -> None:
    assert sorted(p.stem for p in SESSIONS.glob("*.json")) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_mapping_matches_the_golden_file(name: str, update_goldens: bool) -> None:
    output = mapped_json(record(name))
    path = EXPECTED / f"{name}.json"
    if update_goldens:
        path.write_bytes(golden_bytes(output))
        pytest.fail(f"rewrote {path.relative_to(SESSIONS.parents[1])}: review the diff, then rerun")
    assert path.exists(), f"no golden file {path.name}: run pytest with --update-goldens"
    expected = jsonio.loads(path.read_bytes())
    actual = jsonio.loads(jsonio.dumps(output))
    assert actual == expected, f"{name}: mapping differs from {path.name} (--update-goldens)"


def resources(name: str) -> list[dict[str, Any]]:
    return mapped_json(record(name))["resources"]


@pytest.mark.parametrize("name", NAMES)
def test_every_resource_validates(name: str) -> None:
    for resource in resources(name):
        errors = [i for i in validate_resource(resource) if i.severity in ("error", "fatal")]
        assert errors == [], f"{resource['resourceType']}/{resource['id']}: {errors}"


@pytest.mark.parametrize("name", NAMES)
def test_every_resource_loads_into_its_r4b_model(name: str) -> None:
    for resource in resources(name):
        model = get_fhir_model_class(resource["resourceType"]).model_validate(resource)
        assert model.id == resource["id"]


# --- US Core required elements ---------------------------------------------------------------


def _procedure(r: dict[str, Any]) -> list[str]:
    missing = [k for k in ("status", "code", "subject") if not r.get(k)]
    if r.get("status") == "completed" and not r.get("performedPeriod", {}).get("start"):
        missing.append("performedPeriod")
    return missing


def _observation(r: dict[str, Any]) -> list[str]:
    missing = [k for k in ("status", "category", "code", "subject") if not r.get(k)]
    if not (r.get("effectiveDateTime") or r.get("effectivePeriod")):
        missing.append("effective[x]")
    if not any(k.startswith("value") for k in r) and "dataAbsentReason" not in r:
        missing.append("value[x]")
    profile = r["meta"]["profile"][0]
    wanted = {
        f"{US_CORE}/us-core-observation-screening-assessment": "survey",
        f"{US_CORE}/us-core-observation-clinical-result": "exam",
    }[profile]
    codes = {
        (c["system"], c["code"]) for cat in r.get("category", []) for c in cat.get("coding", [])
    }
    if (OBS_CATEGORY, wanted) not in codes:
        missing.append(f"category {wanted}")
    quantity = r.get("valueQuantity", {})
    if quantity.get("code") and quantity.get("system") != "http://unitsofmeasure.org":
        missing.append("valueQuantity.system (us-core-3)")
    return missing


def _goal(r: dict[str, Any]) -> list[str]:
    missing = [k for k in ("lifecycleStatus", "description", "subject") if not r.get(k)]
    if not (r.get("startDate") or any(t.get("dueDate") for t in r.get("target", []))):
        missing.append("startDate or target.dueDate")
    return missing


def _patient(r: dict[str, Any]) -> list[str]:
    return [k for k in ("identifier", "name") if not r.get(k)]


def _coverage(r: dict[str, Any]) -> list[str]:
    missing = [k for k in ("beneficiary", "relationship", "payor") if not r.get(k)]
    member = [
        i
        for i in r.get("identifier", [])
        if any(c.get("code") == "MB" for c in i.get("type", {}).get("coding", []))
    ]
    if not member and not r.get("subscriberId"):
        missing.append("identifier(MB) or subscriberId")
    return missing


def _practitioner(r: dict[str, Any]) -> list[str]:
    return [k for k in ("identifier", "name") if not r.get(k)]


def _organization(r: dict[str, Any]) -> list[str]:
    return [k for k in ("name",) if not r.get(k)] + ([] if "active" in r else ["active"])


US_CORE_CHECKS = {
    "Procedure": _procedure,
    "Observation": _observation,
    "Goal": _goal,
    "Patient": _patient,
    "Coverage": _coverage,
    "Practitioner": _practitioner,
    "Organization": _organization,
}


@pytest.mark.parametrize("name", NAMES)
def test_us_core_required_elements_are_present(name: str) -> None:
    for resource in resources(name):
        assert resource["meta"]["profile"][0].startswith(f"{US_CORE}/us-core-")
        missing = US_CORE_CHECKS[resource["resourceType"]](resource)
        assert missing == [], f"{resource['resourceType']}/{resource['id']} lacks {missing}"


# --- determinism ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_mapping_is_deterministic(name: str) -> None:
    rec = record(name)
    assert jsonio.dumps(mapped_json(rec)) == jsonio.dumps(mapped_json(rec))


def _ids(output: dict[str, Any]) -> list[tuple[str, str]]:
    return [(r["resourceType"], r["id"]) for r in output["resources"]]


@pytest.mark.parametrize("name", NAMES)
def test_a_replayed_record_produces_the_same_ids(name: str) -> None:
    first = _ids(mapped_json(record(name)))
    assert _ids(mapped_json(record(name))) == first
    # a replay that lists the same things in another order converges on the same resources
    shuffled = copy.deepcopy(raw(name))
    shuffled["assessments"].reverse()
    shuffled.setdefault("goals", []).reverse()
    rec = load_session(shuffled, vocabulary=Vocabulary.from_tables(tables()))
    assert sorted(_ids(mapped_json(rec))) == sorted(first)
    assert len(set(first)) == len(first), "two resources share an id"
