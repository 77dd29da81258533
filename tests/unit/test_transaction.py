"""Pure transaction helpers: processing order, request URLs, reference rewriting."""

from __future__ import annotations

import copy

import pytest

from fhir_bridge.fhir.search_query import parse_search
from fhir_bridge.fhir.transaction import (
    BadUrl,
    RequestUrl,
    entry_index,
    entry_path,
    identity_claim,
    iter_references,
    parse_conditional_reference,
    parse_query,
    parse_request_url,
    processing_order,
    rewrite_references,
    status_line,
)

MRN = "https://clinic.example.org/fhir/mrn"
PAT = "urn:uuid:4f1c6a2e-0d8b-4a7e-9d6e-1b2c3d4e5f60"
PRAC = "urn:uuid:9b2d1f00-5c3e-4b8a-8f7d-2a3b4c5d6e7f"


def _service_request() -> dict:
    return {
        "resourceType": "ServiceRequest",
        "status": "active",
        "intent": "order",
        "subject": {"reference": PAT, "display": "Ana Rivera"},
        "requester": {"reference": PRAC},
        "performer": [{"reference": "Organization/org-clinic"}, {"reference": "#perf"}],
        "reasonReference": [{"reference": f"Condition?identifier={MRN}|C-1"}],
        "extension": [
            {
                "url": "http://example.org/fhir/StructureDefinition/referring-patient",
                "valueReference": {"reference": PAT},
                "extension": [{"url": "nested", "valueReference": {"reference": PRAC}}],
            }
        ],
        "contained": [
            {"resourceType": "Practitioner", "id": "perf", "extension": [{"url": "x"}]},
            {
                "resourceType": "Provenance",
                "id": "prov",
                "target": [{"reference": PAT}],
            },
        ],
    }


def test_rewrite_replaces_placeholders_deeply_including_extensions():
    mapping = {PAT: "Patient/p-1", PRAC: "Practitioner/d-1"}
    out = rewrite_references(_service_request(), mapping)
    assert out["subject"] == {"reference": "Patient/p-1", "display": "Ana Rivera"}
    assert out["requester"] == {"reference": "Practitioner/d-1"}
    assert out["extension"][0]["valueReference"] == {"reference": "Patient/p-1"}
    assert out["extension"][0]["extension"][0]["valueReference"] == {
        "reference": "Practitioner/d-1"
    }


def test_rewrite_leaves_contained_local_and_unmapped_references_alone():
    original = _service_request()
    out = rewrite_references(original, {PAT: "Patient/p-1", "#perf": "Practitioner/zzz"})
    assert out["performer"] == [{"reference": "Organization/org-clinic"}, {"reference": "#perf"}]
    assert out["contained"][1]["target"] == [{"reference": PAT}]  # contained: not entered
    assert out["reasonReference"][0]["reference"] == f"Condition?identifier={MRN}|C-1"


def test_rewrite_does_not_modify_its_input():
    original = _service_request()
    snapshot = copy.deepcopy(original)
    rewrite_references(original, {PAT: "Patient/p-1"})
    assert original == snapshot


def test_rewrite_resolves_conditional_references_given_in_the_mapping():
    ref = f"Condition?identifier={MRN}|C-1"
    out = rewrite_references(_service_request(), {ref: "Condition/c-9"})
    assert out["reasonReference"] == [{"reference": "Condition/c-9"}]


def test_iter_references_lists_paths_outside_contained():
    found = dict(iter_references(_service_request()))
    assert found == {
        "subject.reference": PAT,
        "requester.reference": PRAC,
        "performer[0].reference": "Organization/org-clinic",
        "performer[1].reference": "#perf",
        "reasonReference[0].reference": f"Condition?identifier={MRN}|C-1",
        "extension[0].valueReference.reference": PAT,
        "extension[0].extension[0].valueReference.reference": PRAC,
    }


def test_processing_order_is_delete_post_put_get_and_stable():
    methods = ["GET", "PUT", "POST", "DELETE", "POST", "PATCH", "HEAD", None]
    assert processing_order(methods) == [3, 2, 4, 1, 5, 0, 6, 7]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("Patient", RequestUrl("Patient")),
        ("Patient/p-1", RequestUrl("Patient", resource_id="p-1")),
        ("/Patient/p-1", RequestUrl("Patient", resource_id="p-1")),
        ("http://bridge.test/fhir/Patient/p-1", RequestUrl("Patient", resource_id="p-1")),
        (
            f"Patient?identifier={MRN}|P-1001",
            RequestUrl("Patient", params=(("identifier", f"{MRN}|P-1001"),)),
        ),
        (
            "Patient?identifier=https%3A%2F%2Fclinic.example.org%2Ffhir%2Fmrn%7CP-1&birthdate=",
            RequestUrl("Patient", params=(("identifier", f"{MRN}|P-1"), ("birthdate", ""))),
        ),
    ],
)
def test_parse_request_url(url, expected):
    assert parse_request_url(url, "http://bridge.test/fhir") == expected


@pytest.mark.parametrize(
    "url", ["patient", "Patient/p_1", "Patient/p-1/_history/2", "Patient/p-1?x=1", "", "?a=b"]
)
def test_parse_request_url_refuses_other_shapes(url):
    with pytest.raises(BadUrl):
        parse_request_url(url)


def test_conditional_request_url_flag():
    assert parse_request_url("Patient?identifier=a|b").conditional
    assert not parse_request_url("Patient/p-1").conditional


def test_parse_conditional_reference():
    assert parse_conditional_reference(f"Patient?identifier={MRN}|P-1") == RequestUrl(
        "Patient", params=(("identifier", f"{MRN}|P-1"),)
    )
    for literal in ("Patient/p-1", PAT, "#perf", "http://x.org/fhir/Patient/1", "patient?x=1"):
        assert parse_conditional_reference(literal) is None


def test_parse_query_keeps_order_and_decodes():
    assert parse_query("?a=1&b=x%7Cy&a=2") == (("a", "1"), ("b", "x|y"), ("a", "2"))


@pytest.mark.parametrize(
    ("params", "claim"),
    [
        ([("identifier", f"{MRN}|P-1")], (MRN, "P-1")),
        ([("identifier", "P-1")], None),
        ([("identifier", f"{MRN}|")], None),
        ([("identifier", f"{MRN}|P-1,{MRN}|P-2")], None),
        ([("identifier", f"{MRN}|P-1"), ("birthdate", "1979-03-14")], None),
        ([("identifier:not", f"{MRN}|P-1")], None),
        ([("name", "rivera")], None),
    ],
)
def test_identity_claim_only_for_one_exact_identifier(params, claim):
    assert identity_claim(parse_search("Patient", params)) == claim


def test_entry_paths_and_status_lines():
    assert entry_path(3) == "Bundle.entry[3]"
    assert entry_path(3, "Patient") == "Bundle.entry[3].resource.ofType(Patient)"
    assert entry_index("Bundle.entry[12].resource.ofType(Patient).name") == 12
    assert entry_index("Bundle.type") is None
    assert status_line(201) == "201 Created"
    assert status_line(412) == "412 Precondition Failed"
