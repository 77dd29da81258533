"""The sample data in ``sample_bundles/``: valid R4 transaction Bundles that hang together.

``make run`` loads these files into an empty store, so they must validate, reference only each
other, and carry only codes confirmed in the domain reference (CPT, LOINC, ICD-10-CM, SNOMED CT,
NUCC entries below; anything new needs a source first).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B.bundle import Bundle

from fhir_bridge.fhir.npi import is_valid_npi
from fhir_bridge.fhir.validation import validate_resource

SAMPLES = Path(__file__).resolve().parents[2] / "sample_bundles"
FILES = sorted(SAMPLES.glob("*.json"))

NPI_SYSTEM = "http://hl7.org/fhir/sid/us-npi"
ID_RE = re.compile(r"[A-Za-z0-9\-.]{1,64}")
RELATIVE_REF_RE = re.compile(r"(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})")
URN_UUID_RE = re.compile(r"urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
DATETIME_RE = re.compile(
    r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(?P<zone>Z|[+-]\d{2}:\d{2})?"
)

CPT = "http://www.ama-assn.org/go/cpt"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
UCUM = "http://unitsofmeasure.org"
NUCC = "http://nucc.org/provider-taxonomy"
US_CORE_CATEGORY = "http://hl7.org/fhir/us/core/CodeSystem/us-core-category"

#: code systems a sample may use: real, published URIs only (no made-up local systems).
ALLOWED_SYSTEMS = {CPT, LOINC, SNOMED, ICD10CM, UCUM, NUCC, US_CORE_CATEGORY}
ALLOWED_SYSTEM_PATTERNS = (
    re.compile(r"http://terminology\.hl7\.org/CodeSystem/[A-Za-z0-9\-.]+"),
    # the bridge's own vocabulary, published by it as CodeSystems (mappings/systems.yaml)
    re.compile(r"http://fhir-bridge\.org/fhir/CodeSystem/massage-[a-z-]+"),
    re.compile(r"http://hl7\.org/fhir/CodeSystem/[A-Za-z0-9\-.]+"),
)

#: clinical codes confirmed ("seen") in the domain reference; section numbers of domain.md.
VERIFIED_CODES = {
    CPT: {"97124", "97140"},  # 5.2
    LOINC: {"72514-3"},  # 5.5
    ICD10CM: {"M54.2", "M54.50", "M62.830", "G44.209", "M54.6", "I97.2"},  # 5.7
    SNOMED: {"1172950003"},  # 5.4
    NUCC: {"225700000X"},  # 5.8
    UCUM: {"{score}", "min"},  # 5.6
}


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def _walk(node: Any) -> Iterator[Any]:
    """Every dict, list and scalar inside ``node`` (depth first)."""
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def _resources(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [entry["resource"] for entry in bundle["entry"]]


def _all_resources() -> list[dict[str, Any]]:
    return [r for path in FILES for r in _resources(_load(path))]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_file_is_a_valid_r4_transaction_bundle(path: Path) -> None:
    data = _load(path)
    bundle = Bundle.model_validate(data)
    assert bundle.type == "transaction"
    assert bundle.entry
    assert validate_resource(data, expected_type="Bundle") == []


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_entry_is_a_put_to_its_own_type_and_id(path: Path) -> None:
    full_urls = []
    for entry in _load(path)["entry"]:
        resource = entry["resource"]
        assert ID_RE.fullmatch(resource["id"]), resource["id"]
        assert entry["request"] == {
            "method": "PUT",
            "url": f"{resource['resourceType']}/{resource['id']}",
        }
        assert URN_UUID_RE.fullmatch(entry["fullUrl"]), entry["fullUrl"]
        full_urls.append(entry["fullUrl"])
    assert len(full_urls) == len(set(full_urls))


def test_ids_and_full_urls_are_unique_across_all_files() -> None:
    ids = [r["id"] for r in _all_resources()]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    urls = [e["fullUrl"] for path in FILES for e in _load(path)["entry"]]
    assert len(urls) == len(set(urls))


def test_every_reference_resolves_to_a_sample_resource() -> None:
    defined = {f"{r['resourceType']}/{r['id']}" for r in _all_resources()}
    for resource in _all_resources():
        for node in _walk(resource):
            if isinstance(node, dict) and "reference" in node:
                literal = node["reference"]
                where = f"{resource['resourceType']}/{resource['id']}"
                assert RELATIVE_REF_RE.fullmatch(literal), f"{where}: {literal} is not Type/id"
                assert literal in defined, f"{where}: {literal} is not defined in sample_bundles/"


def test_every_npi_passes_the_check_digit() -> None:
    seen = 0
    for resource in _all_resources():
        for node in _walk(resource):
            if isinstance(node, dict) and node.get("system") == NPI_SYSTEM:
                seen += 1
                assert is_valid_npi(node["value"]), f"{resource['id']}: NPI {node['value']}"
    assert seen >= 5


def _codings(resource: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Codings and coded Quantities: any object carrying both ``system`` and ``code``."""
    for node in _walk(resource):
        if isinstance(node, dict) and "system" in node and "code" in node:
            yield node


def test_every_coding_system_is_a_real_code_system() -> None:
    for resource in _all_resources():
        for coding in _codings(resource):
            system = coding["system"]
            allowed = system in ALLOWED_SYSTEMS or any(
                p.fullmatch(system) for p in ALLOWED_SYSTEM_PATTERNS
            )
            assert allowed, f"{resource['id']}: code system {system} is not allowed"


def test_clinical_codes_are_ones_the_domain_reference_confirms() -> None:
    for resource in _all_resources():
        for coding in _codings(resource):
            verified = VERIFIED_CODES.get(coding["system"])
            if verified is not None:
                assert coding["code"] in verified, f"{resource['id']}: {coding}"


def test_every_date_time_carries_a_utc_offset() -> None:
    for resource in _all_resources():
        for node in _walk(resource):
            if isinstance(node, str) and (match := DATETIME_RE.fullmatch(node)):
                assert match.group("zone"), f"{resource['id']}: {node} has no UTC offset"


def test_visits_follow_assess_treat_reassess() -> None:
    """Each completed visit has a pain score before and after, inside its performed period."""
    resources = _all_resources()
    procedures = {r["id"]: r for r in resources if r["resourceType"] == "Procedure"}
    assert len(procedures) >= 4
    by_procedure: dict[str, list[dict[str, Any]]] = {pid: [] for pid in procedures}
    for obs in (r for r in resources if r["resourceType"] == "Observation"):
        by_procedure[obs["partOf"][0]["reference"].removeprefix("Procedure/")].append(obs)
    for pid, observations in by_procedure.items():
        proc = procedures[pid]
        assert proc["status"] == "completed"
        assert {o["basedOn"][0]["reference"] for o in observations} == {
            proc["basedOn"][0]["reference"]
        }
        assert len(observations) == 2, pid
        start, end = proc["performedPeriod"]["start"], proc["performedPeriod"]["end"]
        # same offset throughout one visit, so the strings compare in time order
        assert all(start <= o["effectiveDateTime"] <= end for o in observations), pid
