"""The inbox's change list between two versions of a referral."""

from __future__ import annotations

import pytest

from fhir_bridge.mapping.referral_changes import referral_changes

BASE = {
    "resourceType": "ServiceRequest",
    "id": "sr-1",
    "meta": {"versionId": "1"},
    "status": "active",
    "intent": "order",
    "quantityQuantity": {"value": 8},
    "note": [{"text": "No deep tissue work on the left arm"}],
    "reasonCode": [
        {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "S13.4XXA"}]}
    ],
}


def changed(**edits) -> dict:
    return {**BASE, **edits}


@pytest.mark.parametrize(
    ("new", "expected"),
    [
        (BASE, []),
        ({**BASE, "id": "other", "meta": {"versionId": "2"}}, []),
        (changed(quantityQuantity={"value": 12}), ["quantityQuantity.value 8 -> 12"]),
        (changed(intent="plan"), ["intent order -> plan"]),
        (changed(note=[{"text": "Ice after each visit, no heat"}]), ["note[0].text changed"]),
        (
            changed(note=[*BASE["note"], {"text": "new safety instruction"}]),
            ["note[1].text added"],
        ),
        ({k: v for k, v in BASE.items() if k != "note"}, ["note[0].text removed"]),
        (changed(status="on-hold"), ["status active -> on-hold"]),
        (
            changed(
                requester={
                    "reference": "Practitioner/p2",
                    "display": "Dr. Other Person",
                    "type": "Practitioner",
                    "identifier": {"system": "http://hl7.org/fhir/sid/us-npi", "value": "1"},
                }
            ),
            ["requester added"],
        ),
        (
            changed(
                reasonCode=[
                    {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "M54.2"}]}
                ]
            ),
            ["reasonCode[0].coding[0].code S13.4XXA -> M54.2"],
        ),
    ],
)
def test_changes_are_named_field_by_field(new, expected):
    assert referral_changes(BASE, new) == expected


def test_free_text_is_never_quoted():
    new = changed(note=[{"text": "Patient reports chest pain"}])
    assert all("chest" not in line for line in referral_changes(BASE, new))
