"""The session mapping field by field, on the contract example (contracts/session.md).

One focused test per mapped field; the whole output is pinned by the golden files
(test_session_goldens.py).
"""

from __future__ import annotations

import copy
import dataclasses
from functools import cache
from typing import Any

from fhir_bridge.fhir import jsonio
from fhir_bridge.mapping.context import ClinicIdentity, ReferralContext, fresh_context
from fhir_bridge.mapping.session import MappedSession, map_session
from fhir_bridge.mapping.tables import MappingTables, load_tables
from fhir_bridge.records.openapi import EXAMPLE_RECORD
from fhir_bridge.records.schemas import load_session
from fhir_bridge.records.vocabulary import Vocabulary

CLINIC = ClinicIdentity("https://clinic.example.org/fhir", "https://payers.example.org/payer-id")
CPT = "http://www.ama-assn.org/go/cpt"
UCUM = "http://unitsofmeasure.org"
BASE = "http://fhir-bridge.org/fhir"
TECHNIQUE = f"{BASE}/CodeSystem/massage-technique"
LATERALITY_EXT = f"{BASE}/StructureDefinition/body-site-laterality"
TREATMENT_EXT = f"{BASE}/StructureDefinition/massage-treatment"
PHASE_EXT = f"{BASE}/StructureDefinition/assessment-phase"
PERTAINS_TO_GOAL = "http://hl7.org/fhir/StructureDefinition/resource-pertainsToGoal"
REFERRAL = ReferralContext(
    service_request_id="sr-rivera-massage-2026-11",
    reason_code=({"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "M54.2"}]},),
    reason_reference=({"reference": "Condition/cond-rivera-cervicalgia"},),
)


@cache
def tables() -> MappingTables:
    return load_tables()


def payload(**changes: Any) -> dict[str, Any]:
    """The contract example with top-level fields replaced (None removes a field)."""
    body = copy.deepcopy(EXAMPLE_RECORD)
    for key, value in changes.items():
        if value is None:
            body.pop(key, None)
        else:
            body[key] = value
    return body


def mapped(body: dict[str, Any] | None = None, *, referral: ReferralContext | None = None):
    rec = load_session(body or payload(), vocabulary=Vocabulary.from_tables(tables()))
    ctx = dataclasses.replace(fresh_context(rec, CLINIC), referral=referral)
    return map_session(rec, tables(), ctx)


def of_type(result: MappedSession, resource_type: str) -> list[dict[str, Any]]:
    return [r for r in result.resources if r["resourceType"] == resource_type]


def procedure(result: MappedSession) -> dict[str, Any]:
    (found,) = of_type(result, "Procedure")
    return found


def observation(result: MappedSession, phase: str, measure: str) -> dict[str, Any]:
    (found,) = [
        o
        for o in of_type(result, "Observation")
        if o["identifier"][0]["value"].split("/")[2:4] == [phase, measure]
    ]
    return found


def sub(extension: dict[str, Any], url: str) -> dict[str, Any]:
    (found,) = [e for e in extension["extension"] if e["url"] == url]
    return found


def flag_codes(result: MappedSession) -> list[str]:
    return [f.code for f in result.flags]


# --- Procedure ------------------------------------------------------------------------------


def test_procedure_code_lists_cpt_codings_first_then_clinic_techniques() -> None:
    code = procedure(mapped())["code"]
    assert [(c["system"], c["code"]) for c in code["coding"]] == [
        (CPT, "97140"),
        (CPT, "97124"),
        (TECHNIQUE, "trigger_point_therapy"),
        (TECHNIQUE, "muscle_energy_technique"),
        (TECHNIQUE, "swedish_massage"),
    ]
    assert code["text"].startswith("Medical massage: Trigger point therapy (manual)")


def test_billing_units_follow_the_8_minute_rule_for_the_contract_example() -> None:
    billing = {b.code: (b.minutes, b.units) for b in mapped().billing}
    assert billing == {"97140": (35, 2), "97124": (15, 1)}


def test_each_treatment_carries_its_minutes_in_ucum() -> None:
    treatments = [e for e in procedure(mapped())["extension"] if e["url"] == TREATMENT_EXT]
    minutes = [sub(t, "minutes")["valueQuantity"] for t in treatments]
    assert [m["value"] for m in minutes] == [20, 15, 15]
    assert {(m["system"], m["code"]) for m in minutes} == {(UCUM, "min")}


def test_body_site_laterality_rides_on_the_body_site_as_an_extension() -> None:
    proc = procedure(mapped())
    left_trapezius = proc["bodySite"][0]
    (side,) = left_trapezius["extension"]
    assert side["url"] == LATERALITY_EXT
    assert {c["code"] for c in side["valueCodeableConcept"]["coding"]} == {"left", "419161000"}
    assert left_trapezius["text"] == "Left upper trapezius"
    assert "extension" not in proc["bodySite"][1], "cervical spine has no side"
    first_treatment = next(e for e in proc["extension"] if e["url"] == TREATMENT_EXT)
    assert sub(first_treatment, "bodySite")["valueCodeableConcept"] == left_trapezius


# --- Observations -----------------------------------------------------------------------------


def test_every_observation_is_part_of_the_procedure() -> None:
    result = mapped()
    ref = {"reference": f"Procedure/{procedure(result)['id']}"}
    observations = of_type(result, "Observation")
    assert len(observations) == 6
    assert all(o["partOf"] == [ref] for o in observations)


def test_a_post_observation_is_derived_from_its_pre() -> None:
    result = mapped()
    pre = observation(result, "pre", "pain_nrs")
    post = observation(result, "post", "pain_nrs")
    assert post["derivedFrom"] == [{"reference": f"Observation/{pre['id']}"}]
    assert "derivedFrom" not in pre


def test_the_assessment_phase_is_an_extension() -> None:
    result = mapped()
    for phase in ("pre", "post"):
        extensions = observation(result, phase, "pain_nrs")["extension"]
        assert {"url": PHASE_EXT, "valueCode": phase} in extensions


def test_effective_defaults_to_session_start_for_pre_and_end_for_post() -> None:
    result = mapped()
    assert observation(result, "pre", "pain_nrs")["effectiveDateTime"] == (
        "2026-11-20T10:02:00-05:00"
    )
    assert observation(result, "pre", "cervical_rotation_rom")["effectiveDateTime"] == (
        "2026-11-20T10:00:00-05:00"
    )
    assert observation(result, "post", "cervical_rotation_rom")["effectiveDateTime"] == (
        "2026-11-20T10:55:00-05:00"
    )


def test_values_carry_ucum_units() -> None:
    result = mapped()
    pain = observation(result, "pre", "pain_nrs")["valueQuantity"]
    rom = observation(result, "post", "cervical_rotation_rom")["valueQuantity"]
    assert pain == {"value": 7, "unit": "score", "system": UCUM, "code": "{score}"}
    assert rom == {"value": 60, "unit": "degree", "system": UCUM, "code": "deg"}


# --- Goal -------------------------------------------------------------------------------------


def test_goal_target_has_measure_quantity_and_due_date() -> None:
    (goal,) = of_type(mapped(), "Goal")
    (target,) = goal["target"]
    assert target["measure"]["coding"][0]["code"] == "cervical_rotation_rom"
    degrees = {"value": 70, "unit": "degree", "system": UCUM, "code": "deg"}
    assert target["detailQuantity"] == degrees
    assert target["dueDate"] == "2026-12-31"
    assert goal["identifier"] == [{"system": CLINIC.goal_system, "value": "P-1001/G1"}]
    assert goal["startDate"] == "2026-11-20"


def test_goal_keeps_the_side_of_its_measure() -> None:
    (goal,) = of_type(mapped(), "Goal")
    assert b'"left"' in jsonio.dumps(goal)


def test_an_observation_of_the_other_side_does_not_pertain_to_a_one_sided_goal() -> None:
    body = payload()
    body["assessments"].append(
        {"phase": "pre", "measure": "cervical_rotation_rom", "laterality": "right", "value": 65}
    )
    right = next(
        o
        for o in of_type(mapped(body), "Observation")
        if o["identifier"][0]["value"].endswith("/cervical_rotation_rom/-/right")
    )
    assert all(e["url"] != PERTAINS_TO_GOAL for e in right["extension"])


# --- status, referral -------------------------------------------------------------------------


def test_entered_in_error_marks_procedure_and_observations_and_emits_no_goal() -> None:
    result = mapped(payload(status="entered-in-error"))
    assert procedure(result)["status"] == "entered-in-error"
    assert {o["status"] for o in of_type(result, "Observation")} == {"entered-in-error"}
    assert of_type(result, "Goal") == []


def test_a_known_referral_gives_based_on_and_the_referral_reasons() -> None:
    result = mapped(referral=REFERRAL)
    based_on = [{"reference": "ServiceRequest/sr-rivera-massage-2026-11"}]
    proc = procedure(result)
    assert proc["basedOn"] == based_on
    assert proc["reasonReference"] == [{"reference": "Condition/cond-rivera-cervicalgia"}]
    assert all(o["basedOn"] == based_on for o in of_type(result, "Observation"))
    assert "referral-unknown" not in flag_codes(result)


def test_without_a_known_referral_there_is_no_based_on() -> None:
    result = mapped()
    assert "basedOn" not in procedure(result)
    assert "reasonReference" not in procedure(result)
    assert all("basedOn" not in o for o in of_type(result, "Observation"))


def test_reason_code_comes_from_the_diagnoses_else_from_the_referral() -> None:
    own = procedure(mapped(referral=REFERRAL))["reasonCode"]
    assert [c["coding"][0]["code"] for c in own] == ["M54.2"]
    inherited = procedure(mapped(payload(diagnoses=None), referral=REFERRAL))["reasonCode"]
    assert inherited == list(REFERRAL.reason_code)


# --- flags ------------------------------------------------------------------------------------


def test_flag_no_referral() -> None:
    assert "no-referral" in flag_codes(mapped(payload(referral=None)))


def test_flag_referral_unknown() -> None:
    codes = flag_codes(mapped())
    assert "referral-unknown" in codes
    assert "no-referral" not in codes


def test_flag_not_billable_for_cupping() -> None:
    body = payload()
    body["treatments"].append({"technique": "cupping", "body_site": "upper_back", "minutes": 5})
    result = mapped(body)
    assert [f.message for f in result.flags if f.code == "not-billable"] == [
        "Cupping has no billing code"
    ]
    assert {b.code for b in result.billing} == {"97140", "97124"}, "cupping bills nothing"


def test_flag_below_8_minutes() -> None:
    body = payload(
        treatments=[{"technique": "swedish_massage", "body_site": "upper_back", "minutes": 6}]
    )
    result = mapped(body)
    assert "below-8-minutes" in flag_codes(result)
    assert [(b.code, b.minutes, b.units) for b in result.billing] == [("97124", 6, 0)]
    assert "below-8-minutes" not in flag_codes(mapped())
