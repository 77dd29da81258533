"""_summary=true keeps the R4 summary elements (isSummary) of each type the bridge serves."""

from __future__ import annotations

import pytest

from fhir_bridge.fhir.search_params import SEARCHABLE_TYPES
from fhir_bridge.fhir.summary import summary_elements


def test_patient_summary_elements_are_the_r4_ones():
    # R4 Patient: isSummary on identifier, active, name, telecom, gender, birthDate,
    # deceased[x], address, managingOrganization, link (http://hl7.org/fhir/R4/patient.html)
    names = set(summary_elements("Patient"))
    assert {"identifier", "name", "gender", "birthDate", "deceasedBoolean", "link"} <= names
    assert not names & {"contact", "communication", "photo", "maritalStatus", "text"}


def test_observation_keeps_its_value_and_drops_notes():
    names = set(summary_elements("Observation"))
    assert {"status", "code", "subject", "valueQuantity", "effectiveDateTime"} <= names
    assert not names & {"note", "interpretation", "referenceRange", "dataAbsentReason"}


@pytest.mark.parametrize("resource_type", SEARCHABLE_TYPES)
def test_every_served_type_has_summary_elements_with_id_and_meta(resource_type):
    names = summary_elements(resource_type)
    assert {"id", "meta"} <= set(names)
    assert not any(n.endswith("__ext") or n == "extension" for n in names)


def test_an_unknown_type_is_a_value_error():
    with pytest.raises(ValueError, match="no R4 definition"):
        summary_elements("NotAType")
