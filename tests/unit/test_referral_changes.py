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


REQUESTER = {
    "reference": "Practitioner/p2",
    "display": "Dr. Other Person",
    "type": "Practitioner",
    "identifier": {"system": "http://hl7.org/fhir/sid/us-npi", "value": "1"},
}


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        # booleans and numbers are shown as people write them
        (BASE, changed(doNotPerform=True), ["doNotPerform added: true"]),
        (changed(doNotPerform=True), changed(doNotPerform=False), ["doNotPerform true -> false"]),
        (BASE, changed(quantityQuantity={"value": 12.0}), ["quantityQuantity.value 8 -> 12"]),
        (BASE, changed(quantityQuantity={"value": 12.5}), ["quantityQuantity.value 8 -> 12.5"]),
        (
            BASE,
            changed(quantityQuantity={"value": 1000000}),
            ["quantityQuantity.value 8 -> 1000000"],
        ),
        # a short code added is shown; a value 24 characters long still is, 25 is not
        (BASE, changed(priority="routine"), ["priority added: routine"]),
        (BASE, changed(priority="x" * 24), [f"priority added: {'x' * 24}"]),
        (BASE, changed(priority="x" * 25), ["priority added"]),
        # from a short code to free text: said to change, neither side quoted
        (
            changed(patientInstruction="ice"),
            changed(patientInstruction="Ice after each visit"),
            ["patientInstruction changed"],
        ),
        (
            changed(patientInstruction="Ice after each visit"),
            changed(patientInstruction="ice"),
            ["patientInstruction changed"],
        ),
    ],
)
def test_values_are_shown_only_when_short(old, new, expected):
    assert referral_changes(old, new) == expected


def test_an_element_with_up_to_three_changes_is_listed_leaf_by_leaf():
    three = {k: v for k, v in REQUESTER.items() if k != "identifier"}
    assert referral_changes(BASE, changed(requester=three)) == [
        "requester.display added",
        "requester.reference added: Practitioner/p2",
        "requester.type added: Practitioner",
    ]


def test_an_element_with_more_changes_is_one_line_saying_how_it_changed():
    other = {**REQUESTER, "reference": "Practitioner/p3", "display": "Dr. Third", "type": "X"}
    other["identifier"] = {"system": "urn:other", "value": "2"}
    with_requester = changed(requester=REQUESTER)
    assert referral_changes(with_requester, BASE) == ["requester removed"]
    assert referral_changes(with_requester, changed(requester=other)) == ["requester changed"]
    assert referral_changes(BASE, changed(requester=REQUESTER, performer=[REQUESTER])) == [
        "performer[0] added",
        "requester added",
    ]
